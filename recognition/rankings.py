"""Small pieces of the shortlist: two rankings taken in turn, and the regions of a photo each ranked on its own."""

from __future__ import annotations

import numpy as np

from artlens.indexing.store import vlad
from artlens.verification import LocalFeatures


def alternate(first: list[int], second: list[int], k: int) -> list[int]:
    """``first[0], second[0], first[1], …`` without repeats, at most ``k``; the longer list fills the rest."""
    out: list[int] = []
    seen: set[int] = set()
    for i in range(max(len(first), len(second))):
        for ranking in (first, second):
            if i < len(ranking) and ranking[i] not in seen:
                seen.add(ranking[i])
                out.append(ranking[i])
    return out[:k]


def region_masks(features: LocalFeatures, with_regions: bool) -> list[np.ndarray]:
    """Keypoint masks: the whole photo, then (optionally) 4 overlapping quadrants and the centre."""
    if not with_regions:
        return [np.ones(len(features), dtype=bool)]
    return vlad.region_masks(features.keypoints, features.image_size)
