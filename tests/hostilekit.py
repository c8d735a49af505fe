"""Hostile requests over loopback: an httpx client per source address (127.0.0.x are different clients to the
server), raw sockets for what httpx will not send, and one check for every answer: the documented status and
code, a JSON error body, nothing leaked, never a 5xx. Every request sent is counted in ``SENT``."""

from __future__ import annotations

import io
import json
import select
import socket
import threading
import time
from dataclasses import dataclass, field

import httpx
from PIL import Image

LEAKS = ("/tmp", "/work", "/home", "site-packages", "Pillow", "PIL", "faiss", "FAISS", "cv2", "Traceback")
ERROR_LEAKS = ("onnxruntime", "litestar", "Litestar", "uvicorn", "h11", "msgspec")  # in error bodies
SENT = {"requests": 0}
_SENT_LOCK = threading.Lock()  # some groups send from several threads at once
GROUPS_RUN: set[str] = set()


@dataclass
class Answer:
    status: int
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""
    seconds: float = 0.0

    def json(self) -> dict:
        return json.loads(self.body)


def count_request() -> None:
    with _SENT_LOCK:
        SENT["requests"] += 1


def check(answer: Answer | None, status: int | tuple[int, ...], code: str | tuple[str, ...] | None = None,
          what: str = "") -> Answer:
    """The answer has the expected status (one of them) and, for errors, the JSON error body with that code."""
    assert answer is not None, f"{what}: the server closed the connection without an answer"
    statuses = status if isinstance(status, tuple) else (status,)
    assert answer.status in statuses, f"{what}: {answer.status} {answer.body[:300]!r}"
    assert answer.status < 500 or 503 in statuses, f"{what}: server error {answer.status}"
    text = answer.body.decode("utf-8", "replace")
    leaked = [leak for leak in LEAKS if leak in text]
    assert not leaked, f"{what}: the body names {leaked}: {text[:300]}"
    if answer.status >= 400:
        leaked = [leak for leak in ERROR_LEAKS if leak in text]
        assert not leaked, f"{what}: the error names {leaked}: {text[:300]}"
        assert answer.headers.get("content-type", "").startswith("application/json"), f"{what}: {answer.headers}"
        body = answer.json()
        assert set(body) == {"code", "message", "status", "request_id"}, f"{what}: {body}"
        assert body["status"] == answer.status and body["message"] and body["request_id"], f"{what}: {body}"
        codes = code if isinstance(code, tuple) else (code,)
        assert code is None or body["code"] in codes, f"{what}: code {body['code']!r}, expected {code}: {body}"
    return answer


class Client:
    """httpx from one loopback source address (the server sees it as that client's address)."""

    def __init__(self, url: str, source: str = "127.0.0.1") -> None:
        self.http = httpx.Client(base_url=url, timeout=60, transport=httpx.HTTPTransport(local_address=source))

    def send(self, method: str, path: str, **kwargs) -> Answer:
        count_request()
        started = time.monotonic()
        r = self.http.request(method, path, **kwargs)
        return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content,
                      time.monotonic() - started)

    def expect(self, status, code, method: str, path: str, **kwargs) -> Answer:
        return check(self.send(method, path, **kwargs), status, code, f"{method} {path[:100]}")

    def close(self) -> None:
        self.http.close()


def read_answer(sock: socket.socket, timeout: float) -> Answer | None:
    deadline = time.monotonic() + timeout
    buf = b""
    while b"\r\n\r\n" not in buf:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            chunk = b""
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return Answer(int(lines[0].split(" ")[1]), headers, body[:length])


def raw(port: int, *pieces: bytes, pause: float = 0.0, source: str = "127.0.0.1", timeout: float = 20.0,
        close_early: bool = False) -> Answer | None:
    """Send ``pieces`` as they are (``pause`` s apart) on a fresh connection and read one answer; None when the
    server closed without one. ``close_early``: hang up after sending (a client that aborts) and read nothing."""
    count_request()
    started = time.monotonic()
    with socket.socket() as sock:
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        try:
            for i, piece in enumerate(pieces):
                if i and pause and select.select([sock], [], [], pause)[0]:
                    break  # the server answered before the request was all sent: stop and read it
                sock.sendall(piece)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed early: its answer may still be readable
        if close_early:
            return None
        answer = read_answer(sock, timeout)
    if answer is not None:
        answer.seconds = time.monotonic() - started
    return answer


def request_bytes(method: str, target: str, headers: dict[str, str] | None = None, body: bytes = b"",
                  content_length: int | None = None) -> bytes:
    """An HTTP/1.1 request written out by hand (``content_length`` may claim more than ``body``)."""
    fields = {"Host": "artlens.test", "Connection": "close", **(headers or {})}
    if body or content_length is not None:
        fields["Content-Length"] = str(len(body) if content_length is None else content_length)
    head = f"{method} {target} HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields.items()) + "\r\n"
    return head.encode("latin-1") + body


def image_bytes(size: tuple[int, int], fmt: str = "PNG", color: str = "red") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, fmt)
    return buf.getvalue()


def heic_garbage() -> bytes:
    """An ISO-BMFF ``ftyp heic`` box, then bytes that are no HEIF at all."""
    return b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic" + bytes(range(256)) * 16


def multipart_body(parts: list[tuple[str, str | None, bytes]], boundary: str = "hostile-boundary") -> bytes:
    """(name, filename or None for a text field, data) → a multipart/form-data body."""
    out = []
    for name, filename, data in parts:
        disposition = f'form-data; name="{name}"' + (f'; filename="{filename}"' if filename else "")
        kind = "Content-Type: application/octet-stream\r\n" if filename else ""
        out.append(f"--{boundary}\r\nContent-Disposition: {disposition}\r\n{kind}\r\n".encode() + data + b"\r\n")
    return b"".join(out) + f"--{boundary}--\r\n".encode()


def metric_statuses(text: str) -> set[str]:
    """The statuses counted in the request-duration histogram of a /metrics answer."""
    found = set()
    for line in text.splitlines():
        if line.startswith("artlens_http_request_duration_seconds_count{"):
            found.add(line.split('status="')[1].split('"')[0])
    return found


def seconds_until_closed(sock: socket.socket, limit: float, drip_every: float | None = None) -> float | None:
    """Seconds until the server closes ``sock`` (None if still open after ``limit``); with ``drip_every``, a byte
    is sent that often meanwhile (a body that never ends)."""
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < limit:
        if select.select([sock], [], [], min(drip_every or limit, limit - elapsed))[0]:
            try:
                if sock.recv(65536):
                    continue  # nothing should come after a complete answer, but it is not a close either
            except ConnectionResetError:
                pass
            return time.monotonic() - started
        if drip_every:
            try:
                sock.sendall(b"a")
            except (BrokenPipeError, ConnectionResetError):
                return time.monotonic() - started
    return None
