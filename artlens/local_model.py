"""Learned local features (XFeat, ALIKED) on ONNX Runtime: RGB photo → keypoints + unit descriptors, without PyTorch.

Reads a model directory written by ``artlens export local-features`` (``kind: "local_features"``,
docs/model-contract.md). The graph detects, selects and describes; this module resizes the photo to the analysed
size, drops the rows the graph marks invalid and caps the count. The result is the same
:class:`~artlens.verification.features.LocalFeatures` RootSIFT gives, so matching and verification take it as is.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from artlens.embedder import checked_onnx_file, open_session
from artlens.errors import ModelError
from artlens.verification.features import LEARNED_METHODS, LocalFeatures

KIND = "local_features"
REQUIRED_KEYS = ("kind", "method", "pretrained", "descriptor_dim", "max_keypoints", "input", "onnx")
# What extract() analyses by default: the longest side and keypoint count RootSIFT uses (verification/features.py).
DEFAULT_MAX_SIDE = 800
DEFAULT_MAX_KEYPOINTS = 1000


@dataclass(frozen=True)
class LocalModelInfo:
    """What an index or a result records about the local-feature model (bundle.json, reports)."""

    method: str
    source: str
    pretrained: bool
    sha256: str
    descriptor_dim: int
    max_side: int
    max_keypoints: int

    def public(self) -> dict:
        return {"method": self.method, "id": self.source, "pretrained": self.pretrained, "sha256": self.sha256,
                "descriptor_dim": self.descriptor_dim, "max_side": self.max_side, "max_keypoints": self.max_keypoints}


def read_local_model_json(model_dir: Path) -> dict:
    """model.json of a local-feature model, its kind and keys checked (ModelError naming what is wrong)."""
    import json

    meta_path = Path(model_dir) / "model.json"
    hint = f"create one with `artlens export local-features --model xfeat|aliked-n16 --out {model_dir}`"
    if not meta_path.is_file():
        raise ModelError(f"{model_dir}: no model.json — {hint}")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path}: unreadable model.json ({exc})") from None
    if not isinstance(meta, dict):
        raise ModelError(f"{meta_path}: model.json is not a JSON object; re-export the model")
    if meta.get("kind") != KIND:
        raise ModelError(f"{model_dir}: a {meta.get('kind', 'unknown')!r} model, not local features — {hint}")
    for key in REQUIRED_KEYS:
        if key not in meta:
            raise ModelError(f"{meta_path}: missing key {key!r}; re-export the model")
    if meta["method"] not in LEARNED_METHODS:
        raise ModelError(f"{meta_path}: unknown local-feature method {meta['method']!r} "
                         f"({', '.join(sorted(LEARNED_METHODS))})")
    return meta


class LocalFeatureModel:
    """One ONNX Runtime session of a learned local-feature model and the analysed size it extracts at.

    ``max_side`` / ``max_keypoints``: the defaults of :meth:`extract` (at most the model's own ``max_keypoints``).
    ``threads``: ONNX Runtime's intra-op threads (default: ARTLENS_ORT_THREADS); the device follows
    ARTLENS_DEVICE, as for the DINOv2 model.
    """

    def __init__(self, model_dir: str | Path, *, max_side: int = DEFAULT_MAX_SIDE,
                 max_keypoints: int = DEFAULT_MAX_KEYPOINTS, threads: int | None = None,
                 check_sha: bool = True) -> None:
        self.model_dir = Path(model_dir)
        meta = read_local_model_json(self.model_dir)
        onnx_path = checked_onnx_file(self.model_dir, meta, check_sha=check_sha, require_sha=True)
        self.meta = meta
        self.method = str(meta["method"])
        self.model_max_keypoints = int(meta["max_keypoints"])
        self.descriptor_dim = int(meta["descriptor_dim"])
        self.min_side = int(meta["input"].get("min_side", 32))
        self.input_name = meta["onnx"].get("input", "image")
        self.max_side = self._check_side(max_side)
        self.max_keypoints = self._check_keypoints(max_keypoints)
        self.session = open_session(onnx_path, threads)
        self.providers = self.session.get_providers()
        self.info = LocalModelInfo(method=self.method, source=str(meta.get("source", self.model_dir)),
                                   pretrained=bool(meta["pretrained"]), sha256=meta["onnx"].get("sha256", ""),
                                   descriptor_dim=self.descriptor_dim, max_side=self.max_side,
                                   max_keypoints=self.max_keypoints)

    @property
    def execution_provider(self) -> str:
        return self.providers[0]

    def _check_side(self, max_side: int) -> int:
        if not isinstance(max_side, int) or max_side < self.min_side:
            raise ModelError(f"max_side {max_side!r}: must be a whole number of pixels ≥ {self.min_side}")
        return max_side

    def _check_keypoints(self, max_keypoints: int) -> int:
        if not isinstance(max_keypoints, int) or not 1 <= max_keypoints <= self.model_max_keypoints:
            raise ModelError(f"max_keypoints {max_keypoints!r}: must be between 1 and {self.model_max_keypoints}, "
                             "the most this model was exported to return (artlens export local-features "
                             "--max-keypoints)")
        return max_keypoints

    def analysed_size(self, width: int, height: int, max_side: int | None = None) -> tuple[int, int]:
        """(width, height) of the image features are extracted on: the photo scaled down to ``max_side``."""
        scale = min(1.0, (max_side or self.max_side) / max(width, height))
        return (max(1, round(width * scale)), max(1, round(height * scale))) if scale < 1.0 else (width, height)

    def extract(self, rgb: np.ndarray, max_side: int | None = None, max_keypoints: int | None = None
                ) -> LocalFeatures:
        """Keypoints (float32 [N, 2], pixels of the analysed image), float32 unit descriptors [N, D], strongest
        first, on a uint8 RGB ``[H, W, 3]`` (or greyscale ``[H, W]``) image."""
        side = self.max_side if max_side is None else self._check_side(max_side)
        count = self.max_keypoints if max_keypoints is None else self._check_keypoints(max_keypoints)
        if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
            raise ValueError("extract() expects a uint8 RGB [H, W, 3] or greyscale [H, W] image")
        if rgb.ndim == 2:
            rgb = np.repeat(rgb[:, :, None], 3, axis=2)
        height, width = rgb.shape[:2]
        size = self.analysed_size(width, height, side)
        if size != (width, height):
            rgb = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        if min(size) < self.min_side:  # below the network's smallest grid: no features, as for a blank image
            return self.empty(size)
        image = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
        image /= 255.0
        keypoints, scores, descriptors = self.session.run(None, {self.input_name: image})
        valid = np.flatnonzero(scores > 0)[:count]  # rows are sorted by score
        desc = descriptors[valid].astype(np.float32, copy=False)
        desc /= np.maximum(np.linalg.norm(desc, axis=1, keepdims=True), 1e-12)  # unit within float rounding
        return LocalFeatures(np.ascontiguousarray(keypoints[valid], dtype=np.float32), np.ascontiguousarray(desc),
                             size, self.method)

    def empty(self, size: tuple[int, int]) -> LocalFeatures:
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, self.descriptor_dim), np.float32), size,
                             self.method)
