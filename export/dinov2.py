"""Export DINOv2 to the ONNX + model.json bundle of docs/model-contract.md.

load (hub cache / local directory / random init) → trace to ONNX (dynamic batch, height, width)
→ optional fp16/int8 conversion → parity check against PyTorch → model.json → atomic rename into place.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from artlens.export.archs import KNOWN_ARCHITECTURES
from artlens.export.errors import ExportError
from artlens.export.staging import export_staging
from artlens.files import moved_into_place
from artlens.hashing import file_sha256

# Defaults, one place (hloc style). The CLI and callers override per export.
CONFIG: dict[str, Any] = {
    "model": "facebook/dinov2-small",
    # 224 (a 16×16 patch grid): DINOv2's training size, and the one retrieval with its pretrained weights uses.
    # 448 (--size 448) gives pooled segment vectors a 32×32 grid for 4–7× the forward (docs/model-contract.md).
    "size": 224,
    "geometry": "squash",
    "pooling": "gem",
    "precision": "fp32",
    "opset": 17,
    "mean": [0.485, 0.456, 0.406],  # ImageNet, what DINOv2 was trained with
    "std": [0.229, 0.224, 0.225],
    # Max abs difference to PyTorch fp32 on the outputs (layer-normed tokens, values of order 1–10), and the
    # smallest cosine of pooled embeddings (cls / mean / GeM). fp16 and int8 are lossy by design.
    "tolerance": {"fp32": 1e-3, "fp16": 0.1, "int8": 2.0},
    "min_cosine": {"fp32": 0.9999, "fp16": 0.999, "int8": 0.95},
}

GEOMETRIES = ("squash", "aspect", "center-crop")
POOLINGS = ("gem", "cls", "cls+mean", "mean")  # as accepted by artlens/embedder.py
PRECISIONS = ("fp32", "fp16", "int8")
OPSETS = range(14, 21)  # 14+: the exporter's LayerNorm/attention symbolics; 20: newest it knows
FORMAT = "artlens-model/1"
BUNDLE_FILES = {"model.json", "model.onnx", "model.onnx.data"}

Progress = Callable[[str, str], None]  # (stage, detail); stages: load, export, convert, parity, write


def export_dinov2(
    model: str,
    out_dir: str | Path,
    *,
    random_init: bool = False,
    seed: int = 0,
    size: int = CONFIG["size"],
    geometry: str = CONFIG["geometry"],
    pooling: str = CONFIG["pooling"],
    precision: str = CONFIG["precision"],
    opset: int = CONFIG["opset"],
    tolerance: float | None = None,
    allow_download: bool | None = None,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Export ``model`` (hub id or local directory) to ``out_dir``; return the model.json written.

    ``random_init`` builds the architecture with seeded random weights (no hub needed; model.json says
    ``"pretrained": false``). ``tolerance`` overrides the parity limit of ``precision``. ``allow_download``
    lets hub ids be fetched (default: env ``ARTLENS_ALLOW_DOWNLOAD``, else the local cache only).
    Raises :class:`ExportError` on anything the user can fix; ``out_dir`` is untouched on failure.
    """
    import torch  # here, not at import: `artlens` without the export extra must still import this package

    from artlens.export import graph, loading, parity

    report = progress or (lambda stage, detail: None)
    out = Path(out_dir).expanduser().resolve()
    _validate(size=size, geometry=geometry, pooling=pooling, precision=precision, opset=opset, seed=seed)
    if tolerance is not None and not tolerance > 0:
        raise ExportError(f"--tolerance {tolerance}: must be a positive number")
    _check_size(size, KNOWN_ARCHITECTURES.get(model, {}).get("patch_size"))  # before a slow load, if known
    _check_out_dir(out)
    tol = float(tolerance if tolerance is not None else CONFIG["tolerance"][precision])
    min_cos = float(CONFIG["min_cosine"][precision])
    timings: dict[str, float] = {}
    t0 = time.perf_counter()

    report("load", f"{model} ({'random init, seed ' + str(seed) if random_init else 'weights'})")
    loaded = loading.load_dinov2(model, random_init=random_init, seed=seed, allow_download=allow_download)
    cfg = loaded.config
    patch = _patch_size(cfg.patch_size)
    _check_size(size, patch)
    wrapper = graph.Dinov2Tokens(loaded.model, loaded.num_register_tokens).eval()
    timings["load"] = time.perf_counter() - t0

    tmp = export_staging(out)
    with moved_into_place(tmp, out):
        t = time.perf_counter()
        report("export", f"tracing to ONNX opset {opset}")
        fp32_dir = tmp / "fp32"
        fp32_dir.mkdir()
        fp32_path = fp32_dir / "model.onnx"
        shapes = parity.parity_shapes(size, patch)
        graph.export_onnx(wrapper, fp32_path, opset=opset, example_hw=shapes[1][2:])
        graph.check_onnx(fp32_path)
        timings["export"] = time.perf_counter() - t

        final = tmp / "model.onnx"
        if precision != "fp32":
            t = time.perf_counter()
            report("convert", f"fp32 → {precision}")
            graph.convert_precision(fp32_path, final, precision)
            timings["convert"] = time.perf_counter() - t

        t = time.perf_counter()
        report("parity", f"PyTorch vs ONNX Runtime on {len(shapes)} batches")
        batches = parity.random_batches(shapes, CONFIG["mean"], CONFIG["std"])
        reference = parity.torch_outputs(wrapper, batches)
        fp32_limit = tol if precision == "fp32" else CONFIG["tolerance"]["fp32"]
        fp32_result = parity.compare(fp32_path, batches, reference, tolerance=fp32_limit,
                                     min_cosine=CONFIG["min_cosine"]["fp32"], label="fp32 ONNX")
        if precision == "fp32":
            result = fp32_result
            for name in fp32_dir.iterdir():  # model.onnx (+ model.onnx.data) move up unchanged
                name.rename(tmp / name.name)
        else:
            result = parity.compare(final, batches, reference, tolerance=tol, min_cosine=min_cos,
                                    label=f"{precision} ONNX")
            result["fp32_max_abs_diff"] = fp32_result["max_abs_diff"]
        shutil.rmtree(fp32_dir, ignore_errors=True)
        timings["parity"] = time.perf_counter() - t

        report("write", str(out))
        timings["total"] = time.perf_counter() - t0
        meta = _model_json(loaded, cfg, patch=patch, size=size, geometry=geometry, pooling=pooling,
                           precision=precision, opset=opset, onnx_path=final, parity_result=result,
                           shapes=shapes, timings=timings, torch_version=torch.__version__)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# -- helpers -------------------------------------------------------------------------------------------------
def _validate(*, size: int, geometry: str, pooling: str, precision: str, opset: int, seed: int) -> None:
    if geometry not in GEOMETRIES:
        raise ExportError(f"--geometry {geometry}: choose one of {', '.join(GEOMETRIES)}")
    if pooling not in POOLINGS:
        raise ExportError(f"--pooling {pooling}: choose one of {', '.join(POOLINGS)}")
    if precision not in PRECISIONS:
        raise ExportError(f"--precision {precision}: choose one of {', '.join(PRECISIONS)}")
    if opset not in OPSETS:
        raise ExportError(f"--opset {opset}: choose {OPSETS.start}–{OPSETS.stop - 1}")
    if not 14 <= size <= 4096:
        raise ExportError(f"--size {size}: must be between 14 and 4096 pixels")
    if seed < 0:
        raise ExportError(f"--seed {seed}: must be 0 or positive")


def _check_size(size: int, patch: int | None) -> None:
    if patch and size % patch:
        raise ExportError(f"--size {size}: must be a multiple of the patch size {patch} "
                          f"(e.g. {16 * patch}, {32 * patch}, {37 * patch})")


def _check_out_dir(out: Path, own_files: set[str] = BUNDLE_FILES) -> None:
    """Refuse to replace anything but an empty directory or an earlier export (never someone's folder)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise ExportError(f"--out {out}: exists and is not a directory")
    foreign = sorted(p.name for p in out.iterdir() if p.name not in own_files)
    if foreign:
        shown = ", ".join(foreign[:3]) + ("…" if len(foreign) > 3 else "")
        raise ExportError(f"--out {out}: exists and holds files an export would delete ({shown}); "
                          "choose a new or empty directory")


def _patch_size(value: Any) -> int:
    if isinstance(value, list | tuple):
        if len(set(value)) != 1:
            raise ExportError(f"non-square patch size {value} is not supported")
        return int(value[0])
    return int(value)


def _versions(torch_version: str) -> dict[str, str]:
    import onnx
    import onnxruntime
    import transformers

    return {"torch": torch_version, "transformers": transformers.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__}


def _model_json(loaded: Any, cfg: Any, *, patch: int, size: int, geometry: str, pooling: str, precision: str,
                opset: int, onnx_path: Path, parity_result: dict[str, Any], shapes: list[tuple[int, ...]],
                timings: dict[str, float], torch_version: str) -> dict[str, Any]:
    from artlens.export.graph import DYNAMIC_AXES, EXTERNAL_DATA_FILE, INPUT_NAME, OUTPUT_NAMES

    external = onnx_path.with_name(EXTERNAL_DATA_FILE)
    onnx_meta: dict[str, Any] = {
        "file": onnx_path.name, "sha256": file_sha256(onnx_path), "opset": opset, "precision": precision,
        "input": INPUT_NAME, "outputs": list(OUTPUT_NAMES),
        # additions beyond the contract
        "bytes": onnx_path.stat().st_size,
        "dynamic_axes": {k: list(v.values()) for k, v in DYNAMIC_AXES.items()},
        "external_data": None,
    }
    if external.exists():
        onnx_meta["external_data"] = {"file": external.name, "sha256": file_sha256(external),
                                      "bytes": external.stat().st_size}
    return {
        "format": FORMAT,
        "kind": "dinov2",
        "source": loaded.source,
        "pretrained": loaded.pretrained,
        "seed": loaded.seed,
        "weights": loaded.source_kind,  # random-init | local-dir | hub-cache | hub-download
        "architecture": {
            "hidden_size": int(cfg.hidden_size),
            "num_hidden_layers": int(cfg.num_hidden_layers),
            "num_attention_heads": int(cfg.num_attention_heads),
            "patch_size": patch,
            "num_register_tokens": loaded.num_register_tokens,
            "use_swiglu_ffn": bool(cfg.use_swiglu_ffn),
            "model_type": cfg.model_type,
            "image_size": int(cfg.image_size),  # native position-embedding grid; other sizes interpolate
        },
        "embedding_dim": int(cfg.hidden_size),
        "input": {"size": size, "geometry": geometry, "patch_size": patch,
                  "mean": list(CONFIG["mean"]), "std": list(CONFIG["std"])},
        "pooling": pooling,
        "onnx": onnx_meta,
        "parity": {
            **parity_result,
            "inputs": "2 random batches, 2 sizes",
            "shapes": [list(s) for s in shapes],
            "reference": "pytorch fp32",
            "runtime": "onnxruntime CPUExecutionProvider",
        },
        "versions": _versions(torch_version),
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
