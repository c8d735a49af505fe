"""Photo → embed → FAISS shortlist → geometric verification → calibrated confidence → answer."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from artlens.embedder import Embedder
from artlens.errors import BundleError, ModelError
from artlens.imaging import MAX_BYTES, MAX_PIXELS, DecodeBudget, DecodedImage, load_image, to_gray
from artlens.indexing import descriptor_votes
from artlens.indexing.bundle import Bundle, load_bundle
from artlens.indexing.vector_index import search
from artlens.verification import (
    VERIFY_CONFIG,
    LocalFeatures,
    Verification,
    extract,
    prepare,
    verify,
    vlad_aggregate,
    vlad_compact,
    vlad_region_masks,
    vlad_split_index,
)

from .calibration import Calibration
from .results import Candidate, ModelSummary, Recognition, SegmentHit, SegmentInfo, SegmentRef
from .segments import DEFAULT_CONFIG as SEGMENT_CONFIG
from .segments import SegmentSearch, SegmentVotes

SHORTLIST_MODES = ("auto", "fused", "global", "local")
DEFAULT_CONFIG: dict = {
    "top_k": 20,  # shortlist verified per photo: SMVS precision@1 0.91 at 1.2× the bare forward (docs/benchmarks.md)
    # Which rankings make the shortlist: "fused" (DINOv2 and VLAD by reciprocal-rank fusion), "global"
    # (DINOv2 only), "local" (VLAD only), or "auto": fused for a pretrained model, local for a random-init one
    # (its descriptors rank SMVS at chance level, recall@10 0.17, and would only take verification slots).
    "shortlist": "auto",
    "rrf_k": 60,
    # VLAD of the whole photo plus of 5 overlapping regions (4 quadrants of 60 %, the centre): a painting that
    # fills a small part of a gallery-wall photo dominates some region's VLAD. A reference scores its best
    # similarity over the regions (docs/benchmarks.md, "Shortlist").
    "vlad_regions": True,
    # Bundles with a vote index: the descriptor-vote ranking (indexing/descriptor_votes.py) takes every other
    # shortlist slot, alternating with the ranking above, so neither can crowd the other out.
    "votes": descriptor_votes.SEARCH_CONFIG,
    "verify": VERIFY_CONFIG,
    "max_overlap": 0.5,  # two verified outlines overlapping more than this are one artwork: keep the best
    "descriptor_cache": 1024,  # prepared reference descriptors kept in memory (≈0.5 MB each)
    "segments": SEGMENT_CONFIG,  # bundles built with --segments: segment votes and region verification
}


@dataclass
class Evidence:
    """One shortlisted candidate before the decision."""

    row: int
    rank: int
    similarity: float
    verification: Verification
    segment: SegmentRef | None = None  # the segment of the reference the photo shows (a detail)

    def vector(self) -> np.ndarray:
        """The evidence the calibration sees (recognition/calibration.py FEATURE_NAMES)."""
        v = self.verification
        return np.array([np.log1p(v.inliers if v.plausible else 0), self.similarity], dtype=np.float64)


@dataclass
class Analysis:
    decoded: DecodedImage
    candidates: list[Evidence]
    timings_ms: dict[str, float]
    query_vector: np.ndarray  # [D] global descriptor
    query_features: LocalFeatures
    query_descriptors: np.ndarray  # query_features' descriptors in matching space
    segment_votes: SegmentVotes | None = None  # what the segment indexes said (bundles with segments)


class Recognizer:
    """Holds a loaded bundle and its model; thread-safe for concurrent ``recognize`` calls."""

    def __init__(self, bundle: str | Path | Bundle, model_dir: str | Path | None = None, *,
                 config: dict | None = None, embedder: Embedder | None = None, require_calibration: bool = True):
        self.config = {**DEFAULT_CONFIG, **(config or {})}
        self.bundle = bundle if isinstance(bundle, Bundle) else load_bundle(bundle)
        model_meta = self.bundle.meta["model"]
        if embedder is None:
            model_path = Path(model_dir or model_meta.get("model_dir", ""))
            if not model_path.is_dir():
                raise ModelError(f"model directory {str(model_path)!r} not found; pass --model DIR"
                                 " (the model the bundle was built with)")
            embedder = Embedder(model_path, pooling=model_meta["pooling"])
        # The ONNX graph is size-independent, so the preprocessing recorded with it must match as well.
        mismatch = [f"{key} {value!r} (bundle: {model_meta.get(key)!r})"
                    for key, value in embedder.info.public().items()
                    if key in ("sha256", "pooling", "input_size", "geometry") and value != model_meta.get(key)]
        if mismatch:
            raise ModelError(f"model {embedder.model_dir} is not the one bundle {self.bundle.path} was built with: "
                             + "; ".join(mismatch) + ". Pass --model with the bundle's model, or rebuild the bundle")
        self.embedder = embedder
        self.feature_config = self.bundle.meta["features"]["config"]
        self.calibration = None
        problem = "bundle has no calibration"
        if self.bundle.calibration:
            try:
                self.calibration = Calibration.from_json(self.bundle.calibration)
            except (ValueError, KeyError, TypeError) as exc:
                problem = f"bundle calibration is unusable ({exc})"
        if self.calibration is None and require_calibration:
            raise BundleError(f"{self.bundle.path}: {problem}; run `artlens calibrate --index {self.bundle.path}`"
                              " or rebuild it with `artlens index build`")
        self.model_summary = ModelSummary(id=embedder.info.source, pretrained=embedder.info.pretrained,
                                          sha256=embedder.info.sha256)
        self.segments: SegmentSearch | None = None
        if self.bundle.segments is not None:
            self.segments = SegmentSearch(self.bundle, pretrained=embedder.info.pretrained,
                                          config=self.config["segments"])
        self._vote_owner = None
        if self.bundle.votes is not None and self.config["votes"].get("enabled", True):
            self._vote_owner = descriptor_votes.descriptor_owner(self.bundle.features.offsets)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        # Local features are extracted while ONNX Runtime runs the model: both release the GIL, and the
        # overlap hides part of the feature stage (docs/benchmarks.md).
        self._feature_pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="artlens-features")

    @property
    def threshold(self) -> float:
        return self.calibration.threshold if self.calibration else 1.0

    # -- stages --------------------------------------------------------------------------------------
    def _reference_descriptors(self, row: int) -> np.ndarray:
        desc = self._cache.get(row)
        if desc is None:
            desc = prepare(self.bundle.features.get(row))
            self._cache[row] = desc
            if len(self._cache) > self.config["descriptor_cache"]:
                self._cache.popitem(last=False)
        return desc

    def analyse(self, source: str | Path | bytes, *, top_k: int | None = None, name: str | None = None,
                allowed: np.ndarray | None = None, embed: Callable[[np.ndarray], np.ndarray] | None = None,
                max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES, budget: DecodeBudget | None = None
                ) -> Analysis:
        """Everything up to the decision: the verified shortlist with its evidence, and stage timings.

        ``allowed``: bundle rows the shortlist may hold (metadata filters, applied inside the FAISS searches).
        ``embed``: rgb → descriptor [D]; the service passes a micro-batcher here so concurrent photos share one
        ONNX call. Default: this photo alone through the embedder. ``budget``: the decode counts against it
        (the service's concurrent decodes, imaging.DecodeBudget).
        """
        k = int(top_k or self.config["top_k"])
        if k < 1:
            raise ValueError("top_k must be at least 1")
        t0 = time.perf_counter()
        decoded = load_image(source, name=name, max_side=self.feature_config["max_side"], max_pixels=max_pixels,
                             max_bytes=max_bytes, budget=budget)
        t1 = time.perf_counter()
        # The descriptor votes need only the photo's local features: they run in the same thread, also behind
        # the forward pass.
        features_job = self._feature_pool.submit(self._features_and_votes, decoded.rgb, k, allowed)
        vec = self.embedder.embed_arrays([decoded.rgb]) if embed is None else embed(decoded.rgb)[None]
        t2 = time.perf_counter()
        qf, qd, voted = features_job.result()
        t3 = time.perf_counter()
        votes = None
        if self.segments is not None and self.segments.cfg["enabled"]:
            votes = self.segments.vote(vec[0], qd, _regions(qf, self.config["vlad_regions"]))
            if allowed is not None:  # metadata filters restrict the segment votes too
                keep = set(np.asarray(allowed).tolist())
                votes = SegmentVotes([[r for r in ranking if r in keep] for ranking in votes.rankings],
                                     {r: seg for r, seg in votes.best.items() if r in keep})
        shortlist = self.shortlist(vec[0], qf, qd, k, allowed=allowed,
                                   extra_rankings=votes.rankings if votes and self.segments.cfg["fuse"] else (),
                                   voted=voted)
        if votes:  # the segments' best artworks are verified even when the whole-image rankings missed them
            shortlist += votes.extra_rows(shortlist, self.segments.cfg["slots"])
        t4 = time.perf_counter()
        analysis = Analysis(decoded, [], {}, vec[0], qf, qd, votes)
        analysis.candidates = [self.evidence(analysis, row, rank) for rank, row in enumerate(shortlist, start=1)]
        t5 = time.perf_counter()
        # "features" is only the part of feature extraction that outlasted the model's forward pass.
        analysis.timings_ms = {"decode": (t1 - t0) * 1e3, "embed": (t2 - t1) * 1e3, "features": (t3 - t2) * 1e3,
                               "search": (t4 - t3) * 1e3, "verify": (t5 - t4) * 1e3}
        return analysis

    def _query_features(self, rgb: np.ndarray) -> tuple[LocalFeatures, np.ndarray]:
        qf = extract(to_gray(rgb), self.feature_config)
        return qf, prepare(qf)

    def _features_and_votes(self, rgb: np.ndarray, k: int, allowed: np.ndarray | None
                            ) -> tuple[LocalFeatures, np.ndarray, list[int] | None]:
        qf, qd = self._query_features(rgb)
        return qf, qd, self.vote_ranking(qd, k, allowed)

    def vote_ranking(self, query_descriptors: np.ndarray, k: int, allowed: np.ndarray | None = None
                     ) -> list[int] | None:
        """The descriptor-vote ranking (best ``k`` rows), or None when the bundle has no vote index."""
        if self._vote_owner is None:
            return None
        return descriptor_votes.vote_ranking(self.bundle.votes, self._vote_owner, query_descriptors,
                                             len(self.bundle.artworks), k, self.config["votes"], allowed)

    def shortlist(self, query_vector: np.ndarray, query_features: LocalFeatures, query_descriptors: np.ndarray,
                  k: int, allowed: np.ndarray | None = None, extra_rankings: list[list[int]] | tuple = (),
                  voted: list[int] | None = None) -> list[int]:
        """Bundle rows to verify, best first: DINOv2 and/or VLAD rankings (and ``extra_rankings``: the segment
        votes), fused by reciprocal rank, alternating with ``voted`` (the descriptor-vote ranking) when given.
        ``allowed``: the rows metadata filters leave (searched, not post-filtered)."""
        mode = self.config["shortlist"]
        if mode == "auto":
            mode = "fused" if self.embedder.info.pretrained else "local"
        if mode not in SHORTLIST_MODES:
            raise ValueError(f"unknown shortlist mode {mode!r} ({', '.join(SHORTLIST_MODES)})")
        rankings = [list(r) for r in extra_rankings]
        if mode in {"fused", "global"}:
            rankings.append(search(self.bundle.index, query_vector[None], k, allowed)[1][0])
        if mode in {"fused", "local"}:
            rankings.append(self._vlad_ranking(query_features, query_descriptors, k, allowed))
        scores: dict[int, float] = {}
        for ranking in rankings:
            for rank, row in enumerate(ranking):
                if row >= 0:
                    scores[int(row)] = scores.get(int(row), 0.0) + 1.0 / (self.config["rrf_k"] + rank + 1)
        fused = sorted(scores, key=lambda r: -scores[r])[:k]
        return fused if voted is None else _alternate(voted, fused, k)

    def _vlad_ranking(self, query_features: LocalFeatures, query_descriptors: np.ndarray, k: int,
                      allowed: np.ndarray | None = None) -> list[int]:
        """Top-k rows by VLAD similarity, each scored by its best region of the photo (max, not rank fusion: a
        painting that one region shows clearly is not outvoted by the regions that show the wall or its frame)."""
        if getattr(self, "_vlad_split", None) is None:  # (projection, index of compact VLADs), split once
            self._vlad_split = vlad_split_index(self.bundle.local_index, len(self.bundle.vocabulary))
        projection, index = self._vlad_split
        masks = _regions(query_features, self.config["vlad_regions"])
        vlads = np.stack([vlad_aggregate(query_descriptors[m], self.bundle.vocabulary) for m in masks])
        best: dict[int, float] = {}
        for vector in vlad_compact(vlads, projection):
            # One query at a time: FAISS runs a batch of a few queries on OpenMP threads, which on a busy 2-core
            # machine cost 20 ms instead of 0.03 ms.
            sims, rows = search(index, vector[None], k, allowed)
            for row, sim in zip(rows[0].tolist(), sims[0].tolist(), strict=True):
                if row >= 0 and sim > best.get(row, -np.inf):
                    best[row] = sim
        return sorted(best, key=lambda r: -best[r])[:k]

    def evidence(self, analysis: Analysis, row: int, rank: int) -> Evidence:
        """Verify the photo against bundle row ``row`` (calibration also uses it for rows outside the shortlist)."""
        similarity = float(np.asarray(self.bundle.embeddings[row]) @ analysis.query_vector)
        ref = self.bundle.features.get(row)
        ref_desc = self._reference_descriptors(row)
        ver = verify(analysis.query_features, analysis.query_descriptors, ref, ref_desc, self.config["verify"])
        votes, segment = analysis.segment_votes, None
        if votes is not None and row in votes.best:
            voted = votes.best[row]
            if row in votes.region_rows:
                ver, _ = self.segments.verify_region(analysis.query_features, analysis.query_descriptors, ref,
                                                     ref_desc, voted, ver, self.config["verify"])
            segment = self.segments.shown_segment(row, voted, ver, analysis.query_features.image_size)
        return Evidence(row, rank, similarity, ver, segment)

    def decide(self, analysis: Analysis, *, min_confidence: float | None = None, top_k: int | None = None
               ) -> Recognition:
        t0 = time.perf_counter()
        threshold = self.threshold if min_confidence is None else float(min_confidence)
        accepted: list[Candidate] = []
        best_rejected: Candidate | None = None
        for cand in self.rank(analysis, threshold):
            if cand.verified and not any(_overlap(cand.outline, a.outline) > self.config["max_overlap"]
                                         for a in accepted):
                accepted.append(cand)
            elif best_rejected is None and not cand.verified:
                best_rejected = cand
        timings = dict(analysis.timings_ms)
        timings["decide"] = (time.perf_counter() - t0) * 1e3
        timings["total"] = sum(timings.values())
        return Recognition(
            status="match" if accepted else "no_match", matches=accepted,
            best_rejected=None if accepted else best_rejected, threshold=threshold,
            top_k=int(top_k or self.config["top_k"]), model=self.model_summary,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            image_size=list(analysis.decoded.original_size),
        )

    def rank(self, analysis: Analysis, threshold: float) -> list[Candidate]:
        """Every shortlisted candidate with its calibrated confidence, best first (ties: more inliers)."""
        if self.calibration is None:
            raise BundleError(f"{self.bundle.path}: bundle has no calibration; run `artlens calibrate`")
        cands = analysis.candidates
        conf = self.calibration.confidence(np.stack([c.vector() for c in cands])) if cands else np.zeros(0)
        scored = [self._candidate(c, float(p), threshold) for c, p in zip(cands, conf, strict=True)]
        return sorted(scored, key=lambda c: (-c.confidence, -c.inliers))

    def recognize(self, source: str | Path | bytes, *, top_k: int | None = None,
                  min_confidence: float | None = None, name: str | None = None,
                  allowed: np.ndarray | None = None) -> Recognition:
        return self.decide(self.analyse(source, top_k=top_k, name=name, allowed=allowed),
                           min_confidence=min_confidence, top_k=top_k)

    def _candidate(self, ev: Evidence, confidence: float, threshold: float) -> Candidate:
        art = self.bundle.artworks[ev.row]
        v = ev.verification
        outline = None if v.outline is None else np.round(v.outline, 5).tolist()
        return Candidate(
            object_id=art["object_id"], metadata=art["metadata"], confidence=round(confidence, 5),
            verified=bool(v.plausible and confidence >= threshold), similarity=round(ev.similarity, 5),
            retrieval_rank=ev.rank, matches=v.matches, inliers=v.inliers, inlier_ratio=round(v.inlier_ratio, 4),
            outline=outline, rejected=v.rejected, segment=ev.segment,
        )

    # -- segments (bundles built with --segments) ----------------------------------------------------------
    def _segment_search(self) -> SegmentSearch:
        if self.segments is None:
            raise BundleError(f"{self.bundle.path}: bundle has no segments; rebuild it with `artlens index build"
                              " --segments --sam DIR`")
        return self.segments

    def segments_of(self, object_id: str, *, with_polygons: bool = True) -> list[SegmentInfo]:
        """An artwork's SAM segments, largest first, with polygons in reference-image pixels."""
        return self._segment_search().segments_of(object_id, with_polygons=with_polygons)

    def similar_segments(self, segment_id: str, k: int = 10, *, include_same_artwork: bool = False,
                         space: str = "auto", with_polygons: bool = False) -> list[SegmentHit]:
        """Segments across the collection most like ``segment_id`` (see SegmentSearch.similar_segments)."""
        return self._segment_search().similar_segments(segment_id, k, include_same_artwork=include_same_artwork,
                                                       space=space, with_polygons=with_polygons)


def _overlap(a: list[list[float]] | None, b: list[list[float]] | None) -> float:
    """Intersection over the smaller outline's area (a detail inside a whole counts as the same artwork)."""
    if a is None or b is None:
        return 0.0
    pa, pb = np.asarray(a, np.float32), np.asarray(b, np.float32)
    area_a, area_b = cv2.contourArea(pa), cv2.contourArea(pb)
    if min(area_a, area_b) <= 0:
        return 0.0
    inter, _ = cv2.intersectConvexConvex(pa, pb)
    return float(inter) / min(area_a, area_b)


def _alternate(first: list[int], second: list[int], k: int) -> list[int]:
    """``first[0], second[0], first[1], …`` without repeats, at most ``k``; the longer list fills the rest."""
    out: list[int] = []
    seen: set[int] = set()
    for i in range(max(len(first), len(second))):
        for ranking in (first, second):
            if i < len(ranking) and ranking[i] not in seen:
                seen.add(ranking[i])
                out.append(ranking[i])
    return out[:k]


def _regions(features: LocalFeatures, with_regions: bool) -> list[np.ndarray]:
    """Keypoint masks: the whole photo, then (optionally) 4 overlapping quadrants and the centre."""
    if not with_regions:
        return [np.ones(len(features), dtype=bool)]
    return vlad_region_masks(features.keypoints, features.image_size)
