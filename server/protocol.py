"""How ``artlens serve`` runs uvicorn: :func:`uvicorn_config`, and an h11 protocol with the limits h11 lacks.

h11 times nothing while it reads a request and uvicorn's keep-alive timer stops at the first byte, so
:class:`EdgeH11Protocol` times request heads and unread bodies, caps open connections and answers what h11 refuses
with the service's JSON errors (docs/service.md, "Slow and oversized requests").
"""

from __future__ import annotations

import asyncio
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .edge import error_body, send_error
from .requestlog import new_request_id

if TYPE_CHECKING:
    from litestar import Litestar
    from litestar.types import Receive, Scope, Send

    from .prometheus import Metrics
    from .settings import Settings

HEAD_SLACK_BYTES = 4096  # request line and header framing beyond the two limits
LINGER_S = 2.0  # after an early error answer, keep reading (and dropping) so the client sees it, not a reset
access_log = logging.getLogger("artlens.access")


class EdgeH11Protocol(H11Protocol):
    settings: Settings  # set on the subclass that uvicorn_config makes
    metrics: Metrics | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.service_app = self.app
        self.head_timer: asyncio.TimerHandle | None = None
        self.lingering = False
        self.unread_timer: asyncio.TimerHandle | None = None
        self.timed_cycle: object = None  # the request whose body deadline runs
        self.body_deadline = 0.0

    # -- connections ----------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        if len(self.connections) > 2 * self.settings.max_connections:
            self._record("other", 503, "overloaded")
            transport.close()
            return
        self._watch_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._stop_head_timer()
        self._stop_unread_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self.lingering:
            return  # an error was answered: what else comes is dropped until the close
        # The app is chosen when a request head is complete: past the cap, the JSON 503 instead of the service.
        self.app = self._overloaded if len(self.connections) > self.settings.max_connections else self._serve
        draining = self.unread_timer is not None
        super().data_received(data)
        self._watch_unread_body()
        if draining and self.unread_timer is None:
            self._keep_alive_after_drain()
        self._watch_head()

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not self.timed_cycle:  # a new request head: its body's deadline starts now
            self.timed_cycle = self.cycle
            self.body_deadline = self.loop.time() + self.settings.body_deadline_s

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_unread_body()

    async def _serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        names = {name for name, _ in scope["headers"]}
        if b"transfer-encoding" not in names or b"content-length" not in names:
            await self.service_app(scope, receive, send)
            return

        async def send_closing(message: Any) -> None:  # two framings: whatever follows on this connection is suspect
            headers = list(message.get("headers", [])) if message["type"] == "http.response.start" else None
            if headers is not None and not any(name.lower() == b"connection" for name, _ in headers):
                message = {**message, "headers": [*headers, (b"connection", b"close")]}
            await send(message)

        await self.service_app(scope, receive, send_closing)

    async def _overloaded(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = new_request_id()
        self._record(scope["method"], 503, "overloaded", rid)
        await send_error(send, "overloaded", "the server has too many open connections; retry in 1 s", 503,
                         {"Retry-After": "1", "Connection": "close"}, request_id=rid)

    # -- request heads --------------------------------------------------------------------------------------------
    def _watch_head(self) -> None:
        waiting = self.conn.their_state is h11.IDLE and not self.transport.is_closing() and not self.lingering
        if waiting and self.head_timer is None:
            self.head_timer = self.loop.call_later(self.settings.header_timeout_s, self._head_timed_out)
        elif not waiting:
            self._stop_head_timer()

    def _stop_head_timer(self) -> None:
        self._cancel("head_timer")

    def _cancel(self, timer_name: str) -> None:
        timer = getattr(self, timer_name)
        if timer is not None:
            timer.cancel()
            setattr(self, timer_name, None)

    def _head_timed_out(self) -> None:
        self.head_timer = None
        if self.transport.is_closing() or self.conn.their_state is not h11.IDLE:
            return
        if self.conn.trailing_data[0]:
            self._answer(408, "request_timeout",
                         f"the request head did not arrive within {self.settings.header_timeout_s:g} s")
        else:
            self.transport.close()  # nothing was asked: nothing to answer

    # -- bodies left unread by an early answer ------------------------------------------------------------------
    def _watch_unread_body(self) -> None:
        """While the answer is complete but the body still arriving (dropped by uvicorn), each piece must come
        within ``body_timeout_s`` and the whole body within ``body_deadline_s`` of its head, or the connection
        closes: uvicorn's keep-alive timer stops at the first byte and is set again only by the next answer."""
        self._stop_unread_timer()
        unread = self.conn.our_state is h11.DONE and self.conn.their_state is h11.SEND_BODY
        if unread and not self.transport.is_closing() and not self.lingering:
            wait = min(self.settings.body_timeout_s, self.body_deadline - self.loop.time())
            self.unread_timer = self.loop.call_later(max(0.0, wait), self._unread_body_timed_out)

    def _stop_unread_timer(self) -> None:
        self._cancel("unread_timer")

    def _unread_body_timed_out(self) -> None:
        self.unread_timer = None
        if not self.transport.is_closing():  # the answer is out: nothing more to say, only to close
            self.conn.send(h11.ConnectionClosed())
            self.transport.close()

    def _keep_alive_after_drain(self) -> None:
        """The unread body has ended with nothing after it: idle again, under the keep-alive timer."""
        idle = self.conn.our_state is h11.IDLE and self.conn.their_state is h11.IDLE
        if idle and not self.conn.trailing_data[0] and not self.transport.is_closing():
            self._unset_keepalive_if_required()
            handler = self.timeout_keep_alive_handler
            self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive, handler)

    def send_400_response(self, msg: str) -> None:
        """h11 refused the request: a head over the buffer limit, or not HTTP/1.1 as it must be."""
        buffered = self.conn.trailing_data[0]
        limit = self.settings.max_url_bytes + self.settings.max_header_bytes + HEAD_SLACK_BYTES
        if len(buffered) > limit:
            line_end = buffered.find(b"\r\n")
            if line_end < 0 or line_end > self.settings.max_url_bytes:
                self._answer(414, "uri_too_long", f"the request line is over {self.settings.max_url_bytes} bytes")
            else:
                self._answer(431, "headers_too_large",
                             f"the request headers are over {self.settings.max_header_bytes} bytes")
        else:
            self._answer(400, "invalid_request", "malformed HTTP/1.1 request")

    # -- answers written here (outside any ASGI cycle) ------------------------------------------------------------
    def _answer(self, status: int, code: str, message: str) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            if self.cycle.response_started:  # mid-answer: nothing sensible can follow on this connection
                self.transport.close()
                return
            self.cycle.disconnected = True  # the app, waiting for a body, sees a client gone and writes nothing
            self.cycle.message_event.set()
        rid = new_request_id()
        body = error_body(code, message, status, rid)
        head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
                f"content-length: {len(body)}\r\nconnection: close\r\nx-request-id: {rid}\r\n\r\n")
        self._record("other", status, code, rid)
        self.transport.write(head.encode() + body)
        self.lingering = True
        self._stop_head_timer()
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)
        self.flow.resume_reading()

    def _record(self, method: str, status: int, code: str, rid: str | None = None) -> None:
        if self.metrics is not None:
            self.metrics.observe_request(method, "unmatched", status, 0.0)
        client = self.client[0] if self.client else "?"
        access_log.info("%s %d", code, status, extra={"request_id": rid, "fields": {
            "method": method, "route": "unmatched", "status": status, "code": code, "client": client}})


def uvicorn_config(app: Litestar, **overrides: Any) -> uvicorn.Config:
    """What ``artlens serve`` runs: our h11 protocol, its limits and timeouts from the app's settings, no proxy
    headers believed by uvicorn (the rate limiter decides whom to trust: ``ARTLENS_TRUSTED_PROXIES``)."""
    settings: Settings = app.state.settings
    protocol = type("ArtlensH11Protocol", (EdgeH11Protocol,), {"settings": settings, "metrics": app.state.metrics})
    options: dict[str, Any] = {
        "host": settings.host, "port": settings.port, "http": protocol, "ws": "none", "lifespan": "on",
        "proxy_headers": False, "server_header": False, "log_config": None, "access_log": False,
        "timeout_keep_alive": settings.keep_alive_s, "timeout_graceful_shutdown": 30,
        "h11_max_incomplete_event_size": settings.max_url_bytes + settings.max_header_bytes + HEAD_SLACK_BYTES}
    return uvicorn.Config(app, **{**options, **overrides})
