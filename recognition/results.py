"""What recognition answers: msgspec structs, so the CLI prints them and the service sends them as they are."""

from __future__ import annotations

import msgspec


class ModelSummary(msgspec.Struct, frozen=True):
    id: str
    pretrained: bool  # false: random-init weights; the global descriptor carries no learned meaning
    sha256: str


class SegmentRef(msgspec.Struct):
    """The SAM segment of a reference that a photo shows (a detail), or that a search found."""

    id: str  # "<object_id>#<n>"
    bbox: list[float]  # [x, y, w, h] in pixels of the reference image
    polygon: list[list[float]]  # simplified outer contours, each flat [x0, y0, x1, y1, …], reference pixels


class SegmentInfo(msgspec.Struct):
    id: str
    object_id: str
    bbox: list[float]
    area: float  # fraction of the reference image
    predicted_iou: float  # SAM's own quality estimate
    stability: float
    polygon: list[list[float]] | None = None


class SegmentHit(msgspec.Struct):
    id: str
    object_id: str
    score: float  # cosine similarity in the searched space
    bbox: list[float]
    area: float
    metadata: dict[str, str]
    polygon: list[list[float]] | None = None


class Candidate(msgspec.Struct):
    object_id: str
    metadata: dict[str, str]
    confidence: float  # calibrated probability that this is the artwork in the photo
    verified: bool  # confidence ≥ threshold and a plausible homography
    similarity: float | None  # global-descriptor cosine similarity; None where the photo was not embedded
    retrieval_rank: int  # 1-based rank in the FAISS shortlist
    matches: int
    inliers: int
    inlier_ratio: float
    outline: list[list[float]] | None  # corners TL, TR, BR, BL of the artwork in [0, 1] photo coordinates
    rejected: str | None = None  # why geometry was refused, when it was
    segment: SegmentRef | None = None  # the segment the photo shows, when it came via a segment and is a detail


class Recognition(msgspec.Struct):
    status: str  # "match" | "no_match"
    matches: list[Candidate]  # verified artworks, best first (several when a photo shows several)
    best_rejected: Candidate | None  # for debugging a no_match: the strongest candidate that failed
    threshold: float
    top_k: int
    model: ModelSummary
    timings_ms: dict[str, float]  # per stage; no "embed" where the photo was not embedded
    image_size: list[int]  # [width, height] of the photo, upright
    # What the answer rests on, of: "local_features" (verification, always), "vlad", "descriptor_votes",
    # "segments", "global_embedding" (the model's forward pass: absent with a random-init model's local shortlist).
    signals: list[str]
