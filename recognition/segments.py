"""Segments in recognition and search: segment votes for the shortlist, verification against a segment's region,
the segment a detail photo shows, and segment search (similar segments, segments of an artwork).

A visitor's photo of a detail looks little like the whole artwork but much like one SAM segment of it. The photo
searches the bundle's segment indexes (indexing/segments.py): always the weight-free local one (PCA-reduced
VLAD of the RootSIFT keypoints inside each segment), and the DINOv2 one when the model is pretrained (a
random-init model's vectors rank at chance). Each search becomes one artwork ranking (an artwork ranks by its
best segment); the best ``slots`` artworks it names are verified on top of the whole-image shortlist (``fuse``:
the rankings also join the shortlist's reciprocal-rank fusion). A candidate that got segment votes
is verified twice: against the whole reference and against its best segment's detail features (finer-scale
keypoints of the segment's region, indexing/segments.py); the better plausible result counts.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import cv2
import numpy as np

from artlens.errors import BundleError, UnknownIdError
from artlens.indexing import amg, compressed_index
from artlens.indexing.bundle import Bundle
from artlens.indexing.segments import keypoints_in_box
from artlens.indexing.vector_index import search
from artlens.verification import LocalFeatures, Verification, prepare, verify, vlad_aggregate

from .results import SegmentHit, SegmentInfo, SegmentRef

DEFAULT_CONFIG: dict = {
    "enabled": True,  # False: a bundle's segments are ignored (whole-image-only recognition, for comparisons)
    "top_k": 30,  # segment hits taken per query descriptor (whole photo and each VLAD region)
    "slots": 5,  # the segment ranking's best artworks are verified even beyond the shortlist's K
    # Segment rankings only *add* candidates (slots) by default. Fused into the whole-image reciprocal-rank fusion
    # they also reorder it, and on SMVS whole photos they pushed one right artwork out of K = 20 (0.935 → 0.913).
    "fuse": False,
    "region_verify": 10,  # the segment rankings' best artworks are also verified against their segment's region
    "region_margin": 0.25,  # a segment's bbox grows by this fraction of its size on each side for verification
    "min_region_keypoints": 24,  # fewer reference keypoints there: verify against the whole reference only
    "detail_fraction": 0.6,  # a verified match shows a detail when less than this share of the artwork is in view
    "shown_coverage": 0.5,  # the segment shown is the largest with at least this share of its mask in view
    "polygon_tolerance": 1.5,  # mask pixels (at the stored mask resolution) of polygon simplification
    "detail_cache": 512,  # segments whose detail features are kept in matching space (≈ 0.5 MB each)
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
        self._detail_cache: OrderedDict[int, tuple[LocalFeatures, np.ndarray]] = OrderedDict()
        self._detail_lock = threading.Lock()

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
            scores, ids = self._dinov2_search(query_vector[None], k)
            dino_best = self._best_per_artwork(scores, ids)
            rankings.append(sorted(dino_best, key=lambda r: -dino_best[r][0]))
            for row, (_, seg) in dino_best.items():
                best.setdefault(row, seg)
        top = int(self.cfg["region_verify"])
        return SegmentVotes(rankings, best, {row for ranking in rankings for row in ranking[:top]})

    def _dinov2_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The DINOv2 segment index; a compressed one (large collections) re-ranks its candidates exactly from
        the memory-mapped float vectors (docs/index-benchmarks.md: 10-recall@10 0.63 → 0.99 at 1M)."""
        if compressed_index.search_parameter(self.store.index) is None:  # exact: nothing to re-rank
            return search(self.store.index, queries, k)
        return compressed_index.search(self.store.index, queries, k, rerank=self.store.vectors)

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
        """Verify the photo against segment ``seg``'s region; returns the better of that and ``whole`` (plausible
        first, then more inliers) and whether the region's was better.

        The region is the segment's detail features when the bundle has them (finer-scale keypoints of its grown
        bbox: what a close-up shows), else the artwork's own keypoints inside that bbox (fewer distractors for
        the ratio test)."""
        sub, sub_desc = self._region_features(ref, ref_desc, seg)
        if sub is None:
            return whole, False
        region = verify(query, query_desc, sub, sub_desc, config)
        if (region.plausible, region.inliers) > (whole.plausible, whole.inliers):
            return region, True
        return whole, False

    def _region_features(self, ref: LocalFeatures, ref_desc: np.ndarray, seg: int
                         ) -> tuple[LocalFeatures | None, np.ndarray | None]:
        detail = self.store.detail
        if detail is not None and detail.offsets[seg + 1] - detail.offsets[seg] >= self.cfg["min_region_keypoints"]:
            with self._detail_lock:  # the service verifies several photos at once
                cached = self._detail_cache.get(seg)
                if cached is not None:
                    self._detail_cache.move_to_end(seg)
                    return cached
            kps, desc = detail.of(seg)
            sub = LocalFeatures(np.asarray(kps), np.asarray(desc), ref.image_size, ref.method)
            cached = (sub, prepare(sub))
            with self._detail_lock:
                self._detail_cache[seg] = cached
                while len(self._detail_cache) > self.cfg["detail_cache"]:
                    self._detail_cache.popitem(last=False)
            return cached
        rec = self.store.records[seg]
        art = self.bundle.artworks[rec["artwork"]]
        inside = keypoints_in_box(ref.keypoints, ref.image_size, rec["bbox"], (art["width"], art["height"]),
                                  self.cfg["region_margin"])
        n = int(inside.sum())
        if n < self.cfg["min_region_keypoints"] or n == len(ref):
            return None, None
        return LocalFeatures(ref.keypoints[inside], ref.descriptors[inside], ref.image_size, ref.method), \
            ref_desc[inside]

    def shown_segment(self, row: int, voted: int, verification: Verification, photo_size: tuple[int, int]
                      ) -> SegmentRef | None:
        """The segment a match shows, or None when the photo shows (most of) the whole artwork.

        With a plausible homography the part of the reference in view is known (the photo's frame mapped back).
        The segment shown is the largest one that is mostly (``shown_coverage``) in view: a photo of the figures
        under a sky shows the figures, even though the sky segment's box overlaps the view more. Without a
        homography, or when no segment is mostly in view, the segment that voted is reported."""
        if not verification.plausible:
            return self.reference(voted)
        art = self.bundle.artworks[row]
        size = (art["width"], art["height"])
        view = _visible_quad(verification, photo_size, self.bundle.features.sizes[row], size)
        if view is None:
            return self.reference(voted)
        if _polygon_area(view) >= self.cfg["detail_fraction"] * size[0] * size[1]:
            return None
        best, best_area = voted, 0.0
        for j in self.store.of_artwork(row):
            mask = amg.decode_rle(self.store.records[j]["rle"]).astype(bool)
            mh, mw = mask.shape
            in_view = np.zeros((mh, mw), np.uint8)
            cv2.fillConvexPoly(in_view, np.round(view * (mw / size[0], mh / size[1])).astype(np.int32), 1)
            total = int(mask.sum())
            inside = int(np.count_nonzero(mask & in_view.astype(bool)))
            if total and inside / total >= self.cfg["shown_coverage"] and inside > best_area:
                best, best_area = int(j), float(inside)
        return self.reference(best)

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
        scores, ids = (self._dinov2_search(query[None], k + skip) if space == "dinov2"
                       else search(index, query[None], k + skip))
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


def _visible_quad(ver: Verification, photo_size: tuple[int, int], analysed_size, original_size
                  ) -> np.ndarray | None:
    """The photo's frame mapped into the reference (original pixels) and clipped to it: float64 [N, 2] convex
    polygon. The verification's homography maps analysed reference pixels → analysed photo pixels."""
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
    seen = seen * (original_size[0] / aw, original_size[1] / ah)
    ow, oh = (float(v) for v in original_size)
    canvas = np.array([[0, 0], [ow, 0], [ow, oh], [0, oh]], np.float32)
    area, clipped = cv2.intersectConvexConvex(cv2.convexHull(seen.astype(np.float32)).reshape(-1, 2), canvas)
    if area <= 0 or clipped is None:
        return None
    return clipped.reshape(-1, 2).astype(np.float64)


def _polygon_area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))
