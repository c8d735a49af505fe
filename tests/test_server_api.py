"""The HTTP service through Litestar's TestClient: every route, error code and the admin auth, on the real
app (tiny random-init model, a copy of the SMVS test bundle, real phone photos from ../shared)."""

from __future__ import annotations

import logging
import shutil

import pytest

from artlens.server.requestlog import JsonFormatter

from .badimages import jpeg_bytes, png_header_only
from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}


def photo(name: str) -> bytes:
    return (SMVS / "query" / name).read_bytes()


@pytest.fixture(scope="module")
def bundle_copy(smvs_bundle, tmp_path_factory):
    return copy_bundle(smvs_bundle, tmp_path_factory.mktemp("served"))


@pytest.fixture(scope="module")
def client(bundle_copy):
    with client_for(bundle_copy, max_image_bytes=2_000_000, max_upload_bytes=6_000_000) as c:
        yield c


# -- recognition ------------------------------------------------------------------------------------------------
def test_recognize_multipart_photo(client):
    r = client.post("/v1/recognize", files=[("image", ("q.jpg", photo("001.jpg"), "image/jpeg"))])
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "match"
    best = body["matches"][0]
    assert best["object_id"] == "smvs-001" and best["verified"] and best["confidence"] >= body["threshold"]
    assert len(best["outline"]) == 4 and best["frame"] == 0 and best["support"] == 1
    assert best["image_url"] == "/v1/artworks/smvs-001/image" and best["segment"] is None
    assert body["model"]["pretrained"] is False and body["model"]["shortlist"] == "local"
    # A random-init model's local shortlist: the photo is not embedded, and the answer says what it rests on.
    assert body["signals"] == ["local_features", "vlad", "descriptor_votes"] and best["similarity"] is None
    timing = r.headers["server-timing"]
    for stage in ("decode", "features", "search", "verify", "total"):
        assert f"{stage};dur=" in timing
    assert "embed;dur=" not in timing
    assert r.headers["x-request-id"]


def test_recognize_raw_body_no_match_and_client_request_id(client):
    r = client.post("/v1/recognize", content=(SMVS / "nomatch" / "landmark-001.jpg").read_bytes(),
                    headers={"Content-Type": "image/jpeg", "X-Request-ID": "phone-42"})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "no_match" and body["matches"] == []
    assert body["best_rejected"] is not None and not body["best_rejected"]["verified"]
    assert r.headers["x-request-id"] == "phone-42"


def test_burst_fuses_frames(client):
    # The painting is only in the second frame: the fused answer names it, with the frame its outline is in.
    frames = [("image", ("a.jpg", (SMVS / "nomatch" / "landmark-003.jpg").read_bytes(), "image/jpeg")),
              ("image", ("b.jpg", photo("003.jpg"), "image/jpeg"))]
    r = client.post("/v1/recognize", files=frames)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["frames"] == 2 and body["status"] == "match"
    assert body["matches"][0]["object_id"] == "smvs-003" and body["matches"][0]["frame"] == 1


def test_filter_is_applied_inside_the_search(client):
    # Unfiltered with a shortlist of 1, only the photographed painting is verified. Filtered to another
    # painting, that painting is what gets verified (and rejected): post-filtering would have had nothing.
    plain = client.post("/v1/recognize?top_k=1", content=photo("001.jpg"), headers={"Content-Type": "image/jpeg"})
    assert plain.json()["matches"][0]["object_id"] == "smvs-001"
    r = client.post("/v1/recognize?top_k=1&filter=title:Painting%20003", content=photo("001.jpg"),
                    headers={"Content-Type": "image/jpeg"})
    body = r.json()
    assert r.status_code == 200 and body["status"] == "no_match" and body["filters"] == {"title": "Painting 003"}
    assert body["best_rejected"]["object_id"] == "smvs-003"
    ok = client.post("/v1/recognize?filter=title:painting%20001", content=photo("001.jpg"),
                     headers={"Content-Type": "image/jpeg"})
    assert ok.json()["matches"][0]["object_id"] == "smvs-001"  # case-insensitive


@pytest.mark.parametrize(("query", "code"), [("creator=Nobody", "bad_filter"), ("filter=oops", "bad_filter"),
                                             ("top_k=0", "invalid_parameter"),
                                             ("min_confidence=2", "invalid_parameter")])
def test_bad_options(client, query, code):
    r = client.post(f"/v1/recognize?{query}", content=b"x", headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 400 and r.json()["code"] == code


@pytest.mark.parametrize(("body", "ctype", "status", "code"), [
    (b"plain text", "text/plain", 415, "unsupported_media_type"),
    (b"not an image at all", "image/jpeg", 415, "unsupported_image"),
    (jpeg_bytes((200, 200))[:300], "image/jpeg", 422, "undecodable_image"),
    (png_header_only(20000, 20000), "image/png", 413, "image_too_large"),
    (b"", "image/jpeg", 422, "undecodable_image"),
    (b"\xff\xd8" + b"\x00" * 2_100_000, "image/jpeg", 413, "image_too_large"),
])
def test_image_errors(client, body, ctype, status, code):
    r = client.post("/v1/recognize", content=body, headers={"Content-Type": ctype})
    assert r.status_code == status, r.text
    err = r.json()
    assert err["code"] == code and err["status"] == status and err["message"] and err["request_id"]


def test_burst_limits_and_missing_field(client):
    six = [("image", (f"{i}.jpg", b"x", "image/jpeg")) for i in range(6)]
    r = client.post("/v1/recognize", files=six)
    assert r.status_code == 400 and r.json()["code"] == "too_many_frames"
    r = client.post("/v1/recognize", files=[("photo", ("a.jpg", b"x", "image/jpeg"))])
    assert r.status_code == 400 and r.json()["code"] == "missing_image"
    r = client.post("/v1/recognize", content=b"\x00" * 7_000_000, headers={"Content-Type": "image/jpeg"})
    assert r.status_code == 413 and r.json()["code"] == "payload_too_large"


def test_overload_answers_503_with_retry_after(client):
    service = client.app.state.recognition
    service.pending = service.capacity  # every slot taken (the load test saturates it for real)
    try:
        r = client.post("/v1/recognize", content=photo("001.jpg"), headers={"Content-Type": "image/jpeg"})
    finally:
        service.pending = 0
    assert r.status_code == 503 and r.json()["code"] == "overloaded"
    assert int(r.headers["retry-after"]) >= 1


# -- browsing ---------------------------------------------------------------------------------------------------
def test_browse_random_page_and_one(client):
    a = client.get("/v1/artworks?random=5&seed=3").json()
    assert len(a["artworks"]) == 5 and a["total"] == 14
    assert a == client.get("/v1/artworks?random=5&seed=3").json()
    page = client.get("/v1/artworks?offset=10&limit=10").json()
    assert len(page["artworks"]) == 4
    one = client.get("/v1/artworks/smvs-003").json()
    assert one["metadata"] == {"title": "Painting 003"} and one["width"] > 0
    missing = client.get("/v1/artworks/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "artwork_not_found"
    assert missing.json()["message"] == "no artwork with id 'nope' in this index"
    long_id = client.get("/v1/artworks/" + "x" * 81 + "/similar").json()
    assert long_id["status"] == 404 and long_id["message"] == "no artwork with id '" + "x" * 80 + "…' in this index"


def test_image_renditions_etag_and_304(client):
    r = client.get("/v1/artworks/smvs-001/image?size=200")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert "max-age" in r.headers["cache-control"]
    from io import BytesIO

    from PIL import Image

    assert max(Image.open(BytesIO(r.content)).size) <= 256  # 200 snaps up to the 256 rendition
    etag = r.headers["etag"]
    again = client.get("/v1/artworks/smvs-001/image?size=256", headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    other = client.get("/v1/artworks/smvs-001/image?size=1024")
    assert other.headers["etag"] != etag
    assert client.get("/v1/artworks/smvs-001/image?size=5").status_code == 400


def test_similar_says_which_index(client):
    r = client.get("/v1/artworks/smvs-001/similar?k=5").json()
    assert r["method"] == "vlad" and r["pretrained"] is False  # random-init: DINOv2 similarity is chance
    assert len(r["results"]) == 5 and all(x["artwork"]["object_id"] != "smvs-001" for x in r["results"])
    # Built without global embeddings (random-init, local shortlist): dinov2 is refused, naming what works.
    d = client.get("/v1/artworks/smvs-001/similar?k=3&method=dinov2")
    assert d.status_code == 422 and d.json()["code"] == "method_unavailable" and "method=vlad" in d.json()["message"]
    assert client.get("/v1/artworks/smvs-001/similar?method=magic").status_code == 400


# -- admin ------------------------------------------------------------------------------------------------------
def _add(client, headers, object_id="smvs-025"):
    ref = (SMVS / "reference" / "025.jpg").read_bytes()
    return client.post("/v1/artworks", headers=headers,
                       files=[("image", ("025.jpg", ref, "image/jpeg"))],
                       data={"object_id": object_id, "metadata": '{"title": "Painting 025"}', "creator": "Someone"})


@pytest.mark.parametrize("headers", [{}, {"X-API-Key": "wrong"}, {"X-API-Key": ""}])
def test_admin_routes_refuse_anonymous_and_change_nothing(client, headers):
    before = client.get("/ready").json()
    assert _add(client, headers).status_code == 401
    r = client.delete("/v1/artworks/smvs-001", headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "unauthorized"
    assert client.post("/v1/index/reload", headers=headers).status_code == 401
    assert client.get("/ready").json() == before
    assert client.get("/v1/artworks/smvs-001").status_code == 200


def test_add_then_delete_artwork_persists_across_restart(client, bundle_copy):
    assert client.post("/v1/recognize", content=photo("025.jpg"),
                       headers={"Content-Type": "image/jpeg"}).json()["status"] == "no_match"
    version = client.get("/ready").json()["bundle_version"]
    r = _add(client, ADMIN)
    assert r.status_code == 201, r.text
    added = r.json()
    assert added["bundle_version"] == version + 1 and added["keypoints"] > 50
    assert added["artwork"]["metadata"] == {"title": "Painting 025", "creator": "Someone"}
    assert _add(client, ADMIN).json()["code"] == "artwork_exists"
    # Visible to the next request, with its stored image.
    hit = client.post("/v1/recognize", content=photo("025.jpg"), headers={"Content-Type": "image/jpeg"}).json()
    assert hit["status"] == "match" and hit["matches"][0]["object_id"] == "smvs-025"
    assert client.get("/v1/artworks/smvs-025/image").status_code == 200
    assert client.post("/v1/recognize?creator=someone", content=photo("025.jpg"),
                       headers={"Content-Type": "image/jpeg"}).json()["status"] == "match"
    # A restart (a new app on the same directory) serves the new version.
    with client_for(bundle_copy) as restarted:
        assert restarted.get("/ready").json()["bundle_version"] == version + 1
        assert restarted.get("/v1/artworks/smvs-025").status_code == 200
    gone = client.delete("/v1/artworks/smvs-025", headers=ADMIN)
    assert gone.status_code == 200 and gone.json()["bundle_version"] == version + 2
    assert client.get("/v1/artworks/smvs-025").status_code == 404
    deleted_again = client.delete("/v1/artworks/smvs-025", headers=ADMIN)
    assert deleted_again.status_code == 404 and deleted_again.json()["code"] == "artwork_not_found"
    assert deleted_again.json()["message"] == "no artwork with id 'smvs-025' in this index"
    again = client.post("/v1/recognize", content=photo("025.jpg"), headers={"Content-Type": "image/jpeg"}).json()
    assert again["status"] == "no_match"


def test_reload_refuses_a_corrupted_bundle_and_keeps_serving(client, bundle_copy, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(bundle_copy, bad)
    with open(bad / "vocabulary.npy", "r+b") as fh:
        fh.seek(200)
        fh.write(b"\x00garbage\x00")
    before = client.get("/ready").json()
    r = client.post("/v1/index/reload", headers=ADMIN, json={"index": str(bad)})
    assert r.status_code == 422 and r.json()["code"] == "bad_bundle" and "checksum" in r.json()["message"]
    assert client.get("/ready").json() == before
    assert client.post("/v1/recognize", content=photo("001.jpg"),
                       headers={"Content-Type": "image/jpeg"}).json()["status"] == "match"
    ok = client.post("/v1/index/reload", headers=ADMIN)
    assert ok.status_code == 200 and ok.json()["bundle_version"] == before["bundle_version"]
    assert ok.json()["index"] == before["index"] and "/" not in ok.json()["index"]  # the bundle's name, no path


# -- operations -------------------------------------------------------------------------------------------------
def test_ready_names_bundle_and_execution_provider_and_no_path(client, bundle_copy):
    from artlens.embedder import gpu_usable

    r = client.get("/ready")
    ready = r.json()
    assert ready["index"] == bundle_copy.name and ready["bundle_version"] >= 1
    assert len(ready["bundle_id"]) == 16 and int(ready["bundle_id"], 16) >= 0 and ready["bundle_updated"]
    assert ready["execution_provider"] == ("CUDAExecutionProvider" if gpu_usable() else "CPUExecutionProvider")
    # No file system path: neither the bundle's directory nor any absolute path anywhere in the answer.
    assert str(bundle_copy.parent) not in r.text and str(bundle_copy.parent.parent) not in r.text

    def strings(value):
        if isinstance(value, dict):
            return [s for v in value.values() for s in strings(v)]
        return [value] if isinstance(value, str) else []

    assert not [s for s in strings(ready) if s.startswith(("/", "~")) or "\\" in s]


def test_a_model_from_a_local_directory_is_named_without_its_path():
    from artlens.server.schemas import public_model_id

    assert public_model_id("/srv/artlens/models/dinov2-small") == "dinov2-small"
    assert public_model_id("C:\\models\\dinov2-small\\") == "dinov2-small"
    assert public_model_id("facebook/dinov2-small") == "facebook/dinov2-small"  # a hub id is no path


def test_health_ready_metrics_schema(client):
    assert client.get("/health").json() == {"status": "ok"}
    ready = client.get("/ready").json()
    assert ready["status"] == "ready" and ready["model"]["pretrained"] is False and ready["artworks"] >= 14
    text = client.get("/metrics").text
    for name in ("artlens_http_request_duration_seconds_bucket", "artlens_recognition_stage_seconds_bucket",
                 'artlens_recognitions_total{outcome="match"}', "artlens_inference_queue_depth",
                 "artlens_embed_batch_size"):
        assert name in text
    assert 'route="/v1/recognize"' in text
    schema = client.get("/schema/openapi.json").json()
    assert {"/v1/recognize", "/v1/artworks/{object_id}/image", "/v1/index/reload", "/ready"} <= set(schema["paths"])
    assert "multipart/form-data" in schema["paths"]["/v1/recognize"]["post"]["requestBody"]["content"]
    ui = client.get("/schema")
    assert ui.status_code == 200 and "swagger" in ui.text.lower()


def test_web_page_and_static(client):
    page = client.get("/")
    assert page.status_code == 200 and 'capture="environment"' in page.text
    assert client.get("/static/app.js").status_code == 200
    assert client.get("/static/../../etc/passwd").status_code == 404


def test_access_log_is_json_with_request_id(client, caplog):
    with caplog.at_level(logging.INFO, logger="artlens.access"):
        client.get("/health", headers={"X-Request-ID": "trace-me"})
    record = next(r for r in caplog.records if r.name == "artlens.access")
    import json

    line = json.loads(JsonFormatter().format(record))
    assert line["request_id"] == "trace-me" and line["status"] == 200 and line["route"] == "/health"


def test_rate_limit_and_cors(bundle_copy):
    with client_for(bundle_copy, rate_limit_per_minute=3, cors_origins=["https://museum.example"]) as c:
        codes = [c.get("/v1/artworks?random=1").status_code for _ in range(4)]
        assert codes[:3] == [200, 200, 200] and codes[3] == 429
        limited = c.get("/v1/artworks?random=1")
        assert limited.json()["code"] == "rate_limited"
        assert c.get("/health").status_code == 200  # operations routes are not limited
        pre = {"Origin": "https://museum.example", "Access-Control-Request-Method": "POST"}
        ok = c.options("/v1/recognize", headers=pre)
        assert ok.headers.get("access-control-allow-origin") == "https://museum.example"
        bad = c.options("/v1/recognize", headers={**pre, "Origin": "https://evil.example"})
        assert bad.headers.get("access-control-allow-origin") != "https://evil.example"


def test_heic_and_exif_rotated_photos(client):
    """An iPhone-style HEIC and a JPEG stored sideways with EXIF orientation 6 give the upright answer (EXIF is
    applied exactly once: the outline matches the plain photo's)."""
    import io

    from PIL import Image

    plain = client.post("/v1/recognize", content=photo("001.jpg"), headers={"Content-Type": "image/jpeg"}).json()
    upright = Image.open(io.BytesIO(photo("001.jpg")))
    sideways = upright.transpose(Image.Transpose.ROTATE_90)  # what a phone sensor stores; orientation 6 undoes it
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    sideways.save(buf, "JPEG", quality=90, exif=exif.tobytes())
    rotated = client.post("/v1/recognize", content=buf.getvalue(), headers={"Content-Type": "image/jpeg"}).json()
    assert rotated["image_size"] == plain["image_size"] == [1600, 1200]
    assert rotated["matches"][0]["object_id"] == "smvs-001"
    a, b = rotated["matches"][0]["outline"], plain["matches"][0]["outline"]
    assert max(abs(p - q) for pa, pb in zip(a, b, strict=True) for p, q in zip(pa, pb, strict=True)) < 0.03
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    heic = io.BytesIO()
    upright.save(heic, "HEIF", quality=80)
    r = client.post("/v1/recognize", files=[("image", ("IMG_0001.HEIC", heic.getvalue(), "image/heic"))])
    assert r.status_code == 200 and r.json()["matches"][0]["object_id"] == "smvs-001"


def test_serve_refuses_a_missing_bundle_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    result = CliRunner().invoke(app, ["serve", "--index", str(tmp_path / "nope")])
    assert result.exit_code == 2 and "index bundle" in result.output and "Traceback" not in result.output
    bad = CliRunner().invoke(app, ["serve", "--index", str(tmp_path)], env={"ARTLENS_PORT": "eighty"})
    assert bad.exit_code == 2 and "port" in bad.output
