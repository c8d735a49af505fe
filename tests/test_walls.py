"""The second look at a photo of several paintings (recognition/walls.py): which windows it plans, how a window's
homography returns into the photo, and what it finds on the real Galleria Estense frames."""

import shutil

import numpy as np
import pytest

from artlens.calibration.calibrate import build_calibrated_bundle, calibrate_bundle
from artlens.calibration.fit import collect_evidence, fit_calibration
from artlens.calibration.photos import LabelledPhoto
from artlens.imaging import DecodeBudget
from artlens.recognition.confidence import RANDOM_INIT_FEATURES
from artlens.recognition.recognizer import Recognizer
from artlens.recognition.settings import resolve_settings
from artlens.recognition.walls import REGIONS, config_of, coverage, plan, to_photo, window_box
from artlens.verification import Verification

from .conftest import ESTENSE, needs_shared, write_collection

WALL = ESTENSE / "query" / "093_078_077_073_051_020.jpg"
WALL_PAINTINGS = {f"estense-{n}" for n in ("093", "078", "077", "073", "051", "020")}
# The other paintings of the frames the bundle below answers from, and distractors from the same rooms.
OTHERS = ["019", "035", "045", "076", "094", "037", "086", "003", "000", "002", "004", "005"]


def verified_at_40(row: int, ver: Verification) -> bool:
    """A calibration that verifies a plausible homography from 40 inliers (the recognizer asks its own)."""
    return ver.plausible and ver.inliers >= 40


def _square(x0: float, y0: float, x1: float, y1: float) -> np.ndarray:
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], dtype=np.float64)


def _verification(outline: np.ndarray, inliers: int, rejected: str | None = None) -> Verification:
    return Verification(2 * inliers, inliers, 0.5, np.eye(3), outline, rejected)


def test_nothing_to_look_at_when_nothing_hints_at_a_painting_or_one_fills_the_photo():
    assert not plan([], verified_at_40)
    weak_and_implausible = _verification(_square(0.1, 0.1, 0.3, 0.3), 20, rejected="outline is mirrored")
    too_weak = _verification(_square(0.5, 0.5, 0.7, 0.7), 7)  # hint_inliers is 8
    assert not plan([(0, weak_and_implausible), (1, too_weak)], verified_at_40)
    fills_the_photo = _verification(_square(0.05, 0.0, 0.95, 1.0), 120)
    assert not plan([(2, fills_the_photo), (1, too_weak)], verified_at_40)


def test_a_weak_plausible_candidate_is_looked_at_where_its_outline_points():
    weak, weaker = _verification(_square(0.6, 0.1, 0.8, 0.3), 20), _verification(_square(0.1, 0.5, 0.2, 0.9), 12)
    todo = plan([(3, weaker), (7, weak)], verified_at_40)
    assert [row for row, _ in todo.hints] == [7, 3]  # most inliers first
    x0, y0, x1, y1 = window_box(weak.outline)
    assert x0 < 0.6 and y0 < 0.1 and x1 > 0.8 and y1 > 0.3 and (x1 - x0) < 0.5
    # A tiny outline still gets a window of at least min_window of the photo.
    x0, y0, x1, y1 = window_box(_square(0.5, 0.5, 0.51, 0.51))
    assert x1 - x0 == pytest.approx(0.2) and y1 - y0 == pytest.approx(0.2)
    # Nothing is settled, so every region of the photo is searched as well.
    assert todo.regions == list(REGIONS)


def test_regions_a_settled_painting_explains_are_skipped():
    left = _verification(_square(0.0, 0.0, 0.55, 1.0), 80)
    # By default a verified painting and no weak candidate is no reason to look again, however much of the
    # photo is left; with max_explained the unexplained regions are searched.
    assert not plan([(0, left)], verified_at_40)
    boxes = plan([(0, left)], verified_at_40, {"max_explained": 0.6}).regions
    # Covered: the left quadrants (92 %) and the centre (58 %); the right quadrants (25 %) are left to look at.
    assert boxes == [(.4, 0, 1, .6), (.4, .4, 1, 1)]


def test_two_verified_paintings_are_a_wall_whose_other_regions_are_searched():
    left = _verification(_square(0.0, 0.0, 0.3, 1.0), 80)
    middle = _verification(_square(0.35, 0.0, 0.6, 1.0), 60)
    # Without a weak candidate, one verified painting is no reason to look again; two are a wall where more may hang.
    todo = plan([(0, left), (1, middle)], verified_at_40)
    assert todo and not todo.hints
    assert todo.regions and all(box[2] > 0.6 for box in todo.regions)  # the explained left of the photo is skipped
    assert not plan([(0, left), (1, middle)], verified_at_40, {"wall_paintings": 0})
    assert not plan([(0, left), (1, middle)], verified_at_40, {"wall_paintings": 3})


def test_coverage_counts_overlapping_outlines_once():
    assert coverage([_square(0.0, 0.0, 0.5, 0.5), _square(0.25, 0.0, 0.75, 0.5)]) == pytest.approx(0.375, abs=0.02)
    assert coverage([_square(0.0, 0.0, 0.5, 1.0)], box=(0.0, 0.0, 1.0, 0.5)) == pytest.approx(0.5, abs=0.02)


def test_a_window_homography_returns_to_first_pass_photo_coordinates():
    # A 200×100 reference seen at half size 100 px right and 50 px down of a window's own corner; the window
    # starts at (400, 300) of a 1600×900 close-up; the first pass analysed the photo at 800×450.
    window_h = np.array([[0.5, 0, 100], [0, 0.5, 50], [0, 0, 1]], dtype=np.float64)
    ver = Verification(40, 30, 0.75, window_h, None, None)
    back = to_photo(ver, np.array([400.0, 300.0]), (1600, 900), (800, 450), (200, 100))
    # Close-up pixels: (500, 350)–(600, 400); first-pass pixels: half of that; normalised by 800×450.
    np.testing.assert_allclose(back.outline, _square(250 / 800, 175 / 450, 300 / 800, 200 / 450), atol=1e-9)
    assert back.inliers == 30 and back.plausible


def test_walls_settings_are_checked_and_reach_the_recognizer():
    with pytest.raises(ValueError, match=r"unknown walls setting.*'hint_inlier'"):
        config_of({"hint_inlier": 5})
    with pytest.raises(ValueError, match="unknown walls setting"):
        resolve_settings({"walls": {"max_sides": 10}}, pretrained=False)
    settings = resolve_settings({"walls": {"enabled": False}}, pretrained=False)
    assert settings.walls["enabled"] is False and settings.walls["max_side"] == config_of(None)["max_side"]


@pytest.fixture(scope="module")
def estense_wall_bundle(tmp_path_factory, tiny_model):
    if not ESTENSE.is_dir():
        pytest.skip("../shared/data/estense is not beside the repository")
    ids = [oid.split("-")[1] for oid in sorted(WALL_PAINTINGS)] + OTHERS
    rows = [{"object_id": f"estense-{n}", "image": str(ESTENSE / "reference" / f"{n}.png")} for n in ids]
    csv_path = write_collection(tmp_path_factory.mktemp("walls") / "collection.csv", rows)
    out = tmp_path_factory.mktemp("bundles") / "walls"
    build_calibrated_bundle(tiny_model, csv_path, out, calibration={"synthetic_photos": len(ids)})
    return out


@needs_shared
def test_the_second_look_finds_more_paintings_of_the_wall(estense_wall_bundle):
    first_pass_only = Recognizer(estense_wall_bundle, config={"walls": {"enabled": False}})
    with_look = Recognizer(estense_wall_bundle)
    before = {m.object_id for m in first_pass_only.recognize(WALL).matches}
    after = {m.object_id for m in with_look.recognize(WALL).matches}
    assert after <= WALL_PAINTINGS, f"wrong answers: {after - WALL_PAINTINGS}"
    assert len(after) > len(before) and len(after) >= 5, (before, after)


@needs_shared
def test_a_photo_of_one_painting_gets_no_second_look(estense_wall_bundle):
    recognizer = Recognizer(estense_wall_bundle, config={"walls": {"enabled": False}})
    analysis = recognizer.analyse(ESTENSE / "query" / "086.jpg")
    answered = {m.object_id for m in recognizer.decide(analysis).matches}
    assert answered == {"estense-086"}

    def verified(row: int, ver: Verification) -> bool:
        return recognizer.bundle.artworks[row]["object_id"] in answered

    assert not plan([(c.row, c.verification) for c in analysis.candidates], verified, recognizer.settings.walls)


@needs_shared
def test_no_second_look_while_a_calibration_is_fitted(estense_wall_bundle, tmp_path):
    # The fit must see the first pass alone: what it learns equals a fit on the first pass's evidence.
    bundle = tmp_path / "bundle"
    shutil.copytree(estense_wall_bundle, bundle)
    recognizer = Recognizer(bundle)
    photos = [LabelledPhoto(WALL, frozenset(recognizer.bundle.row(i) for i in WALL_PAINTINGS), WALL.name)]
    first_pass = Recognizer(bundle, config={"walls": {"enabled": False}})
    looked, first = recognizer.analyse(WALL), first_pass.analyse(WALL)
    # The look changes this photo's evidence, so a fit that saw it would differ.
    assert [c.verification.inliers for c in looked.candidates] != [c.verification.inliers for c in first.candidates]
    expected = fit_calibration(collect_evidence(first_pass, photos, first.top_k), target_fpr=0.01, l2="cv",
                               source="", features=RANDOM_INIT_FEATURES)
    fitted = calibrate_bundle(bundle, photos=photos)
    assert np.array_equal(fitted.weights, expected.weights) and fitted.bias == expected.bias


@needs_shared
def test_a_close_up_the_decode_budget_refuses_leaves_the_first_pass_answer(estense_wall_bundle):
    # 003.jpg (1920×1080) is decoded at half size for the first pass (518 400 pixels) and in full for the second
    # look (2 073 600), which max_explained asks for: one painting verified, most of the photo unexplained.
    photo = ESTENSE / "query" / "003.jpg"
    looking = Recognizer(estense_wall_bundle, config={"walls": {"max_explained": 0.9}})
    budget = DecodeBudget(limit=3_000_000)
    with budget.reserve(1_000_000):  # another request's decode in flight: the first pass fits, the close-up not
        analysis = looking.analyse(photo, budget=budget)
    first_pass = Recognizer(estense_wall_bundle, config={"walls": {"enabled": False}}).analyse(photo)
    assert [(c.row, c.verification.inliers) for c in analysis.candidates] == \
        [(c.row, c.verification.inliers) for c in first_pass.candidates]
    assert looking.decide(analysis).matches[0].object_id == "estense-003"
