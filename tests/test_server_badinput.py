"""Bad input: malformed requests of every kind get the documented 4xx with a JSON error body, never a 5xx,
and the server keeps serving afterwards. (Plus schemathesis: requests generated from /schema.)"""

from __future__ import annotations

import io

import pytest
from PIL import Image

from .badimages import animated_gif, jpeg_bytes, png_header_only
from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}
JPEG = jpeg_bytes((320, 240))


def _webp() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "WEBP")
    return buf.getvalue()


def raw(body: bytes, ctype: str | None = "image/jpeg", path: str = "/v1/recognize") -> dict:
    return {"method": "POST", "url": path, "content": body, "headers": {"Content-Type": ctype} if ctype else {}}


def multipart(files: list, path: str = "/v1/recognize", headers: dict | None = None, data: dict | None = None) -> dict:
    return {"method": "POST", "url": path, "files": files, "data": data, "headers": headers or {}}


def get(url: str, headers: dict | None = None) -> dict:
    return {"method": "GET", "url": url, "headers": headers or {}}


# (name, request, status, code): the documented answer (docs/service.md, errors table).
CASES = [
    ("truncated JPEG", raw(JPEG[: len(JPEG) // 3]), 422, "undecodable_image"),
    ("JPEG start marker only", raw(b"\xff\xd8\xff"), 415, "unsupported_image"),
    ("JPEG header, no scan data", raw(JPEG[:200]), 422, "undecodable_image"),
    ("truncated WebP", raw(_webp()[:40], "image/webp"), 422, "undecodable_image"),
    ("random bytes", raw(bytes(range(256)) * 8), 415, "unsupported_image"),
    ("text sent as image/jpeg", raw(b"hello " * 100), 415, "unsupported_image"),
    ("PNG bomb 20000x20000", raw(png_header_only(20000, 20000), "image/png"), 413, "image_too_large"),
    ("PNG bomb 100000x100000", raw(png_header_only(100_000, 100_000), "image/png"), 413, "image_too_large"),
    ("animated GIF", raw(animated_gif(), "image/gif"), 415, "unsupported_image"),
    ("PNG bytes claimed HEIC", raw(b"\x89PNG\r\n\x1a\n" + b"\x00" * 50, "image/heic"), 415, "unsupported_image"),
    ("empty body", raw(b""), 422, "undecodable_image"),
    ("text/plain", raw(b"hello", "text/plain"), 415, "unsupported_media_type"),
    ("application/json", raw(b'{"image": "x"}', "application/json"), 415, "unsupported_media_type"),
    ("no content type", raw(JPEG, None), 415, "unsupported_media_type"),
    ("form-urlencoded", raw(b"image=abc", "application/x-www-form-urlencoded"), 415, "unsupported_media_type"),
    ("multipart without image field", multipart([("photo", ("a.jpg", JPEG, "image/jpeg"))]), 400, "missing_image"),
    ("multipart image as text field", multipart([("image", (None, b"not a file"))]), 400, "missing_image"),
    ("multipart with 6 frames", multipart([("image", (f"{i}.jpg", JPEG, "image/jpeg")) for i in range(6)]), 400,
     "too_many_frames"),
    ("multipart frame not an image", multipart([("image", ("a.jpg", b"GIF89a" + b"\x00" * 10, "image/jpeg"))]),
     415, "unsupported_image"),
    ("huge multipart", multipart([("image", ("big.jpg", b"\xff" * 3_500_000, "image/jpeg"))]), 413,
     "payload_too_large"),
    ("huge raw body", raw(b"\xff\xd8" + b"\x00" * 3_500_000), 413, "payload_too_large"),
    ("image above the per-image limit", raw(b"\xff\xd8" + b"\x00" * 1_100_000), 413, "image_too_large"),
    ("multipart, broken boundary", raw(b"--nope\r\ngarbage", "multipart/form-data; boundary=xyz"), 400,
     "invalid_request"),
    ("top_k not a number", raw(JPEG, path="/v1/recognize?top_k=abc"), 400, "invalid_parameter"),
    ("top_k negative", raw(JPEG, path="/v1/recognize?top_k=-3"), 400, "invalid_parameter"),
    ("top_k huge", raw(JPEG, path="/v1/recognize?top_k=100000"), 400, "invalid_parameter"),
    ("min_confidence out of range", raw(JPEG, path="/v1/recognize?min_confidence=1.5"), 400, "invalid_parameter"),
    ("min_confidence NaN", raw(JPEG, path="/v1/recognize?min_confidence=nan"), 400, "invalid_parameter"),
    ("filter without a colon", raw(JPEG, path="/v1/recognize?filter=creator"), 400, "bad_filter"),
    ("filter on an unknown column", raw(JPEG, path="/v1/recognize?filter=password:x"), 400, "bad_filter"),
    ("random=0", get("/v1/artworks?random=0"), 400, "invalid_parameter"),
    ("random too large", get("/v1/artworks?random=100000"), 400, "invalid_parameter"),
    ("limit not a number", get("/v1/artworks?limit=ten"), 400, "invalid_parameter"),
    ("rendition size 0", get("/v1/artworks/smvs-001/image?size=0"), 400, "invalid_parameter"),
    ("rendition size huge", get("/v1/artworks/smvs-001/image?size=999999999999"), 400, "invalid_parameter"),
    ("similar k=0", get("/v1/artworks/smvs-001/similar?k=0"), 400, "invalid_parameter"),
    ("similar unknown method", get("/v1/artworks/smvs-001/similar?method=%3Cscript%3E"), 400, "invalid_parameter"),
    ("unicode id", get("/v1/artworks/%E5%90%8D%E7%94%BB"), 404, "artwork_not_found"),
    ("emoji and RTL id", get("/v1/artworks/%F0%9F%96%BC%E2%80%AEgpj.exe/image"), 404, "artwork_not_found"),
    ("NUL in id", get("/v1/artworks/smvs-001%00/image"), 404, "artwork_not_found"),
    ("path traversal in id", get("/v1/artworks/..%2F..%2F..%2Fetc%2Fpasswd/image"), 404, "not_found"),
    ("dot-dot id", get("/v1/artworks/%2e%2e/similar"), 404, "artwork_not_found"),
    ("very long id", get("/v1/artworks/" + "a" * 8000), 404, "artwork_not_found"),
    ("static traversal", get("/static/..%2F..%2F..%2Fetc%2Fpasswd"), 404, "not_found"),
    ("unknown route", get("/v1/../../etc/passwd"), 404, "not_found"),
    ("wrong method", {"method": "PUT", "url": "/v1/recognize", "content": JPEG, "headers": {}}, 405,
     "method_not_allowed"),
    ("anonymous add, big body", multipart([("image", ("a.jpg", JPEG * 20, "image/jpeg"))], path="/v1/artworks",
                                          data={"object_id": "x"}), 401, "unauthorized"),
    ("admin delete traversal id", {"method": "DELETE", "url": "/v1/artworks/..%2Fbundle.json", "headers": ADMIN},
     404, "not_found"),
    ("admin reload, broken JSON", {"method": "POST", "url": "/v1/index/reload", "content": b"{not json",
                                   "headers": {**ADMIN, "Content-Type": "application/json"}}, 400, "invalid_request"),
    ("admin reload, unknown field", {"method": "POST", "url": "/v1/index/reload", "json": {"path": "/etc"},
                                     "headers": ADMIN}, 400, "invalid_parameter"),
    ("admin reload, not a bundle", {"method": "POST", "url": "/v1/index/reload", "json": {"index": "/etc"},
                                    "headers": ADMIN}, 422, "bad_bundle"),
    ("admin add, corrupt image", multipart([("image", ("a.jpg", JPEG[:300], "image/jpeg"))], path="/v1/artworks",
                                           headers=ADMIN, data={"object_id": "new-1"}), 422, "undecodable_image"),
    ("admin add, metadata not JSON", multipart([("image", ("a.jpg", JPEG, "image/jpeg"))], path="/v1/artworks",
                                               headers=ADMIN, data={"object_id": "new-2", "metadata": "{oops"}), 400,
     "bad_metadata"),
    ("admin add, empty id", multipart([("image", ("a.jpg", JPEG, "image/jpeg"))], path="/v1/artworks",
                                      headers=ADMIN, data={"object_id": " "}), 400, "bad_object_id"),
    ("admin add, not multipart", {"method": "POST", "url": "/v1/artworks", "json": {"object_id": "x"},
                                  "headers": ADMIN}, 415, "unsupported_media_type"),
]


@pytest.fixture(scope="module")
def client(smvs_bundle, tmp_path_factory):
    bundle = copy_bundle(smvs_bundle, tmp_path_factory.mktemp("badinput"))
    with client_for(bundle, max_image_bytes=1_000_000, max_upload_bytes=3_000_000) as c:
        yield c


def test_there_are_at_least_30_cases():
    assert len(CASES) >= 30


@pytest.mark.parametrize(("name", "request_", "status", "code"), CASES, ids=[c[0] for c in CASES])
def test_malformed_request_gets_documented_error(client, name, request_, status, code):
    r = client.request(**request_)
    assert r.status_code == status, f"{name}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body["code"] == code and body["status"] == status and body["message"], body
    assert "Traceback" not in body["message"]


def test_server_still_serves_and_never_answered_5xx(client):
    ok = client.post("/v1/recognize", content=(SMVS / "query" / "001.jpg").read_bytes(),
                     headers={"Content-Type": "image/jpeg"})
    assert ok.status_code == 200 and ok.json()["matches"][0]["object_id"] == "smvs-001"
    metrics = client.get("/metrics").text
    assert 'status="5' not in metrics
    assert client.get("/ready").json()["artworks"] == 14  # nothing the bad requests sent changed the index


def test_schemathesis_finds_no_server_errors(client):
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings

    schema = schemathesis.openapi.from_asgi("/schema/openapi.json", client.app)
    failures = []
    for operation in schema.get_all_operations():
        op = operation.ok()

        @settings(max_examples=8, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck), derandomize=True)
        @given(case=op.as_strategy())
        def run(case):
            kwargs = _body_kwargs(case)
            headers = {**(case.headers or {}), **kwargs.pop("headers", {})}
            response = client.request(case.method, case.formatted_path, params=case.query, headers=headers, **kwargs)
            if response.status_code >= 500:
                failures.append(f"{case.method} {case.formatted_path} {case.query} → {response.status_code}"
                                f" {response.text[:200]}")

        run()
    assert not failures, "\n".join(failures[:10])


def _body_kwargs(case) -> dict:
    body = case.body
    media = case.media_type or ""
    if body is None or media == "":
        return {}
    if media == "multipart/form-data":
        files = []
        for key, value in (body or {}).items():
            for item in value if isinstance(value, list) else [value]:
                data = item if isinstance(item, bytes) else str(item).encode()
                files.append((key, ("f.bin", data, "application/octet-stream")))
        return {"files": files} if files else {"content": b"", "headers": {"Content-Type": media}}
    if isinstance(body, bytes | bytearray):
        return {"content": bytes(body), "headers": {"Content-Type": media}}
    if media.endswith("json"):
        return {"json": body}
    return {"content": str(body).encode(), "headers": {"Content-Type": media}}
