"""PyTorch → ONNX: the token wrapper, the traced export with dynamic shapes, fp16/int8 conversion.

The TorchScript exporter (``dynamo=False``) is used: it needs no onnxscript, and tracing transformers' DINOv2
keeps every shape expression symbolic, so batch, height and width stay dynamic. Only the position-embedding
resize is swapped in for the export (see below); the parity check compares against the unmodified model.
"""

from __future__ import annotations

import contextlib
import logging
import math
import types
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from artlens.export.errors import ExportError

INPUT_NAME = "pixel_values"
OUTPUT_NAMES = ("cls_token", "patch_tokens")
DYNAMIC_AXES = {
    "pixel_values": {0: "batch", 2: "height", 3: "width"},
    "cls_token": {0: "batch"},
    "patch_tokens": {0: "batch", 1: "n_patches"},
}
EXTERNAL_DATA_FILE = "model.onnx.data"
# protobuf cannot serialise a message of 2 GiB or more; stay clear of it (DINOv2-giant fp32 is ~4.5 GB).
_PROTO_LIMIT = 1_900_000_000


class Dinov2Tokens(nn.Module):
    """``pixel_values`` → (CLS token, patch tokens), both after the final layer norm; registers dropped."""

    def __init__(self, model: nn.Module, num_register_tokens: int) -> None:
        super().__init__()
        self.model = model
        self.first_patch = 1 + num_register_tokens

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.model(pixel_values=pixel_values).last_hidden_state
        return hidden[:, 0], hidden[:, self.first_patch :]


# -- position-embedding interpolation as two matrix products -------------------------------------------------
# transformers resizes DINOv2's 37×37 position-embedding grid with F.interpolate(bicubic): plain for dinov2,
# antialiased for dinov2_with_registers. Opset 17 has no antialiased Resize (the exporter refuses it), and ORT
# rejected the plain cubic Resize when downscaling once the graph was converted to fp16 ("'Cubic' mode only
# supports … scales >= 1", its NHWC variant).
# Separable resampling is a matrix product per axis, so the graph gets MatMuls whose weights are computed from
# the dynamic output size — exact to PyTorch up to float rounding, valid in every precision and provider.
_KEYS_A_PLAIN = -0.75  # ATen upsample_bicubic2d
_KEYS_A_AA = -0.5  # ATen _upsample_bicubic2d_aa (PIL's choice)


def _cubic(x: torch.Tensor, a: float) -> torch.Tensor:
    """Keys' cubic convolution kernel at |x| (zero beyond 2)."""
    x = x.abs()
    near = ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    far = ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def bicubic_matrix(in_size: int, out_size: torch.Tensor | int) -> torch.Tensor:
    """Weights ``[out_size, in_size]`` of ``interpolate(mode="bicubic", align_corners=False)`` along one axis.

    As ATen: source coordinate ``scale·(i+0.5)-0.5`` (not clamped), 4 taps, indices clamped to the border.
    """
    out_t = torch.as_tensor(out_size)
    scale = in_size / out_t.to(torch.float32)
    real = scale * (torch.arange(out_t, dtype=torch.float32) + 0.5) - 0.5
    base = torch.floor(real)
    t = real - base
    j = torch.arange(in_size, dtype=torch.float32)
    weights = torch.zeros_like(real)[:, None] * j[None, :]  # [out, in] zeros with a dynamic first dim
    for k in range(4):  # taps at base-1 … base+2, offsets from the sample point 1+t, t, 1-t, 2-t
        idx = torch.clamp(base + (k - 1), 0.0, float(in_size - 1))
        tap = (j[None, :] == idx[:, None]).to(t.dtype)
        weights = weights + _cubic(t - (k - 1), _KEYS_A_PLAIN)[:, None] * tap
    return weights


def aa_bicubic_matrix(in_size: int, out_size: torch.Tensor | int) -> torch.Tensor:
    """Weights ``[out_size, in_size]`` of ``interpolate(mode="bicubic", antialias=True)`` along one axis.

    As ATen's separable AA kernel: kernel support widened by the scale when downsampling, taps limited to
    ``[center-support+0.5, center+support+0.5)``, weights normalised per output pixel.
    """
    out_t = torch.as_tensor(out_size)
    scale = in_size / out_t.to(torch.float32)
    one = torch.ones_like(scale)
    support = torch.where(scale >= 1.0, 2.0 * scale, 2.0 * one)
    invscale = torch.where(scale >= 1.0, 1.0 / scale, one)
    center = scale * (torch.arange(out_t, dtype=torch.float32) + 0.5)  # [out]
    lo = torch.clamp(torch.floor(center - support + 0.5), min=0.0)
    hi = torch.clamp(torch.floor(center + support + 0.5), max=float(in_size))
    j = torch.arange(in_size, dtype=torch.float32)  # [in]
    w = _cubic((j[None, :] - center[:, None] + 0.5) * invscale, _KEYS_A_AA)
    w = w * ((j[None, :] >= lo[:, None]) & (j[None, :] < hi[:, None])).to(w.dtype)
    return w / w.sum(dim=1, keepdim=True).clamp_min(1e-12)


def _interpolate_pos_encoding(self: Any, embeddings: torch.Tensor, height: Any, width: Any) -> torch.Tensor:
    """Drop-in for the embeddings' ``interpolate_pos_encoding``; always resamples, as when tracing."""
    num_positions = self.position_embeddings.shape[1] - 1
    side = math.isqrt(int(num_positions))
    dim = self.position_embeddings.shape[-1]
    patch_h, patch_w = self.patch_embeddings.patch_size
    matrix = aa_bicubic_matrix if self._artlens_antialias else bicubic_matrix
    class_pos = self.position_embeddings[:, :1]
    grid = self.position_embeddings[:, 1:].reshape(1, side, side, dim).permute(0, 3, 1, 2).to(torch.float32)
    rows = matrix(side, torch.as_tensor(height) // patch_h)
    cols = matrix(side, torch.as_tensor(width) // patch_w)
    resized = torch.matmul(torch.matmul(rows, grid), cols.transpose(0, 1))  # [1, dim, h, w]
    resized = resized.to(self.position_embeddings.dtype).permute(0, 2, 3, 1).reshape(1, -1, dim)
    return torch.cat((class_pos, resized), dim=1)


@contextlib.contextmanager
def exportable(model: nn.Module) -> Iterator[None]:
    """Swap in the matrix-product position-embedding resize, for the duration of the export only.

    The PyTorch reference of the parity check runs transformers' own code, so the swap is verified.
    """
    embeddings = model.embeddings
    # transformers' registers variant resamples with antialias=True, the plain one without
    embeddings._artlens_antialias = type(embeddings).__name__.startswith("Dinov2WithRegisters")
    embeddings.interpolate_pos_encoding = types.MethodType(_interpolate_pos_encoding, embeddings)
    try:
        yield
    finally:
        del embeddings.interpolate_pos_encoding  # back to the class method
        del embeddings._artlens_antialias


# -- export --------------------------------------------------------------------------------------------------
def export_onnx(wrapper: Dinov2Tokens, path: Path, *, opset: int, example_hw: tuple[int, int]) -> None:
    """Trace ``wrapper`` to ``path`` (fp32); large models get one external data file next to it."""
    example = torch.zeros(1, 3, *example_hw)
    try:
        with exportable(wrapper.model), warnings.catch_warnings(), torch.no_grad():
            # TracerWarnings about shape arithmetic and the exporter's deprecation notice are expected.
            warnings.simplefilter("ignore")
            torch.onnx.export(
                wrapper, (example,), str(path), dynamo=False, opset_version=opset,
                input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES), dynamic_axes=DYNAMIC_AXES,
                do_constant_folding=True,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed (opset {opset}): {first[:300]}") from exc
    _consolidate_external_data(path)


def _consolidate_external_data(path: Path) -> None:
    """The TorchScript exporter writes >2 GB models as one file per tensor; gather them into one file."""
    extra = [p for p in path.parent.iterdir() if p != path]
    if not extra:
        return
    import onnx

    model = onnx.load(str(path))  # loads the external tensors into memory
    for p in extra:
        p.unlink()
    path.unlink()
    save_onnx(model, path)


def save_onnx(model: Any, path: Path) -> None:
    """Save with all weights inline, or in ``model.onnx.data`` when they exceed protobuf's 2 GB limit."""
    import onnx

    weights = sum(t.ByteSize() for t in model.graph.initializer)
    if weights < _PROTO_LIMIT:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=EXTERNAL_DATA_FILE, size_threshold=1024)


def check_onnx(path: Path) -> None:
    import onnx

    try:
        onnx.checker.check_model(str(path))  # by path: works with external data
    except Exception as exc:
        raise ExportError(f"{path.name}: exported graph fails onnx.checker: {str(exc)[:300]}") from exc


def convert_precision(fp32_path: Path, out_path: Path, precision: str) -> None:
    """fp16 (float32 inputs/outputs kept) or int8 (dynamic, weights of MatMuls) from the fp32 graph."""
    try:
        if precision == "fp16":
            from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

            # By path, not ModelProto: the converter then runs shape inference on the file, which also works
            # beyond 2 GB; without types it wrongly halves the integer-valued constants feeding Range.
            # keep_io_types: callers feed float32 and read float32, whatever the precision inside.
            # Resize stays fp32 should a graph have one: ORT's CPU cubic Resize rejects the fp16 form.
            half = convert_float_to_float16(str(fp32_path), keep_io_types=True,
                                            op_block_list=[*DEFAULT_OP_BLOCK_LIST, "Resize"])
            save_onnx(half, out_path)
        elif precision == "int8":
            import onnx
            from onnxruntime.quantization import QuantType, quantize_dynamic

            # Weights of the transformer's MatMuls only: the patch-embedding Conv as ConvInteger is slow on
            # CPU and costs accuracy, the position-embedding resize is not a weight product, and
            # activations × activations (attention) stay float (MatMulConstBOnly).
            graph_only = onnx.load(str(fp32_path), load_external_data=False)
            skip = [n.name for n in graph_only.graph.node if n.name.startswith("/model/embeddings/")]
            previous = logging.root.manager.disable
            logging.disable(logging.WARNING)  # its "consider pre-processing" advice is noise for this graph
            try:
                quantize_dynamic(str(fp32_path), str(out_path), weight_type=QuantType.QInt8,
                                 op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                                 nodes_to_exclude=skip, extra_options={"MatMulConstBOnly": True},
                                 use_external_data_format=fp32_path.with_name(EXTERNAL_DATA_FILE).exists())
            finally:
                logging.disable(previous)
        else:
            raise ExportError(f"unknown precision {precision!r}")
    except ExportError:
        raise
    except Exception as exc:
        raise ExportError(f"{precision} conversion failed: {str(exc)[:300]}") from exc
