"""End-to-end recognition of real gallery photos with the tiny random-init model (verification carries it)."""

import pytest

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.recognition.recognizer import Recognizer

from .conftest import ESTENSE, SMVS, needs_shared, write_collection

pytestmark = needs_shared


def test_phone_photo_of_a_painting_is_recognised_with_its_outline(recognizer):
    result = recognizer.recognize(SMVS / "query" / "001.jpg")
    assert result.status == "match"
    best = result.matches[0]
    assert best.object_id == "smvs-001" and best.verified and best.confidence >= result.threshold
    assert best.metadata == {"title": "Painting 001"}
    assert best.inliers >= 15
    outline = best.outline
    assert len(outline) == 4
    xs, ys = [p[0] for p in outline], [p[1] for p in outline]
    # The painting hangs inside the photo: its outline is in normalised photo coordinates, roughly within it.
    assert -0.2 < min(xs) < max(xs) < 1.2 and -0.2 < min(ys) < max(ys) < 1.2
    assert result.model.pretrained is False
    # A random-init model's local shortlist: no forward pass ("embed"), no similarity.
    assert set(result.timings_ms) == {"decode", "features", "search", "verify", "decide", "total"}
    assert result.signals == ["local_features", "vlad", "descriptor_votes"] and best.similarity is None
    assert result.image_size == [1600, 1200]


def test_building_photo_is_no_match_with_a_debug_candidate(recognizer):
    result = recognizer.recognize(SMVS / "nomatch" / "landmark-001.jpg")
    assert result.status == "no_match" and result.matches == []
    assert result.best_rejected is not None and not result.best_rejected.verified
    assert result.best_rejected.confidence < result.threshold


def test_top_k_bounds_the_shortlist(recognizer):
    analysis = recognizer.analyse(SMVS / "query" / "003.jpg", top_k=3)
    assert len(analysis.candidates) == 3
    assert [c.rank for c in analysis.candidates] == [1, 2, 3]
    assert analysis.top_k == 3 and recognizer.decide(analysis).top_k == 3


def test_min_confidence_override(recognizer):
    strict = recognizer.recognize(SMVS / "query" / "001.jpg", min_confidence=1.0)
    assert strict.status == "no_match" and strict.threshold == 1.0


@pytest.fixture(scope="module")
def estense_bundle(tmp_path_factory, tiny_model):
    if not ESTENSE.is_dir():
        pytest.skip("../shared/data/estense is not beside the repository")
    ids = ["094", "037", "003", "011", "043", "065", "086"]
    rows = [{"object_id": f"estense-{n}", "image": str(ESTENSE / "reference" / f"{n}.png")} for n in ids]
    csv_path = write_collection(tmp_path_factory.mktemp("estense") / "collection.csv", rows)
    out = tmp_path_factory.mktemp("bundles") / "estense"
    build_calibrated_bundle(tiny_model, csv_path, out, calibration={"synthetic_photos": 7})
    return out


def test_two_paintings_in_one_gallery_frame_are_both_returned(estense_bundle):
    result = Recognizer(estense_bundle).recognize(ESTENSE / "query" / "094_037.jpg", top_k=7)
    found = {m.object_id for m in result.matches}
    assert found == {"estense-094", "estense-037"}
    a, b = (m.outline for m in result.matches)
    centre_a = sum(p[0] for p in a) / 4
    centre_b = sum(p[0] for p in b) / 4
    assert abs(centre_a - centre_b) > 0.2  # two different places in the frame


def test_identical_references_do_not_answer_twice(tmp_path, tiny_model):
    image = str(SMVS / "reference" / "001.jpg")
    rows = [{"object_id": "print-a", "image": image}, {"object_id": "print-b", "image": image},
            {"object_id": "other", "image": str(SMVS / "reference" / "020.jpg")}]
    csv_path = write_collection(tmp_path / "c.csv", rows)
    build_calibrated_bundle(tiny_model, csv_path, tmp_path / "b", calibration={"synthetic_photos": 3})
    result = Recognizer(tmp_path / "b").recognize(SMVS / "query" / "001.jpg")
    # One region of the photo is one artwork: the second, overlapping outline is dropped.
    assert [m.object_id for m in result.matches] in (["print-a"], ["print-b"])


def test_cli_prints_titles_with_brackets_verbatim(smvs_bundle, capsys):
    from artlens.cli.common import json_line
    from artlens.cli.recognize import print_result

    rec = Recognizer(smvs_bundle)  # a fresh copy: its metadata may be edited without touching other tests
    row = next(i for i, a in enumerate(rec.bundle.artworks) if a["object_id"] == "smvs-001")
    rec.bundle.artworks[row]["metadata"]["title"] = "[bold]Study[/bold] [untitled]"
    result = rec.recognize(SMVS / "query" / "001.jpg")
    print_result("visitor [1].jpg", result)
    printed = capsys.readouterr().out
    assert "[bold]Study[/bold] [untitled]" in printed and "visitor [1].jpg" in printed
    json_line({"title": "[untitled]"})
    assert capsys.readouterr().out == '{"title": "[untitled]"}\n'


def test_vlad_regions_cover_the_photo_and_skip_sparse_ones():
    import numpy as np

    from artlens.recognition.rankings import region_masks
    from artlens.verification import LocalFeatures

    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 1, size=(400, 2)).astype(np.float32) * np.array([800, 600], np.float32)
    feats = LocalFeatures(pts, np.zeros((400, 128), np.uint8), (800, 600))
    masks = region_masks(feats, True)
    assert len(masks) == 6 and masks[0].all()
    assert all(20 <= m.sum() < 400 for m in masks[1:])
    left = pts[pts[:, 0] < 150]
    left_only = LocalFeatures(left, np.zeros((len(left), 128), np.uint8), (800, 600))
    assert len(region_masks(left_only, True)) == 3  # whole + the two left quadrants; right ones and centre are empty
    assert len(region_masks(feats, False)) == 1
