"""Several paintings in one photo: a second, closer look at a gallery wall.

The first pass sees a photo at the local features' ``max_side`` with at most ``max_keypoints`` keypoints. A photo
of one painting spends them on that painting; a photo of a wall shares them among several paintings and their
gilded frames (whose ornaments take the strongest keypoints), so a painting that verifies easily on its own can
fall short of the threshold, or go unseen.

When the first pass suggests more than it verified — a candidate whose homography is plausible but weak: it shows
where a painting hangs (or, when ``max_explained`` asks for it, verified paintings that leave much of the photo
unexplained) — the photo is decoded again at a higher resolution and looked at in two steps:

1. *Regions* (the overlapping regions of the VLAD ranking that verified outlines do not explain) find where the
   other paintings are: the close-up's features, detected once with a budget that grows with its pixels, less
   those inside the outlines the first pass found, are split by region; each region's keypoints vote for
   artworks, and its best-voted ones are verified against that region's keypoints only. Without the paintings
   already found, a region's votes go to the ones not found yet.
2. *Painting windows*: every painting a weak candidate points to (from the first pass or a region) is looked at in
   a crop around its outline, with features detected in that crop alone. The crop is a photo of that painting, so
   its keypoints are not spent on the rest of the wall, and its evidence is on the scale of a photo of one
   painting — the scale the calibration was fitted on.

The homographies found are mapped back into the first pass's photo coordinates; per artwork the best evidence
counts. docs/walls.md has the method and its numbers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import cv2
import numpy as np

from artlens.config import with_defaults
from artlens.imaging import DecodeBusy, DecodedImage
from artlens.indexing.store.vlad import REGIONS
from artlens.verification import LocalFeatures, Verification, verify
from artlens.verification.geometry import project_corners

DEFAULT_CONFIG: dict = {
    "enabled": True,
    "max_side": 1600,  # the second look decodes the photo with at most this longer side
    # Keypoints of the regions' close-up: the first pass's budget times the ratio of the pixels, at most this.
    "max_keypoints": 4000,
    # A plausible candidate with at least this many inliers that is not verified shows where a painting hangs.
    "hint_inliers": 8,
    # Without a weak candidate the regions are searched only when verified outlines cover less than this share of the
    # photo (0: never). 0.6 searched 26 of SMVS's 46 photos of one painting, for nothing (docs/walls.md).
    "max_explained": 0.0,
    # A first pass that verified this many paintings photographed a wall: its regions are searched for more even
    # without a weak candidate (0: never). Single-painting photos rarely verify two.
    "wall_paintings": 2,
    "explained_region": 0.5,  # a region of the photo this much covered by verified outlines is not looked at
    "region_candidates": 8,  # artworks a region's descriptor votes put first, verified there
    "window_margin": 0.2,  # a painting window is its outline's bounding box grown by this share of its size per side
    "min_window": 0.2,  # shortest side of a painting window, as a share of the photo's side
    "max_windows": 8,  # painting windows looked at, most inliers first
    "min_keypoints": 50,  # a region or window with fewer keypoints is skipped
}

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in [0, 1] photo coordinates
RowEvidence = tuple[int, Verification]  # bundle row, its verification (homography in first-pass photo pixels)
# Whether a row's verification is verified: what the recognizer would answer (its calibration and threshold).
Verified = Callable[[int, Verification], bool]
# rgb, max_side, max_keypoints → the photo's local features and their descriptors in matching space: the same
# detector as the first pass (whatever the bundle's features are), with other pixels and keypoints.
Detect = Callable[[np.ndarray, int, int], tuple[LocalFeatures, np.ndarray]]
_GRID = 64  # cells per side of the raster that measures how much of the photo outlines cover


@dataclass(frozen=True)
class Reference:
    """A reference's local features, and its descriptors in matching space."""

    features: LocalFeatures
    descriptors: np.ndarray


@dataclass(frozen=True)
class Plan:
    """What a photo's first pass leaves to look at."""

    hints: list[RowEvidence]  # weak plausible candidates, most inliers first: each gets a painting window
    regions: list[Box]  # regions of the photo to search for paintings the first pass did not see
    known: list[np.ndarray] = field(default_factory=list)  # outlines of the paintings found (verified and weak)

    def __bool__(self) -> bool:
        return bool(self.hints or self.regions)


def config_of(config: Mapping | None) -> dict:
    """The settings: DEFAULT_CONFIG with ``config`` on top; an unknown key is an error naming the known ones."""
    unknown = sorted(set(config or {}) - set(DEFAULT_CONFIG))
    if unknown:
        raise ValueError(f"unknown walls setting(s) {', '.join(map(repr, unknown))} ({', '.join(DEFAULT_CONFIG)})")
    return with_defaults(DEFAULT_CONFIG, config)


def _hints(evidence: Iterable[RowEvidence], verified: Verified, cfg: Mapping) -> list[RowEvidence]:
    """The weak candidates: plausible, ``hint_inliers`` or more, not verified; most inliers first."""
    weak = [(row, ver) for row, ver in evidence
            if ver.plausible and ver.inliers >= cfg["hint_inliers"] and not verified(row, ver)]
    return sorted(weak, key=lambda hint: -hint[1].inliers)


def _raster(outlines: Sequence[np.ndarray], box: Box, cells: int) -> np.ndarray:
    """``cells``×``cells`` uint8 raster of ``box``: 1 where one of ``outlines`` (quads in [0, 1] photo
    coordinates) covers it."""
    x0, y0, x1, y1 = box
    raster = np.zeros((cells, cells), np.uint8)
    scale = np.array([cells / max(x1 - x0, 1e-9), cells / max(y1 - y0, 1e-9)])
    for quad in outlines:
        # A clip far outside the raster keeps int32 from overflowing and leaves the edges crossing it unchanged
        # (a plausible outline is at most a few hundred times the photo).
        points = np.clip((np.asarray(quad, np.float64) - (x0, y0)) * scale, -(2**20), 2**20)
        cv2.fillPoly(raster, [np.round(points).astype(np.int32)], 1)
    return raster


def coverage(outlines: Sequence[np.ndarray], box: Box = (0.0, 0.0, 1.0, 1.0)) -> float:
    """The share of ``box`` that the union of ``outlines`` (quads in [0, 1] photo coordinates) covers."""
    return float(_raster(outlines, box, _GRID).mean()) if outlines else 0.0


def outside(points: np.ndarray, outlines: Sequence[np.ndarray]) -> np.ndarray:
    """Which ``points`` ([N, 2] in [0, 1] photo coordinates) lie outside all ``outlines``, bool [N]."""
    if not outlines or len(points) == 0:
        return np.ones(len(points), dtype=bool)
    cells = 4 * _GRID
    raster = _raster(outlines, (0.0, 0.0, 1.0, 1.0), cells)
    index = np.clip((np.asarray(points) * cells).astype(np.int64), 0, cells - 1)
    return raster[index[:, 1], index[:, 0]] == 0


def plan(evidence: Sequence[RowEvidence], verified: Verified, config: Mapping | None = None) -> Plan:
    """What is worth a second look after a first pass that gave ``evidence``: the weak candidates, and the regions
    of the photo that verified outlines do not explain. Nothing when no candidate is weak, fewer than
    ``wall_paintings`` verified and those explain ``max_explained`` of the photo, or there are none (a photo where
    nothing matched shows no painting of the collection to look closer at)."""
    cfg = config_of(config)
    settled = [ver.outline for row, ver in evidence if ver.plausible and verified(row, ver)]
    hints = _hints(evidence, verified, cfg)
    wall = cfg["wall_paintings"] and len(settled) >= cfg["wall_paintings"]
    if not hints and not wall and (not settled or coverage(settled) >= cfg["max_explained"]):
        return Plan([], [])
    regions = [box for box in REGIONS if coverage(settled, box) < cfg["explained_region"]]
    return Plan(hints, regions, settled + [ver.outline for _, ver in hints])


def window_box(outline: np.ndarray, config: Mapping | None = None) -> Box:
    """A painting window: an outline's bounding box inside the photo, grown by ``window_margin`` of its size on each
    side and to at least ``min_window`` of the photo's."""
    cfg = config_of(config)
    lo = np.clip(np.min(outline, axis=0), 0.0, 1.0)
    hi = np.clip(np.max(outline, axis=0), 0.0, 1.0)
    size = np.maximum(hi - lo, 1e-6)
    lo, hi = lo - cfg["window_margin"] * size, hi + cfg["window_margin"] * size
    short = np.maximum(cfg["min_window"] - (hi - lo), 0.0) / 2
    lo, hi = np.clip(lo - short, 0.0, 1.0), np.clip(hi + short, 0.0, 1.0)
    return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])


def to_photo(ver: Verification, corner: np.ndarray, close_size: tuple[int, int], first_size: tuple[int, int],
             reference_size: tuple[int, int]) -> Verification:
    """A verification in a window whose corner lies at ``corner`` (pixels of the close-up, ``close_size``), in the
    first pass's photo coordinates (``first_size`` pixels): homography and outline."""
    if ver.homography is None:
        return ver
    scale = np.diag([first_size[0] / close_size[0], first_size[1] / close_size[1], 1.0])
    shift = np.array([[1.0, 0.0, corner[0]], [0.0, 1.0, corner[1]], [0.0, 0.0, 1.0]])
    homography = scale @ shift @ ver.homography
    outline = project_corners(homography, reference_size) / np.array(first_size, dtype=np.float64)
    # Counts (inliers, matches inside the outline) stay the window's own: they were measured there.
    return replace(ver, homography=homography, outline=outline)


@dataclass
class CloseUp:
    """The photo decoded at the second look's resolution, and its features: once for the regions, per window."""

    rgb: np.ndarray
    detect: Detect
    region_keypoints: int  # the budget of the close-up's features that the regions split
    window_keypoints: int  # a painting window's least budget (the first pass's: a window is a photo of a painting)
    _features: tuple[LocalFeatures, np.ndarray] | None = field(default=None, repr=False)

    @property
    def size(self) -> tuple[int, int]:
        return self.rgb.shape[1], self.rgb.shape[0]

    def _pixels(self, box: Box) -> tuple[np.ndarray, np.ndarray]:
        width, height = self.size
        corner = np.array([round(box[0] * width), round(box[1] * height)], np.float32)
        far = np.array([max(round(box[2] * width), corner[0] + 1), max(round(box[3] * height), corner[1] + 1)],
                       np.float32)
        return corner, far

    def region(self, box: Box, found: Sequence[np.ndarray] = ()) -> tuple[LocalFeatures, np.ndarray, np.ndarray]:
        """The close-up's keypoints inside ``box`` and outside the ``found`` outlines, as a photo of their own
        (pixels from the region's corner), their descriptors in matching space, and the region's corner in pixels
        of the close-up."""
        if self._features is None:
            features, descriptors = self.detect(self.rgb, max(self.size), self.region_keypoints)
            keep = outside(features.keypoints / np.array(self.size, np.float32), found)
            self._features = (LocalFeatures(features.keypoints[keep], features.descriptors[keep],
                                            features.image_size, features.method), descriptors[keep])
        features, descriptors = self._features
        corner, far = self._pixels(box)
        inside = np.all((features.keypoints >= corner) & (features.keypoints < far), axis=1)
        size = (int(far[0] - corner[0]), int(far[1] - corner[1]))
        return (LocalFeatures(features.keypoints[inside] - corner, features.descriptors[inside], size,
                              features.method), descriptors[inside], corner)

    def window(self, box: Box) -> tuple[LocalFeatures, np.ndarray, np.ndarray]:
        """Features detected in the crop ``box`` alone, their descriptors, and the crop's corner in the close-up.
        The crop's budget is a first-pass photo's, or the close-up's share when that is more (a painting that fills
        the photo: the ornaments of its frame would take a first-pass budget)."""
        corner, far = self._pixels(box)
        crop = np.ascontiguousarray(self.rgb[int(corner[1]):int(far[1]), int(corner[0]):int(far[0])])
        share = crop.shape[0] * crop.shape[1] / (self.rgb.shape[0] * self.rgb.shape[1])
        budget = max(self.window_keypoints, round(self.region_keypoints * share))
        features, descriptors = self.detect(crop, max(crop.shape[:2]), budget)
        return features, descriptors, corner


def look(evidence: Sequence[RowEvidence], verified: Verified, first_size: tuple[int, int],
         photo_size: tuple[int, int], decode: Callable[[int], DecodedImage],
         rank: Callable[[np.ndarray, int], list[int]], reference: Callable[[int], Reference], detect: Detect,
         first_keypoints: int, verify_config: Mapping | None = None, config: Mapping | None = None
         ) -> dict[int, Verification]:
    """The second look at a photo (``photo_size`` pixels in the file) whose first pass gave ``evidence`` (analysed
    at ``first_size`` with at most ``first_keypoints``): per bundle row, its best plausible verification in a region
    or painting window, in the first pass's photo coordinates. Empty when :func:`plan` finds nothing worth it or the
    photo has no more pixels than were analysed. ``verified(row, verification)``: whether the recognizer would
    answer it.

    ``decode(max_side)``: the photo decoded again; ``rank(descriptors, k)``: the ``k`` best rows for a region's
    descriptors (matching space); ``reference(row)``: a reference's features; ``detect``: the first pass's
    detector."""
    cfg = config_of(config)
    more_pixels = min(max(photo_size), cfg["max_side"]) > max(first_size)
    todo = plan(evidence, verified, cfg) if cfg["enabled"] and more_pixels else Plan([], [])
    if not todo:
        return {}
    try:
        rgb = decode(cfg["max_side"]).rgb
    except DecodeBusy:  # the service is decoding all it may at once: the first pass's answer stands
        return {}
    ratio = rgb.shape[0] * rgb.shape[1] / (first_size[0] * first_size[1])
    if ratio <= 1.0:
        return {}
    close = CloseUp(rgb, detect, min(cfg["max_keypoints"], round(first_keypoints * ratio)), first_keypoints)
    found: dict[int, Verification] = {}

    def verify_in(row: int, features: LocalFeatures, descriptors: np.ndarray, corner: np.ndarray) -> None:
        ref = reference(row)
        ver = verify(features, descriptors, ref.features, ref.descriptors, verify_config)
        if ver.plausible and (row not in found or ver.inliers > found[row].inliers):
            found[row] = to_photo(ver, corner, close.size, first_size, ref.features.image_size)

    regions = [close.region(box, todo.known) for box in todo.regions]
    regions = [region for region in regions if len(region[0]) >= cfg["min_keypoints"]]
    # Each artwork is verified once, in the region whose votes rank it best (the first such region on ties).
    best: dict[int, tuple[int, int]] = {}  # row → (its place in the region's ranking, region)
    for index, (_, descriptors, _) in enumerate(regions):
        for place, row in enumerate(rank(descriptors, cfg["region_candidates"])):
            if row not in best or place < best[row][0]:
                best[row] = (place, index)
    for row, (_, index) in best.items():
        verify_in(row, *regions[index])
    # Every weak candidate, of the first pass or of a region, in a window of its own (the region's evidence of
    # a row replaces the first pass's outline when it has more inliers).
    weak = {row: ver for row, ver in [*_hints(found.items(), verified, cfg), *todo.hints]
            if row not in found or found[row].inliers <= ver.inliers}
    for row, ver in sorted(weak.items(), key=lambda hint: -hint[1].inliers)[:cfg["max_windows"]]:
        features, descriptors, corner = close.window(window_box(ver.outline, cfg))
        if len(features) >= cfg["min_keypoints"]:
            verify_in(row, features, descriptors, corner)
    return found


def outline_overlap(a: list[list[float]] | None, b: list[list[float]] | None) -> float:
    """Intersection over the smaller outline's area (a detail inside a whole counts as the same artwork)."""
    if a is None or b is None:
        return 0.0
    pa, pb = np.asarray(a, np.float32), np.asarray(b, np.float32)
    area_a, area_b = cv2.contourArea(pa), cv2.contourArea(pb)
    if min(area_a, area_b) <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    return float(inter) / min(area_a, area_b)
