"""Feature-level distractors (eval/feature_distractors.py) and the memory-mapped merge of a build's shards
(indexing/shards.py): a real bundle of SMVS references and Estense distractor paintings, built with the tiny
exported model, extended by 40 artworks made of its distractors' features."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.eval.feature_distractors import MATCH_DISTANCES, extend_bundle, feature_artwork, perturb, source_rows
from artlens.indexing import shards
from artlens.indexing.build import build_bundle
from artlens.indexing.store.bundle import load_bundle, read_meta
from artlens.recognition.recognizer import Recognizer

from .conftest import ESTENSE, SMVS, needs_shared, write_collection
from .serverkit import client_for

pytestmark = needs_shared
REFERENCES = ["001", "003", "009", "019"]
ESTENSE_ROWS = ["001", "002", "003", "004", "005"]
ADDED = 40


@pytest.fixture(scope="module")
def collection(tmp_path_factory) -> Path:
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg")} for n in REFERENCES]
    rows += [{"object_id": f"distractor-{n}", "image": str(ESTENSE / "reference" / f"{n}.png")} for n in ESTENSE_ROWS]
    return write_collection(tmp_path_factory.mktemp("fd") / "collection.csv", rows)


@pytest.fixture(scope="module")
def image_bundle(tmp_path_factory, tiny_model, collection) -> Path:
    out = tmp_path_factory.mktemp("fd-images") / "bundle"
    build_calibrated_bundle(tiny_model, collection, out, config={"shard_size": 4},
                            calibration={"synthetic_photos": 9})
    return out


@pytest.fixture(scope="module")
def extended(tmp_path_factory, image_bundle) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("fd-extended") / "bundle"
    record = extend_bundle(image_bundle, out, len(REFERENCES) + len(ESTENSE_ROWS) + ADDED, seed=3,
                           calibration={"synthetic_photos": 9})
    return out, record


def test_extended_bundle_counts_offsets_and_sources(image_bundle, extended):
    out, record = extended
    source, bundle = load_bundle(image_bundle), load_bundle(out)
    images = len(source.artworks)
    assert record["from_images"] == images and record["from_features"] == ADDED
    assert len(bundle.artworks) == len(bundle.features) == images + ADDED
    assert bundle.artworks[:images] == source.artworks
    added = bundle.artworks[images:]
    assert [a["object_id"] for a in added] == [f"feature-{n:06d}" for n in range(ADDED)]
    assert all("image" not in a and "rendition" not in a for a in added)
    # Every piece comes from a distractor, never from an SMVS reference.
    assert all("smvs-" not in a["metadata"]["source"] and "distractor-" in a["metadata"]["source"] for a in added)
    offsets = np.asarray(bundle.features.offsets)
    assert offsets[0] == 0 and np.all(np.diff(offsets) >= 0) and offsets[-1] == len(bundle.features.descriptors)
    np.testing.assert_array_equal(offsets[:images + 1], source.features.offsets)
    head = int(source.features.offsets[-1])
    np.testing.assert_array_equal(bundle.features.descriptors[:head], source.features.descriptors)
    per_artwork = np.diff(offsets[images:])
    assert per_artwork.max() <= 1000 and per_artwork.min() > 50
    for row in range(images, images + ADDED):  # keypoints inside the new canvas
        feats = bundle.features.get(row)
        w, h = feats.image_size
        assert (feats.keypoints >= 0).all() and (feats.keypoints[:, 0] < w).all() and (feats.keypoints[:, 1] < h).all()
    meta = read_meta(out)
    assert meta["counts"] == {"artworks": images + ADDED, "keypoints": int(offsets[-1])}
    assert meta["votes"]["count"] == int(offsets[-1]) and bundle.local_index.ntotal == images + ADDED
    assert meta["renditions"]["without"] == ADDED and meta["calibration"] is not None
    assert meta["feature_distractors"]["from_features"] == ADDED


def test_descriptors_are_perturbed_not_copied(image_bundle, extended):
    source, bundle = load_bundle(image_bundle), load_bundle(extended[0])
    head = int(source.features.offsets[-1])
    old = {bytes(d) for d in np.asarray(source.features.descriptors)}
    new = np.asarray(bundle.features.descriptors[head:])
    assert sum(bytes(d) in old for d in new) == 0
    rng = np.random.default_rng(0)
    original = np.asarray(source.features.descriptors[:2000])
    moved = np.linalg.norm(perturb(original, rng).astype(np.float32) - original.astype(np.float32), axis=1)
    # Rounding and clipping at 0 shorten the drawn distance; the median stays near the real photos' median.
    assert 0.6 * MATCH_DISTANCES[2] < np.median(moved) < 1.1 * MATCH_DISTANCES[2]


def test_smvs_photos_are_still_recognised(image_bundle, extended, tiny_model):
    before, after = Recognizer(image_bundle, tiny_model), Recognizer(extended[0], tiny_model)
    found = 0
    for n in REFERENCES:
        photo = SMVS / "query" / f"{n}.jpg"
        was, now = before.recognize(photo), after.recognize(photo)
        if was.status == "match" and was.matches[0].object_id == f"smvs-{n}":
            assert now.status == "match" and now.matches[0].object_id == f"smvs-{n}", n
            found += 1
    assert found >= 3


def test_service_answers_for_artworks_without_an_image(extended):
    with client_for(extended[0]) as client:
        artwork = client.get("/v1/artworks/feature-000007")
        assert artwork.status_code == 200 and artwork.json()["object_id"] == "feature-000007"
        image = client.get("/v1/artworks/feature-000007/image")
        assert image.status_code == 404, image.text
        body = image.json()
        assert body["code"] == "no_image" and set(body) == {"code", "message", "status", "request_id"}
        assert "/" not in body["message"].replace("feature-000007", "")
        assert client.get("/v1/artworks/smvs-001/image").status_code == 200
        listing = client.get("/v1/artworks", params={"limit": 100})
        assert listing.status_code == 200


def test_renditions_are_added_only_where_there_is_an_image(extended, tmp_path):
    """`artlens index renditions` on a bundle that also holds artworks without an image: the image artwork that
    lost its rendition gets one back, the feature-level ones are left as they are and are not reported as failed."""
    from typer.testing import CliRunner

    from artlens.cli import app
    from artlens.indexing.bundle_writer import write_meta

    bundle = tmp_path / "bundle"
    shutil.copytree(extended[0], bundle)
    artworks = json.loads((bundle / "artworks.json").read_text())
    rendition = artworks[0].pop("rendition")
    (bundle / "artworks.json").write_text(json.dumps(artworks))
    write_meta(bundle, read_meta(bundle))
    result = CliRunner().invoke(app, ["index", "renditions", "--index", str(bundle)])
    assert result.exit_code == 0, result.output
    assert "1 renditions stored" in " ".join(result.output.split())  # rich wraps long lines
    after = load_bundle(bundle).artworks
    assert after[0]["rendition"] == rendition
    assert all("rendition" not in art for art in after if art["object_id"].startswith("feature-"))
    again = CliRunner().invoke(app, ["index", "renditions", "--index", str(bundle)])
    assert again.exit_code == 0 and "nothing to do" in " ".join(again.output.split())


def test_same_seed_same_bundle(image_bundle, extended, tmp_path):
    again = tmp_path / "again"
    extend_bundle(image_bundle, again, len(REFERENCES) + len(ESTENSE_ROWS) + ADDED, seed=3,
                  calibration={"synthetic_photos": 9})
    first, second = read_meta(extended[0]), read_meta(again)
    assert first["checksums"] == second["checksums"]
    assert first["calibration"]["threshold"] == second["calibration"]["threshold"]
    source = load_bundle(image_bundle)
    rows = source_rows(source.artworks)
    one, two = (feature_artwork(source.features, rows, 5, seed, 640, 1000)[0] for seed in (3, 4))
    assert not np.array_equal(one.keypoints, two.keypoints) or not np.array_equal(one.descriptors, two.descriptors)


def test_only_distractors_with_an_image_lend_features():
    artworks = [{"object_id": "smvs-001", "image": "a.jpg"}, {"object_id": "distractor-1", "image": "b.jpg"},
                {"object_id": "feature-000001"}, {"object_id": "other", "image": "c.jpg"}]
    assert source_rows(artworks) == [1, 3]


def test_memory_mapped_merge_matches_the_in_ram_merge(tiny_model, collection, tmp_path):
    """The build's merge writes the feature files straight into the bundle; the bytes are those np.save writes."""
    out = tmp_path / "bundle"
    build_bundle(tiny_model, collection, out, config={"shard_size": 2},
                 before_commit=lambda staging: _keep_shards(staging, tmp_path / "shards"))
    meta = read_meta(out)
    ram = shards.load_shards(tmp_path / "shards", 5, "rootsift", False)
    mapped = shards.load_shards(tmp_path / "shards", 5, "rootsift", False, into=tmp_path / "mapped")
    assert isinstance(mapped.features.descriptors, np.memmap)
    for name in ("keypoints", "descriptors"):
        np.save(tmp_path / f"{name}.npy", getattr(ram.features, name))
        assert (tmp_path / f"{name}.npy").read_bytes() == (tmp_path / "mapped" / f"{name}.npy").read_bytes()
        assert (tmp_path / f"{name}.npy").read_bytes() == (out / "features" / f"{name}.npy").read_bytes()
    from artlens.hashing import file_sha256

    assert meta["checksums"]["features/descriptors.npy"] == file_sha256(tmp_path / "descriptors.npy")
    assert json.loads((out / "artworks.json").read_text()) == ram.artworks


def _keep_shards(staging: Path, to: Path) -> None:
    import shutil

    shutil.copytree(staging / shards.SHARD_DIR, to)
