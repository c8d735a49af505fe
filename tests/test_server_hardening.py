"""Content hardening of the HTTP service, on the real app (tiny model, a copy of the SMVS test bundle): unusable
bundles on reload, object ids that must survive their URLs, messages in our words (no library, constant or path),
multipart part limits, the in-flight decode budget, and artwork images without local features."""

from __future__ import annotations

import io
import json
import shutil
from urllib.parse import quote

import pytest
from PIL import Image, ImageDraw, PngImagePlugin

from artlens.indexing.bundle_writer import write_meta
from artlens.indexing.collection import MIN_REFERENCE_FEATURES
from artlens.indexing.store.bundle import FORMAT, read_meta

from .badimages import jpeg_bytes, png_bytes, png_header_only
from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}
# Words that would mean a library's message, constant or source reached the client.
LEAKS = ("PIL", "Pillow", "faiss::", "FAISS", "cv2", "OpenCV", ".cpp", ".py", "MAX_", "Traceback", "DOS attack",
         "240000000", "ImagePlugin")


def assert_clean(message: str, *paths) -> None:
    for word in LEAKS:
        assert word not in message, f"{word!r} in {message!r}"
    for path in paths:
        assert str(path) not in message, f"a path in {message!r}"
    assert "/tmp" not in message and "/work" not in message, message


@pytest.fixture(scope="module")
def bundle_copy(smvs_bundle, tmp_path_factory):
    return copy_bundle(smvs_bundle, tmp_path_factory.mktemp("hardening"))


@pytest.fixture(scope="module")
def client(bundle_copy):
    with client_for(bundle_copy, recognize_per_minute=0, max_inflight_pixels=5_000_000) as c:
        yield c


def reference_image() -> bytes:
    return (SMVS / "reference" / "025.jpg").read_bytes()


def add(client, object_id: str, image: bytes | None = None):
    return client.post("/v1/artworks", headers=ADMIN, data={"object_id": object_id},
                       files=[("image", ("a.jpg", image or reference_image(), "image/jpeg"))])


# -- reload: every unusable bundle is 422 bad_bundle, without a path -------------------------------------------------
def _bundle_with_meta(src, dest, content: bytes):
    shutil.copytree(src, dest)
    (dest / "bundle.json").write_bytes(content)
    return dest


def _edited(src, dest, edit):
    shutil.copytree(src, dest)
    meta = read_meta(dest)
    edit(dest, meta)
    write_meta(dest, meta)  # fresh checksums: only the check under test can refuse it
    return dest


def _corrupt_index(dest, meta):
    # The VLAD index: every bundle has one (a random-init bundle stores no index.faiss of embeddings).
    (dest / "local_index.faiss").write_bytes(b"IxFI" + b"\x00garbage" * 40)


def _foreign_model(dest, meta):
    meta["model"] = {**meta["model"], "sha256": "0" * 64, "model_dir": "/nonexistent/secret-models/dino"}


BAD_BUNDLES = {
    "path of 10 000 characters": lambda src, tmp: tmp / ("x" * 10_000),
    "a file, not a directory": lambda src, tmp: (tmp / "file.txt").write_text("hi") and tmp / "file.txt",
    "missing directory": lambda src, tmp: tmp / "nowhere",
    "bundle.json is []": lambda src, tmp: _bundle_with_meta(src, tmp / "b", b"[]"),
    "bundle.json is null": lambda src, tmp: _bundle_with_meta(src, tmp / "b", b"null"),
    "bundle.json is a string": lambda src, tmp: _bundle_with_meta(src, tmp / "b", b'"artlens"'),
    "bundle.json not JSON": lambda src, tmp: _bundle_with_meta(src, tmp / "b", b"{format: 1"),
    "bundle.json not UTF-8": lambda src, tmp: _bundle_with_meta(src, tmp / "b", b'{"format": "\xff\xfe"}'),
    "bundle.json without keys": lambda src, tmp: _bundle_with_meta(src, tmp / "b",
                                                                  json.dumps({"format": FORMAT}).encode()),
    "checksums outside the bundle": lambda src, tmp: _bundle_with_meta(src, tmp / "b", json.dumps(
        {**read_meta(src), "checksums": {"../../etc/passwd": "0"}}).encode()),
    "corrupt local_index.faiss": lambda src, tmp: _edited(src, tmp / "b", _corrupt_index),
}


@pytest.mark.parametrize("case", list(BAD_BUNDLES))
def test_reload_of_an_unusable_bundle_is_422_without_a_path(client, bundle_copy, tmp_path, case):
    target = BAD_BUNDLES[case](bundle_copy, tmp_path)
    before = client.get("/ready").json()
    r = client.post("/v1/index/reload", headers=ADMIN, json={"index": str(target)})
    assert r.status_code == 422, f"{case}: {r.status_code} {r.text[:300]}"
    body = r.json()
    assert body["code"] == "bad_bundle" and body["message"], body
    assert_clean(body["message"], tmp_path, bundle_copy)
    assert client.get("/ready").json() == before  # the old index keeps serving


def test_reload_with_another_model_that_is_not_there_names_no_path(client, bundle_copy, tmp_path):
    target = _edited(bundle_copy, tmp_path / "b", _foreign_model)
    r = client.post("/v1/index/reload", headers=ADMIN, json={"index": str(target)})
    assert r.status_code == 422 and r.json()["code"] == "bad_model", r.text
    assert "ARTLENS_MODEL" in r.json()["message"]
    assert_clean(r.json()["message"], "secret-models", tmp_path)


def test_reload_with_a_broken_model_names_no_library(client, bundle_copy, tiny_model, tmp_path):
    from artlens.hashing import file_sha256

    model = tmp_path / "model"
    shutil.copytree(tiny_model, model)
    (model / "model.onnx").write_bytes(b"not a protobuf" * 100)
    sha = file_sha256(model / "model.onnx")
    card = json.loads((model / "model.json").read_text())
    card["onnx"]["sha256"] = sha
    (model / "model.json").write_text(json.dumps(card))

    def other_model(dest, meta):
        meta["model"] = {**meta["model"], "sha256": sha, "model_dir": str(model)}

    target = _edited(bundle_copy, tmp_path / "b", other_model)
    r = client.post("/v1/index/reload", headers=ADMIN, json={"index": str(target)})
    assert r.status_code == 422 and r.json()["code"] == "bad_model", r.text
    message = r.json()["message"]
    assert "ONNX" not in message and "rotobuf" not in message, message
    assert_clean(message, tmp_path)


# -- object ids ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("object_id", ["probe/slash", "..", ".", "back\\slash", "tab\there", "rtl\u202eexe",
                                       "x" * 201])
def test_unusable_object_ids_are_refused(client, object_id):
    r = add(client, object_id)
    assert r.status_code == 400 and r.json()["code"] == "bad_object_id", r.text
    assert client.get("/v1/artworks?limit=500").json()["total"] == 14


ROUND_TRIP_IDS = ["with space", "hash#tag", "what?now", "50%off", "名画-№1", "a+b&c=d"]


def test_ids_with_url_characters_round_trip_through_add_get_image_delete(client):
    version = client.get("/ready").json()["bundle_version"]
    for object_id in ROUND_TRIP_IDS:
        r = add(client, object_id)
        assert r.status_code == 201, f"{object_id!r}: {r.text}"
        url = f"/v1/artworks/{quote(object_id, safe='')}"
        assert r.json()["artwork"]["image_url"] == url + "/image"
        got = client.get(url)
        assert got.status_code == 200 and got.json()["object_id"] == object_id, (object_id, got.text)
        image = client.get(got.json()["image_url"] + "?size=128")
        assert image.status_code == 200 and image.headers["content-type"] == "image/jpeg", (object_id, image.text)
    for object_id in ROUND_TRIP_IDS:
        gone = client.delete(f"/v1/artworks/{quote(object_id, safe='')}", headers=ADMIN)
        assert gone.status_code == 200 and gone.json()["object_id"] == object_id, (object_id, gone.text)
        assert client.get(f"/v1/artworks/{quote(object_id, safe='')}").status_code == 404
    assert client.get("/ready").json()["bundle_version"] == version + 2 * len(ROUND_TRIP_IDS)


# -- messages in our words -----------------------------------------------------------------------------------------
def _png_with_huge_text() -> bytes:
    info = PngImagePlugin.PngInfo()
    info.add_text("comment", "x" * 3_000_000, zip=True)  # 3 KB compressed, 3 MB of text
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _png_with_broken_data() -> bytes:
    data = bytearray(png_bytes(Image.frombytes("RGB", (64, 64), bytes((i * 7919) % 251 for i in range(64 * 64 * 3)))))
    data[120:180] = b"\x00" * 60  # inside the compressed pixel data
    return bytes(data)


@pytest.mark.parametrize(("body", "status", "code", "says"), [
    (png_header_only(20_000, 20_000), 413, "image_too_large", "50000000 pixels"),  # beyond Pillow's own refusal
    (png_header_only(8000, 8000), 413, "image_too_large", "50000000 pixels"),  # beyond ours only
    (_png_with_huge_text(), 422, "undecodable_image", "text (metadata) chunk"),
    (jpeg_bytes((256, 256))[:600], 422, "undecodable_image", "corrupt or truncated"),
    (_png_with_broken_data(), 422, "undecodable_image", "corrupt or truncated"),
])
def test_image_errors_name_our_limits_in_our_words(client, body, status, code, says):
    r = client.post("/v1/recognize", content=body, headers={"Content-Type": "image/png"})
    assert r.status_code == status and r.json()["code"] == code, r.text
    assert says in r.json()["message"], r.json()["message"]
    assert_clean(r.json()["message"])


# -- multipart part limits -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("parts", [6, 40, 200, 10_000])
def test_more_image_parts_than_a_burst_is_too_many_frames(client, parts):
    image = jpeg_bytes((32, 24)) if parts <= 200 else b"x"
    r = client.post("/v1/recognize", files=[("image", (f"{i}.jpg", image, "image/jpeg")) for i in range(parts)])
    assert r.status_code == 400 and r.json()["code"] == "too_many_frames", r.text[:300]
    assert "at most 5" in r.json()["message"]


def test_admin_add_with_too_many_parts_is_a_clear_400(client):
    fields = {f"field{i}": "v" for i in range(40)}
    r = client.post("/v1/artworks", headers=ADMIN, data={"object_id": "many", **fields},
                    files=[("image", ("a.jpg", reference_image(), "image/jpeg"))])
    assert r.status_code == 400 and r.json()["code"] == "invalid_request" and "parts" in r.json()["message"]


# -- the in-flight decode budget -------------------------------------------------------------------------------------
def _png(width: int, height: int) -> bytes:
    img = Image.new("RGB", (width, height), (200, 190, 170))
    draw = ImageDraw.Draw(img)
    for i in range(0, width, 97):
        draw.line([(i, 0), (width - i, height)], fill=(i % 255, 40, 90), width=5)
    return png_bytes(img)


def _big_jpeg() -> bytes:
    img = Image.new("RGB", (7000, 7000), (120, 130, 140))
    ImageDraw.Draw(img).ellipse([500, 800, 6000, 6500], fill=(200, 60, 40))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=80)
    return buf.getvalue()


def test_decodes_beyond_the_in_flight_budget_are_503_with_retry_after(client):
    budget = client.app.state.holder.decode_budget
    assert budget.limit == 5_000_000
    png = _png(2000, 2000)  # 4 Mpx decoded at full size
    with budget.reserve(2_000_000):  # another request's image being decoded
        busy = client.post("/v1/recognize", content=png, headers={"Content-Type": "image/png"})
        assert busy.status_code == 503 and busy.json()["code"] == "overloaded", busy.text
        assert int(busy.headers["retry-after"]) >= 1 and "budget" in busy.json()["message"]
        # A 7000×7000 baseline JPEG is decoded at 1/8 scale: it fits beside the other decode.
        jpeg = client.post("/v1/recognize", content=_big_jpeg(), headers={"Content-Type": "image/jpeg"})
        assert jpeg.status_code == 200 and jpeg.json()["image_size"] == [7000, 7000], jpeg.text
    assert budget.in_flight == 0
    ok = client.post("/v1/recognize", content=png, headers={"Content-Type": "image/png"})
    assert ok.status_code == 200, ok.text
    alone = client.post("/v1/recognize", content=_png(3000, 2000), headers={"Content-Type": "image/png"})
    assert alone.status_code == 200, alone.text  # above the whole budget, but nothing else is decoding
    assert budget.in_flight == 0


# -- artwork images without local features ---------------------------------------------------------------------------
@pytest.mark.parametrize("image", [png_bytes(Image.new("RGB", (1, 1), "white")),
                                   png_bytes(Image.new("RGB", (400, 300), (128, 128, 128)))])
def test_an_artwork_image_without_enough_local_features_is_refused(client, image):
    before = client.get("/ready").json()
    r = add(client, "featureless", image)
    assert r.status_code == 422 and r.json()["code"] == "too_few_features", r.text
    message = r.json()["message"]
    assert "0 local features" in message and f"at least {MIN_REFERENCE_FEATURES}" in message, message
    assert client.get("/ready").json() == before
    assert client.get("/v1/artworks/featureless").status_code == 404


def test_server_still_recognises_and_answered_no_5xx(client):
    ok = client.post("/v1/recognize", content=(SMVS / "query" / "001.jpg").read_bytes(),
                     headers={"Content-Type": "image/jpeg"})
    assert ok.status_code == 200 and ok.json()["matches"][0]["object_id"] == "smvs-001"
    assert 'status="5' not in client.get("/metrics").text.replace('status="503"', "")


# -- index build: the same rules for collection rows, reported by CSV line -------------------------------------------
def test_collection_rows_with_unusable_ids_are_reported_by_line(tmp_path):
    from artlens.indexing.collection import read_collection

    image = str(SMVS / "reference" / "001.jpg")
    ids = ["good", "probe/slash", "..", "back\\slash", "x" * 201, "rtl\u202eexe", "名画 #1?"]
    csv_path = tmp_path / "c.csv"
    csv_path.write_text("object_id,image\n" + "".join(f'"{oid}",{image}\n' for oid in ids), encoding="utf-8")
    collection = read_collection(csv_path)
    assert [row.object_id for row in collection.rows] == ["good", "名画 #1?"]
    problems = dict(collection.problems)
    assert sorted(problems) == [3, 4, 5, 6, 7]
    assert "cannot contain '/'" in problems[3] and "cannot be '.' or '..'" in problems[4]
    assert "at most 200" in problems[6] and "printable" in problems[7]


def test_index_build_reports_an_image_without_local_features_as_a_bad_row(tmp_path, tiny_model):
    from artlens.indexing.build import build_bundle

    from .conftest import write_collection

    (tmp_path / "dot.png").write_bytes(png_bytes(Image.new("RGB", (1, 1), "white")))
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg")} for n in ("001", "013")]
    rows.append({"object_id": "dot", "image": "dot.png"})  # line 4
    report = build_bundle(tiny_model, write_collection(tmp_path / "c.csv", rows), tmp_path / "b", before_commit=None)
    assert report.indexed == 2  # 013 has the fewest features of the real references (49): still indexed
    assert [line for line, _ in report.skipped] == [4]
    reason = report.skipped[0][1]
    assert "dot.png" in reason, reason
    assert f"0 local features found, an artwork image needs at least {MIN_REFERENCE_FEATURES}" in reason, reason
