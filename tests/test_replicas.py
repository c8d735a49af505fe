"""Several serve processes on one bundle directory: two real `artlens serve` processes on loopback follow an
admin write made through one of them, under load, without a failed request; the cross-process writer lock; a
replica whose bundle was replaced under it answers from the new version."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from artlens.errors import BundleError
from artlens.indexing.bundle_lock import bundle_lock, lock_file
from artlens.server.index_holder import IndexHolder
from artlens.server.prometheus import Metrics
from artlens.server.settings import SettingsError, load_settings

from .conftest import SMVS, needs_shared
from .serverkit import API_KEY, client_for, copy_bundle

pytestmark = needs_shared
ADMIN = {"X-API-Key": API_KEY}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Replica:
    """`artlens serve` in a subprocess on a free loopback port, its log in a file."""

    def __init__(self, bundle: Path, log: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ARTLENS_API_KEYS": API_KEY, "ARTLENS_RATE_LIMIT_PER_MINUTE": "0",
               "ARTLENS_RECOGNIZE_PER_MINUTE": "0", "ARTLENS_INFERENCE_THREADS": "2", "ARTLENS_LOG_LEVEL": "INFO"}
        env.pop("ARTLENS_WATCH_INTERVAL", None)  # the default (1 s) is what is tested
        self.log = log
        with open(log, "wb") as out:  # the child keeps its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "artlens.cli", "serve", "--index", str(bundle), "--port", str(self.port)],
                env=env, stdout=out, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout_s: float = 180) -> dict:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.log.read_text()[-3000:]
            try:
                r = httpx.get(f"{self.url}/ready", timeout=5)
                if r.status_code == 200:
                    return r.json()
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"replica on port {self.port} not ready: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def replicas(smvs_bundle, tmp_path):
    bundle = copy_bundle(smvs_bundle, tmp_path)
    started = [Replica(bundle, tmp_path / "a.log"), Replica(bundle, tmp_path / "b.log")]
    try:
        for replica in started:
            replica.wait_ready()
        yield started
    finally:
        for replica in started:
            replica.stop()


class Load:
    """Browse and recognition requests against every replica from one client thread, each answer's status kept."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = urls
        self.statuses: list[tuple[str, int]] = []
        self.stop = threading.Event()
        self.photo = (SMVS / "query" / "001.jpg").read_bytes()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(timeout=60) as client:
            turn = 0
            while not self.stop.is_set():
                for url in self.urls:
                    requests = [("GET", f"{url}/v1/artworks?limit=5", None),
                                ("GET", f"{url}/v1/artworks/smvs-005", None),
                                ("GET", f"{url}/v1/artworks/smvs-007/image?size=128", None)]
                    if turn % 3 == 0:  # recognitions are the heavy part: fewer of them on 2 cores
                        requests.append(("POST", f"{url}/v1/recognize", self.photo))
                    for method, target, body in requests:
                        r = client.request(method, target, content=body,
                                           headers={"Content-Type": "image/jpeg"} if body else None)
                        self.statuses.append((f"{method} {target}", r.status_code))
                turn += 1

    def __enter__(self) -> Load:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join(timeout=120)


def _until_version(replicas: list[Replica], version: int, limit_s: float) -> float:
    """Seconds until every replica's /ready shows ``version`` (AssertionError beyond ``limit_s``)."""
    started = time.monotonic()
    pending = list(replicas)
    while pending:
        pending = [r for r in pending if httpx.get(f"{r.url}/ready", timeout=10).json()["bundle_version"] != version]
        elapsed = time.monotonic() - started
        assert elapsed < limit_s, f"replicas on ports {[r.port for r in pending]} still not at version {version}"
        if pending:
            time.sleep(0.1)
    return time.monotonic() - started


def test_two_replicas_follow_admin_writes_under_load_without_a_failed_request(replicas):
    a, b = replicas
    version = a.wait_ready()["bundle_version"]
    assert b.wait_ready()["bundle_version"] == version
    image = (SMVS / "reference" / "025.jpg").read_bytes()
    with Load([a.url, b.url]) as load:
        time.sleep(1.0)
        added = httpx.post(f"{a.url}/v1/artworks", headers=ADMIN, timeout=120,
                           files={"image": ("025.jpg", image, "image/jpeg")},
                           data={"object_id": "smvs-025", "title": "Painting 025"})
        assert added.status_code == 201, added.text
        assert added.json()["bundle_version"] == version + 1
        assert _until_version([a, b], version + 1, 5.0) < 5.0
        deleted = httpx.delete(f"{a.url}/v1/artworks/smvs-003", headers=ADMIN, timeout=120)
        assert deleted.status_code == 200 and deleted.json()["bundle_version"] == version + 2
        assert _until_version([a, b], version + 2, 5.0) < 5.0
        time.sleep(1.0)
    failed = [(what, status) for what, status in load.statuses if not 200 <= status < 300]
    assert len(load.statuses) > 20 and not failed, failed[:10]
    # Replica B serves what was written through A: the added artwork is browsable and recognised there.
    assert httpx.get(f"{b.url}/v1/artworks/smvs-025", timeout=10).json()["metadata"]["title"] == "Painting 025"
    assert httpx.get(f"{b.url}/v1/artworks/smvs-025/image", timeout=30).status_code == 200
    hit = httpx.post(f"{b.url}/v1/recognize", content=(SMVS / "query" / "025.jpg").read_bytes(), timeout=120,
                     headers={"Content-Type": "image/jpeg"}).json()
    assert hit["status"] == "match" and hit["matches"][0]["object_id"] == "smvs-025"
    assert hit["bundle_version"] == version + 2
    assert httpx.get(f"{b.url}/v1/artworks/smvs-003", timeout=10).status_code == 404


def _holder(bundle: Path) -> IndexHolder:
    return IndexHolder(load_settings({}, index=str(bundle), watch_interval=0), Metrics())


def test_writers_of_two_processes_lose_no_write(smvs_bundle, tmp_path):
    """Each holder stands for a replica (its own state, its own lock descriptor): B's state is stale when it
    writes, and both writes at once go through one after the other."""
    bundle = copy_bundle(smvs_bundle, tmp_path)
    first, second = _holder(bundle), _holder(bundle)
    version = first.state.version
    image = (SMVS / "reference" / "025.jpg").read_bytes()
    first.add("added-by-a", image, {}, "jpg")
    state = second.add("added-by-b", (SMVS / "reference" / "027.jpg").read_bytes(), {}, "jpg")
    assert state.version == version + 2 and {"added-by-a", "added-by-b"} <= set(state.rows)
    # Two writes at the same moment from both.
    errors: list[BaseException] = []

    def write(holder: IndexHolder, object_id: str) -> None:
        try:
            holder.delete(object_id)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(first, "smvs-001")),
               threading.Thread(target=write, args=(second, "smvs-005"))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert not errors
    on_disk = _holder(bundle).state
    assert on_disk.version == version + 4
    assert {"added-by-a", "added-by-b"} <= set(on_disk.rows) and not {"smvs-001", "smvs-005"} & set(on_disk.rows)


def test_a_replica_whose_bundle_was_replaced_answers_from_the_new_version(smvs_bundle, tmp_path):
    """Replica B (not following the disk) still lists an artwork another replica deleted: its image request reads
    the directory that now holds the new version, so B catches up and answers 404, not a server fault."""
    bundle = copy_bundle(smvs_bundle, tmp_path)
    with client_for(bundle, watch_interval=0) as b:
        version = b.get("/ready").json()["bundle_version"]
        writer = _holder(bundle)
        writer.delete("smvs-009")
        assert b.get("/ready").json()["bundle_version"] == version  # B has not looked at the disk yet
        r = b.get("/v1/artworks/smvs-009/image")
        assert r.status_code == 404 and r.json()["code"] == "artwork_not_found", r.text
        assert b.get("/ready").json()["bundle_version"] == version + 1
        assert b.get("/v1/artworks/smvs-011/image").status_code == 200


def test_ready_follows_the_disk_and_a_broken_version_keeps_the_old_one_serving(smvs_bundle, tmp_path):
    bundle = copy_bundle(smvs_bundle, tmp_path)
    with client_for(bundle, watch_interval=0.2) as b:
        version = b.get("/ready").json()["bundle_version"]
        _holder(bundle).delete("smvs-013")
        deadline = time.monotonic() + 30
        while b.get("/ready").json()["bundle_version"] != version + 1:
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert b.get("/v1/artworks/smvs-013").status_code == 404
        (bundle / "bundle.json").write_text("[]")  # a version that cannot be loaded: logged, not served
        time.sleep(1.0)
        assert b.get("/ready").json()["bundle_version"] == version + 1
        assert b.get("/v1/artworks/smvs-015").status_code == 200


def test_the_bundle_lock_excludes_writers_across_descriptors_and_lets_readers_share(tmp_path):
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    with bundle_lock(bundle) as held:
        assert held and lock_file(bundle).is_file()
        # Another descriptor (another process) waits, then gives up.
        with pytest.raises(BundleError), bundle_lock(bundle, timeout_s=0.3):
            pass
        with pytest.raises(BundleError), bundle_lock(bundle, shared=True, timeout_s=0.3):
            pass
    with bundle_lock(bundle, shared=True), bundle_lock(bundle, shared=True, timeout_s=0.3) as both:
        assert both
    with bundle_lock(tmp_path / "no-such-dir" / "bundle") as held:  # nothing there to protect
        assert not held


@pytest.mark.parametrize("value", ["-1", "3601", "soon"])
def test_a_bad_watch_interval_stops_the_server_at_start_up(value):
    with pytest.raises(SettingsError, match=r"(?i)watch_interval"):
        load_settings({"ARTLENS_WATCH_INTERVAL": value})


def test_a_replica_loads_a_new_version_only_while_no_writer_holds_the_lock(smvs_bundle, tmp_path):
    """A writer renames the directory while holding the lock: a replica that opened the files of a version one by
    one across that rename could mix two versions, so it loads under the shared lock and waits for the writer."""
    bundle = copy_bundle(smvs_bundle, tmp_path)
    replica = _holder(bundle)
    version = replica.state.version
    _holder(bundle).delete("smvs-017")
    followed: list[bool] = []
    with bundle_lock(bundle):  # a writer of another process, in the middle of its write
        thread = threading.Thread(target=lambda: followed.append(replica.refresh()))
        thread.start()
        thread.join(timeout=1.0)
        assert thread.is_alive() and replica.state.version == version
    thread.join(timeout=120)
    assert followed == [True] and replica.state.version == version + 1 and "smvs-017" not in replica.state.rows
    assert not replica.refresh()  # nothing new on disk: nothing loaded


def test_calibration_of_a_shared_bundle_waits_for_writers_and_drops_a_stale_fit(smvs_bundle, tmp_path):
    """`artlens calibrate` on a bundle that replicas write too: the write of the fit waits for a writer holding the
    lock, and a fit made on a version that another process replaced meanwhile is not written over the new one."""
    from artlens.calibration.calibrate import calibrate_bundle
    from artlens.indexing.store.bundle import read_meta

    bundle = copy_bundle(smvs_bundle, tmp_path)
    before = read_meta(bundle)["counts"]["artworks"]
    config = {"synthetic_photos": 12}
    deleted: list[str] = []

    def delete_once(done: int, total: int) -> None:  # another replica's admin write, in the middle of the fit
        if not deleted:
            deleted.append("smvs-019")
            _holder(bundle).delete("smvs-019")

    with pytest.raises(BundleError, match="changed the bundle during calibration"):
        calibrate_bundle(bundle, config=config, progress=delete_once, lock=True)
    meta = read_meta(bundle)
    assert meta["counts"]["artworks"] == before - 1 and meta["calibration"]  # the new version, its calibration kept

    def hold_the_lock(done: int, total: int) -> None:
        if done == total and not holder.is_alive():
            holder.start()
            started.wait(5)

    started, release = threading.Event(), threading.Event()

    def writer() -> None:
        with bundle_lock(bundle):
            started.set()
            release.wait(10)

    holder = threading.Thread(target=writer)
    finished: list[bool] = []
    worker = threading.Thread(target=lambda: finished.append(
        calibrate_bundle(bundle, config=config, progress=hold_the_lock, lock=True) is not None))
    worker.start()
    time.sleep(0.5)
    while not started.is_set() and worker.is_alive():
        time.sleep(0.1)
    time.sleep(2.0)  # the fit itself takes a fraction of this
    assert not finished  # waiting for the writer
    release.set()
    worker.join(60)
    holder.join(10)
    assert finished == [True]
