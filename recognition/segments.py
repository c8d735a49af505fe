"""Segments in recognition and search: segment votes for the shortlist, verification against a segment's region,
the segment a detail photo shows, and segment search (similar segments, segments of an artwork).

A visitor's photo of a detail looks little like the whole artwork but much like one SAM segment of it. The photo
searches the bundle's segment indexes (indexing/segments.py): always the weight-free local one (PCA-reduced
VLAD of the RootSIFT keypoints inside each segment), and the DINOv2 one when the model is pretrained (a
random-init model's vectors rank at chance). Each search becomes one artwork ranking (an artwork ranks by its
best segment) that joins the reciprocal-rank fusion of the shortlist, and the best ``slots`` artworks it names
are always verified, even when the fused whole-image rankings left them out. A candidate that got segment votes
is verified twice: against the whole reference and against the keypoints in its best segment's (grown)
bounding box only — fewer distractor keypoints for the ratio test; the better plausible result counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from artlens.errors import BundleError, UnknownIdError
from artlens.indexing import amg
from artlens.indexing.bundle import Bundle
from artlens.indexing.segments import keypoints_in_box
from artlens.indexing.vector_index import search
from artlens.verification import LocalFeatures, Verification, verify, vlad_aggregate

from .results import SegmentHit, SegmentInfo, SegmentRef

DEFAULT_CONFIG: dict = {
    "enabled": True,  # False: a bundle's segments are ignored (whole-image-only recognition, for comparisons)
    "top_k": 30,  # segment hits taken per query descriptor (whole photo and each VLAD region)
    "slots": 5,  # the segment ranking's best artworks are verified even beyond the shortlist's K
    "region_verify": 10,  # the segment rankings' best artworks are also verified against their segment's region
    "region_margin": 0.25,  # a segment's bbox grows by this fraction of its size on each side for verification
    "min_region_keypoints": 24,  # fewer reference keypoints there: verify against the whole reference only
    "detail_fraction": 0.6,  # a verified match shows a detail when less than this share of the artwork is in view
    "polygon_tolerance": 1.5,  # mask pixels (at the stored mask resolution) of polygon simplification
}
SPACES = ("auto", "dinov2", "local")


@dataclass
class SegmentVotes:
    """What the segment indexes said about one photo."""

    rankings: list[list[int]]  # artwork rows, best first: one list per searched index
    best: dict[int, int] = field(default_factory=dict)  # artwork row → its best-scoring segment
    region_rows: set[int] = field(default_factory=set)  # rows verified against their segment's region as well

    def extra_rows(self, shortlist: list[int], slots: int) -> list[int]:
        """The segment rankings' best ``slots`` artworks that the shortlist does not hold yet."""
        have, extra = set(shortlist), []
        for ranking in self.rankings:
            for row in ranking[:slots]:
                if row not in have:
                    have.add(row)
                    extra.append(row)
        return extra


class SegmentSearch:
    """The segment side of a loaded bundle; shared by recognition and segment search."""

    def __init__(self, bundle: Bundle, *, pretrained: bool, config: dict | None = None):
        if bundle.segments is None:
            raise BundleError(f"{bundle.path}: bundle has no segments; rebuild it with `artlens index build"
                              " --segments --sam DIR`")
        self.cfg = {**DEFAULT_CONFIG, **(config or {})}
        self.bundle = bundle
        self.store = bundle.segments
        self.pretrained = pretrained
        self.row_of = {a["object_id"]: i for i, a in enumerate(bundle.artworks)}

    # -- recognition -------------------------------------------------------------------------------------
    def vote(self, query_vector: np.ndarray, query_descriptors: np.ndarray, regions: list[np.ndarray]
             ) -> SegmentVotes:
        """Search the segment indexes with the photo: the local one with the VLAD of the whole photo and of each
        region (``regions``: keypoint masks), the DINOv2 one with the photo's vector when pretrained."""
        k = int(self.cfg["top_k"])
        vlads = np.stack([vlad_aggregate(query_descriptors[m], self.bundle.vocabulary) for m in regions])
        scores, ids = search(self.store.local_index, self.store.project(vlads), k)
        local_best = self._best_per_artwork(scores, ids)
        rankings = [sorted(local_best, key=lambda r: -local_best[r][0])]
        best = {row: seg for row, (_, seg) in local_best.items()}
        if self.pretrained:
            scores, ids = search(self.store.index, query_vector[None], k)
            dino_best = self._best_per_artwork(scores, ids)
            rankings.append(sorted(dino_best, key=lambda r: -dino_best[r][0]))
            for row, (_, seg) in dino_best.items():
                best.setdefault(row, seg)
        top = int(self.cfg["region_verify"])
        return SegmentVotes(rankings, best, {row for ranking in rankings for row in ranking[:top]})

    def _best_per_artwork(self, scores: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, int]]:
        best: dict[int, tuple[float, int]] = {}
        for s, j in zip(scores.ravel(), ids.ravel(), strict=True):
            if j < 0 or s <= 0:  # padding, or a segment without a local descriptor
                continue
            row = int(self.store.artwork[j])
            if row not in best or s > best[row][0]:
                best[row] = (float(s), int(j))
        return best

    def verify_region(self, query: LocalFeatures, query_desc: np.ndarray, ref: LocalFeatures,
                      ref_desc: np.ndarray, seg: int, whole: Verification, config: dict) -> tuple[Verification, bool]:
        """Verify the photo against the keypoints in segment ``seg``'s grown bbox; returns the better of that and
        ``whole`` (plausible first, then more inliers) and whether the region's was better."""
        rec = self.store.records[seg]
        art = self.bundle.artworks[rec["artwork"]]
        inside = keypoints_in_box(ref.keypoints, ref.image_size, rec["bbox"], (art["width"], art["height"]),
                                  self.cfg["region_margin"])
        n = int(inside.sum())
        if n < self.cfg["min_region_keypoints"] or n == len(ref):
            return whole, False
        sub = LocalFeatures(ref.keypoints[inside], ref.descriptors[inside], ref.image_size, ref.method)
        region = verify(query, query_desc, sub, ref_desc[inside], config)
        if (region.plausible, region.inliers) > (whole.plausible, whole.inliers):
            return region, True
        return whole, False

    def shown_segment(self, row: int, voted: int, verification: Verification, photo_size: tuple[int, int]
                      ) -> SegmentRef | None:
        """The segment a match shows, or None when the photo shows (most of) the whole artwork.

        With a plausible homography the part of the reference in view is known: the artwork's segment whose
        bbox overlaps it best is the one shown. Without one, the segment that voted is reported."""
        if not verification.plausible:
            return self.reference(voted)
        art = self.bundle.artworks[row]
        view = _visible_box(verification, photo_size, self.bundle.features.sizes[row], (art["width"], art["height"]))
        if view is None:
            return self.reference(voted)
        x0, y0, x1, y1 = view
        if (x1 - x0) * (y1 - y0) >= self.cfg["detail_fraction"] * art["width"] * art["height"]:
            return None
        own = self.store.of_artwork(row)
        if not len(own):
            return None
        best = max(own, key=lambda j: _box_iou(self.store.records[j]["bbox"], view))
        return self.reference(int(best) if _box_iou(self.store.records[best]["bbox"], view) > 0 else voted)

    # -- search ------------------------------------------------------------------------------------------
    def reference(self, seg: int) -> SegmentRef:
        rec = self.store.records[seg]
        return SegmentRef(id=rec["id"], bbox=list(rec["bbox"]), polygon=self.polygon(seg))

    def polygon(self, seg: int) -> list[list[float]]:
        rec = self.store.records[seg]
        art = self.bundle.artworks[rec["artwork"]]
        return amg.polygons(rec["rle"], (art["width"], art["height"]), tolerance=self.cfg["polygon_tolerance"])

    def index_of(self, segment_id: str) -> int:
        j = self.store.by_id.get(segment_id)
        if j is None:
            raise UnknownIdError(f"segment {segment_id!r} is not in bundle {self.bundle.path} (ids look like"
                                 " '<object_id>#<n>'; `artlens segments list` shows an artwork's segments)")
        return j

    def segments_of(self, object_id: str, *, with_polygons: bool = True) -> list[SegmentInfo]:
        """An artwork's segments, largest first."""
        row = self.row_of.get(object_id)
        if row is None:
            raise UnknownIdError(f"object {object_id!r} is not in bundle {self.bundle.path}")
        return [self._info(int(j), with_polygons) for j in self.store.of_artwork(row)]

    def _info(self, j: int, with_polygon: bool) -> SegmentInfo:
        rec = self.store.records[j]
        return SegmentInfo(id=rec["id"], object_id=self.bundle.artworks[rec["artwork"]]["object_id"],
                           bbox=list(rec["bbox"]), area=rec["area"], predicted_iou=rec["predicted_iou"],
                           stability=rec["stability"], polygon=self.polygon(j) if with_polygon else None)

    def similar_segments(self, segment_id: str, k: int = 10, *, include_same_artwork: bool = False,
                         space: str = "auto", with_polygons: bool = False) -> list[SegmentHit]:
        """Segments of the collection most like ``segment_id``, best first (never itself).

        ``space``: ``local`` (weight-free VLAD of the segment's keypoints: finds the same motif, e.g. a copy or
        a reused cartoon), ``dinov2`` (semantic similarity; meaningful only for a pretrained model), or
        ``auto`` (dinov2 when the model is pretrained, local otherwise)."""
        if space not in SPACES:
            raise ValueError(f"unknown segment search space {space!r} ({', '.join(SPACES)})")
        if k < 1:
            raise ValueError("k must be at least 1")
        j = self.index_of(segment_id)
        if space == "auto":
            space = "dinov2" if self.pretrained else "local"
        vectors, index = (self.store.vectors, self.store.index) if space == "dinov2" else \
            (self.store.local, self.store.local_index)
        query = np.asarray(vectors[j], np.float32)
        if not np.any(query):
            return []  # a segment with too few keypoints has no local descriptor
        row = int(self.store.artwork[j])
        skip = len(self.store.of_artwork(row)) if not include_same_artwork else 1
        scores, ids = search(index, query[None], k + skip)
        hits = []
        for s, i in zip(scores[0], ids[0], strict=True):
            if i < 0 or i == j or (not include_same_artwork and int(self.store.artwork[i]) == row):
                continue
            rec = self.store.records[i]
            art = self.bundle.artworks[rec["artwork"]]
            hits.append(SegmentHit(id=rec["id"], object_id=art["object_id"], score=round(float(s), 5),
                                   bbox=list(rec["bbox"]), area=rec["area"], metadata=art["metadata"],
                                   polygon=self.polygon(int(i)) if with_polygons else None))
            if len(hits) == k:
                break
        return hits


def _visible_box(ver: Verification, photo_size: tuple[int, int], analysed_size, original_size
                 ) -> tuple[float, float, float, float] | None:
    """The photo's frame mapped into the reference (original pixels), clipped to it, as x0, y0, x1, y1.
    The verification's homography maps analysed reference pixels → analysed photo pixels (``photo_size``)."""
    try:
        inv = np.linalg.inv(ver.homography)
    except np.linalg.LinAlgError:
        return None
    pw, ph = (float(v) for v in photo_size)
    frame = np.array([[0, 0], [pw, 0], [pw, ph], [0, ph]], np.float64)
    seen = cv2.perspectiveTransform(frame[None], inv)[0]
    if not np.all(np.isfinite(seen)):
        return None
    aw, ah = (float(v) for v in analysed_size)
    sx, sy = original_size[0] / aw, original_size[1] / ah
    x0, y0 = np.clip(seen.min(axis=0) * (sx, sy), 0, original_size)
    x1, y1 = np.clip(seen.max(axis=0) * (sx, sy), 0, original_size)
    if x1 <= x0 or y1 <= y0:
        return None
    return float(x0), float(y0), float(x1), float(y1)


def _box_iou(bbox: list[float], box: tuple[float, float, float, float]) -> float:
    x, y, w, h = bbox
    ix = max(0.0, min(x + w, box[2]) - max(x, box[0]))
    iy = max(0.0, min(y + h, box[3]) - max(y, box[1]))
    inter = ix * iy
    union = w * h + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / union if union > 0 else 0.0
