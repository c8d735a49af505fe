"""`artlens index …`: build a bundle, add a vote index or renditions to one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from artlens.cli.common import checked_shortlist, console, errors, progress, stage_ticker, warn_if_random

index_app = typer.Typer(help="Build index bundles from a collection.", no_args_is_help=True)


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
    segment_mode: Annotated[str, typer.Option(help="DINOv2 segment vectors (with global embeddings only): pooled"
                                                   " (patch tokens of the artwork's one forward pass) | crop (one"
                                                   " forward per cut-out).")] = "pooled",
    points_per_side: Annotated[int | None, typer.Option(min=1, help="SAM point grid per side (default: the"
                                                                    " measured one in docs/segments.md).")] = None,
    votes: Annotated[bool, typer.Option(help="Index every reference descriptor for the descriptor-vote"
                                             " shortlist (weight-free; ≈ 0.14 MB per artwork).")] = True,
    shortlist: Annotated[str, typer.Option(help="The shortlist the bundle is built for: auto (fused for a pretrained"
                                                " model, local for a random-init one) | fused | global (DINOv2) |"
                                                " local (VLAD and descriptor votes). Global embeddings (one model"
                                                " forward per artwork) are stored only for fused/global or a"
                                                " pretrained model.")] = "auto",
    features: Annotated[str, typer.Option(help="Local features: rootsift (OpenCV, no weights) | xfeat | aliked"
                                               " (learned, need --features-model; the model is copied into the"
                                               " bundle).")] = "rootsift",
    features_model: Annotated[Path | None, typer.Option(help="Learned local-feature model directory (`artlens"
                                                             " export local-features --model xfeat|aliked-n16`)."
                                                        )] = None,
    workers: Annotated[int | None, typer.Option(min=1, help="Worker processes for the per-artwork work (decode,"
                                                          " local features, embeddings) and the calibration photos"
                                                          " on a local Ray; 1: in this process. Default: in this"
                                                          " process, a local Ray for the per-artwork work of large"
                                                          " collections when installed (artlens[cluster])."
                                                )] = None,
    ray_address: Annotated[str | None, typer.Option(help="Join the Ray cluster at this address (e.g. ray://head:10001"
                                                         " or auto) instead of starting one; the collection's images"
                                                         " and --out must be on storage every node sees.")] = None,
) -> None:
    """Extract local features, embed (where the shortlist uses it), index and calibrate a collection into a bundle."""
    from artlens.calibration.calibrate import build_calibrated_bundle
    from artlens.errors import ModelError
    from artlens.indexing.segment_vectors import MODES
    from artlens.local_features import checked_features

    build_config: dict = {} if votes else {"votes": None}
    with errors():
        build_config["shortlist"] = checked_shortlist(shortlist)
        build_config["features"] = checked_features(features, features_model)
        if segments and sam is None:
            raise ModelError("--segments needs --sam DIR (a SAM model directory: `artlens export sam`, or a folder"
                             " with encoder.onnx + sam.onnx)")
        if sam is not None and not segments:
            raise ModelError("--sam is only used with --segments; add --segments to index segments")
        if segment_mode not in MODES:
            raise ModelError(f"--segment-mode must be one of {', '.join(MODES)}, not {segment_mode!r}")
        if segments:
            segment_config: dict = {"mode": segment_mode}
            if points_per_side:
                segment_config["amg"] = {"points_per_side": points_per_side}
            build_config["segments"] = segment_config

    with errors(), _rate_progress() as bars:
        report = build_calibrated_bundle(model, collection, out, config=build_config,
                                         calibration={"synthetic_photos": calibration_photos,
                                                      "target_fpr": target_fpr},
                                         calibrate=calibrate, strict=strict, progress=stage_ticker(bars),
                                         sam_dir=sam if segments else None, workers=workers,
                                         ray_address=ray_address)
    for line, reason in report.skipped:
        console.print(f"[yellow]skipped[/yellow] {collection}:{line}: {reason}", highlight=False)
    from artlens.indexing.store.bundle import read_meta

    meta = read_meta(out)
    warn_if_random(meta["model"]["pretrained"])
    calibration = meta.get("calibration")
    calibration_line = "not calibrated (run `artlens calibrate` before recognising)"
    if calibration:
        info = calibration["info"]
        calibration_line = (f"threshold {calibration['threshold']:.3f} (expected recall {info['expected_recall']:.2f}"
                            f" at FPR {info['fpr_at_threshold']:.3f} on {info['source']})")
    segment_meta = meta.get("segments")
    segment_line = f", {segment_meta['count']} segments ({segment_meta['mode']})" if segment_meta else ""
    index_line = (f"{meta['features']['config']['method']} local features, shortlist {meta['shortlist']}, "
                  + (f"index {meta['index']['type']}" if meta.get("index") else "no global embeddings"))
    console.print(f"[green]bundle[/green] {out}: {report.indexed} artworks{segment_line}, {len(report.skipped)}"
                  f" skipped, {index_line}, {calibration_line}, {report.seconds:.1f}s", highlight=False)


def _rate_progress():
    """The build's bars with a rate column: artworks/s while the artworks are read."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class Rate(ProgressColumn):
        """Rows read per second since the stage started (a resumed build's finished shards not counted)."""

        def __init__(self) -> None:
            super().__init__()
            self.first: dict = {}

        def render(self, task) -> Text:
            first = self.first.setdefault(task.id, task.completed)
            elapsed = task.finished_time if task.finished else task.elapsed  # frozen once the stage is done
            if task.description != "artworks" or not elapsed or task.completed == first:
                return Text("")
            return Text(f"{(task.completed - first) / elapsed:.1f} artworks/s")

    bars = progress()
    bars.columns = (*bars.columns, Rate())
    return bars


@index_app.command("votes")
def index_votes(
    index: Annotated[Path, typer.Option(help="Bundle directory (written as its next version).")],
    calibrate: Annotated[bool, typer.Option(help="Recalibrate on simulated photos afterwards (the shortlist"
                                                 " changes, so the old calibration is stale).")] = True,
    photos: Annotated[int, typer.Option(help="Simulated photos for calibration.")] = 200,
    target_fpr: Annotated[float, typer.Option(min=0.0, max=0.5)] = 0.01,
) -> None:
    """Add (or rebuild) the descriptor-vote index of a bundle built without one; no image is decoded again."""
    from artlens.calibration.calibrate import calibrate_bundle
    from artlens.indexing.bundle_lock import bundle_lock
    from artlens.indexing.incremental import add_vote_index
    from artlens.indexing.store.bundle import load_bundle

    with errors(), progress() as bars:
        task = bars.add_task("vote index", total=None)
        with bundle_lock(index):  # serve processes on this bundle may be writing too
            bundle = add_vote_index(load_bundle(index))
        bars.update(task, completed=1, total=1)
        if calibrate:
            task = bars.add_task("calibration", total=None)
            calibrate_bundle(index, config={"target_fpr": target_fpr, "synthetic_photos": photos},
                             progress=lambda done, total: bars.update(task, completed=done, total=total), lock=True)
    votes = bundle.meta["votes"]
    console.print(f"[green]bundle[/green] {index}: vote index {votes['factory']} over {votes['count']} descriptors"
                  + ("" if calibrate else "; recalibrate with `artlens calibrate` before recognising"),
                  highlight=False)


@index_app.command("renditions")
def index_renditions(
    index: Annotated[Path, typer.Option(help="Bundle directory (written as its next version).")],
) -> None:
    """Store a reference-image rendition for every artwork that has none (bundles built before renditions), read
    from the source images recorded at build time, so the service needs nothing outside the bundle."""
    from artlens.indexing.bundle_lock import bundle_lock
    from artlens.indexing.incremental import add_renditions
    from artlens.indexing.store.bundle import load_bundle

    with errors(), bundle_lock(index):  # serve processes on this bundle may be writing too
        before = load_bundle(index)
        missing = sum(1 for art in before.artworks
                      if not art.get("rendition") and (art.get("image") or art.get("stored_image")))
        if not missing:
            console.print(f"[green]bundle[/green] {index}: every artwork with an image already has a rendition;"
                          " nothing to do", highlight=False)
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


def _size(num: float | None) -> str:
    """Bytes for people: 1,234 B, 12.3 KB, 4.56 MB (powers of 1000, as disks are sold)."""
    if num is None:
        return "fixed"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if num >= scale:
            value = num / scale
            return f"{value:.2f} {unit}" if value < 10 else f"{value:.1f} {unit}" if value < 100 else \
                f"{value:,.0f} {unit}"
    return f"{num:,.0f} B"


@index_app.command("info")
def index_info(
    index: Annotated[Path, typer.Option(help="Bundle directory.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")] = False,
) -> None:
    """Counts, model and local features, calibration threshold, and what the bundle costs on disk and in RAM, per
    component and per artwork (bundle.json "footprint"; computed from the files for bundles written before it)."""
    import json

    from rich.table import Table

    from artlens.errors import BundleError
    from artlens.indexing.store.bundle import has_global_embedding, read_meta
    from artlens.indexing.store.footprint import MANIFEST, compute_footprint

    with errors():
        meta = read_meta(index)
        footprint = meta.get("footprint")
        source = "bundle.json"
        if not isinstance(footprint, dict) or not isinstance(footprint.get("components"), list):
            try:
                artworks = json.loads((index / "artworks.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise BundleError("artworks.json cannot be read; rebuild the bundle", path=index) from None
            if not isinstance(artworks, list):
                raise BundleError("artworks.json is not a list of artworks; rebuild the bundle", path=index)
            footprint = compute_footprint(index, meta, len(artworks))
            source = "computed from the files"
    calibration = meta.get("calibration") or {}
    model = meta["model"]
    summary = {
        "artworks": footprint["artworks"], "version": meta.get("version", 1),
        "model": {key: model.get(key) for key in ("id", "pretrained", "pooling", "embedding_dim", "precision")},
        "global_embedding": has_global_embedding(meta), "shortlist": meta.get("shortlist"),
        "features": meta["features"]["config"], "segments": (meta.get("segments") or {}).get("count"),
        "descriptors": (meta.get("votes") or {}).get("count"), "threshold": calibration.get("threshold"),
        "footprint_source": source, "manifest_bytes": (index / MANIFEST).stat().st_size, "footprint": footprint,
    }
    if as_json:
        print(json.dumps(summary, indent=1))
        return
    features = summary["features"]
    threshold = summary["threshold"]
    console.print(f"[bold]bundle[/bold] {index}: {summary['artworks']} artworks (version {summary['version']})"
                  + (f", {summary['segments']} segments" if summary["segments"] else "")
                  + (f", {summary['descriptors']} descriptors in the vote index" if summary["descriptors"] else ""),
                  highlight=False)
    console.print(f"model {model.get('id')} ({'pretrained' if model.get('pretrained') else 'random-init'}), "
                  f"{'global embeddings' if summary['global_embedding'] else 'no global embeddings'}, shortlist "
                  f"{summary['shortlist'] or 'auto'}; local features {features['method']} (max side "
                  f"{features['max_side']}, max keypoints {features.get('max_keypoints')}); calibration "
                  + (f"threshold {threshold:.3f}" if threshold is not None else "none"), highlight=False)
    table = Table(title=f"Footprint ({source}; RAM: what a loaded bundle holds, memory-mapped files count as disk)")
    for column in ("component", "disk", "RAM", "disk / artwork", "RAM / artwork", "RAM counted as"):
        table.add_column(column, justify="left" if column in ("component", "RAM counted as") else "right")
    for row in sorted(footprint["components"], key=lambda row: row["kind"] == "fixed"):  # growing ones first
        table.add_row(row["name"], _size(row["disk_bytes"]), _size(row["ram_bytes"]),
                      _size(row["disk_per_artwork"]), _size(row["ram_per_artwork"]), row["ram_basis"])
    table.add_section()
    for label, part in (("fixed costs", footprint["fixed"]), ("total", footprint["total"])):
        table.add_row(label, _size(part["disk_bytes"]), _size(part["ram_bytes"]), "", "", "")
    per = footprint["per_artwork"]
    table.add_row("per artwork (growing components)", "", "", _size(per["disk_bytes"]), _size(per["ram_bytes"]), "")
    console.print(table)
    console.print(f"not counted: {MANIFEST} ({_size(summary['manifest_bytes'])}: settings, calibration, checksums)",
                  highlight=False)
