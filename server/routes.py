"""Routes: parse and validate the request, call a service, shape the response. No logic of their own."""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Literal

import anyio
import msgspec
from litestar import Request, Response, delete, get, post
from litestar.connection import ASGIConnection
from litestar.datastructures import UploadFile
from litestar.di import NamedDependency
from litestar.exceptions import ClientException, NotAuthorizedException
from litestar.handlers import BaseRouteHandler
from litestar.openapi.spec import (
    OpenAPIFormat,
    OpenAPIMediaType,
    OpenAPIType,
    Operation,
    RequestBody,
    Schema,
)
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import File

from artlens.indexing.collection import MAX_OBJECT_ID, object_id_problem
from artlens.recognition.burst import MAX_FRAMES

from . import schemas
from .errors import ServiceError
from .jobs import JobService
from .prometheus import CONTENT_TYPE
from .services import CatalogueService, IndexHolder, RecognitionService
from .settings import Settings

STATIC = Path(__file__).parent / "static"
RAW_IMAGE_TYPES = ("image/", "application/octet-stream")
PUBLIC = {"rate_limited": True}
ADMIN_SECURITY = [{"ApiKey": []}]
# Injected services (litestar dependencies named in app.py, loaded once in the lifespan).
Holder = NamedDependency[IndexHolder]
RecognitionServiceDep = NamedDependency[RecognitionService]
Catalogue = NamedDependency[CatalogueService]
Config = NamedDependency[Settings]
Jobs = NamedDependency[JobService]
SimilarCount = Annotated[int, QueryParameter(ge=1, le=50)]  # k of the similarity routes
_BINARY = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)


# -- OpenAPI request bodies the handlers read themselves (multipart or raw image) ------------------------------
@dataclass
class RecognizeOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, description=(
            f"Either multipart/form-data with 1–{MAX_FRAMES} `image` file fields (a burst of frames of one view),"
            " or the raw bytes of one image (JPEG, PNG, WebP, HEIC/HEIF)."), content={
            "multipart/form-data": OpenAPIMediaType(schema=Schema(
                type=OpenAPIType.OBJECT, required=["image"],
                properties={"image": Schema(type=OpenAPIType.ARRAY, items=_BINARY, min_items=1,
                                            max_items=MAX_FRAMES)})),
            "image/jpeg": OpenAPIMediaType(schema=_BINARY),
            "image/png": OpenAPIMediaType(schema=_BINARY),
            "image/webp": OpenAPIMediaType(schema=_BINARY),
            "image/heic": OpenAPIMediaType(schema=_BINARY),
            "application/octet-stream": OpenAPIMediaType(schema=_BINARY),
        })


@dataclass
class AddArtworkOperation(Operation):
    security: list = field(default_factory=lambda: ADMIN_SECURITY)

    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, content={"multipart/form-data": OpenAPIMediaType(schema=Schema(
            type=OpenAPIType.OBJECT, required=["image", "object_id"],
            properties={"image": _BINARY,
                        "object_id": Schema(type=OpenAPIType.STRING, min_length=1, max_length=MAX_OBJECT_ID,
                                            description="printable; no '/' or '\\'; not '.' or '..'"),
                        "metadata": Schema(type=OpenAPIType.STRING,
                                           description='JSON object of strings, e.g. {"title": "…", "creator": "…"};'
                                                       " other text fields are metadata too")}))})


@dataclass
class ImportOperation(Operation):
    def __post_init__(self) -> None:
        self.request_body = RequestBody(required=True, description=(
            "A collection CSV (`object_id,image,…metadata`) whose `image` column holds paths relative to the"
            " server's import root (ARTLENS_IMPORT_ROOT)."), content={
            "text/csv": OpenAPIMediaType(schema=Schema(type=OpenAPIType.STRING))})


# -- auth ---------------------------------------------------------------------------------------------------------
def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Admin guard: X-API-Key must equal one of the configured keys (constant-time comparison, every key)."""
    settings: Settings = connection.app.state.settings
    throttle = connection.app.state.admin_throttle  # a client past its failed attempts is refused (429) first
    throttle.check(connection.scope)
    given = connection.headers.get("x-api-key", "").encode("utf-8", "surrogateescape")
    ok = False
    for key in settings.api_keys:
        ok |= hmac.compare_digest(given, key.encode())
    if not ok:
        if "x-api-key" in connection.headers:  # a guess (a missing header guesses nothing)
            throttle.failed(connection.scope)
        raise NotAuthorizedException("a valid X-API-Key header is required for this route")


# -- helpers ------------------------------------------------------------------------------------------------------
# What Litestar's multipart parser says when a body has more parts than the app's multipart_form_part_limit.
PART_LIMIT_DETAIL = "Request Entity Too Large"


async def _read_form(request: Request, too_many_parts: ServiceError):
    """The multipart form. Parsing stops at the app's part limit (so a body of thousands of tiny parts costs
    nothing), with a generic message: answer ``too_many_parts`` instead, which says what the limit is for."""
    try:
        return await request.form()
    except ClientException as exc:
        if exc.status_code != 400 or exc.detail != PART_LIMIT_DETAIL:
            raise
        # Litestar says the same for every limit of the multipart parser; the parser's own error, kept as the
        # context, tells too many parts from a part whose headers are too long.
        if "count exceeded" in str(exc.__context__) and "header" not in str(exc.__context__):
            raise too_many_parts from None
        raise ServiceError("invalid_request", "a part of the multipart body is too large to parse (its headers"
                           " are too long or too many)", 400) from None


async def _read_frames(request: Request, max_frames: int) -> list[bytes]:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype == "multipart/form-data":
        limit = request.app.multipart_form_part_limit
        form = await _read_form(request, ServiceError(
            "too_many_frames", f"more than {limit} parts in the multipart body; a burst has at most {max_frames}"
            " `image` files", 400))
        fields = form.getall("image") if "image" in form else []
        if not fields:
            raise ServiceError("missing_image", "multipart body has no `image` file field", 400)
        if len(fields) > max_frames:
            raise ServiceError("too_many_frames", f"{len(fields)} images; a burst has at most {max_frames}", 400)
        frames = []
        for value in fields:
            if not isinstance(value, UploadFile):
                raise ServiceError("missing_image", "`image` must be a file upload, not a text field", 400)
            frames.append(await value.read())
        return frames
    if ctype.startswith(RAW_IMAGE_TYPES):
        return [await request.body()]
    raise ServiceError("unsupported_media_type",
                       f"Content-Type {ctype or '(none)'!r}: send multipart/form-data with an `image` field or the raw"
                       " image bytes as image/* or application/octet-stream", 415)


def _filters(creator: str | None, artwork_type: str | None, collection: str | None,
             extra: list[str] | None) -> dict[str, str]:
    filters = {k: v for k, v in (("creator", creator), ("type", artwork_type), ("collection", collection)) if v}
    for item in extra or []:
        column, sep, value = item.partition(":")
        if not sep or not column.strip() or not value.strip():
            raise ServiceError("bad_filter", f"filter {item!r} must be column:value", 400)
        filters[column.strip()] = value
    return filters


def _server_timing(timings_ms: dict[str, float]) -> str:
    return ", ".join(f"{stage};dur={ms:.1f}" for stage, ms in timings_ms.items())


# -- recognition --------------------------------------------------------------------------------------------------
@post("/v1/recognize", operation_class=RecognizeOperation, status_code=200, opt=PUBLIC, tags=["recognition"],
      summary="Recognise the artwork(s) in a photo or a burst of frames")
async def recognize(
    request: Request, recognition: RecognitionServiceDep, settings: Config,
    top_k: Annotated[int | None, QueryParameter(ge=1, le=100, description="shortlist size verified per frame")] = None,
    min_confidence: Annotated[float | None, QueryParameter(ge=0.0, le=1.0, description="threshold override")] = None,
    creator: Annotated[str | None, QueryParameter(max_length=200)] = None,
    artwork_type: Annotated[str | None, QueryParameter(name="type", max_length=200)] = None,
    collection: Annotated[str | None, QueryParameter(max_length=200)] = None,
    filter_: Annotated[list[str] | None, QueryParameter(name="filter", description="column:value, repeatable")] = None,
) -> Response[schemas.RecognizeResponse]:
    """Filters restrict the search itself: the best match among the allowed artworks is found even when none of
    them would be in the unfiltered shortlist."""
    filters = _filters(creator, artwork_type, collection, filter_)
    frames = await _read_frames(request, settings.max_frames)
    result = await recognition.recognize(frames, top_k=top_k, min_confidence=min_confidence, filters=filters)
    return Response(result, headers={"Server-Timing": _server_timing(result.timings_ms)})


# -- browsing -----------------------------------------------------------------------------------------------------
@get("/v1/artworks", opt=PUBLIC, tags=["artworks"], sync_to_thread=False, summary="List or sample artworks")
def list_artworks(
    catalogue: Catalogue,
    random: Annotated[int | None, QueryParameter(ge=1, le=100, description="N random artworks")] = None,
    seed: Annotated[int | None, QueryParameter(ge=0, le=2**31)] = None,
    offset: Annotated[int, QueryParameter(ge=0, le=10**9)] = 0,
    limit: Annotated[int, QueryParameter(ge=1, le=500)] = 50,
) -> schemas.ArtworkList:
    return catalogue.random(random, seed) if random else catalogue.page(offset, limit)


@get("/v1/artworks/{object_id:str}", opt=PUBLIC, tags=["artworks"], sync_to_thread=False)
def get_artwork(catalogue: Catalogue, object_id: FromPath[str]) -> schemas.Artwork:
    return catalogue.get(object_id)


@get("/v1/artworks/{object_id:str}/image", opt=PUBLIC, tags=["artworks"], sync_to_thread=True,
     media_type="image/jpeg", summary="Reference image as a JPEG rendition (ETag, 304 on If-None-Match)")
def artwork_image(
    request: Request, catalogue: Catalogue, settings: Config, object_id: FromPath[str],
    size: Annotated[int, QueryParameter(ge=16, le=4096, description="longer side, snapped up")] = 512,
) -> Response[bytes]:
    sizes = sorted(settings.rendition_sizes)
    size = next((s for s in sizes if s >= size), sizes[-1])
    body, etag = catalogue.rendition(object_id, size)
    # The CORS middleware sets `Vary: Origin` on cross-origin answers; every rendition answer says the same, so a
    # shared cache keeps one entry per origin whether or not the first request carried one. No content coding
    # is applied to JPEGs, so Accept-Encoding does not vary them.
    headers = {"ETag": etag, "Cache-Control": "public, max-age=86400", "Vary": "Origin"}
    if _etag_matches(request.headers.get("if-none-match"), etag):
        return Response(b"", status_code=304, headers=headers, media_type="image/jpeg")
    return Response(body, headers=headers, media_type="image/jpeg")


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 If-None-Match: ``*`` matches any current representation; tags compare weakly (``W/`` ignored)."""
    if not if_none_match:
        return False
    tags = [t.strip().removeprefix("W/") for t in if_none_match.split(",")]
    return "*" in tags or etag in tags


@get("/v1/artworks/{object_id:str}/similar", opt=PUBLIC, tags=["artworks"], sync_to_thread=False,
     summary="Visually similar artworks (VLAD without pretrained weights, DINOv2 with them)")
def similar_artworks(catalogue: Catalogue, object_id: FromPath[str], k: SimilarCount = 8,
                     method: FromQuery[Literal["auto", "vlad", "dinov2"]] = "auto") -> schemas.SimilarResponse:
    return catalogue.similar(object_id, k, method)


@get("/v1/artworks/{object_id:str}/segments", opt=PUBLIC, tags=["segments"], sync_to_thread=True,
     summary="An artwork's SAM segments (polygons in reference pixels), largest first")
def artwork_segments(catalogue: Catalogue, object_id: FromPath[str]) -> schemas.SegmentList:
    return catalogue.segments_of(object_id)


@get("/v1/segments/{segment_id:str}/similar", opt=PUBLIC, tags=["segments"], sync_to_thread=True,
     summary="Segments across the collection most like this one (ids look like '<object_id>#<n>', URL-encoded)")
def similar_segments(catalogue: Catalogue, segment_id: FromPath[str], k: SimilarCount = 8,
                     space: FromQuery[Literal["auto", "local", "dinov2"]] = "auto") -> schemas.SimilarSegments:
    return catalogue.similar_segments(segment_id, k, space)


# -- admin --------------------------------------------------------------------------------------------------------
ADDED_WITHOUT_SEGMENTS = ("this index has SAM segments but the added artwork was not segmented (the service runs"
                          " no SAM model): it is recognised as a whole and has no segments until the bundle is"
                          " rebuilt with `artlens index build --segments`")


@post("/v1/artworks", guards=[require_api_key], operation_class=AddArtworkOperation, status_code=201,
      tags=["admin"], summary="Add an artwork (indexed incrementally, persisted as a new bundle version)")
async def add_artwork(request: Request, holder: Holder, recognition: RecognitionServiceDep,
                      settings: Config) -> schemas.AddedArtwork:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "multipart/form-data":
        raise ServiceError("unsupported_media_type", "send multipart/form-data with `image` and `object_id`", 415)
    limit = request.app.multipart_form_part_limit
    form = await _read_form(request, ServiceError(
        "invalid_request", f"more than {limit} parts in the multipart body; send the metadata as one JSON object"
        " in `metadata`", 400))
    image = form.get("image")
    if not isinstance(image, UploadFile):
        raise ServiceError("missing_image", "multipart body has no `image` file field", 400)
    object_id = form.get("object_id")
    if not isinstance(object_id, str):
        raise ServiceError("bad_object_id", "`object_id` must be a text field", 400)
    object_id = object_id.strip()
    problem = object_id_problem(object_id)
    if problem:  # an id is a segment of the artwork's URLs: it must come back through them unchanged
        raise ServiceError("bad_object_id", f"`object_id` {object_id[:80]!r} {problem}", 400)
    metadata: dict[str, str] = {}
    raw_meta = form.get("metadata")
    if raw_meta:
        try:
            metadata = msgspec.json.decode(raw_meta if isinstance(raw_meta, str) else b"", type=dict[str, str])
        except msgspec.DecodeError as exc:
            raise ServiceError("bad_metadata", f"`metadata` must be a JSON object of strings ({exc})", 400) from None
    for key, value in form.multi_items():
        if key not in {"image", "object_id", "metadata"} and isinstance(value, str):
            metadata[key] = value
    data = await image.read()
    extension = (Path(image.filename or "").suffix.lstrip(".").lower() or "jpg")[:5]
    if not extension.isalnum():
        extension = "jpg"
    state = await recognition.run_admin(holder.add, object_id, data, metadata, extension)
    row = state.rows[object_id]
    features = state.bundle.features
    segments, warnings = None, []
    if state.bundle.segments is not None:
        segments = len(state.bundle.segments.of_artwork(row))
        if not segments:
            warnings.append(ADDED_WITHOUT_SEGMENTS)
    return schemas.AddedArtwork(schemas.Artwork.from_row(state.bundle.artworks[row]), state.version,
                                int(features.offsets[row + 1] - features.offsets[row]), segments, warnings)


@delete("/v1/artworks/{object_id:str}", guards=[require_api_key], status_code=200, tags=["admin"],
        security=ADMIN_SECURITY)
async def delete_artwork(holder: Holder, recognition: RecognitionServiceDep,
                         object_id: FromPath[str]) -> schemas.DeletedArtwork:
    state, segments_removed = await recognition.run_admin(holder.delete, object_id)
    return schemas.DeletedArtwork(object_id, state.version, segments_removed)


@post("/v1/index/reload", guards=[require_api_key], status_code=200, tags=["admin"],
      security=ADMIN_SECURITY,
      summary="Swap to a bundle (default: the current path, re-read); a bad bundle is refused, the old one serves")
async def reload_index(holder: Holder, recognition: RecognitionServiceDep,
                       data: JSONBody[schemas.ReloadRequest | None] = None) -> schemas.ReloadResponse:
    previous, state = await recognition.run_admin(holder.reload, data.index if data else None)
    return schemas.ReloadResponse(state.bundle.path.name, state.version, len(state.rows), previous)


@post("/v1/jobs/import", guards=[require_api_key], operation_class=ImportOperation, status_code=202,
      tags=["admin"], security=ADMIN_SECURITY,
      summary="Import many artworks from a CSV as a background job (one new bundle version)")
async def start_import(request: Request, jobs: Jobs) -> schemas.Job:
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype != "text/csv":
        raise ServiceError("unsupported_media_type", f"Content-Type {ctype or '(none)'!r}: send the CSV as text/csv",
                           415)
    body = await request.body()
    return schemas.Job.from_snapshot(await anyio.to_thread.run_sync(jobs.start_import, body))


@get("/v1/jobs/{job_id:str}", guards=[require_api_key], tags=["admin"], security=ADMIN_SECURITY,
     sync_to_thread=False, summary="A background job's progress (jobs live in the replica that runs them)")
def job_status(jobs: Jobs, job_id: FromPath[str]) -> schemas.Job:
    return schemas.Job.from_snapshot(jobs.get(job_id))


# -- operations ---------------------------------------------------------------------------------------------------
@get("/health", tags=["operations"], sync_to_thread=False, summary="Liveness")
def health() -> schemas.Health:
    return schemas.Health("ok")


@get("/ready", tags=["operations"], sync_to_thread=False,
     summary="Readiness: model and index loaded, bundle version, pretrained flag")
def ready(holder: Holder, recognition: RecognitionServiceDep, settings: Config) -> schemas.Ready:
    state = holder.state
    meta = state.bundle.meta
    return schemas.Ready(
        "ready", state.bundle.path.name, state.version, state.bundle_id,
        str(meta.get("updated") or meta.get("created") or ""), len(state.rows), state.model_info(),
        state.recognizer.embedder.execution_provider, settings.micro_batching, recognition.pending)


@get("/metrics", tags=["operations"], sync_to_thread=False, media_type=CONTENT_TYPE,
     summary="Prometheus metrics")
def metrics(request: Request) -> Response[bytes]:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE)


@get("/", include_in_schema=False, sync_to_thread=False)
def web_page() -> File:
    return File(STATIC / "index.html", content_disposition_type="inline", media_type="text/html")


ROUTES = [recognize, list_artworks, get_artwork, artwork_image, similar_artworks, artwork_segments, similar_segments,
          add_artwork, delete_artwork, start_import, job_status,
          reload_index, health, ready, metrics, web_page]
