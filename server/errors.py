"""Every error leaves the service as JSON ``{code, message, status, request_id}`` with a stable ``code``.

Our own errors (:class:`ArtlensError` subclasses: bad images, unknown filters, bundle problems…) map to a
status by code; Litestar's (validation, 404, 405, 413, 429…) get codes of their own. Anything unexpected is
logged with its traceback and answered 500 ``internal_error`` without internals.
"""

from __future__ import annotations

import logging
import re

from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from artlens.errors import ArtlensError, BundleError, ModelError

from .requestlog import current_request_id, new_request_id
from .schemas import ErrorBody

log = logging.getLogger("artlens.server")


class ServiceError(ArtlensError):
    """An error raised by the service itself, with its code and status."""

    def __init__(self, code: str, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.headers = headers or {}


class Overloaded(ServiceError):
    def __init__(self, retry_after: int, reason: str = "the server is at capacity") -> None:
        super().__init__("overloaded", f"{reason}; retry in {retry_after} s", 503, {"Retry-After": str(retry_after)})


# ArtlensError code → HTTP status (anything else of ours: 422).
STATUS_BY_CODE = {
    "unsupported_image": 415,
    "image_too_large": 413,
    "undecodable_image": 422,
    "missing_image": 422,
    "bad_image": 422,
    "bad_filter": 400,
    "artwork_exists": 409,
    "artwork_not_found": 404,
    "not_found": 404,  # an unknown segment id (UnknownIdError)
    "last_artwork": 409,
    "bad_bundle": 422,
    "bad_model": 422,
    "bad_object_id": 400,
    "too_few_features": 422,
    "method_unavailable": 422,  # a similarity method or segment space the bundle holds no data for
    "overloaded": 503,
    "bad_collection": 400,  # an uploaded import CSV that cannot be read
    "bad_import_path": 400,  # an import CSV naming an image outside the import root
}

# Litestar status → our code.
CODE_BY_STATUS = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
    503: "overloaded",
}


def _body(code: str, message: str, status: int, headers: dict[str, str] | None = None) -> Response:
    # Routing errors (404/405) happen before the request-log middleware: give them an id of their own.
    request_id = current_request_id()
    headers = dict(headers or {})
    if request_id is None:
        request_id = new_request_id()
        headers["X-Request-ID"] = request_id
    return Response(ErrorBody(code=code, message=message, status=status, request_id=request_id),
                    status_code=status, headers=headers, media_type="application/json")


# Something that looks like a file system path: /a/b, ./a, ~/a, C:\a (a relative bundle file name such as
# features/offsets.npy stays: it says which file of the bundle, not where the bundle is).
_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:[\\/]|\.{0,2}[\\/]|~[\\/])[^\s'\"`()<>,;]*")


def without_paths(message: str) -> str:
    """``message`` with every file system path replaced by "…": where the server keeps its files is not a
    client's business (the log names them)."""
    return _PATH.sub("…", message)


def artlens_error(_: Request, exc: ArtlensError) -> Response:
    if isinstance(exc, ServiceError):
        return _body(exc.code, str(exc), exc.status, exc.headers)
    message = str(exc)
    if isinstance(exc, BundleError | ModelError):  # about the server's own files: say what, not where
        log.warning("%s: %s", exc.code, message)
        message = without_paths(exc.reason)
    return _body(exc.code, message, STATUS_BY_CODE.get(exc.code, 422))


def http_error(request: Request, exc: HTTPException) -> Response:
    status = exc.status_code
    message = exc.detail or "error"
    if isinstance(exc, ValidationException) and isinstance(exc.extra, list) and exc.extra:
        # Litestar lists each bad parameter: name them in the message.
        parts = [f"{e.get('key', '?')}: {e.get('message', '')}" for e in exc.extra if isinstance(e, dict)]
        message = "invalid request: " + "; ".join(parts) if parts else message
        code = "invalid_parameter"
    else:
        code = CODE_BY_STATUS.get(status, "http_error" if status < 500 else "internal_error")
    if status == 413:
        message = f"request body too large ({message})"
    elif status == 404 and message == "Not Found":
        message = f"no such route: {request.method} {request.url.path} (the API is described at /schema)"
    elif status == 405:
        message = f"{request.method} is not allowed on {request.url.path}"
    headers = dict(exc.headers or {})
    return _body(code, message, status, headers)


def internal_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s %s", request.method, request.url.path)
    return _body("internal_error", "internal server error; the request id identifies it in the logs", 500)


def too_deep(request: Request, exc: RecursionError) -> Response:
    # JSON nested thousands deep exhausts the decoder's recursion (msgspec raises RecursionError, not a decode
    # error); our own code does not recurse on input, so this is the client's body. Logged in case it is not.
    log.warning("request body nested too deeply on %s %s", request.method, request.url.path, exc_info=exc)
    return _body("invalid_request", "the request body is nested too deeply to decode", 400)


EXCEPTION_HANDLERS = {ArtlensError: artlens_error, HTTPException: http_error, RecursionError: too_deep,
                      Exception: internal_error}
