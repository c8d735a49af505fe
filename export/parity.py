"""PyTorch fp32 vs ONNX Runtime (CPU) on seeded random images at two input sizes.

Inputs are uniform [0, 1] RGB normalised by the export's mean/std — the same preprocessing the runtime uses —
so the numbers describe realistic activations. The second size is non-square and differs from the first,
so a graph that baked in the example shape or skipped the position-embedding interpolation fails here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from artlens.export.errors import ExportError

PARITY_SEED = 20_231_122  # fixed: parity inputs must not depend on the model's seed
GEM_P = 3.0  # as in artlens/embedder.py


def parity_shapes(size: int, patch: int) -> list[tuple[int, int, int, int]]:
    """``[(2, 3, size, size), (3, 3, h, w)]``, h ≈ 0.75·size and w ≈ 1.375·size, multiples of ``patch``."""
    h = max(patch, round(0.75 * size / patch) * patch)
    w = max(patch, round(1.375 * size / patch) * patch)
    return [(2, 3, size, size), (3, 3, h, w)]


def random_batches(shapes: list[tuple[int, int, int, int]], mean: list[float],
                   std: list[float]) -> list[np.ndarray]:
    gen = torch.Generator().manual_seed(PARITY_SEED)
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return [((torch.rand(*shape, generator=gen) - m) / s).numpy() for shape in shapes]


def torch_outputs(wrapper: torch.nn.Module, batches: list[np.ndarray]) -> list[tuple[np.ndarray, np.ndarray]]:
    with torch.no_grad():
        return [tuple(t.numpy() for t in wrapper(torch.from_numpy(b))) for b in batches]  # type: ignore[misc]


def onnx_session(path: Path, threads: int | None = None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"ONNX Runtime cannot load {path.name}: {str(exc)[:300]}") from exc


def compare(path: Path, batches: list[np.ndarray], reference: list[tuple[np.ndarray, np.ndarray]],
            *, tolerance: float, min_cosine: float, label: str) -> dict[str, Any]:
    """Run ``path`` on ``batches``; raise ExportError when it drifts from ``reference`` beyond the limits."""
    session = onnx_session(path)
    cls_diff = patch_diff = 0.0
    cosines: dict[str, float] = {"cls": 1.0, "mean": 1.0, "gem": 1.0}
    for batch, (ref_cls, ref_patch) in zip(batches, reference, strict=True):
        try:
            cls, patch = session.run(None, {"pixel_values": batch})
        except Exception as exc:
            raise ExportError(f"{label}: ONNX Runtime fails on input {list(batch.shape)}: "
                              f"{str(exc)[:300]}") from exc
        if cls.shape != ref_cls.shape or patch.shape != ref_patch.shape:
            raise ExportError(f"{label}: output shapes {cls.shape}, {patch.shape} for input "
                              f"{list(batch.shape)}; PyTorch gives {ref_cls.shape}, {ref_patch.shape}")
        cls_diff = max(cls_diff, float(np.abs(cls - ref_cls).max()))
        patch_diff = max(patch_diff, float(np.abs(patch - ref_patch).max()))
        for name, (a, b) in _pooled(cls, patch, ref_cls, ref_patch).items():
            cosines[name] = min(cosines[name], float(_cosine(a, b).min()))
    result = {
        "max_abs_diff": max(cls_diff, patch_diff),
        "cls_max_abs_diff": cls_diff,
        "patch_max_abs_diff": patch_diff,
        "min_cosine": cosines,
        "tolerance": tolerance,
        "min_cosine_required": min_cosine,
    }
    if not np.isfinite(result["max_abs_diff"]) or result["max_abs_diff"] > tolerance:
        raise ExportError(f"{label}: ONNX differs from PyTorch by {result['max_abs_diff']:.3g} "
                          f"(tolerance {tolerance:g}); the exported graph is not faithful")
    if min(cosines.values()) < min_cosine:
        raise ExportError(f"{label}: pooled embeddings reach cosine {min(cosines.values()):.4f} with PyTorch "
                          f"(required {min_cosine}); the conversion loses too much")
    return result


def _pooled(cls: np.ndarray, patch: np.ndarray, ref_cls: np.ndarray,
            ref_patch: np.ndarray) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    def gem(x: np.ndarray) -> np.ndarray:
        return np.power(np.mean(np.maximum(x.astype(np.float64), 1e-6) ** GEM_P, axis=1), 1.0 / GEM_P)

    return {"cls": (cls, ref_cls), "mean": (patch.mean(axis=1), ref_patch.mean(axis=1)),
            "gem": (gem(patch), gem(ref_patch))}


def _cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = a.astype(np.float64)
    b = b.astype(np.float64)
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)
