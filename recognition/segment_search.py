"""Segments in recognition and search: the segment votes a photo adds to the shortlist, the evidence a candidate
gains from its segment's region and the segment it shows, and segment search (similar segments, an artwork's
segments). A detail photo looks little like the whole artwork but much like one SAM segment of it; the steps and
their measurements are in docs/segments.md ("Recognition").
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from artlens.errors import BundleError, UnknownIdError
from artlens.indexing.store import rle
from artlens.indexing.store.bundle import Bundle
from artlens.indexing.store.segments import keypoints_in_box
from artlens.indexing.store.vectors import search, search_compressed, search_parameter
from artlens.verification import LocalFeatures, Verification, prepare, verify

from .results import SegmentHit, SegmentInfo, SegmentRef
from .settings import MethodUnavailable, SegmentSettings


@dataclass
class SegmentVotes:
    """What the segment indexes said about one photo."""

    rankings: list[list[int]]  # artwork rows, best first: one list per searched index
    best: dict[int, int]  # artwork row → its best-scoring segment
    region_rows: set[int]  # rows verified against their segment's region as well
    slots: int  # each ranking's best this many artworks are verified beyond the shortlist
    fuse: bool  # the rankings also join the shortlist's reciprocal-rank fusion

    @property
    def fused_rankings(self) -> list[list[int]]:
        """The rankings the shortlist fuses with its own (none unless ``fuse``)."""
        return self.rankings if self.fuse else []

    def extra_rows(self, shortlist: list[int]) -> list[int]:
        """The segment rankings' best ``slots`` artworks that the shortlist does not hold yet."""
        have, extra = set(shortlist), []
        for ranking in self.rankings:
            for row in ranking[:self.slots]:
                if row not in have:
                    have.add(row)
                    extra.append(row)
        return extra


class SegmentSearch:
    """The segment side of a loaded bundle; shared by recognition and segment search."""

    def __init__(self, bundle: Bundle, settings: SegmentSettings):
        if bundle.segments is None:
            raise BundleError(f"{bundle.path}: bundle has no segments; rebuild it with `artlens index build"
                              " --segments --sam DIR`")
        self.settings = settings
        self.bundle = bundle
        self.store = bundle.segments
        self._detail_cache: OrderedDict[int, tuple[LocalFeatures, np.ndarray]] = OrderedDict()
        self._detail_lock = threading.Lock()

    # -- recognition -------------------------------------------------------------------------------------
    def photo_votes(self, query_vector: np.ndarray | None, region_vlads: np.ndarray,
                    allowed: np.ndarray | None = None) -> SegmentVotes | None:
        """The segment candidates for a photo (None when segments are switched off): the local index searched
        with the VLAD of the whole photo and of each region (``region_vlads``), the DINOv2 one with the
        photo's vector when pretrained (``query_vector`` is None only where the settings do not use the global
        embedding, never for a pretrained model). ``allowed``: the rows metadata filters leave (they get no region
        verification)."""
        if not self.settings.enabled:
            return None
        votes = self._vote(query_vector, region_vlads)
        if allowed is None:
            return votes
        keep = set(np.asarray(allowed).tolist())
        return SegmentVotes([[r for r in ranking if r in keep] for ranking in votes.rankings],
                            {r: seg for r, seg in votes.best.items() if r in keep}, set(), votes.slots, votes.fuse)

    def _vote(self, query_vector: np.ndarray | None, region_vlads: np.ndarray) -> SegmentVotes:
        k = self.settings.hits_per_query
        scores, ids = search(self.store.local_index, self.store.project(region_vlads), k)
        local_best = self._best_per_artwork(scores, ids)
        rankings = [sorted(local_best, key=lambda r: -local_best[r][0])]
        best = {row: seg for row, (_, seg) in local_best.items()}
        if self.settings.pretrained:
            scores, ids = self._dinov2_search(query_vector[None], k)
            dino_best = self._best_per_artwork(scores, ids)
            rankings.append(sorted(dino_best, key=lambda r: -dino_best[r][0]))
            for row, (_, seg) in dino_best.items():
                best.setdefault(row, seg)
        top = self.settings.region_verify
        return SegmentVotes(rankings, best, {row for ranking in rankings for row in ranking[:top]},
                            self.settings.slots, self.settings.fuse)

    def _dinov2_search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The DINOv2 segment index; a compressed one (large collections) re-ranks its candidates exactly from
        the memory-mapped float vectors (docs/index-benchmarks.md: 10-recall@10 0.63 → 0.99 at 1M)."""
        if search_parameter(self.store.index) is None:  # exact: nothing to re-rank
            return search(self.store.index, queries, k)
        return search_compressed(self.store.index, queries, k, rerank=self.store.vectors)

    def _best_per_artwork(self, scores: np.ndarray, ids: np.ndarray) -> dict[int, tuple[float, int]]:
        best: dict[int, tuple[float, int]] = {}
        for score, segment in zip(scores.ravel(), ids.ravel(), strict=True):
            if segment < 0 or score <= 0:  # padding, or a segment without a local descriptor
                continue
            row = int(self.store.artwork[segment])
            if row not in best or score > best[row][0]:
                best[row] = (float(score), int(segment))
        return best

    def refine(self, votes: SegmentVotes, row: int, query: LocalFeatures, query_descriptors: np.ndarray,
               reference: LocalFeatures, reference_descriptors: np.ndarray, whole: Verification,
               verify_config: Mapping[str, Any]) -> tuple[Verification, SegmentRef | None]:
        """A candidate's evidence with what its segment votes add: the better of ``whole`` and its best segment's
        region (rows among ``votes.region_rows``), and the segment the photo shows (None: no votes, or the whole
        artwork is in view)."""
        voted = votes.best.get(row)
        if voted is None:
            return whole, None
        verification = whole
        if row in votes.region_rows:
            verification, _ = self.verify_region(query, query_descriptors, reference, reference_descriptors, voted,
                                                 whole, verify_config)
        return verification, self.shown_segment(row, voted, verification, query.image_size)

    def verify_region(self, query: LocalFeatures, query_descriptors: np.ndarray, reference: LocalFeatures,
                      reference_descriptors: np.ndarray, seg: int, whole: Verification,
                      config: Mapping[str, Any] | None) -> tuple[Verification, bool]:
        """Verify the photo against segment ``seg``'s region; returns the better of that and ``whole`` (plausible
        first, then more inliers) and whether the region's was better.

        The region is the segment's detail features when the bundle has them (finer-scale keypoints of its grown
        bbox: what a close-up shows), else the artwork's own keypoints inside that bbox (fewer distractors for
        the ratio test)."""
        region_features, region_descriptors = self._region_features(reference, reference_descriptors, seg)
        if region_features is None:
            return whole, False
        region = verify(query, query_descriptors, region_features, region_descriptors, config)
        if (region.plausible, region.inliers) > (whole.plausible, whole.inliers):
            return region, True
        return whole, False

    def _region_features(self, reference: LocalFeatures, reference_descriptors: np.ndarray, seg: int
                         ) -> tuple[LocalFeatures | None, np.ndarray | None]:
        detail = self.store.detail
        if detail is not None and detail.offsets[seg + 1] - detail.offsets[seg] >= self.settings.min_region_keypoints:
            with self._detail_lock:  # the service verifies several photos at once
                cached = self._detail_cache.get(seg)
                if cached is not None:
                    self._detail_cache.move_to_end(seg)
                    return cached
            keypoints, descriptors = detail.of(seg)
            region = LocalFeatures(np.asarray(keypoints), np.asarray(descriptors), reference.image_size,
                                   reference.method)
            cached = (region, prepare(region))
            with self._detail_lock:
                self._detail_cache[seg] = cached
                while len(self._detail_cache) > self.settings.detail_cache:
                    self._detail_cache.popitem(last=False)
            return cached
        record = self.store.records[seg]
        art = self.bundle.artworks[record["artwork"]]
        inside = keypoints_in_box(reference.keypoints, reference.image_size, record["bbox"],
                                  (art["width"], art["height"]), self.settings.region_margin)
        count = int(inside.sum())
        if count < self.settings.min_region_keypoints or count == len(reference):
            return None, None
        return (LocalFeatures(reference.keypoints[inside], reference.descriptors[inside], reference.image_size,
                              reference.method), reference_descriptors[inside])

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
        if _polygon_area(view) >= self.settings.detail_fraction * size[0] * size[1]:
            return None
        best, best_area = voted, 0.0
        for segment in self.store.of_artwork(row):
            mask = rle.decode_rle(self.store.records[segment]["rle"]).astype(bool)
            mh, mw = mask.shape
            in_view = np.zeros((mh, mw), np.uint8)
            cv2.fillConvexPoly(in_view, np.round(view * (mw / size[0], mh / size[1])).astype(np.int32), 1)
            total = int(mask.sum())
            inside = int(np.count_nonzero(mask & in_view.astype(bool)))
            if total and inside / total >= self.settings.shown_coverage and inside > best_area:
                best, best_area = int(segment), float(inside)
        return self.reference(best)

    # -- search ------------------------------------------------------------------------------------------
    def reference(self, seg: int) -> SegmentRef:
        record = self.store.records[seg]
        return SegmentRef(id=record["id"], bbox=list(record["bbox"]), polygon=self.polygon(seg))

    def polygon(self, seg: int) -> list[list[float]]:
        record = self.store.records[seg]
        art = self.bundle.artworks[record["artwork"]]
        return rle.polygons(record["rle"], (art["width"], art["height"]), tolerance=self.settings.polygon_tolerance)

    def index_of(self, segment_id: str) -> int:
        segment = self.store.by_id.get(segment_id)
        if segment is None:
            raise UnknownIdError(f"segment {segment_id!r} is not in bundle {self.bundle.path} (ids look like"
                                 " '<object_id>#<n>'; `artlens segments list` shows an artwork's segments)")
        return segment

    def segments_of(self, object_id: str, *, with_polygons: bool = True) -> list[SegmentInfo]:
        """An artwork's segments, largest first."""
        row = self.bundle.row(object_id)
        return [self._info(int(segment), with_polygons) for segment in self.store.of_artwork(row)]

    def _info(self, segment: int, with_polygon: bool) -> SegmentInfo:
        record = self.store.records[segment]
        return SegmentInfo(id=record["id"], object_id=self.bundle.artworks[record["artwork"]]["object_id"],
                           bbox=list(record["bbox"]), area=record["area"], predicted_iou=record["predicted_iou"],
                           stability=record["stability"], polygon=self.polygon(segment) if with_polygon else None)

    def similar_segments(self, segment_id: str, k: int = 10, *, include_same_artwork: bool = False,
                         space: str = "auto", with_polygons: bool = False) -> list[SegmentHit]:
        """Segments of the collection most like ``segment_id``, best first (never itself).

        ``space``: ``local`` (weight-free VLAD of the segment's keypoints: finds the same motif, e.g. a copy or
        a reused cartoon), ``dinov2`` (semantic similarity; meaningful only for a pretrained model), or
        ``auto`` (dinov2 when the model is pretrained, local otherwise). MethodUnavailable: dinov2 in a bundle
        without DINOv2 segment vectors."""
        space = self.settings.resolve_space(space)
        if k < 1:
            raise ValueError("k must be at least 1")
        if space == "dinov2" and self.store.vectors is None:
            raise MethodUnavailable("segment search in space 'dinov2' compares DINOv2 segment vectors, and this index"
                                    " was built without them (random-init model); use space=local, or rebuild the"
                                    " index with `artlens index build --segments --shortlist fused`")
        query_segment = self.index_of(segment_id)
        vectors, index = (self.store.vectors, self.store.index) if space == "dinov2" else \
            (self.store.local, self.store.local_index)
        query = np.asarray(vectors[query_segment], np.float32)
        if not np.any(query):
            return []  # a segment with too few keypoints has no local descriptor
        row = int(self.store.artwork[query_segment])
        skip = len(self.store.of_artwork(row)) if not include_same_artwork else 1
        scores, ids = (self._dinov2_search(query[None], k + skip) if space == "dinov2"
                       else search(index, query[None], k + skip))
        hits = []
        for score, segment in zip(scores[0], ids[0], strict=True):
            if segment < 0 or segment == query_segment or (
                    not include_same_artwork and int(self.store.artwork[segment]) == row):
                continue
            record = self.store.records[segment]
            art = self.bundle.artworks[record["artwork"]]
            hits.append(SegmentHit(id=record["id"], object_id=art["object_id"], score=round(float(score), 5),
                                   bbox=list(record["bbox"]), area=record["area"], metadata=art["metadata"],
                                   polygon=self.polygon(int(segment)) if with_polygons else None))
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
