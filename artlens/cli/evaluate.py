"""`artlens eval`: labelled photos (or a registered dataset) through recognition, one metrics table per set."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from artlens.cli.common import console, errors, out, phase_bar, warn_if_random


def evaluate(
    index: Annotated[Path | None, typer.Option(help="Bundle directory (with --dataset: built when omitted).")] = None,
    queries: Annotated[Path | None, typer.Option(help="CSV image,expected (expected ';'-separated; empty = no match)."
                                                 )] = None,
    dataset: Annotated[str | None, typer.Option(help="Registered dataset (`artlens dataset list`) or a folder with"
                                                " collection.csv/queries.csv.")] = None,
    severity: Annotated[str, typer.Option(help="With --dataset: comma-separated query sets: real and/or"
                                          " mild, default, hard (simulated visitor photos).")] = "real,default",
    seed: Annotated[int, typer.Option(help="Seed of the simulated photos.")] = 1,
    work: Annotated[Path, typer.Option(help="With --dataset: where collections, photos and bundles are kept.")
                    ] = Path("out/datasets"),
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's; with --dataset and"
                                               " no --index, the model to build the bundle with).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    shortlist: Annotated[str, typer.Option(help="auto | fused | global (DINOv2) | local (VLAD).")] = "auto",
    features: Annotated[str, typer.Option(help="With --dataset and no --index: the local features the dataset's"
                                               " bundle is built with: rootsift | a learned method (needs"
                                               " --features-model); each method gets a bundle of its own under"
                                               " --work.")] = "rootsift",
    features_model: Annotated[Path | None, typer.Option(help="Learned local-feature model directory (`artlens"
                                                             " export local-features --model METHOD`).")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write report.json here.")] = None,
    report_dir: Annotated[Path | None, typer.Option("--report", help="Write report.json, report.md and plots here."
                                                    )] = None,
) -> None:
    """Precision@1, recall, precision, false-positive rate, GAP, curves and latency on labelled photos."""
    from artlens.eval.run_eval import EvalConf, EvalHooks, main
    from artlens.recognition.settings import SHORTLIST_MODES

    if shortlist not in SHORTLIST_MODES:
        console.print(f"[red]error:[/red] --shortlist must be one of {', '.join(SHORTLIST_MODES)}")
        raise typer.Exit(2)
    conf = EvalConf(index=index, queries=queries, dataset=dataset, severity=severity, seed=seed, work=work,
                    model=model, top_k=top_k, shortlist=shortlist, features=features, features_model=features_model,
                    json_out=json_out, report_dir=report_dir)
    hooks = EvalHooks(phase=phase_bar, recognizer_ready=lambda rec: warn_if_random(rec.model_summary.pretrained),
                      report_ready=_show_report, wrote=_show_written)
    with errors():
        main(conf, hooks)


def _show_report(label: str, report: dict) -> None:
    """The metrics table of one query set, then the photos that could not be read."""
    table = Table(title=f"{label + ': ' if label else ''}{report['queries']}  (K={report['top_k']},"
                        f" threshold {report['threshold']:.3f})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n_queries", "n_errors", "n_match_queries", "n_nomatch_queries", "precision_at_1", "recall",
                "precision", "false_positive_rate", "shortlist_recall"):
        value = report[key]
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    near = report["near_threshold"]
    table.add_row(f"near threshold (±{near['band']})", f"{near['n']} of {near['of']}")
    latency = report["latency_ms"]
    table.add_row("latency p50 / p95 (ms)", f"{latency['p50']:.0f} / {latency['p95']:.0f}")
    for stage, stage_latency in latency["stages"].items():
        table.add_row(f"  {stage} p50", f"{stage_latency['p50']:.1f}")
    table.add_row("model", f"{report['model']['id']} (pretrained: {str(report['model']['pretrained']).lower()})")
    out.print(table)
    for detail in report["details"]:
        if "error" in detail:
            console.print(f"[red]failed:[/red] {detail['error']}", highlight=False)


def _show_written(path: Path, kind: str | None) -> None:
    if kind is None:
        console.print(f"wrote {path}")
    else:
        console.print(f"wrote {path} ({kind})", highlight=False)
