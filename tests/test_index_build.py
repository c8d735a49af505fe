"""Index build end to end: real builds with the tiny exported model over a few real SMVS catalogue images.

Bundles here are 2–5 references and uncalibrated (``before_commit=None``): a build takes about a second.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import numpy as np
import pytest

from artlens.errors import BundleError, CollectionError, ModelError
from artlens.hashing import file_sha256
from artlens.indexing.build import build_bundle
from artlens.indexing.store.bundle import FORMAT, load_bundle, read_meta

from .badimages import BAD_INPUTS, png_header_only
from .conftest import SMVS, needs_shared, write_collection

pytestmark = needs_shared

DATA_FILES = {"artworks.json", "embeddings.npy", "index.faiss", "vocabulary.npy", "local_index.faiss",
              "features/keypoints.npy", "features/descriptors.npy", "features/offsets.npy", "features/sizes.npy",
              "votes.faiss"}


def ref(n: str) -> str:
    return str(SMVS / "reference" / f"{n}.jpg")


def rows_for(numbers: list[str]) -> list[dict]:
    return [{"object_id": f"smvs-{n}", "image": ref(n)} for n in numbers]


def leftovers(out: Path) -> list[str]:
    """Staging or backup directories a build left beside ``out``."""
    return sorted(p.name for p in out.parent.iterdir() if p.name.startswith(f".{out.name}."))


@pytest.fixture(scope="module")
def small_bundle(tmp_path_factory, tiny_model) -> tuple[Path, Path]:
    """(bundle, collection CSV): four references with two metadata columns, uncalibrated, built for the fused
    shortlist (global embeddings stored, as every pretrained model's bundle has them; the default random-init
    layout without them: tests/test_global_embedding.py)."""
    folder = tmp_path_factory.mktemp("small")
    rows = [{"object_id": f"smvs-{n}", "image": ref(n), "title": f"Painting {n}", "room": f"Room {i}"}
            for i, n in enumerate(["001", "003", "009", "019"], start=1)]
    csv_path = write_collection(folder / "collection.csv", rows)
    out = folder / "bundle"
    report = build_bundle(tiny_model, csv_path, out, config={"shortlist": "fused"}, before_commit=None)
    assert report.indexed == 4 and report.skipped == [] and report.path == out
    return out, csv_path


@pytest.fixture
def bundle_copy(small_bundle, tmp_path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(small_bundle[0], copy)
    return copy


# -- layout ----------------------------------------------------------------------------------------------
def test_bundle_layout(small_bundle, tiny_model):
    out, csv_path = small_bundle
    meta = json.loads((out / "bundle.json").read_text())
    model_json = json.loads((tiny_model / "model.json").read_text())

    assert meta["format"] == FORMAT
    assert meta["model"]["sha256"] == model_json["onnx"]["sha256"] == file_sha256(tiny_model / "model.onnx")
    assert meta["model"]["pretrained"] is False
    assert meta["model"]["id"] == "artlens/dinov2-tiny"
    assert meta["model"]["embedding_dim"] == model_json["embedding_dim"]
    assert meta["model"]["global_embedding"] is True and meta["shortlist"] == "fused"
    assert meta["counts"]["artworks"] == 4 and meta["counts"]["keypoints"] > 100
    assert meta["index"]["type"] == "IndexFlatIP" and meta["index"]["exact"] is True
    assert meta["index"]["count"] == 4
    assert meta["calibration"] is None  # before_commit=None: nothing calibrated it
    assert meta["collection"]["csv"] == str(csv_path) and meta["collection"]["rows"] == 4
    assert meta["collection"]["metadata_columns"] == ["title", "room"]
    assert meta["collection"]["skipped"] == []
    renditions = {a["rendition"] for a in json.loads((out / "artworks.json").read_text())}
    assert len(renditions) == 4 and set(meta["checksums"]) == DATA_FILES | renditions
    assert meta["votes"]["count"] == meta["counts"]["keypoints"] and meta["votes"]["factory"].startswith("IVF")
    for name, digest in meta["checksums"].items():
        assert file_sha256(out / name) == digest, name

    artworks = json.loads((out / "artworks.json").read_text())
    assert [a["object_id"] for a in artworks] == ["smvs-001", "smvs-003", "smvs-009", "smvs-019"]
    assert artworks[0]["metadata"] == {"title": "Painting 001", "room": "Room 1"}
    assert artworks[0]["image"] == ref("001")
    assert (artworks[0]["width"], artworks[0]["height"]) == (475, 298)  # full-resolution size of the reference

    bundle = load_bundle(out)
    assert bundle.embeddings.shape == (4, model_json["embedding_dim"]) and bundle.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bundle.embeddings, axis=1), 1.0, atol=1e-4)
    assert isinstance(bundle.index, faiss.IndexFlatIP) and bundle.index.ntotal == 4
    assert len(bundle.features) == 4 and bundle.local_index.ntotal == 4
    _, ids = bundle.index.search(np.ascontiguousarray(bundle.embeddings[2:3]), 1)
    assert ids[0, 0] == 2  # each reference is its own nearest neighbour
    assert not leftovers(out)


def test_hnsw_above_exact_below(tmp_path, tiny_model):
    csv_path = write_collection(tmp_path / "c.csv", rows_for(["001", "003", "009"]))
    out = tmp_path / "hnsw"
    report = build_bundle(tiny_model, csv_path, out, config={"index": {"exact_below": 2}, "shortlist": "fused"},
                          before_commit=None)
    assert report.indexed == 3
    meta = read_meta(out)
    assert meta["index"]["type"] == "IndexHNSWFlat" and meta["index"]["exact"] is False
    assert meta["index"]["exact_below"] == 2 and meta["index"]["count"] == 3
    bundle = load_bundle(out)
    assert isinstance(bundle.index, faiss.IndexHNSWFlat)
    _, ids = bundle.index.search(np.ascontiguousarray(bundle.embeddings[1:2]), 1)
    assert ids[0, 0] == 1


# -- bad rows ----------------------------------------------------------------------------------------------
def test_bad_rows_are_reported_by_line_and_skipped(tmp_path, tiny_model):
    images = tmp_path / "images"
    images.mkdir()
    (images / "x.jpg").write_bytes(b"hello, I am a text file\n" * 10)
    (images / "truncated.jpg").write_bytes(BAD_INPUTS["truncated JPEG"][0])
    (images / "empty.jpg").write_bytes(b"")
    (images / "animated.gif").write_bytes(BAD_INPUTS["animated GIF"][0])
    (images / "bomb.png").write_bytes(png_header_only(20000, 20000))
    shutil.copy(ref("003"), images / "good-003.jpg")  # a relative path, resolved against the CSV's folder

    rows = [
        {"object_id": "good-1", "image": ref("001")},                  # line 2
        {"object_id": "missing", "image": "images/missing.jpg"},       # line 3
        {"object_id": "text", "image": "images/x.jpg"},                 # line 4
        {"object_id": "good-1", "image": ref("009")},                   # line 5: duplicate id
        {"object_id": "", "image": ref("019")},                         # line 6: empty id
        {"object_id": "good-2", "image": "images/good-003.jpg"},        # line 7
        {"object_id": "truncated", "image": "images/truncated.jpg"},    # line 8
        {"object_id": "empty", "image": "images/empty.jpg"},            # line 9
        {"object_id": "animated", "image": "images/animated.gif"},      # line 10
        {"object_id": "bomb", "image": "images/bomb.png"},              # line 11
    ]
    csv_path = write_collection(tmp_path / "collection.csv", rows)
    out = tmp_path / "bundle"
    report = build_bundle(tiny_model, csv_path, out, before_commit=None)

    assert report.indexed == 2
    reasons = dict(report.skipped)
    assert [line for line, _ in report.skipped] == [3, 4, 5, 6, 8, 9, 10, 11]
    expected = {  # line: (image named in the reason, what is wrong)
        3: ("missing.jpg", "file not found"),
        4: ("x.jpg", BAD_INPUTS["not an image"][1]),
        8: ("truncated.jpg", BAD_INPUTS["truncated JPEG"][1]),
        9: ("empty.jpg", BAD_INPUTS["0 bytes"][1]),
        10: ("animated.gif", BAD_INPUTS["animated GIF"][1]),
        11: ("bomb.png", BAD_INPUTS["20000x20000 PNG"][1]),
    }
    for line, (image, what) in expected.items():
        assert image in reasons[line] and what in reasons[line], (line, reasons[line])
    assert "duplicate object_id 'good-1'" in reasons[5] and "line 2" in reasons[5]
    assert "empty object_id" in reasons[6]

    bundle = load_bundle(out)
    assert [a["object_id"] for a in bundle.artworks] == ["good-1", "good-2"]
    assert bundle.artworks[0]["image"] == ref("001")  # the first good-1, not its duplicate
    assert bundle.artworks[1]["image"] == "images/good-003.jpg"
    assert bundle.meta["collection"]["rows"] == 8  # rows that reached the image stage
    assert [(s["line"], s["reason"]) for s in bundle.meta["collection"]["skipped"]] == report.skipped
    assert not leftovers(out)


def test_no_usable_rows_is_an_error(tmp_path, tiny_model):
    csv_path = write_collection(tmp_path / "c.csv", [{"object_id": "a", "image": "nope.jpg"}])
    out = tmp_path / "bundle"
    with pytest.raises(CollectionError, match="no usable rows"):
        build_bundle(tiny_model, csv_path, out, before_commit=None)
    assert not out.exists() and not leftovers(out)


def test_featureless_images_are_a_clear_error(tmp_path, tiny_model):
    import cv2
    import numpy as np

    rows = []
    for i in range(3):  # decodable, but uniform grey: no keypoint anywhere (VLAD and votes would have no data)
        cv2.imwrite(str(tmp_path / f"blank{i}.png"), np.full((300, 400, 3), 128, np.uint8))
        rows.append({"object_id": f"blank{i}", "image": f"blank{i}.png"})
    csv_path = write_collection(tmp_path / "c.csv", rows)
    out = tmp_path / "bundle"
    with pytest.raises(CollectionError, match=r"no usable rows \(3 skipped\)"):  # each: too few local features
        build_bundle(tiny_model, csv_path, out, before_commit=None)
    assert not out.exists() and not leftovers(out)


def test_strict_fails_on_first_bad_row_and_leaves_nothing(tmp_path, tiny_model):
    rows = [*rows_for(["001", "003"]), {"object_id": "gone", "image": "gone.jpg"},
            {"object_id": "also-gone", "image": "also-gone.jpg"}]
    csv_path = write_collection(tmp_path / "c.csv", rows)
    out = tmp_path / "bundle"
    with pytest.raises(CollectionError) as err:
        build_bundle(tiny_model, csv_path, out, strict=True, before_commit=None)
    message = str(err.value)
    assert f"{csv_path}:4:" in message and "gone.jpg" in message and "file not found" in message
    assert "also-gone" not in message
    assert not out.exists()
    assert not leftovers(out)


def test_strict_fails_on_a_csv_problem_before_any_work(tmp_path, tiny_model):
    rows = [*rows_for(["001"]), {"object_id": "smvs-001", "image": ref("003")}]
    csv_path = write_collection(tmp_path / "c.csv", rows)
    out = tmp_path / "bundle"
    with pytest.raises(CollectionError, match=r"c\.csv:3: .*003\.jpg: duplicate object_id 'smvs-001'"):
        build_bundle(tiny_model, csv_path, out, strict=True, before_commit=None)
    assert not out.exists() and not leftovers(out)


# -- atomic replace ----------------------------------------------------------------------------------------
def test_rebuild_replaces_and_failed_build_keeps_previous(tmp_path, tiny_model):
    out = tmp_path / "bundle"
    first = write_collection(tmp_path / "first.csv", rows_for(["001", "003"]))
    build_bundle(tiny_model, first, out, before_commit=None)
    assert [a["object_id"] for a in load_bundle(out).artworks] == ["smvs-001", "smvs-003"]

    second = write_collection(tmp_path / "second.csv", rows_for(["009", "019", "021"]))
    report = build_bundle(tiny_model, second, out, before_commit=None)
    assert report.indexed == 3
    assert [a["object_id"] for a in load_bundle(out).artworks] == ["smvs-009", "smvs-019", "smvs-021"]
    assert not leftovers(out)
    checksums = read_meta(out)["checksums"]

    # A strict build that fails on a bad row: the previous bundle stays, whole and loadable.
    bad = write_collection(tmp_path / "bad.csv", [*rows_for(["001"]), {"object_id": "x", "image": "nope.jpg"}])
    with pytest.raises(CollectionError):
        build_bundle(tiny_model, bad, out, strict=True, before_commit=None)
    assert read_meta(out)["checksums"] == checksums
    assert [a["object_id"] for a in load_bundle(out).artworks] == ["smvs-009", "smvs-019", "smvs-021"]
    assert not leftovers(out)

    # A build that fails after staging was written (here: in before_commit, where the CLI calibrates).
    def explode(staging: Path) -> None:
        assert (staging / "bundle.json").is_file() and staging.name.startswith(".bundle.building-")
        raise RuntimeError("calibration blew up")

    with pytest.raises(RuntimeError, match="calibration blew up"):
        build_bundle(tiny_model, first, out, before_commit=explode)
    assert read_meta(out)["checksums"] == checksums
    assert len(load_bundle(out).artworks) == 3
    assert not leftovers(out)


# -- malformed collection CSVs -------------------------------------------------------------------------------
def test_header_without_image_column(tmp_path, tiny_model):
    csv_path = tmp_path / "c.csv"
    csv_path.write_text(f"object_id,picture,title\nsmvs-001,{ref('001')},A painting\n", encoding="utf-8")
    with pytest.raises(CollectionError) as err:
        build_bundle(tiny_model, csv_path, tmp_path / "bundle", before_commit=None)
    message = str(err.value)
    assert str(csv_path) in message and "missing image" in message and "found: object_id, picture, title" in message
    assert not (tmp_path / "bundle").exists()


def test_non_utf8_csv(tmp_path, tiny_model):
    csv_path = tmp_path / "latin1.csv"
    csv_path.write_bytes(f"object_id,image,title\nsmvs-001,{ref('001')},Caf\xe9 au lit\n".encode("latin-1"))
    with pytest.raises(CollectionError, match=r"latin1\.csv: not UTF-8 text"):
        build_bundle(tiny_model, csv_path, tmp_path / "bundle", before_commit=None)


def test_missing_csv(tmp_path, tiny_model):
    with pytest.raises(CollectionError, match=r"nowhere\.csv: collection CSV not found"):
        build_bundle(tiny_model, tmp_path / "nowhere.csv", tmp_path / "bundle", before_commit=None)
    assert not (tmp_path / "bundle").exists()


def test_utf8_bom_and_metadata_are_kept(tmp_path, tiny_model):
    csv_path = tmp_path / "bom.csv"
    csv_path.write_text(f"object_id,image,title\nsmvs-001,{ref('001')},Café – Œuvre\n", encoding="utf-8-sig")
    build_bundle(tiny_model, csv_path, tmp_path / "bundle", before_commit=None)
    artworks = json.loads((tmp_path / "bundle" / "artworks.json").read_text(encoding="utf-8"))
    assert artworks[0].pop("rendition").startswith("renditions/")
    assert artworks == [{"object_id": "smvs-001", "image": ref("001"), "width": 475, "height": 298,
                         "metadata": {"title": "Café – Œuvre"}}]


def test_quoted_newlines_and_unicode_line_separators_in_metadata(tmp_path):
    """Museum CSVs carry multi-line descriptions: a quoted newline is data, and line numbers stay file lines."""
    from artlens.indexing.collection import read_collection

    csv_path = tmp_path / "c.csv"
    csv_path.write_text(
        "object_id,image,title\n"
        f'a,{ref("001")},"Two\nlines"\n'  # lines 2-3
        "b,,no image\n"  # line 4
        f'c,{ref("003")},"Caf\u2028e \x85 au lit"\n'  # line 5: U+2028 and NEL are not CSV line breaks
        "d,,no image either\n",  # line 6
        encoding="utf-8")
    collection = read_collection(csv_path)
    assert [(r.number, r.object_id, r.metadata["title"]) for r in collection.rows] == [
        (2, "a", "Two\nlines"), (5, "c", "Caf\u2028e \x85 au lit")]
    assert [line for line, _ in collection.problems] == [4, 6]


def test_unreadable_image_is_skipped_not_a_crash(tmp_path, tiny_model, monkeypatch):
    shutil.copy(ref("009"), tmp_path / "locked.jpg")
    rows = [*rows_for(["001"]), {"object_id": "locked", "image": "locked.jpg"}]
    csv_path = write_collection(tmp_path / "c.csv", rows)
    read_bytes = Path.read_bytes

    def guarded(self: Path) -> bytes:  # what a file without read permission does (tests may run as root)
        if self.name == "locked.jpg":
            raise PermissionError(13, "Permission denied", str(self))
        return read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", guarded)
    report = build_bundle(tiny_model, csv_path, tmp_path / "bundle", before_commit=None)
    assert report.indexed == 1
    assert len(report.skipped) == 1 and report.skipped[0][0] == 3
    assert "locked.jpg" in report.skipped[0][1] and "Permission denied" in report.skipped[0][1]


def test_build_refuses_to_replace_a_directory_that_is_not_a_bundle(tmp_path, tiny_model):
    """`--out ~/photos` must not wipe the user's photos: only a bundle (or an empty folder) is replaced."""
    from artlens.errors import ArtlensError

    out = tmp_path / "photos"
    out.mkdir()
    (out / "precious.jpg").write_bytes(b"irreplaceable")
    csv_path = write_collection(tmp_path / "c.csv", rows_for(["001", "003"]))
    with pytest.raises(ArtlensError) as err:
        build_bundle(tiny_model, csv_path, out, before_commit=None)
    assert str(out) in str(err.value)
    assert (out / "precious.jpg").read_bytes() == b"irreplaceable"
    assert not leftovers(out)


# -- corrupted bundles ----------------------------------------------------------------------------------------
def _flip_bytes(path: Path) -> None:
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 16, len(data)):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(("damage", "named", "what"), [
    (lambda b: _flip_bytes(b / "embeddings.npy"), "embeddings.npy", "checksum"),
    (lambda b: (b / "index.faiss").unlink(), "index.faiss", "missing"),
    (lambda b: (b / "features" / "descriptors.npy").write_bytes(b"\x93NUMPY"), "features/descriptors.npy",
     "checksum"),
    (lambda b: (b / "bundle.json").write_text("{not json at all"), "bundle.json", "unreadable"),
    (lambda b: (b / "bundle.json").unlink(), "bundle.json", "not an index bundle"),
    (lambda b: (b / "bundle.json").write_text('{"format": "artlens-bundle/0"}'), "artlens-bundle/0", "rebuild"),
], ids=["flipped-embeddings", "no-index", "truncated-descriptors", "garbage-json", "no-json", "old-format"])
def test_corrupted_bundle_is_a_bundle_error_naming_the_file(bundle_copy, damage, named, what):
    damage(bundle_copy)
    with pytest.raises(BundleError) as err:
        load_bundle(bundle_copy)
    assert named in str(err.value) and what in str(err.value)


def test_recognizer_refuses_another_models_bundle(small_bundle, tiny_model, tmp_path):
    from artlens.export.dinov2 import export_dinov2
    from artlens.recognition.recognizer import Recognizer

    other = tmp_path / "tiny-seed1"
    export_dinov2("artlens/dinov2-tiny", other, random_init=True, seed=1)
    other_sha = json.loads((other / "model.json").read_text())["onnx"]["sha256"]
    bundle_sha = read_meta(small_bundle[0])["model"]["sha256"]
    assert other_sha != bundle_sha  # same architecture, different weights

    with pytest.raises(ModelError) as err:
        Recognizer(small_bundle[0], other, require_calibration=False)
    message = str(err.value)
    assert str(other) in message and str(small_bundle[0]) in message
    assert other_sha[:12] in message and bundle_sha[:12] in message
    # The model the bundle was built with is accepted (the bundle names its directory).
    assert Recognizer(small_bundle[0], require_calibration=False).model_summary.sha256 == bundle_sha


def test_recognizer_refuses_same_weights_with_other_preprocessing(small_bundle, tmp_path):
    from artlens.export.dinov2 import export_dinov2
    from artlens.recognition.recognizer import Recognizer

    other = tmp_path / "tiny-448"
    export_dinov2("artlens/dinov2-tiny", other, random_init=True, seed=0, size=448)
    # Same seed, same graph and weights (the ONNX file does not depend on the input size)…
    other_sha = json.loads((other / "model.json").read_text())["onnx"]["sha256"]
    assert other_sha == read_meta(small_bundle[0])["model"]["sha256"]
    # …but photos would be preprocessed differently from the references: refused, naming the difference.
    with pytest.raises(ModelError, match="input_size 448"):
        Recognizer(small_bundle[0], other, require_calibration=False)
