"""What is checked before routing, as one ASGI middleware around the Litestar app: request target and header sizes
(414/431), CORS preflights that would be refused (403), and the request body's arrival (408 when it stalls, 499
when the client goes away). Every refusal is the service's JSON error, like the rest.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

import msgspec

from .errors import ServiceError
from .requestlog import current_request_id, new_request_id
from .schemas import ErrorBody

if TYPE_CHECKING:
    from litestar.config.cors import CORSConfig
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

    from .settings import Settings

MAX_HEADER_COUNT = 100
_SAFELISTED = {"accept", "accept-language", "content-language", "content-type"}  # CORS never asks for these


def error_body(code: str, message: str, status: int, request_id: str) -> bytes:
    return msgspec.json.encode(ErrorBody(code=code, message=message, status=status, request_id=request_id))


async def send_error(send: Send, code: str, message: str, status: int, headers: dict[str, str] | None = None,
                     request_id: str | None = None) -> None:
    """A JSON error answer; ``request_id`` is given (and sent as a header) where no request log wraps ``send``."""
    body = error_body(code, message, status, request_id or current_request_id() or new_request_id())
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
           *((k.lower().encode(), v.encode()) for k, v in (headers or {}).items())]
    if request_id:
        raw.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body, "more_body": False})


def oversize(scope: Scope, settings: Settings) -> tuple[str, str, int] | None:
    target = len(scope.get("raw_path") or scope["path"].encode()) + len(scope.get("query_string") or b"")
    if target > settings.max_url_bytes:
        return "uri_too_long", f"the request URL is {target} bytes; at most {settings.max_url_bytes}", 414
    headers = scope.get("headers") or []
    size = sum(len(name) + len(value) + 4 for name, value in headers)
    if size > settings.max_header_bytes or len(headers) > MAX_HEADER_COUNT:
        return ("headers_too_large", f"the request headers are {size} bytes in {len(headers)} fields; at most"
                f" {settings.max_header_bytes} bytes in {MAX_HEADER_COUNT} fields", 431)
    return None


def cors_refusal(scope: Scope, cors: CORSConfig | None) -> str | None:
    """Why a CORS preflight is refused, or None (not a preflight, or one the CORS configuration allows)."""
    if scope["method"] != "OPTIONS":
        return None
    headers = {k: v.decode("latin-1") for k, v in scope.get("headers") or []}
    origin, method = headers.get(b"origin"), headers.get(b"access-control-request-method")
    if origin is None or method is None:
        return None
    if cors is None:
        return "cross-origin requests are not enabled on this server"
    if not cors.is_origin_allowed(origin):
        return f"origin {origin[:100]!r} is not allowed"
    if not cors.is_allow_all_methods and method not in cors.allow_methods:
        return f"method {method[:20]!r} is not allowed cross-origin"
    asked = [h.strip().lower() for h in headers.get(b"access-control-request-headers", "").split(",") if h.strip()]
    allowed = {h.lower() for h in cors.allow_headers}
    refused = [h for h in asked if h not in allowed and h not in _SAFELISTED]
    if refused and not cors.is_allow_all_headers:
        return f"header(s) {', '.join(refused)[:200]} not allowed cross-origin"
    return None


def body_reader(receive: Receive, settings: Settings) -> Receive:
    """``receive`` that gives up on a stalled body: ``body_timeout_s`` between pieces, ``body_deadline_s`` in all
    (408); a client that leaves before its body arrived is ``client_closed`` (499, logged and counted so)."""
    deadline = time.monotonic() + settings.body_deadline_s
    complete = False

    async def receive_body() -> Message:
        nonlocal complete
        if complete:
            return await receive()  # past the body: only a disconnect can come, whenever it comes
        left = deadline - time.monotonic()
        try:
            async with asyncio.timeout(max(0.0, min(settings.body_timeout_s, left))):
                message = await receive()
        except TimeoutError:
            raise ServiceError("request_timeout", f"the request body did not arrive in time (at most"
                               f" {settings.body_timeout_s:g} s between pieces, {settings.body_deadline_s:g} s in"
                               " all)", 408, {"Connection": "close"}) from None
        if message["type"] == "http.disconnect":
            raise ServiceError("client_closed", "the client closed the connection before sending its whole body",
                               499)
        if not message.get("more_body", False):
            complete = True
        return message

    return receive_body


# What the OpenAPI router serves under /schema/ (Swagger UI at /schema, the document, Swagger's OAuth2 redirect).
SCHEMA_PATHS = {"/schema/", "/schema/openapi.json", "/schema/oauth2-redirect.html"}


def edge_middleware(app: ASGIApp, settings: Settings, cors: CORSConfig | None) -> ASGIApp:
    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        too_big = oversize(scope, settings)
        if too_big is not None:
            await send_error(send, *too_big, headers={"Connection": "close"})
            return
        if "\x00" in scope["path"] and scope["path"].startswith("/static/"):
            # No file name holds a NUL byte (the file system call would fail): nothing to look up.
            await send_error(send, "not_found", "no such static file", 404)
            return
        if scope["path"].startswith("/schema/") and scope["path"] not in SCHEMA_PATHS:
            # Litestar answers unknown documentation pages with an HTML 404 of its own.
            await send_error(send, "not_found", "no such documentation page (the API is described at /schema)", 404)
            return
        refused = cors_refusal(scope, cors)
        if refused is not None:
            await send_error(send, "cors_forbidden", f"CORS preflight refused: {refused}", 403)
            return
        await app(scope, body_reader(receive, settings), send if cors is None else vary_origin(send))

    return middleware


def vary_origin(send: Send) -> Send:
    """With CORS on, every answer depends on the Origin header (the allow headers come only for allowed
    origins): say so on every response, or a shared cache may hand one origin's answer to another."""

    async def send_with_vary(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", []))
            if not any(k.lower() == b"vary" and b"origin" in v.lower() for k, v in headers):
                headers.append((b"vary", b"Origin"))
                message = {**message, "headers": headers}
        await send(message)

    return send_with_vary
