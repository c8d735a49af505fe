"""What recognition answers: msgspec structs, so the CLI prints them and the service sends them as they are."""

from __future__ import annotations

import msgspec


class ModelSummary(msgspec.Struct, frozen=True):
    id: str
    pretrained: bool  # false: random-init weights; the global descriptor carries no learned meaning
    sha256: str


class Candidate(msgspec.Struct):
    object_id: str
    metadata: dict[str, str]
    confidence: float  # calibrated probability that this is the artwork in the photo
    verified: bool  # confidence ≥ threshold and a plausible homography
    similarity: float  # global-descriptor cosine similarity
    retrieval_rank: int  # 1-based rank in the FAISS shortlist
    matches: int
    inliers: int
    inlier_ratio: float
    outline: list[list[float]] | None  # corners TL, TR, BR, BL of the artwork in [0, 1] photo coordinates
    rejected: str | None = None  # why geometry was refused, when it was


class Recognition(msgspec.Struct):
    status: str  # "match" | "no_match"
    matches: list[Candidate]  # verified artworks, best first (several when a photo shows several)
    best_rejected: Candidate | None  # for debugging a no_match: the strongest candidate that failed
    threshold: float
    top_k: int
    model: ModelSummary
    timings_ms: dict[str, float]
    image_size: list[int]  # [width, height] of the photo, upright
