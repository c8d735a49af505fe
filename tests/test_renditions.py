"""Reference-image renditions stored in the bundle: written by the build, the admin add and the upgrade command,
dropped by delete, checksummed, and served by `/v1/artworks/{id}/image` without the build's source images."""

from __future__ import annotations

import io
import json
import logging
import shutil
from pathlib import Path

import pytest
from PIL import Image

from artlens.errors import BundleError
from artlens.hashing import file_sha256
from artlens.indexing.renditions import RENDITION_SIDE
from artlens.indexing.store.bundle import load_bundle, read_meta

from .bundlekit import GONE, without_renditions, without_sources
from .conftest import SMVS, needs_shared
from .serverkit import client_for

pytestmark = needs_shared
def jpeg_size(data: bytes) -> tuple[int, int]:
    img = Image.open(io.BytesIO(data))
    assert img.format == "JPEG"
    return img.size


@pytest.fixture
def unreachable(smvs_bundle, tmp_path) -> Path:
    return without_sources(smvs_bundle, tmp_path / "bundle")


# -- the bundle --------------------------------------------------------------------------------------------------
def test_build_stores_a_checksummed_rendition_per_artwork(smvs_bundle):
    meta = read_meta(smvs_bundle)
    artworks = json.loads((smvs_bundle / "artworks.json").read_text())
    files = [art["rendition"] for art in artworks]
    assert all(f.startswith("renditions/") and f.endswith(".jpg") for f in files) and len(set(files)) == len(files)
    for art, rel in zip(artworks, files, strict=True):
        assert meta["checksums"][rel] == file_sha256(smvs_bundle / rel)
        # Never upscaled: the SMVS references are smaller than the rendition side, so they keep their size.
        assert jpeg_size((smvs_bundle / rel).read_bytes()) == (art["width"], art["height"])
    desc = meta["renditions"]
    assert desc["count"] == len(artworks) and desc["without"] == 0 and desc["max_side"] == RENDITION_SIDE
    assert desc["bytes"] == sum((smvs_bundle / f).stat().st_size for f in files)


@pytest.mark.parametrize(("damage", "what"), [
    (lambda p: p.write_bytes(p.read_bytes()[:-64]), "checksum"),
    (lambda p: p.unlink(), "missing"),
], ids=["truncated", "deleted"])
def test_a_damaged_rendition_makes_the_bundle_fail_to_load(unreachable, damage, what):
    rel = json.loads((unreachable / "artworks.json").read_text())[2]["rendition"]
    damage(unreachable / rel)
    with pytest.raises(BundleError) as err:
        load_bundle(unreachable)
    assert rel in str(err.value) and what in str(err.value)


# -- the image route ---------------------------------------------------------------------------------------------
def test_images_are_served_from_the_bundle_without_the_source_images(unreachable):
    with client_for(unreachable) as client:
        r = client.get("/v1/artworks/smvs-003/image?size=1024")
        assert r.status_code == 200, r.text
        art = client.get("/v1/artworks/smvs-003").json()
        assert r.headers["content-type"] == "image/jpeg" and jpeg_size(r.content) == (art["width"], art["height"])
        small = client.get("/v1/artworks/smvs-003/image?size=128")
        assert small.status_code == 200 and max(jpeg_size(small.content)) == 128
        assert small.headers["etag"] != r.headers["etag"]


@pytest.mark.parametrize("damage", [lambda p: p.unlink(), lambda p: p.write_bytes(b"\xff\xd8 not what was stored")],
                         ids=["deleted", "altered"])
def test_a_rendition_damaged_after_start_is_a_500_without_a_path(unreachable, damage, caplog):
    with client_for(unreachable) as client:
        assert client.get("/v1/artworks/smvs-005/image?size=512").status_code == 200
        rel = json.loads((unreachable / "artworks.json").read_text())[2]["rendition"]
        damage(unreachable / rel)
        with caplog.at_level(logging.ERROR, logger="artlens.server"):
            r = client.get("/v1/artworks/smvs-005/image?size=256")  # another size: read from disk again
        assert r.status_code == 500, r.text
        body = r.json()
        assert body["code"] == "image_unavailable" and body["status"] == 500 and body["request_id"]
        assert "smvs-005" in body["message"]
        for leak in (str(unreachable), "renditions/", ".jpg", "/tmp", "Pillow", "PIL"):
            assert leak not in r.text
        assert any(rel in rec.getMessage() for rec in caplog.records)  # the operator is told which file
        assert client.get("/v1/artworks/smvs-001/image").status_code == 200  # the others still serve


def test_if_none_match_star_and_weak_tags_answer_304(unreachable):
    with client_for(unreachable) as client:
        first = client.get("/v1/artworks/smvs-001/image?size=256")
        etag = first.headers["etag"]
        for value in ("*", f"W/{etag}", f'"nope", {etag}'):
            r = client.get("/v1/artworks/smvs-001/image?size=256", headers={"If-None-Match": value})
            assert r.status_code == 304 and r.content == b"" and r.headers["etag"] == etag, value
        assert client.get("/v1/artworks/smvs-001/image?size=256",
                          headers={"If-None-Match": '"other"'}).status_code == 200
        assert client.get("/v1/artworks/nope/image", headers={"If-None-Match": "*"}).status_code == 404


def test_vary_is_the_same_with_and_without_origin(unreachable):
    url = "/v1/artworks/smvs-001/image?size=256"
    with client_for(unreachable, cors_origins=["https://museum.example"]) as client:
        plain = client.get(url)
        allowed = client.get(url, headers={"Origin": "https://museum.example"})
        other = client.get(url, headers={"Origin": "https://elsewhere.example"})
        not_modified = client.get(url, headers={"If-None-Match": plain.headers["etag"]})
        assert allowed.headers["access-control-allow-origin"] == "https://museum.example"
        varies = {plain.headers["vary"], allowed.headers["vary"], other.headers["vary"],
                  not_modified.headers["vary"]}
        assert varies == {"Origin"}
    with client_for(unreachable) as client:  # no CORS configured: the same header
        assert client.get(url).headers["vary"] == "Origin"


# -- older bundles -----------------------------------------------------------------------------------------------
def test_a_bundle_without_renditions_falls_back_to_its_sources_and_says_so(smvs_bundle, tmp_path, caplog):
    old = tmp_path / "old"
    shutil.copytree(smvs_bundle, old)
    without_renditions(old)
    with client_for(old) as client, caplog.at_level(logging.WARNING, logger="artlens.server"):
        assert client.get("/v1/artworks/smvs-001/image").status_code == 200
        assert client.get("/v1/artworks/smvs-003/image").status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "index renditions" in r.getMessage()]
    assert len(warnings) == 1  # once per bundle version, not per request
    gone = without_sources(old, tmp_path / "moved" / "bundle")
    with client_for(gone) as client:
        r = client.get("/v1/artworks/smvs-001/image")
        assert r.status_code == 500 and r.json()["code"] == "image_unavailable" and GONE not in r.text


def test_index_renditions_upgrades_an_older_bundle(smvs_bundle, tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    old = tmp_path / "old"
    shutil.copytree(smvs_bundle, old)
    without_renditions(old)
    version = int(read_meta(old).get("version", 1))
    result = CliRunner().invoke(app, ["index", "renditions", "--index", str(old)])
    assert result.exit_code == 0, result.output
    assert "14 renditions stored" in " ".join(result.output.split())  # rich wraps long lines
    bundle = load_bundle(old)
    assert bundle.meta["version"] == version + 1 and bundle.meta["renditions"]["count"] == 14
    assert bundle.meta["calibration"] == read_meta(smvs_bundle)["calibration"]  # nothing else changed
    moved = without_sources(old, tmp_path / "moved" / "bundle")
    with client_for(moved) as client:
        assert client.get("/v1/artworks/smvs-019/image").status_code == 200
    again = CliRunner().invoke(app, ["index", "renditions", "--index", str(old)])
    assert again.exit_code == 0 and "already" in again.output and read_meta(old)["version"] == version + 1


def test_index_renditions_names_artworks_whose_source_is_gone(smvs_bundle, tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    old = tmp_path / "old"
    shutil.copytree(smvs_bundle, old)
    without_renditions(old)
    gone = without_sources(old, tmp_path / "moved" / "bundle")
    result = CliRunner().invoke(app, ["index", "renditions", "--index", str(gone)])
    text = " ".join(result.output.split())
    assert result.exit_code == 2 and "smvs-001" in text and "14 artworks have no rendition" in text
    assert "Traceback" not in text
    assert "renditions" not in read_meta(gone)  # nothing to write: the bundle is left as it was


# -- admin add and delete ----------------------------------------------------------------------------------------
def test_added_artwork_gets_a_rendition_and_delete_drops_it(unreachable, tiny_model):
    from artlens.embedder import Embedder
    from artlens.indexing.incremental import add_artwork, remove_artwork

    photo = (SMVS / "query" / "025.jpg").read_bytes()  # 1600×1200: the rendition is downscaled to 1024
    bundle = add_artwork(load_bundle(unreachable), Embedder(tiny_model), "big-025", photo, {"title": "Big"})
    art = bundle.artworks[-1]
    rendition, original = art["rendition"], art["stored_image"]
    assert jpeg_size((unreachable / rendition).read_bytes()) == (1024, 768)
    assert bundle.meta["checksums"][rendition] == file_sha256(unreachable / rendition)
    assert bundle.meta["checksums"][original] == file_sha256(unreachable / original)  # stored originals too
    assert bundle.meta["renditions"]["count"] == 15
    with client_for(unreachable) as client:
        r = client.get("/v1/artworks/big-025/image?size=1024")
        assert r.status_code == 200 and jpeg_size(r.content) == (1024, 768)
    after = remove_artwork(bundle, "big-025")
    assert not (unreachable / rendition).exists() and not (unreachable / original).exists()
    assert rendition not in after.meta["checksums"] and after.meta["renditions"]["count"] == 14
    assert all((unreachable / a["rendition"]).is_file() for a in after.artworks)


def test_a_change_refuses_to_carry_a_missing_rendition_and_leaves_the_bundle(unreachable):
    from artlens.indexing.incremental import remove_artwork

    bundle = load_bundle(unreachable)
    lost = bundle.artworks[1]["rendition"]
    (unreachable / lost).unlink()  # lost after the bundle was loaded and checked
    with pytest.raises(BundleError, match=lost):
        remove_artwork(bundle, "smvs-005")
    assert read_meta(unreachable).get("version", 1) == bundle.meta.get("version", 1)
    assert [p.name for p in unreachable.parent.iterdir() if p.name.startswith(".bundle.")] == []
