"""Structured JSON logs with a request id, and the per-route latency metrics, as one ASGI middleware.

The request id comes from the client's ``X-Request-ID`` (if sane) or is generated; it is returned in the
response header, put into every log line written while the request runs (a context variable, carried into the
inference threads), and into error bodies.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
import uuid
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from litestar.types import ASGIApp, Message, Receive, Scope, Send

_request_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("artlens_request_id", default=None)
_SANE_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")
access_log = logging.getLogger("artlens.access")


def current_request_id() -> str | None:
    return _request_id.get()


def new_request_id() -> str:
    return uuid.uuid4().hex[:16]


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {"ts": round(record.created, 3), "level": record.levelname.lower(), "logger": record.name,
                 "message": record.getMessage()}
        rid = getattr(record, "request_id", None) or _request_id.get()
        if rid:
            entry["request_id"] = rid
        entry.update(getattr(record, "fields", {}))
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return msgspec.json.encode(entry).decode()


def configure_logging(level: str = "INFO", json_lines: bool = True) -> None:
    """One stderr handler on the root logger (uvicorn's loggers propagate to it)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else logging.Formatter("%(asctime)s %(levelname)s %(name)s:"
                                                                               " %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True


def request_log_middleware(app: ASGIApp) -> ASGIApp:
    """Outermost: every request is logged and counted, those refused before routing too. A client that went
    away before its answer started is logged and counted as 499 ``client_closed``, whatever was sent after."""

    async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _SANE_ID.match(given) else new_request_id()
        token = _request_id.set(rid)
        status = 500
        started_response = client_left = False
        started = time.perf_counter()

        async def receive_watching() -> Message:
            nonlocal client_left
            message = await receive()
            if message["type"] == "http.disconnect" and not started_response:
                client_left = True
            return message

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"], (b"x-request-id", rid.encode())]
            await send(message)

        try:
            await app(scope, receive_watching, send_with_id)
        finally:
            if client_left:
                status = 499
            seconds = time.perf_counter() - started
            route = scope.get("path_template") or "unmatched"
            state = scope["app"].state
            metrics, clients = state.get("metrics"), state.get("clients")
            fields = {"method": scope["method"], "path": scope["path"][:500], "route": route, "status": status,
                      "duration_ms": round(seconds * 1e3, 2),
                      "client": clients.address(scope) if clients else (scope.get("client") or ("?",))[0]}
            if status == 499:
                fields["code"] = "client_closed"
            if metrics is not None:
                metrics.observe_request(scope["method"], route, status, seconds)
            access_log.info("%s %s %d", scope["method"], fields["path"], status,
                            extra={"request_id": rid, "fields": fields})
            _request_id.reset(token)

    return middleware
