"""Photo → local features (+ the model's embedding where it is used) → shortlist → geometric verification →
calibrated confidence → answer."""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np

from artlens.embedder import Embedder
from artlens.errors import BundleError, ModelError
from artlens.imaging import MAX_BYTES, MAX_PIXELS, DecodeBudget, DecodedImage, load_image
from artlens.indexing.store import vlad
from artlens.indexing.store import votes as descriptor_votes
from artlens.indexing.store.bundle import Bundle, load_bundle
from artlens.indexing.store.vectors import search
from artlens.local_features import FeatureExtractor
from artlens.verification import FEATURE_CONFIG, LocalFeatures, Verification, prepare, verify

from .confidence import Calibration, Evidence
from .parallel import map_with_helpers, resolve_threads
from .rankings import alternate, region_masks
from .results import Candidate, ModelSummary, Recognition
from .segment_search import SegmentSearch, SegmentVotes
from .settings import MethodUnavailable, RecognitionSettings, resolve_settings
from .walls import Reference, look, outline_overlap


@dataclass
class Analysis:
    decoded: DecodedImage
    candidates: list[Evidence]
    timings_ms: dict[str, float]
    query_vector: np.ndarray | None  # [D] global descriptor; None when the settings do not use it (no forward)
    query_features: LocalFeatures
    query_descriptors: np.ndarray  # query_features' descriptors in matching space
    top_k: int  # the shortlist size it was analysed with
    segment_votes: SegmentVotes | None = None  # what the segment indexes said (bundles with segments)


class Recognizer:
    """Holds a loaded bundle and its model; thread-safe for concurrent ``recognize`` calls.

    ``config``: overrides of the recognition settings (recognition/settings.py); ``settings`` holds them resolved."""

    def __init__(self, bundle: str | Path | Bundle, model_dir: str | Path | None = None, *,
                 config: dict | None = None, embedder: Embedder | None = None, require_calibration: bool = True):
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
        self.extractor = FeatureExtractor.for_bundle(self.bundle.meta, self.bundle.path)  # a learned one: its model
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
        on_similarity = self.calibration is not None and "similarity" in self.calibration.features
        self.settings: RecognitionSettings = resolve_settings(config, pretrained=embedder.info.pretrained,
                                                              built_for=self.bundle.built_for,
                                                              calibrated_on_similarity=on_similarity,
                                                              matching=self.bundle.meta["features"].get("matching"),
                                                              learned_features=self.extractor.model is not None)
        if self.settings.uses_global_embedding and self.bundle.embeddings is None:
            needs = "its calibration" if on_similarity else f"shortlist {self.settings.shortlist!r}"
            raise BundleError(f"{needs} needs global embeddings, and this bundle was built without them (random-init"
                              f" model, shortlist {self.bundle.built_for!r}); rebuild it with `artlens index build"
                              " --shortlist fused`, or recognise with shortlist local", path=self.bundle.path)
        self.model_summary = ModelSummary(id=embedder.info.source, pretrained=embedder.info.pretrained,
                                          sha256=embedder.info.sha256)
        self.segments: SegmentSearch | None = None
        if self.bundle.segments is not None:
            self.segments = SegmentSearch(self.bundle, self.settings.segments)
        self._vote_owner = None
        if self.bundle.votes is not None and self.settings.votes.get("enabled", True):
            self._vote_owner = descriptor_votes.OffsetOwner(self.bundle.features.offsets)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._vlad_parts: tuple[vlad.Projection | None, faiss.Index] | None = None
        # Local features are extracted while ONNX Runtime runs the model, and the shortlist's candidates are
        # verified on several threads: the heavy parts release the GIL (docs/benchmarks.md).
        self._verify_threads = resolve_threads(self.settings.verify_threads)
        self._pool = ThreadPoolExecutor(max_workers=max(4, self._verify_threads),
                                        thread_name_prefix="artlens-recognition")
        self.signals = self._signals()

    def _signals(self) -> list[str]:
        """What the answers rest on, in a fixed order (every Recognition's ``signals``)."""
        settings = self.settings
        used = {"local_features": True,  # verification: local-feature matches and a homography, always
                "learned_features": self.extractor.model is not None,  # those features come from a network
                "vlad": settings.shortlist in {"fused", "local"},
                "descriptor_votes": self._vote_owner is not None,
                "segments": self.segments is not None and settings.segments.enabled,
                "global_embedding": settings.uses_global_embedding}
        return [signal for signal, on in used.items() if on]

    @property
    def threshold(self) -> float:
        return self.calibration.threshold if self.calibration else 1.0

    # -- stages --------------------------------------------------------------------------------------
    def _reference_descriptors(self, row: int) -> np.ndarray:
        descriptors = self._cache.get(row)
        if descriptors is None:
            descriptors = prepare(self.bundle.features.get(row))
            self._cache[row] = descriptors
            if len(self._cache) > self.settings.descriptor_cache:
                self._cache.popitem(last=False)
        return descriptors

    def analyse(self, source: str | Path | bytes, *, top_k: int | None = None, name: str | None = None,
                allowed: np.ndarray | None = None, embed: Callable[[np.ndarray], np.ndarray] | None = None,
                max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES, budget: DecodeBudget | None = None
                ) -> Analysis:
        """Everything up to the decision: the verified shortlist with its evidence, and stage timings.

        ``allowed``: bundle rows the shortlist may hold (metadata filters, applied inside the FAISS searches).
        ``embed``: rgb → descriptor [D]; the service passes a micro-batcher here so concurrent photos share one
        ONNX call. Default: this photo alone through the embedder. Neither runs when the settings do not use the
        global embedding (``uses_global_embedding``): then there is no "embed" stage. ``budget``: the decode
        counts against it (the service's concurrent decodes, imaging.DecodeBudget).
        """
        k = self.settings.shortlist_size(top_k)
        t0 = time.perf_counter()
        decoded = load_image(source, name=name, max_side=self.feature_config["max_side"], max_pixels=max_pixels,
                             max_bytes=max_bytes, budget=budget)
        t1 = time.perf_counter()
        query_vector = None
        if self.settings.uses_global_embedding:
            # The descriptor votes need only the photo's local features: they run in the same thread, also behind
            # the forward pass.
            features_job = self._pool.submit(self._features_and_votes, decoded.rgb, k, allowed)
            query_vector = self.embedder.embed_arrays([decoded.rgb])[0] if embed is None else embed(decoded.rgb)
            t2 = time.perf_counter()
            features, descriptors, voted = features_job.result()
        else:
            t2 = t1
            features, descriptors, voted = self._features_and_votes(decoded.rgb, k, allowed)
        t3 = time.perf_counter()
        # The VLADs of the whole photo and its regions serve the VLAD ranking and the segment votes alike.
        segments_vote = self.segments is not None and self.segments.settings.enabled
        region_vlads = (self._region_vlads(features, descriptors)
                        if segments_vote or self.settings.shortlist in {"fused", "local"} else None)
        segment_votes = self.segments.photo_votes(query_vector, region_vlads, allowed) if segments_vote else None
        shortlist = self._shortlist(query_vector, region_vlads, k, allowed=allowed,
                                    extra_rankings=segment_votes.fused_rankings if segment_votes else (), voted=voted)
        if segment_votes:  # the segments' best artworks are verified even when the whole-image rankings missed them
            shortlist += segment_votes.extra_rows(shortlist)
        t4 = time.perf_counter()
        analysis = Analysis(decoded, [], {}, query_vector, features, descriptors, k, segment_votes)
        analysis.candidates = map_with_helpers(self._pool, lambda job: self.evidence(analysis, job[1], job[0]),
                                               list(enumerate(shortlist, start=1)), self._verify_threads)
        # A gallery wall: a closer look at the regions of the photo the first pass left unverified (walls.py).
        self._second_look(analysis, lambda side: load_image(source, name=name, max_side=side, max_pixels=max_pixels,
                                                            max_bytes=max_bytes, budget=budget), allowed)
        t5 = time.perf_counter()
        # With a forward pass, "features" is only the part of feature extraction that outlasted it.
        embed_ms = {"embed": (t2 - t1) * 1e3} if query_vector is not None else {}
        analysis.timings_ms = {"decode": (t1 - t0) * 1e3, **embed_ms, "features": (t3 - t2) * 1e3,
                               "search": (t4 - t3) * 1e3, "verify": (t5 - t4) * 1e3}
        return analysis

    def _query_features(self, rgb: np.ndarray, max_side: int | None = None, max_keypoints: int | None = None
                        ) -> tuple[LocalFeatures, np.ndarray]:
        """The photo's local features and their descriptors in matching space; ``max_side``/``max_keypoints``
        replace the bundle's (the second look at a wall analyses more pixels and keypoints)."""
        features = self.extractor.extract(rgb, max_side, max_keypoints)
        return features, prepare(features)

    def _features_and_votes(self, rgb: np.ndarray, k: int, allowed: np.ndarray | None
                            ) -> tuple[LocalFeatures, np.ndarray, list[int] | None]:
        features, descriptors = self._query_features(rgb)
        return features, descriptors, self.vote_ranking(descriptors, k, allowed)

    def vote_ranking(self, query_descriptors: np.ndarray, k: int, allowed: np.ndarray | None = None
                     ) -> list[int] | None:
        """The descriptor-vote ranking (best ``k`` rows), or None when the bundle has no vote index."""
        if self._vote_owner is None:
            return None
        return descriptor_votes.vote_ranking(self.bundle.votes, self._vote_owner, query_descriptors,
                                             len(self.bundle.artworks), k, self.settings.votes, allowed)

    def _shortlist(self, query_vector: np.ndarray | None, region_vlads: np.ndarray | None, k: int,
                   allowed: np.ndarray | None = None, extra_rankings: list[list[int]] | tuple = (),
                   voted: list[int] | None = None) -> list[int]:
        """Bundle rows to verify, best first: DINOv2 and/or VLAD rankings (and ``extra_rankings``: the segment
        votes), fused by reciprocal rank, alternating with ``voted`` (the descriptor-vote ranking) when given.
        ``region_vlads``: the photo's VLADs (whole, then regions). ``allowed``: the rows metadata filters leave
        (searched, not post-filtered)."""
        mode = self.settings.shortlist
        rankings = [list(r) for r in extra_rankings]
        if mode in {"fused", "global"}:
            rankings.append(search(self.bundle.index, query_vector[None], k, allowed)[1][0])
        if mode in {"fused", "local"}:
            rankings.append(self._vlad_ranking(region_vlads, k, allowed))
        scores: dict[int, float] = {}
        for ranking in rankings:
            for rank, row in enumerate(ranking):
                if row >= 0:
                    scores[int(row)] = scores.get(int(row), 0.0) + 1.0 / (self.settings.rrf_k + rank + 1)
        fused = sorted(scores, key=lambda r: -scores[r])[:k]
        return fused if voted is None else alternate(voted, fused, k)

    def _region_vlads(self, features: LocalFeatures, descriptors: np.ndarray) -> np.ndarray:
        """VLAD of the whole photo, then (with ``vlad_regions``) of 4 overlapping quadrants and the centre."""
        return vlad.aggregate_regions(descriptors, self.bundle.vocabulary,
                                      region_masks(features, self.settings.vlad_regions))

    def _vlad_ranking(self, region_vlads: np.ndarray, k: int, allowed: np.ndarray | None = None) -> list[int]:
        """Top-k rows by VLAD similarity, each scored by its best region of the photo (max, not rank fusion: a
        painting that one region shows clearly is not outvoted by the regions that show the wall or its frame)."""
        projection, index = self._vlad_split()
        best: dict[int, float] = {}
        for vector in vlad.compact(region_vlads, projection):
            # One query at a time: FAISS runs a batch of a few queries on OpenMP threads, which on a busy 2-core
            # machine cost 20 ms instead of 0.03 ms.
            sims, rows = search(index, vector[None], k, allowed)
            for row, sim in zip(rows[0].tolist(), sims[0].tolist(), strict=True):
                if row >= 0 and sim > best.get(row, -np.inf):
                    best[row] = sim
        return sorted(best, key=lambda r: -best[r])[:k]

    def _vlad_split(self) -> tuple[vlad.Projection | None, faiss.Index]:
        """The VLAD index split into its PCA projection and the index of compact VLADs, split once."""
        if self._vlad_parts is None:
            self._vlad_parts = vlad.split_index(self.bundle.local_index, len(self.bundle.vocabulary))
        return self._vlad_parts

    def similar_artworks(self, row: int, count: int, method: str = "auto") -> tuple[str, list[tuple[int, float]]]:
        """The method used ("auto": ``settings.similar_method``) and the ``count`` artworks nearest to bundle row
        ``row`` by it, best first, as (row, similarity), never ``row`` itself: "vlad" compares the compact
        weight-free VLAD vectors, "dinov2" the global embeddings (MethodUnavailable in a bundle without them)."""
        method = self.settings.resolve_similar_method(method)
        if method == "dinov2" and self.bundle.embeddings is None:
            raise MethodUnavailable("similar artworks by method 'dinov2' compare global embeddings, and this index was"
                                    " built without them (random-init model); use method=vlad, or rebuild the index"
                                    " with `artlens index build --shortlist fused`")
        if method == "vlad":
            index = self._vlad_split()[1]
            vector = index.reconstruct(row)
        else:
            index, vector = self.bundle.index, np.asarray(self.bundle.embeddings[row], dtype=np.float32)
        scores, ids = search(index, vector[None], count + 1)
        hits = [(int(i), float(s)) for s, i in zip(scores[0], ids[0], strict=True) if i >= 0 and int(i) != row]
        return method, hits[:count]

    def _similarity(self, analysis: Analysis, row: int) -> float | None:
        """The photo's global-descriptor cosine to bundle row ``row``; None where it was not embedded."""
        if analysis.query_vector is None:
            return None
        return float(np.asarray(self.bundle.embeddings[row]) @ analysis.query_vector)

    def evidence(self, analysis: Analysis, row: int, rank: int) -> Evidence:
        """Verify the photo against bundle row ``row`` (calibration also uses it for rows outside the shortlist)."""
        similarity = self._similarity(analysis, row)
        ref = self.bundle.features.get(row)
        ref_desc = self._reference_descriptors(row)
        ver = verify(analysis.query_features, analysis.query_descriptors, ref, ref_desc, self.settings.verify)
        segment = None
        if analysis.segment_votes is not None and self.segments is not None:
            ver, segment = self.segments.refine(analysis.segment_votes, row, analysis.query_features,
                                                analysis.query_descriptors, ref, ref_desc, ver, self.settings.verify)
        return Evidence(row, rank, similarity, ver, segment)

    def _second_look(self, analysis: Analysis, decode: Callable[[int], DecodedImage],
                     allowed: np.ndarray | None) -> None:
        """Each candidate's evidence with what a closer look at the photo's windows found (``walls.look``): the
        better verification of a shortlisted row, new candidates for rows only a window found. Only with a
        calibration (what is verified decides what is weak); calibration/calibrate.py switches it off while one is
        fitted: the fit sees the first pass alone, and a window, a photo of one painting, gives evidence on the
        scale of the fit's simulated photos."""
        calibration = self.calibration
        if not self.settings.walls["enabled"] or calibration is None:
            return

        def verified(row: int, ver: Verification) -> bool:
            vector = Evidence(row, 0, self._similarity(analysis, row), ver).vector()
            return ver.plausible and float(calibration.confidence(vector[None])[0]) >= calibration.threshold

        found = look([(c.row, c.verification) for c in analysis.candidates], verified,
                     analysis.query_features.image_size, analysis.decoded.original_size, decode,
                     lambda descriptors, k: self._window_ranking(descriptors, k, allowed),
                     lambda row: Reference(self.bundle.features.get(row), self._reference_descriptors(row)),
                     self._query_features, self.feature_config.get("max_keypoints", FEATURE_CONFIG["max_keypoints"]),
                     self.settings.verify, self.settings.walls)
        by_row = {c.row: c for c in analysis.candidates}
        for row, ver in found.items():
            evidence = by_row.get(row)
            if evidence is None:
                evidence = Evidence(row, len(analysis.candidates) + 1, self._similarity(analysis, row), ver)
                analysis.candidates.append(evidence)
            elif (ver.plausible, ver.inliers) > (evidence.verification.plausible, evidence.verification.inliers):
                evidence.verification = ver
            else:
                continue
            votes, size = analysis.segment_votes, analysis.query_features.image_size
            if votes is not None and self.segments is not None and row in votes.best:
                evidence.segment = self.segments.shown_segment(row, votes.best[row], ver, size)

    def _window_ranking(self, descriptors: np.ndarray, k: int, allowed: np.ndarray | None) -> list[int]:
        """The best ``k`` rows for a window of the photo: its descriptor votes, or its VLAD without a vote index."""
        voted = self.vote_ranking(descriptors, k, allowed)
        if voted is not None:
            return voted
        return self._vlad_ranking(vlad.aggregate(descriptors, self.bundle.vocabulary)[None], k, allowed)

    def fused_analysis(self, analyses: list[Analysis], candidates: list[Evidence]) -> Analysis:
        """One analysis of several frames of one view (a burst): ``candidates`` gathered from the frames, the
        first frame's photo, the stage timings summed over the frames."""
        timings: dict[str, float] = {}
        for analysis in analyses:
            for stage, ms in analysis.timings_ms.items():
                timings[stage] = timings.get(stage, 0.0) + ms
        first = analyses[0]
        return Analysis(first.decoded, candidates, timings, first.query_vector, first.query_features,
                        first.query_descriptors, first.top_k)

    def decide(self, analysis: Analysis, *, min_confidence: float | None = None) -> Recognition:
        t0 = time.perf_counter()
        threshold = self.threshold if min_confidence is None else float(min_confidence)
        accepted: list[Candidate] = []
        best_rejected: Candidate | None = None
        for cand in self.rank(analysis, threshold):
            if cand.verified and not any(outline_overlap(cand.outline, a.outline) > self.settings.max_overlap
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
            top_k=analysis.top_k, model=self.model_summary,
            timings_ms={k: round(v, 3) for k, v in timings.items()},
            image_size=list(analysis.decoded.original_size), signals=list(self.signals),
        )

    def rank(self, analysis: Analysis, threshold: float) -> list[Candidate]:
        """Every shortlisted candidate with its calibrated confidence, best first (ties: more inliers)."""
        if self.calibration is None:
            raise BundleError(f"{self.bundle.path}: bundle has no calibration; run `artlens calibrate`")
        candidates = analysis.candidates
        confidences = (self.calibration.confidence(np.stack([c.vector() for c in candidates])) if candidates
                       else np.zeros(0))
        scored = [self._candidate(c, float(p), threshold) for c, p in zip(candidates, confidences, strict=True)]
        return sorted(scored, key=lambda c: (-c.confidence, -c.inliers))

    def recognize(self, source: str | Path | bytes, *, top_k: int | None = None,
                  min_confidence: float | None = None, name: str | None = None,
                  allowed: np.ndarray | None = None) -> Recognition:
        return self.decide(self.analyse(source, top_k=top_k, name=name, allowed=allowed),
                           min_confidence=min_confidence)

    def _candidate(self, evidence: Evidence, confidence: float, threshold: float) -> Candidate:
        art = self.bundle.artworks[evidence.row]
        ver = evidence.verification
        outline = None if ver.outline is None else np.round(ver.outline, 5).tolist()
        return Candidate(
            object_id=art["object_id"], metadata=art["metadata"], confidence=round(confidence, 5),
            verified=bool(ver.plausible and confidence >= threshold),
            similarity=None if evidence.similarity is None else round(evidence.similarity, 5),
            retrieval_rank=evidence.rank, matches=ver.matches, inliers=ver.inliers,
            inlier_ratio=round(ver.inlier_ratio, 4), outline=outline, rejected=ver.rejected, segment=evidence.segment,
        )

