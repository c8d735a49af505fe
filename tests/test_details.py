"""Detail photos made from references: regions of 10–40 % of the artwork, reproducible, no-match from distractors."""

import csv
import json

import numpy as np
import pytest

from artlens.errors import CollectionError
from artlens.eval.details import DETAIL_CONFIG, detail_photo, make_detail_queries, sample_view
from tests.conftest import write_collection


def _rows(path):
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _painting(path, seed, size=(360, 480)):
    from PIL import Image

    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, size=(size[0] // 20, size[1] // 20, 3), dtype=np.uint8)
    Image.fromarray(small).resize((size[1], size[0]), Image.Resampling.BICUBIC).save(path)
    return path


@pytest.fixture(scope="module")
def collections(tmp_path_factory):
    root = tmp_path_factory.mktemp("details")
    art = [{"object_id": f"a{i}", "image": str(_painting(root / f"a{i}.png", i))} for i in range(3)]
    other = [{"object_id": f"d{i}", "image": str(_painting(root / f"d{i}.png", 10 + i, (500, 300)))}
             for i in range(2)]
    return write_collection(root / "collection.csv", art), write_collection(root / "distractors.csv", other)


@pytest.mark.parametrize(("width", "height"), [(480, 360), (300, 1200), (2000, 500), (64, 64)])
def test_regions_show_10_to_40_percent_and_stay_on_the_artwork(width, height):
    rng = np.random.default_rng(0)
    for _ in range(40):
        view = sample_view(width, height, rng)
        assert DETAIL_CONFIG["area"][0] <= view.area_fraction <= DETAIL_CONFIG["area"][1]
        assert view.quad[:, 0].min() >= -1e-3 and view.quad[:, 0].max() <= width + 1e-3
        assert view.quad[:, 1].min() >= -1e-3 and view.quad[:, 1].max() <= height + 1e-3
        assert max(view.frame) == DETAIL_CONFIG["out_side"]


def test_an_image_no_phone_frame_fits_is_a_clear_error():
    with pytest.raises(CollectionError, match="fits"):
        sample_view(2000, 20, np.random.default_rng(0))


def test_detail_photo_is_deterministic_and_a_jpeg():
    rgb = np.random.default_rng(1).integers(0, 255, size=(200, 300, 3), dtype=np.uint8)
    a, view = detail_photo(rgb, np.random.default_rng(5))
    b, _ = detail_photo(rgb, np.random.default_rng(5))
    c, _ = detail_photo(rgb, np.random.default_rng(6))
    assert a == b and a != c
    assert a[:2] == b"\xff\xd8"
    import cv2

    decoded = cv2.imdecode(np.frombuffer(a, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape[1::-1] == view.frame


def test_queries_csv_with_no_match_details_is_reproducible(collections, tmp_path):
    coll, distractors = collections
    q1 = make_detail_queries(coll, tmp_path / "one", count=5, seed=3, distractors_csv=distractors, nomatch_count=3)
    q2 = make_detail_queries(coll, tmp_path / "two", count=5, seed=3, distractors_csv=distractors, nomatch_count=3)
    rows = _rows(q1)
    assert [r["image"] for r in rows] == [r["image"] for r in _rows(q2)]
    assert len(rows) == 8
    match, nomatch = rows[:5], rows[5:]
    assert {r["expected"] for r in match} == {"a0", "a1", "a2"}  # every artwork once before any twice
    assert all(r["expected"] == "" for r in nomatch)
    for r in rows:
        assert (q1.parent / r["image"]).read_bytes() == (q2.parent / r["image"]).read_bytes()
    meta = json.loads((q1.parent / "details.json").read_text())
    assert len(meta["photos"]) == 8 and all(0.1 <= p["area_fraction"] <= 0.4 for p in meta["photos"])


def test_distractors_that_are_in_the_collection_are_refused(collections, tmp_path):
    coll, _ = collections
    with pytest.raises(CollectionError, match="distractors must"):
        make_detail_queries(coll, tmp_path / "x", count=1, distractors_csv=coll)


def test_cli_dataset_details(collections, tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app

    coll, distractors = collections
    res = CliRunner().invoke(app, ["dataset", "details", "--collection", str(coll), "--out", str(tmp_path / "q"),
                                   "--count", "2", "--seed", "1", "--distractors", str(distractors)])
    assert res.exit_code == 0, res.output
    assert len(_rows(tmp_path / "q" / "queries.csv")) == 4
    bad = CliRunner().invoke(app, ["dataset", "details", "--collection", str(tmp_path / "none.csv"),
                                   "--out", str(tmp_path / "q2")])
    assert bad.exit_code == 2 and "Traceback" not in bad.output
