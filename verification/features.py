"""Local features for geometric verification: OpenCV detectors, no model weights.

Keypoints are returned in pixel coordinates of the image they were computed on, plus that image's size, so
callers can normalise. Descriptors are stored compactly (uint8) and turned into matching space by
:func:`matching_space` only when matched. Learned features (:data:`LEARNED_METHODS`, extracted by
artlens/local_model.py on ONNX Runtime) come as float32 unit vectors; bundles and queries carry them quantised by
:func:`quantise_unit` (uint8, one byte per dimension), which :func:`matching_space` turns back into unit vectors.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from artlens.config import with_defaults

# hloc-style defaults; `max_side` and `max_keypoints` were chosen on the real sets (docs/benchmarks.md).
DEFAULT_CONFIG: dict = {
    "method": "rootsift",  # rootsift | sift | orb | akaze
    # Longest side the detector sees. 640 against 800: the same SMVS answers, more Estense and museum-mix paintings
    # found, no false positive on any set, 29 % less feature time for phone photos (docs/benchmarks.md).
    "max_side": 640,
    "max_keypoints": 1000,
    "contrast_threshold": 0.02,  # SIFT: lower than OpenCV's 0.04 keeps keypoints on dim gallery photos
}


@dataclass(frozen=True)
class LocalFeatures:
    keypoints: np.ndarray  # float32 [N, 2] (x, y) pixels in the analysed image
    # uint8 [N, D]: OpenCV methods, and LEARNED_METHODS quantised (quantise_unit); float32 unit vectors [N, D]:
    # LEARNED_METHODS straight from the model
    descriptors: np.ndarray
    image_size: tuple[int, int]  # (width, height) of the analysed image
    method: str = "rootsift"

    def __len__(self) -> int:
        return int(self.keypoints.shape[0])


# Descriptors from a network, L2-normalised by it: matched by inner product as they are.
LEARNED_METHODS = frozenset({"xfeat", "aliked"})


# Learned unit descriptors in one byte per dimension: value · 127 rounded, offset by 128. Query and reference sides
# are quantised alike, so matching stays symmetric; cosine to the float vector ≥ 0.9998 for 64-d XFeat.
QUANT_SCALE = 127.0
QUANT_OFFSET = 128


def quantise_unit(desc: np.ndarray) -> np.ndarray:
    """float unit descriptors [N, D] → uint8 [N, D] (:data:`QUANT_SCALE`, :data:`QUANT_OFFSET`)."""
    q = np.clip(np.rint(np.asarray(desc, dtype=np.float32) * QUANT_SCALE), -QUANT_SCALE, QUANT_SCALE)
    return (q + QUANT_OFFSET).astype(np.uint8)


def dequantise_unit(desc: np.ndarray) -> np.ndarray:
    """uint8 descriptors from :func:`quantise_unit` → float32 unit vectors."""
    d = np.asarray(desc, dtype=np.float32) - QUANT_OFFSET
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return d


def binary_method(method: str) -> bool:
    return method in {"orb", "akaze"}


def _detector(method: str, max_keypoints: int, contrast_threshold: float):
    if method in {"sift", "rootsift"}:
        return cv2.SIFT_create(nfeatures=max_keypoints, contrastThreshold=contrast_threshold)
    if method == "orb":
        return cv2.ORB_create(nfeatures=max_keypoints, scaleFactor=1.2, nlevels=8, fastThreshold=10)
    if method == "akaze":
        return cv2.AKAZE_create(threshold=0.0005)
    if method in LEARNED_METHODS:
        raise ValueError(f"{method} features come from a learned model: extract them with artlens.local_model")
    raise ValueError(f"unknown local feature method {method!r} (rootsift, sift, orb, akaze)")


def extract(gray: np.ndarray, config: dict | None = None) -> LocalFeatures:
    """Detect and describe up to ``max_keypoints`` keypoints on a uint8 greyscale image."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    if gray.ndim != 2 or gray.dtype != np.uint8:
        raise ValueError("extract() expects a 2-D uint8 greyscale image")
    height, width = gray.shape
    scale = min(1.0, cfg["max_side"] / max(height, width))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
    det = _detector(cfg["method"], cfg["max_keypoints"], cfg["contrast_threshold"])
    kps, desc = det.detectAndCompute(gray, None)
    size = (gray.shape[1], gray.shape[0])
    if desc is None or len(kps) == 0:
        dim = 32 if binary_method(cfg["method"]) else 128
        return LocalFeatures(np.zeros((0, 2), np.float32), np.zeros((0, dim), np.uint8), size, cfg["method"])
    if len(kps) > cfg["max_keypoints"]:  # AKAZE has no cap of its own; keep the strongest
        # A stable sort: SIFT gives one location several orientations with equal responses, and NumPy's unstable
        # sorts order such ties differently with and without AVX-512, which changed the features kept per CPU.
        order = np.argsort([-k.response for k in kps], kind="stable")[: cfg["max_keypoints"]]
        kps = [kps[i] for i in order]
        desc = desc[order]
    pts = cv2.KeyPoint_convert(kps).reshape(-1, 2)  # float32 (x, y), without a Python object per keypoint
    if not binary_method(cfg["method"]):
        desc = np.clip(np.rint(desc), 0, 255)  # OpenCV SIFT values are already integers in [0, 255]
    return LocalFeatures(pts, desc.astype(np.uint8), size, cfg["method"])


def matching_space(desc: np.ndarray, method: str) -> np.ndarray:
    """Descriptors as float32 unit vectors (inner product = similarity); RootSIFT = sqrt of L1-normalised SIFT."""
    if binary_method(method):
        raise ValueError("binary descriptors are matched by Hamming distance, not in a float space")
    if method in LEARNED_METHODS:  # quantised (bundles, queries) or the model's own float32 output
        return dequantise_unit(desc) if desc.dtype == np.uint8 else np.ascontiguousarray(desc, dtype=np.float32)
    d = desc.astype(np.float32)
    if method == "rootsift":
        d /= np.maximum(d.sum(axis=1, keepdims=True), 1e-6)
        return np.sqrt(d)
    d /= np.maximum(np.linalg.norm(d, axis=1, keepdims=True), 1e-6)
    return d
