"""Request and response bodies of the HTTP API (msgspec structs: Litestar encodes them and documents them)."""

from __future__ import annotations

import msgspec

from artlens.recognition.results import Candidate, ModelSummary, SegmentHit, SegmentInfo, SegmentRef


class ErrorBody(msgspec.Struct):
    code: str  # stable, machine-readable (docs/service.md lists them)
    message: str  # for humans: what was wrong and what to do
    status: int
    request_id: str | None = None


class RecognizedArtwork(msgspec.Struct):
    """One verified artwork in the photo (or, in ``best_rejected``, the strongest one that failed)."""

    object_id: str
    metadata: dict[str, str]
    confidence: float
    verified: bool
    outline: list[list[float]] | None  # quad TL, TR, BR, BL in [0, 1] coordinates of frame ``frame``
    frame: int  # which burst frame the outline refers to (0 for a single photo)
    support: int  # frames of the burst in which it verified
    inliers: int
    similarity: float | None  # global-descriptor cosine; null when the photo was not embedded (see ``signals``)
    image_url: str
    reference_size: list[int]  # [width, height] of the reference image (segment polygons are in its pixels)
    # The SAM segment of the reference the photo shows (a detail; bundles built with --segments): id, bbox and
    # polygon rings (flat [x0, y0, x1, y1, …]) in reference-image pixels. None when the whole artwork is in view.
    segment: SegmentRef | None = None

    @classmethod
    def from_candidate(cls, cand: Candidate, frame: int, support: int, reference_size: list[int]
                       ) -> RecognizedArtwork:
        return cls(object_id=cand.object_id, metadata=cand.metadata, confidence=cand.confidence,
                   verified=cand.verified, outline=cand.outline, frame=frame, support=support,
                   inliers=cand.inliers, similarity=cand.similarity,
                   image_url=f"/v1/artworks/{_quote(cand.object_id)}/image", reference_size=reference_size,
                   segment=cand.segment)


class ModelInfo(msgspec.Struct):
    id: str  # hub id (facebook/dinov2-small), or the name of the local directory the weights came from
    pretrained: bool
    sha256: str
    shortlist: str  # which ranking(s) chose the candidates: "fused" | "local" (VLAD) | "global" (DINOv2)

    @classmethod
    def from_summary(cls, summary: ModelSummary, shortlist: str) -> ModelInfo:
        return cls(id=public_model_id(summary.id), pretrained=summary.pretrained, sha256=summary.sha256,
                   shortlist=shortlist)


def public_model_id(source: str) -> str:
    """A model's id without the server's directories: a model exported from a local directory records that
    directory's absolute path, and answers name only its last part; hub ids ("org/name") stay as they are."""
    if source.startswith(("/", "~", ".")) or "\\" in source or source[1:3] in (":/", ":\\"):
        return source.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1] or "model"
    return source


class RecognizeResponse(msgspec.Struct):
    status: str  # "match" | "no_match"
    matches: list[RecognizedArtwork]
    best_rejected: RecognizedArtwork | None
    threshold: float
    top_k: int
    frames: int
    image_size: list[int]  # [width, height] of frame 0, upright
    filters: dict[str, str]
    model: ModelInfo
    bundle_version: int
    timings_ms: dict[str, float]  # per stage; no "embed" when the photo was not embedded
    # What the answer rests on: "local_features" (always), "vlad", "descriptor_votes", "segments",
    # "global_embedding" (the model's forward pass; absent with a random-init model's local shortlist).
    signals: list[str]


class Artwork(msgspec.Struct):
    object_id: str
    metadata: dict[str, str]
    width: int
    height: int
    image_url: str

    @classmethod
    def from_row(cls, art: dict) -> Artwork:
        return cls(object_id=art["object_id"], metadata=art["metadata"], width=int(art.get("width", 0)),
                   height=int(art.get("height", 0)), image_url=f"/v1/artworks/{_quote(art['object_id'])}/image")


class ArtworkList(msgspec.Struct):
    artworks: list[Artwork]
    total: int


class SimilarArtwork(msgspec.Struct):
    artwork: Artwork
    score: float  # inner product in the index named by ``method``


class SimilarResponse(msgspec.Struct):
    object_id: str
    method: str  # "vlad" (weight-free local-feature index) or "dinov2" (global descriptor)
    pretrained: bool  # false: DINOv2 similarity is chance level, so "auto" uses VLAD
    results: list[SimilarArtwork]


class SegmentList(msgspec.Struct):
    object_id: str
    reference_size: list[int]  # [width, height]: polygons and bboxes are in these pixels
    segments: list[SegmentInfo]  # largest first; polygon rings flat [x0, y0, x1, y1, …]


class SimilarSegment(msgspec.Struct):
    id: str
    object_id: str
    score: float
    bbox: list[float]
    area: float
    metadata: dict[str, str]
    polygon: list[list[float]] | None
    reference_size: list[int]
    image_url: str

    @classmethod
    def from_hit(cls, hit: SegmentHit, reference_size: list[int]) -> SimilarSegment:
        return cls(id=hit.id, object_id=hit.object_id, score=hit.score, bbox=hit.bbox, area=hit.area,
                   metadata=hit.metadata, polygon=hit.polygon, reference_size=reference_size,
                   image_url=f"/v1/artworks/{_quote(hit.object_id)}/image")


class SimilarSegments(msgspec.Struct):
    segment_id: str
    space: str  # "local" (weight-free VLAD of the segment's keypoints) or "dinov2"
    pretrained: bool
    results: list[SimilarSegment]


class AddedArtwork(msgspec.Struct):
    artwork: Artwork
    bundle_version: int
    keypoints: int
    # SAM segments indexed for the new artwork; null when the index has no segments at all. On an index with
    # segments this is 0: the service runs no SAM model, so the artwork is recognised as a whole (and found by
    # whole-image similarity) but has no segments until the bundle is rebuilt with --segments. ``warnings`` says so.
    segments: int | None = None
    warnings: list[str] = msgspec.field(default_factory=list)


class DeletedArtwork(msgspec.Struct):
    object_id: str
    bundle_version: int
    segments_removed: int | None = None  # its SAM segments dropped from the segment indexes; null: index has none


class ReloadRequest(msgspec.Struct, forbid_unknown_fields=True):
    index: str | None = None  # another bundle directory; default: reload the current path


class ReloadResponse(msgspec.Struct):
    index: str  # the bundle's name (its directory's name; never a path)
    bundle_version: int
    artworks: int
    previous_version: int


class Health(msgspec.Struct):
    status: str


class Ready(msgspec.Struct):
    status: str  # "ready"
    index: str  # the bundle's name (its directory's name; never a path)
    bundle_version: int
    bundle_id: str  # 16 hex digits of a sha256 over the bundle's file checksums: differs when any data differs
    bundle_updated: str  # when this bundle version was written (ISO 8601, UTC)
    artworks: int
    model: ModelInfo
    execution_provider: str  # ONNX Runtime execution provider of the live session, e.g. "CPUExecutionProvider"
    micro_batching: bool
    queue_depth: int


class SkippedRow(msgspec.Struct):
    line: int  # the CSV line (the header is line 1)
    reason: str


class Job(msgspec.Struct):
    """A bulk import job of this replica (GET /v1/jobs/{id})."""

    id: str
    status: str  # queued | running | done | failed
    rows_total: int  # data rows in the CSV
    rows_done: int  # rows read or skipped so far
    added: int  # artworks in the version the job wrote (0 until it is written)
    skipped: list[SkippedRow]
    bundle_version: int | None  # the version the job wrote; null until done
    error: str | None  # why the job failed
    created: str
    finished: str | None

    @classmethod
    def from_snapshot(cls, snapshot: dict) -> Job:
        return cls(**{**snapshot, "skipped": [SkippedRow(**row) for row in snapshot["skipped"]]})


def _quote(object_id: str) -> str:
    from urllib.parse import quote

    return quote(object_id, safe="")
