"""The hostile requests of tests/test_hostile.py as tables: (what, method, path, httpx keywords, status, code) for
the main server, (what, raw bytes, status, code) for requests written by hand. Status and code are the documented
answer (docs/service.md, errors table); a tuple allows either of two documented answers."""

from __future__ import annotations

import json
from pathlib import Path

from .badimages import animated_gif, jpeg_bytes, png_header_only
from .hostilekit import heic_garbage, image_bytes, multipart_body, request_bytes
from .serverkit import API_KEY

APP_KEY = "museum-app-1"
MAX_PIXELS = 40_000_000
MAIN_SETTINGS = {"max_image_bytes": 1_000_000, "max_upload_bytes": 3_000_000, "max_pixels": MAX_PIXELS,
                 "cors_origins": ["https://museum.example"], "rate_limit_per_minute": 0,
                 "admin_failures_per_minute": 1000}
ADMIN = {"X-API-Key": API_KEY}
JPEG = jpeg_bytes((320, 240))
ORIGIN = "https://museum.example"

# (what, bytes, content type, status, code): sent as a raw body and as a multipart `image` part.
IMAGES = [
    ("0 bytes", b"", 422, "undecodable_image"),
    ("truncated JPEG", JPEG[: len(JPEG) // 3], 422, "undecodable_image"),
    ("JPEG header only", JPEG[:200], 422, "undecodable_image"),
    ("PNG whose pixel data is short", png_header_only(64, 64), 422, "undecodable_image"),
    ("pixel bomb PNG 30000x30000", png_header_only(30_000, 30_000), 413, "image_too_large"),
    ("pixel bomb PNG 7000x7000", png_header_only(7000, 7000), 413, "image_too_large"),
    ("animated GIF", animated_gif(), 415, "unsupported_image"),
    ("1x1 PNG", image_bytes((1, 1)), (200, 422), "too_few_features"),
    ("HEIC garbage", heic_garbage(), (415, 422), ("unsupported_image", "undecodable_image")),
    ("random bytes", bytes(range(256)) * 8, 415, "unsupported_image"),
    ("SVG", b'<svg xmlns="http://www.w3.org/2000/svg" width="9" height="9"/>', 415, "unsupported_image"),
    ("PDF", b"%PDF-1.4\n1 0 obj << >> endobj\ntrailer << >>\n%%EOF\n", 415, "unsupported_image"),
]
CTYPE = {"PNG": "image/png", "pixel": "image/png", "animated": "image/gif", "1x1": "image/png",
         "HEIC": "image/heic", "SVG": "image/svg+xml", "PDF": "application/octet-stream"}


def _ctype(what: str) -> str:
    return next((v for k, v in CTYPE.items() if k in what), "image/jpeg")


def _raw_image(body: bytes, ctype: str | None) -> dict:
    return {"content": body, "headers": {"Content-Type": ctype} if ctype else {}}


def _parts(n: int, data: bytes = b"x") -> dict:
    return {"files": [("image", (f"{i}.jpg", data, "image/jpeg")) for i in range(n)]}


def _multipart(body: bytes, ctype: str = "multipart/form-data; boundary=hostile-boundary") -> dict:
    return {"content": body, "headers": {"Content-Type": ctype}}


def _preflight(origin: str, method: str = "POST", headers: str | None = None) -> dict:
    fields = {"Origin": origin, "Access-Control-Request-Method": method}
    if headers:
        fields["Access-Control-Request-Headers"] = headers
    return {"headers": fields}


def _add(object_id: str, image: bytes = JPEG, **fields: str) -> dict:
    return {"files": [("image", ("../../evil.jpg", image, "image/jpeg"))], "data": {"object_id": object_id, **fields},
            "headers": ADMIN}


GET, POST = "GET", "POST"
MAIN_CASES: list[tuple] = [
    # -- oversize request targets and headers ---------------------------------------------------------------------
    ("60 kB query string", GET, "/v1/artworks?q=" + "a" * 60_000, {}, 414, "uri_too_long"),
    ("10 kB query string", GET, "/v1/artworks?q=" + "a" * 10_000, {}, 414, "uri_too_long"),
    ("9 kB path", GET, "/v1/artworks/" + "a" * 9000, {}, 414, "uri_too_long"),
    ("200 kB header", GET, "/health", {"headers": {"X-Big": "a" * 200_000}}, 431, "headers_too_large"),
    ("40 kB header", GET, "/v1/artworks", {"headers": {"X-Big": "a" * 40_000}}, 431, "headers_too_large"),
    ("60 kB cookie", GET, "/", {"headers": {"Cookie": "s=" + "c" * 60_000}}, 431, "headers_too_large"),
    ("150 header fields", GET, "/health", {"headers": {f"X-H{i}": "v" for i in range(150)}}, 431,
     "headers_too_large"),
    # -- CORS preflights --------------------------------------------------------------------------------------------
    ("preflight from a foreign origin", "OPTIONS", "/v1/recognize", _preflight("https://evil.example"), 403,
     "cors_forbidden"),
    ("preflight from origin null", "OPTIONS", "/v1/recognize", _preflight("null"), 403, "cors_forbidden"),
    ("preflight from the origin on another port", "OPTIONS", "/v1/recognize", _preflight(ORIGIN + ":8443"), 403,
     "cors_forbidden"),
    ("preflight from a 5 kB origin", "OPTIONS", "/v1/artworks", _preflight("https://" + "a" * 5000 + ".ex"), 403,
     "cors_forbidden"),
    ("preflight for PUT", "OPTIONS", "/v1/recognize", _preflight(ORIGIN, "PUT"), 403, "cors_forbidden"),
    ("preflight for a header not allowed", "OPTIONS", "/v1/recognize", _preflight(ORIGIN, "POST", "X-Evil"), 403,
     "cors_forbidden"),
    ("preflight of an admin route, foreign origin", "OPTIONS", "/v1/index/reload", _preflight("https://e.example"),
     403, "cors_forbidden"),
    ("preflight allowed", "OPTIONS", "/v1/recognize",
     _preflight(ORIGIN, "POST", "content-type, x-device-id, x-app-key"), 204, None),
    ("cross-origin GET from a foreign origin", GET, "/health", {"headers": {"Origin": "https://evil.example"}},
     200, None),
    # -- malformed multipart ----------------------------------------------------------------------------------------
    ("multipart without a boundary", POST, "/v1/recognize", _multipart(b"--x\r\n\r\n", "multipart/form-data"), 400,
     "invalid_request"),
    ("multipart, broken boundary", POST, "/v1/recognize",
     _multipart(b"--nope\r\ngarbage", "multipart/form-data; boundary=xyz"), 400, "invalid_request"),
    ("multipart, 5000-char boundary", POST, "/v1/recognize",
     _multipart(b"--" + b"b" * 5000 + b"\r\n", "multipart/form-data; boundary=" + "b" * 5000), 400,
     "invalid_request"),
    ("multipart, 6 image parts", POST, "/v1/recognize", _parts(6), 400, "too_many_frames"),
    ("multipart, 40 image parts", POST, "/v1/recognize", _parts(40), 400, "too_many_frames"),
    ("multipart, 200 image parts", POST, "/v1/recognize", _parts(200), 400, "too_many_frames"),
    ("multipart, text part named image", POST, "/v1/recognize", {"files": [("image", (None, b"not a file"))]}, 400,
     "missing_image"),
    ("multipart, text fields only", POST, "/v1/recognize", {"files": [("note", (None, b"hello"))]}, 400,
     "missing_image"),
    ("multipart, a part without a name", POST, "/v1/recognize", _multipart(
        b'--hostile-boundary\r\nContent-Disposition: form-data; filename="a.jpg"\r\n\r\nabc\r\n'
        b"--hostile-boundary--\r\n"), 400, "missing_image"),
    ("multipart, empty body", POST, "/v1/recognize", _multipart(b""), 400, "missing_image"),
    ("multipart, a 1.5 MB image part", POST, "/v1/recognize", _parts(1, b"\xff\xd8" + b"\x00" * 1_500_000), 413,
     "image_too_large"),
    ("multipart, a 3.5 MB body", POST, "/v1/recognize", _parts(1, b"\xff" * 3_500_000), 413, "payload_too_large"),
    ("multipart, filename with traversal", POST, "/v1/recognize",
     {"files": [("image", ("../../../etc/passwd", JPEG, "image/jpeg"))]}, 200, None),
    # -- wrong content types ----------------------------------------------------------------------------------------
    ("JPEG sent as text/plain", POST, "/v1/recognize", _raw_image(JPEG, "text/plain"), 415, "unsupported_media_type"),
    ("JPEG without a content type", POST, "/v1/recognize", _raw_image(JPEG, None), 415, "unsupported_media_type"),
    ("JPEG sent as JSON", POST, "/v1/recognize", _raw_image(JPEG, "application/json"), 415, "unsupported_media_type"),
    ("text with junk content-type parameters", POST, "/v1/recognize",
     _raw_image(b"hello" * 20, "image/jpeg; charset=evil; boundary=x"), 415, "unsupported_image"),
    ("raw body over the image limit", POST, "/v1/recognize",
     _raw_image(b"\xff\xd8" + b"\x00" * 1_100_000, "image/jpeg"), 413, "image_too_large"),
    # -- admin --------------------------------------------------------------------------------------------------------
    ("add without a key", POST, "/v1/artworks", {**_add("x"), "headers": {}}, 401, "unauthorized"),
    ("reload with a wrong key", POST, "/v1/index/reload", {"headers": {"X-API-Key": "wrong"}}, 401, "unauthorized"),
    ("delete with an empty key", "DELETE", "/v1/artworks/smvs-001", {"headers": {"X-API-Key": ""}}, 401,
     "unauthorized"),
    ("reload with a 10 kB key", POST, "/v1/index/reload", {"headers": {"X-API-Key": "k" * 10_000}}, 401,
     "unauthorized"),
    ("key in the query string", POST, "/v1/index/reload?api_key=" + API_KEY, {}, 401, "unauthorized"),
    ("key as a bearer token", POST, "/v1/index/reload", {"headers": {"Authorization": f"Bearer {API_KEY}"}}, 401,
     "unauthorized"),
    *[(f"add with id {object_id!r}", POST, "/v1/artworks", _add(object_id), 400, "bad_object_id")
      for object_id in ("a/b", "..", ".", "a\\b", "../../bundle.json", "tab\there", "nul\x00id", "bell\x07",
                        "line\nbreak", "x" * 201, "", "   ", "\u202egpj.exe\x1b[31m")],
    ("add with a 1x1 image", POST, "/v1/artworks", _add("tiny-1x1", image_bytes((1, 1))), 422, "too_few_features"),
    ("add with metadata not an object", POST, "/v1/artworks", _add("meta-1", metadata="[1, 2]"), 400,
     "bad_metadata"),
    ("add, not multipart", POST, "/v1/artworks", {"json": {"object_id": "x"}, "headers": ADMIN}, 415,
     "unsupported_media_type"),
    ("delete, id with %2F traversal", "DELETE", "/v1/artworks/..%2F..%2Fbundle.json", {"headers": ADMIN}, 404,
     "not_found"),
    ("delete, id a%2Fb", "DELETE", "/v1/artworks/a%2Fb", {"headers": ADMIN}, 404, "not_found"),
    ("delete, id ..", "DELETE", "/v1/artworks/%2e%2e", {"headers": ADMIN}, 404, "artwork_not_found"),
    ("delete, id with NUL", "DELETE", "/v1/artworks/a%00b", {"headers": ADMIN}, 404, "artwork_not_found"),
    ("delete, id with CRLF", "DELETE", "/v1/artworks/%0d%0aX-Injected:%201", {"headers": ADMIN}, 404,
     "artwork_not_found"),
    ("delete, 5000-char id", "DELETE", "/v1/artworks/" + "z" * 5000, {"headers": ADMIN}, 404, "artwork_not_found"),
    ("reload, broken JSON", POST, "/v1/index/reload",
     {"content": b"{not json", "headers": {**ADMIN, "Content-Type": "application/json"}}, 400, "invalid_request"),
    ("reload, unknown field", POST, "/v1/index/reload", {"json": {"path": "/etc"}, "headers": ADMIN}, 400,
     "invalid_parameter"),
    ("reload, not a bundle", POST, "/v1/index/reload", {"json": {"index": "/etc"}, "headers": ADMIN}, 422,
     "bad_bundle"),
    # -- methods ------------------------------------------------------------------------------------------------------
    *[(f"{method} {path}", method, path, {}, 405, "method_not_allowed") for method, path in [
        ("PUT", "/v1/recognize"), ("PATCH", "/v1/artworks/smvs-001"), ("DELETE", "/health"), ("POST", "/metrics"),
        ("PUT", "/v1/index/reload"), ("FOO", "/health"), ("TRACE", "/"), ("POST", "/schema/openapi.json"),
        ("DELETE", "/v1/artworks"), ("GET", "/v1/index/reload"), ("POST", "/static/app.js"),
        ("PROPFIND", "/v1/artworks"), ("GET", "/v1/recognize")]],
    # -- unicode and percent-encoding in ids ------------------------------------------------------------------------
    *[(f"id {path}", GET, path, {}, 404, "artwork_not_found") for path in [
        "/v1/artworks/%E5%90%8D%E7%94%BB", "/v1/artworks/%F0%9F%96%BC%E2%80%AEgpj.exe/image",
        "/v1/artworks/%C0%AE%C0%AE", "/v1/artworks/%FF%FE/similar", "/v1/artworks/smvs-001%252Fx",
        "/v1/artworks/SMVS-001", "/v1/artworks/%E2%80%8Bsmvs-001", "/v1/artworks/smvs-001%20",
        "/v1/artworks/%EF%BC%8E%EF%BC%8E", "/v1/artworks/%00", "/v1/artworks/%u002e%u002e/image",
        "/v1/artworks/smvs-001%0A/similar", "/v1/artworks/" + "%F0%9F%98%80" * 300]],
    ("id with an encoded unreserved character", GET, "/v1/artworks/smvs%2D001", {}, 200, None),
    ("segments of a bundle without them", GET, "/v1/artworks/smvs-001%00/segments", {}, 404,
     ("artwork_not_found", "no_segments")),
    ("segment id with %23", GET, "/v1/segments/smvs-001%23999/similar", {}, 404, "no_segments"),
    ("segment id emoji", GET, "/v1/segments/%F0%9F%98%80/similar", {}, 404, "no_segments"),
    # -- huge and odd numbers in query parameters ----------------------------------------------------------------------
    *[(f"query {query}", GET, query, {}, 400, "invalid_parameter") for query in [
        "/v1/artworks?random=99999999999999999999999999", "/v1/artworks?offset=1e309", "/v1/artworks?offset=-1",
        "/v1/artworks?limit=1e400", "/v1/artworks?limit=NaN", "/v1/artworks?limit=Infinity",
        "/v1/artworks?random=2&seed=18446744073709551616", "/v1/artworks?random=0x10", "/v1/artworks?random=%D9%A1",
        "/v1/artworks?random=-0", "/v1/artworks?limit=%00", "/v1/artworks/smvs-001/similar?k=99999999999999999999",
        "/v1/artworks/smvs-001/similar?k=1.5", "/v1/artworks/smvs-001/image?size=1e999",
        "/v1/artworks/smvs-001/image?size=-5", "/v1/artworks/smvs-001/image?size=1",
        "/v1/segments/smvs-001%230/similar?k=1e99", "/v1/artworks/smvs-001/similar?method=..%2F..%2Fetc"]],
    *[(f"recognise {query}", POST, "/v1/recognize?" + query, _raw_image(JPEG, "image/jpeg"), 400, "invalid_parameter")
      for query in ["top_k=1e308", "top_k=9223372036854775808", "top_k=-1", "min_confidence=inf",
                    "min_confidence=1e999", "min_confidence=-1e-9", "top_k=%00", "creator=" + "a" * 300]],
    ("recognise with 300 filters", POST, "/v1/recognize?" + "&".join(f"filter=c{i}:v" for i in range(300)),
     _raw_image(JPEG, "image/jpeg"), 400, "bad_filter"),
    # -- renditions ---------------------------------------------------------------------------------------------
    ("If-None-Match: *", GET, "/v1/artworks/smvs-001/image?size=128", {"headers": {"If-None-Match": "*"}}, 304,
     None),
    ("If-None-Match: 10 kB of junk", GET, "/v1/artworks/smvs-001/image?size=128",
     {"headers": {"If-None-Match": "j" * 10_000}}, 200, None),
    ("image of an unknown artwork", GET, "/v1/artworks/no-such-artwork/image", {}, 404, "artwork_not_found"),
]
for _what, _data, _status, _code in IMAGES:
    MAIN_CASES.append((f"raw {_what}", POST, "/v1/recognize", _raw_image(_data, _ctype(_what)), _status, _code))
    MAIN_CASES.append((f"multipart {_what}", POST, "/v1/recognize",
                       {"files": [("image", ("photo.jpg", _data, _ctype(_what)))]}, _status, _code))


def _get(target: str) -> bytes:
    return request_bytes("GET", target)


RAW_CASES: list[tuple] = [
    ("1 MB query string", _get("/health?" + "a" * 1_000_000), 414, "uri_too_long"),
    ("1 MB path", _get("/" + "a" * 1_000_000), 414, "uri_too_long"),
    ("200 kB header", request_bytes("GET", "/health", {"X-Big": "a" * 200_000}), 431, "headers_too_large"),
    ("2000 header fields of 100 bytes", request_bytes("GET", "/health", {f"X-{i}": "v" * 95 for i in range(2000)}),
     431, "headers_too_large"),
    ("2000 tiny header fields", request_bytes("GET", "/health", {f"X{i}": "v" for i in range(2000)}), 431,
     "headers_too_large"),
    ("request line without a version", b"GET /health\r\n\r\n", 400, "invalid_request"),
    ("TLS ClientHello on the plain port", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(32) + b"\r\n\r\n",
     400, "invalid_request"),
    ("non-ASCII bytes in the path", b"GET /v1/artworks/\xe5\x90\x8d HTTP/1.1\r\nHost: x\r\n\r\n", 400,
     "invalid_request"),
    ("two different Content-Lengths", b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n"
     b"Content-Length: 5\r\n\r\nabc", 400, "invalid_request"),
    ("negative Content-Length", b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400,
     "invalid_request"),
    ("bad chunk size", b"POST /v1/recognize HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
     b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n", 400, "invalid_request"),
    ("no Host header", b"GET /health HTTP/1.1\r\n\r\n", 400, "invalid_request"),
    ("space before a header colon", b"GET /health HTTP/1.1\r\nHost: x\r\nX-Foo : bar\r\n\r\n", 400,
     "invalid_request"),
    ("NUL in a header value", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\x00b\r\n\r\n", 400, "invalid_request"),
    ("folded header line", b"GET /health HTTP/1.1\r\nHost: x\r\nX-A: a\r\n b\r\n\r\n", (200, 400),
     "invalid_request"),
    ("Content-Length 10^12", request_bytes("POST", "/v1/recognize", {"Content-Type": "image/jpeg"}, b"", 10**12),
     413, "payload_too_large"),
    ("Content-Length 10^30 with Expect: 100-continue",
     request_bytes("POST", "/v1/recognize", {"Content-Type": "image/jpeg", "Expect": "100-continue"}, b"", 10**30),
     (400, 413), ("invalid_request", "payload_too_large")),
    ("absolute-form target", _get("http://evil.example/etc/passwd"), 404, "not_found"),
    ("asterisk-form OPTIONS", request_bytes("OPTIONS", "*"), (404, 405), ("not_found", "method_not_allowed")),
    ("CRLF in an id", _get("/v1/artworks/%0d%0aSet-Cookie:%20x=1"), 404, "artwork_not_found"),
    *[(f"traversal {target}", _get(target), 404, ("not_found", "artwork_not_found")) for target in [
        "/static/../../server/app.py", "/static/%2e%2e/%2e%2e/server/app.py", "/static/..%2F..%2F..%2Fetc%2Fpasswd",
        "/static/..%5C..%5Cserver%5Capp.py", "/static/app.js%00.png", "/static/%252e%252e%252fserver%252fapp.py",
        "/static/", "//etc/passwd", "/v1/../../../etc/passwd", "/v1/artworks/..%2F..%2Fbundle.json/image",
        "/v1/artworks/%2e%2e%2f%2e%2e%2fbundle.json", "/v1/artworks/smvs-001/image/../../../../etc/passwd",
        "/schema/..%2F..%2Fetc%2Fpasswd", "/static\\..\\..\\server\\app.py", "/static/./../bundle.json",
        "/v1/artworks/smvs-001/../../../bundle.json", "/%2e%2e/%2e%2e/etc/passwd", "/static/%c0%ae%c0%ae/app.py"]],
    ("multipart via raw bytes, 40 parts", request_bytes(
        "POST", "/v1/recognize", {"Content-Type": "multipart/form-data; boundary=hostile-boundary"},
        multipart_body([("image", f"{i}.jpg", b"x") for i in range(40)])), 400, "too_many_frames"),
]


def bad_bundle_dirs(root: Path) -> dict[str, Path]:
    """Directories whose bundle.json is unusable, and a path that is a file, made under ``root``."""
    contents = {"list": b"[]", "null": b"null", "non-UTF-8": b"\xff\xfe{\x00\x80\x81", "not JSON": b"{oops",
                "missing keys": b"{}", "a string": json.dumps("bundle").encode(), "deep": b"[" * 100_000}
    made = {}
    for name, data in contents.items():
        folder = root / name.replace(" ", "-")
        folder.mkdir()
        (folder / "bundle.json").write_bytes(data)
        made[name] = folder
    made["a file, not a directory"] = root / "list" / "bundle.json"
    return made
