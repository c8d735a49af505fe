"""Stored segment masks (COCO RLE, as the build encodes them) decoded, and their outlines as polygons."""

from __future__ import annotations

import cv2
import numpy as np
from pycocotools import mask as mask_utils


def decode_rle(rle: dict) -> np.ndarray:
    return mask_utils.decode({"size": rle["size"], "counts": rle["counts"].encode("ascii")}).astype(bool)


def polygons(rle: dict, image_size: tuple[int, int], *, tolerance: float = 1.5, max_polygons: int = 8
             ) -> list[list[float]]:
    """Outer contours of a stored mask, simplified, as flat [x0, y0, x1, y1, …] in image pixels (w, h)."""
    mask = decode_rle(rle).astype(np.uint8)
    mh, mw = mask.shape
    sx, sy = image_size[0] / mw, image_size[1] / mh
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)[:max_polygons]
    out = []
    for c in contours:
        approx = cv2.approxPolyDP(c, tolerance, True).reshape(-1, 2).astype(np.float64)
        if len(approx) < 3:
            continue
        # Pixel centres → continuous coordinates, then to the image's pixel frame.
        approx = (approx + 0.5) * (sx, sy)
        out.append([round(float(v), 1) for v in approx.ravel()])
    return out
