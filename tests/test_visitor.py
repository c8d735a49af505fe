"""The kornia visitor-photo simulator: reproducible per seed, photo-shaped, and harder as severity rises."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from artlens.errors import CollectionError
from artlens.imaging import load_image, to_gray
from artlens.verification import VERIFY_CONFIG, extract, prepare, verify

from .conftest import SMVS, needs_shared

pytestmark = needs_shared
PAINTINGS = ["001", "015", "021", "041"]


@pytest.fixture(scope="module")
def references() -> list[np.ndarray]:
    return [load_image((SMVS / "reference" / f"{n}.jpg").read_bytes(), max_side=1024).rgb for n in PAINTINGS]


@pytest.fixture(scope="module")
def photos(references):
    from artlens.eval.visitor import simulate_photos

    return {level: simulate_photos(references, seed=5, level=level) for level in ("mild", "hard")}


def test_same_seed_same_bytes_and_photo_shape(references, photos):
    from artlens.eval.visitor import simulate_photos

    again = simulate_photos(references[:3], seed=5, level="mild", batch_size=2)  # other batching, same photos
    assert [p.jpeg for p in again] == [p.jpeg for p in photos["mild"][:3]]
    other = simulate_photos(references[:1], seed=6, level="mild")
    assert other[0].jpeg != photos["mild"][0].jpeg
    for p in photos["mild"] + photos["hard"]:
        img = cv2.imdecode(np.frombuffer(p.jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert sorted(img.shape[:2]) == [768, 1024] and img.shape[2] == 3
        assert p.corners.shape == (4, 2)
        assert img.std() > 5  # not a blank frame


def test_harder_severity_leaves_fewer_inliers(references, photos):
    def inliers(ref: np.ndarray, jpeg: bytes) -> int:
        rf = extract(to_gray(ref))  # the recognizer's default features (RootSIFT, 800 px)
        qf = extract(to_gray(load_image(jpeg, max_side=800).rgb))
        return verify(qf, prepare(qf), rf, prepare(rf), VERIFY_CONFIG).inliers

    mild = [inliers(r, p.jpeg) for r, p in zip(references, photos["mild"], strict=True)]
    hard = [inliers(r, p.jpeg) for r, p in zip(references, photos["hard"], strict=True)]
    assert np.median(mild) > np.median(hard), (mild, hard)
    assert np.median(mild) >= 15  # mild photos are recognisable


def test_unknown_severity_is_a_clear_error():
    from artlens.eval.visitor import simulate_photos

    with pytest.raises(CollectionError, match="unknown severity 'extreme'"):
        simulate_photos([np.zeros((10, 10, 3), np.uint8)], seed=0, level="extreme")
