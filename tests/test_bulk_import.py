"""Bulk import as a background job: POST /v1/jobs/import with a CSV of images under the import root, progress at
GET /v1/jobs/{id}, one new bundle version for the whole CSV (real app, real bundle, real SMVS images)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from artlens.indexing.bulk_import import ImportRefused, plan_import

from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}
CSV = {**ADMIN, "Content-Type": "text/csv"}


@pytest.fixture
def import_root(tmp_path) -> Path:
    root = tmp_path / "imports"
    (root / "batch").mkdir(parents=True)
    for n in ("025", "027", "029", "031"):
        shutil.copy(SMVS / "reference" / f"{n}.jpg", root / "batch" / f"{n}.jpg")
    (root / "batch" / "notes.jpg").write_text("not an image")
    return root


def _wait(client, job_id: str, limit_s: float = 300) -> dict:
    deadline = time.monotonic() + limit_s
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=ADMIN).json()
        if job["status"] in ("done", "failed"):
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def test_import_job_adds_every_good_row_as_one_version_and_reports_bad_rows_by_line(smvs_bundle, tmp_path,
                                                                                     import_root):
    csv = ("object_id,image,title\n"
           "smvs-025,batch/025.jpg,Painting 025\n"
           "smvs-027,batch/027.jpg,Painting 027\n"
           "broken,batch/notes.jpg,Not a painting\n"
           "smvs-029,batch/./029.jpg,Painting 029\n"
           "missing,batch/none.jpg,Nowhere\n"
           "smvs-001,batch/031.jpg,Already there\n")
    bundle = copy_bundle(smvs_bundle, tmp_path)
    with client_for(bundle, import_root=str(import_root)) as client:
        before = client.get("/ready").json()
        r = client.post("/v1/jobs/import", content=csv.encode(), headers=CSV)
        assert r.status_code == 202, r.text
        assert r.json()["status"] in ("queued", "running") and r.json()["rows_total"] == 6
        again = client.post("/v1/jobs/import", content=csv.encode(), headers=CSV)  # one import at a time
        assert again.status_code == 409 and again.json()["code"] == "job_running"
        job = _wait(client, r.json()["id"])
        assert job["status"] == "done", job
        assert job["added"] == 3 and job["rows_done"] == 6 and job["error"] is None
        assert job["bundle_version"] == before["bundle_version"] + 1  # one version for the whole CSV
        skipped = {row["line"]: row["reason"] for row in job["skipped"]}
        assert set(skipped) == {4, 6, 7}, skipped
        assert "already in this index" in skipped[7] and "not found in the import root" in skipped[6]
        assert str(import_root) not in str(job) and str(bundle) not in str(job)
        ready = client.get("/ready").json()
        assert ready["bundle_version"] == job["bundle_version"] and ready["artworks"] == before["artworks"] + 3
        assert client.get("/v1/artworks/smvs-027").json()["metadata"] == {"title": "Painting 027"}
        assert client.get("/v1/artworks/smvs-029/image").status_code == 200
        hit = client.post("/v1/recognize", content=(SMVS / "query" / "025.jpg").read_bytes(),
                          headers={"Content-Type": "image/jpeg"}).json()
        assert hit["status"] == "match" and hit["matches"][0]["object_id"] == "smvs-025"
    # The version on disk is self-contained: served again after a restart, its images inside the bundle.
    shutil.rmtree(import_root)
    with client_for(bundle) as restarted:
        assert restarted.get("/ready").json()["bundle_version"] == job["bundle_version"]
        assert restarted.get("/v1/artworks/smvs-025/image").status_code == 200


@pytest.mark.parametrize("image", ["../outside.jpg", "/etc/hostname", "batch/../../outside.jpg",
                                   "https://example.org/a.jpg", "link/outside.jpg"])
def test_an_image_outside_the_import_root_refuses_the_csv_without_naming_a_path(smvs_bundle, tmp_path,
                                                                                import_root, image):
    shutil.copy(SMVS / "reference" / "033.jpg", tmp_path / "outside.jpg")
    (import_root / "link").symlink_to(tmp_path)  # a link inside the root that leads out of it
    csv = f"object_id,image\nsmvs-025,batch/025.jpg\nescape,{image}\n"
    with client_for(copy_bundle(smvs_bundle, tmp_path), import_root=str(import_root)) as client:
        version = client.get("/ready").json()["bundle_version"]
        r = client.post("/v1/jobs/import", content=csv.encode(), headers=CSV)
        body = r.json()
        assert r.status_code == 400 and body["code"] == "bad_import_path", body
        assert "line(s) 3" in body["message"] and set(body) == {"code", "message", "status", "request_id"}
        assert str(tmp_path) not in body["message"] and image not in body["message"]
        assert client.get("/ready").json()["bundle_version"] == version


def test_import_route_errors(smvs_bundle, tmp_path, import_root):
    bundle = copy_bundle(smvs_bundle, tmp_path)
    with client_for(bundle) as off:
        r = off.post("/v1/jobs/import", content=b"object_id,image\na,batch/025.jpg\n", headers=CSV)
        assert r.status_code == 503 and r.json()["code"] == "import_disabled"
        assert str(tmp_path) not in r.text
    with client_for(bundle, import_root=str(import_root)) as client:
        assert client.post("/v1/jobs/import", content=b"object_id,image\n", headers=ADMIN).status_code == 415
        assert client.post("/v1/jobs/import", content=b"object_id,image\n",
                           headers={"Content-Type": "text/csv"}).status_code == 401
        unknown = client.get("/v1/jobs/0123456789abcdef", headers=ADMIN)
        assert unknown.status_code == 404 and unknown.json()["code"] == "job_not_found"
        for body, words in [(b"object_id,title\na,b\n", "header must contain"), (b"object_id,image\n", "no rows"),
                            (b"object_id,image\n\xff\xfe,x\n", "not UTF-8")]:
            r = client.post("/v1/jobs/import", content=body, headers=CSV)
            assert r.status_code == 400 and r.json()["code"] == "bad_collection" and words in r.json()["message"]
            assert str(tmp_path) not in r.text
        failed = client.post("/v1/jobs/import", content=b"object_id,image\nbroken,batch/notes.jpg\n", headers=CSV)
        job = _wait(client, failed.json()["id"])
        assert job["status"] == "failed" and "no row could be imported" in job["error"] and job["added"] == 0
        assert job["skipped"][0]["line"] == 2 and job["bundle_version"] is None


def test_plan_import_resolves_inside_the_root_only(tmp_path):
    root = tmp_path / "root"
    (root / "a").mkdir(parents=True)
    (root / "a" / "x.jpg").write_bytes(b"x")
    plan = plan_import(b"object_id,image\none,a/x.jpg\ntwo,a/../a/x.jpg\nthree,\n", root, {"two"})
    assert [row.object_id for row in plan.rows] == ["one"] and plan.total == 3
    assert [line for line, _ in plan.skipped] == [3, 4]
    with pytest.raises(ImportRefused) as refused:
        plan_import(b"object_id,image\none,a/x.jpg\ntwo,..\nthree,C:\\x.jpg\nfour,.\n", root, set())
    assert "line(s) 3, 4, 5" in str(refused.value) and str(root) not in str(refused.value)
