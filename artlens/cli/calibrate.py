"""`artlens calibrate`: fit a bundle's confidence calibration, optionally measured on held-out photos."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from artlens.cli.common import console, errors, phase_bar, write_json


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
    workers: Annotated[int | None, typer.Option(min=1, help="Recognise the photos on a local Ray with this many"
                                                          " workers (artlens[cluster]); default: in this process."
                                                )] = None,
    ray_address: Annotated[str | None, typer.Option(help="Recognise the photos on the Ray cluster at this address;"
                                                         " --index must be on storage every node sees.")] = None,
) -> None:
    """Fit the confidence calibration and pick the threshold for a target false-positive rate."""
    from artlens.calibration.calibrate import calibrate_bundle
    from artlens.calibration.queries import labelled_photos
    from artlens.errors import CollectionError
    from artlens.indexing.ray_build import asked_for_ray, require_ray
    from artlens.indexing.store.bundle import load_bundle

    if asked_for_ray(workers, ray_address):
        with errors():
            require_ray()  # one line, before any progress is drawn
    if split is not None:
        from artlens.eval.heldout import calibrate_split

        with errors():
            if queries is None:
                raise CollectionError("--split needs --queries (labelled photos to split)")
            with phase_bar("calibration") as tick:
                result = calibrate_split(index, queries, fraction=split, seed=seed, target_fpr=target_fpr,
                                         top_k=top_k, model_dir=model, progress=tick, workers=workers,
                                         ray_address=ray_address)
        fit, held = result["fit"], result["held_out"]
        console.print(f"threshold {result['threshold']:.4f} written to {index}: fitted on {fit['n_photos']} photos"
                      f" (expected recall {fit['expected_recall']:.3f}, FPR {fit['fpr_at_threshold']:.3f});"
                      f" held out {held['n_photos']} photos: recall {held['recall']:.3f}, FPR"
                      f" {held['false_positive_rate']:.3f}, precision {held['precision']:.3f}", highlight=False)
        if json_out:
            write_json(json_out, result)
        return
    with errors():
        labelled = labelled_photos(queries, load_bundle(index)) if queries else None
        with phase_bar("calibration") as tick:
            calibration = calibrate_bundle(index, model_dir=model, photos=labelled, top_k=top_k,
                                           config={"target_fpr": target_fpr, "synthetic_photos": photos},
                                           progress=tick, lock=True, workers=workers, ray_address=ray_address)
    info = calibration.info
    console.print(f"threshold {calibration.threshold:.4f}: FPR {info['fpr_at_threshold']:.3f} (target {target_fpr}),"
                  f" expected recall {info['expected_recall']:.3f}, fitted on {info['source']}", highlight=False)
