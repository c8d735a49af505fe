"""A burst: up to a few frames of the same view, one answer (docs/service.md, "Bursts").

Each artwork keeps the evidence of its best frame, so its confidence is computed from one frame's evidence, as
the calibration was fitted; inliers summed over frames would let a weak wrong match win by repetition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .confidence import Evidence
from .recognizer import Recognizer
from .results import Recognition

MAX_FRAMES = 5


@dataclass
class BurstRecognition:
    recognition: Recognition  # the fused answer; outlines are in the coordinates of each match's frame
    frames: dict[str, int]  # object_id → index of the frame its evidence (and outline) comes from
    support: dict[str, int]  # object_id → how many frames verified it (plausible homography)
    frame_count: int


def _strength(evidence: Evidence) -> tuple[int, float]:
    verification = evidence.verification
    similarity = 0.0 if evidence.similarity is None else evidence.similarity  # None: not embedded, no tie-break
    return (verification.inliers if verification.plausible else 0, similarity)


def recognize_burst(recognizer: Recognizer, sources: list[str | Path | bytes], *, top_k: int | None = None,
                    min_confidence: float | None = None, allowed: np.ndarray | None = None,
                    embed: Callable[[np.ndarray], np.ndarray] | None = None, names: list[str] | None = None,
                    **load_limits) -> BurstRecognition:
    """Recognise 1..MAX_FRAMES frames of one view as one answer (a single frame is a plain recognition)."""
    if not 1 <= len(sources) <= MAX_FRAMES:
        raise ValueError(f"a burst has 1 to {MAX_FRAMES} frames, not {len(sources)}")
    names = names or [f"frame {i + 1}" for i in range(len(sources))]
    analyses = [recognizer.analyse(src, top_k=top_k, name=name, allowed=allowed, embed=embed, **load_limits)
                for src, name in zip(sources, names, strict=True)]
    t0 = time.perf_counter()
    best: dict[int, tuple[int, Evidence]] = {}  # row → (frame, evidence)
    support: dict[int, int] = {}
    for frame, analysis in enumerate(analyses):
        for ev in analysis.candidates:
            _keep(best, support, frame, ev)
    if len(analyses) > 1:
        # Cross-verification: an artwork that verified somewhere is checked in every frame that did not shortlist it.
        verified_rows = [row for row, (_, ev) in best.items() if ev.verification.plausible]
        for frame, analysis in enumerate(analyses):
            seen = {ev.row for ev in analysis.candidates}
            for row in verified_rows:
                if row not in seen:
                    _keep(best, support, frame, recognizer.evidence(analysis, row, rank=len(seen) + 1))
    fused = recognizer.fused_analysis(analyses, [ev for _, ev in best.values()])
    fused.timings_ms["fuse"] = (time.perf_counter() - t0) * 1e3
    result = recognizer.decide(fused, min_confidence=min_confidence)
    by_id = {recognizer.bundle.artworks[row]["object_id"]: row for row in best}
    shown = [*result.matches, *([result.best_rejected] if result.best_rejected else [])]
    frames = {c.object_id: best[by_id[c.object_id]][0] for c in shown}
    return BurstRecognition(result, frames, {c.object_id: support.get(by_id[c.object_id], 0) for c in shown},
                            len(analyses))


def _keep(best: dict[int, tuple[int, Evidence]], support: dict[int, int], frame: int, ev: Evidence) -> None:
    if ev.verification.plausible:
        support[ev.row] = support.get(ev.row, 0) + 1
    if ev.row not in best or _strength(ev) > _strength(best[ev.row][1]):
        best[ev.row] = (frame, ev)

