"""Descriptor matching against its definition: the full similarity matrix, argmax per row and per column."""

import numpy as np
import pytest

from artlens.imaging import load_image, to_gray
from artlens.verification import extract, matching, prepare
from artlens.verification.matching import match_float

from .conftest import SMVS, needs_shared


def _by_definition(query: np.ndarray, ref: np.ndarray, ratio: float = 0.85, mutual: bool = True) -> np.ndarray:
    """Ratio test on each row's two largest similarities; mutual: the row is its column's argmax (first on ties)."""
    sim = query @ ref.T
    rows = np.arange(len(sim))
    ordered = np.sort(sim, axis=1)
    best = sim.argmax(axis=1)
    d_best = np.sqrt(np.maximum(2.0 - 2.0 * ordered[:, -1], 0.0))
    d_second = np.sqrt(np.maximum(2.0 - 2.0 * ordered[:, -2], 0.0))
    keep = d_best < ratio * d_second
    if mutual:
        keep &= sim.argmax(axis=0)[best] == rows
    return np.stack([rows[keep], best[keep]], axis=1).astype(np.int32)


def _rootsift_like(rng: np.random.Generator, n: int) -> np.ndarray:
    d = rng.gamma(0.6, size=(n, 128)).astype(np.float32)
    d /= d.sum(axis=1, keepdims=True)
    return np.sqrt(d)


def test_ties_go_to_the_first_photo_descriptor():
    """Exact ties, the cases a matcher that reads the mutual check off column maxima can get wrong."""
    ref = np.zeros((6, 128), np.float32)
    ref[np.arange(6), np.arange(6)] = 1.0
    query = np.zeros((5, 128), np.float32)
    query[0, [0, 1]] = 0.5, 1.0  # best: ref 1; its 0.5 with ref 0 ties with row 1's best
    query[1, [0, 2]] = 0.5, 0.1  # best: ref 0, holds the column's maximum, but row 0 holds it first
    query[2, [3, 4]] = 0.9, 0.2
    query[3] = query[2]  # a duplicate photo descriptor: only the first one is the mutual match
    query[4, 5] = 0.75
    expected = _by_definition(query, ref)
    assert expected.tolist() == [[0, 1], [2, 3], [4, 5]]
    # Row 1 passes the ratio test and holds its column's maximum: only the tie order refuses it.
    assert [1, 0] in _by_definition(query, ref, mutual=False).tolist()
    assert match_float(query, ref).tolist() == expected.tolist()


def test_duplicate_reference_descriptors_fail_the_ratio_test():
    rng = np.random.default_rng(3)
    ref = _rootsift_like(rng, 40)
    ref[7] = ref[3]
    query = np.concatenate([ref[[3, 9, 12]], _rootsift_like(rng, 30)])
    pairs = match_float(query, ref)
    assert pairs.tolist() == _by_definition(query, ref).tolist()
    assert 0 not in pairs[:, 0]  # best and second best are equal
    assert [1, 9] in pairs.tolist()


@pytest.mark.parametrize("n_query", [2, 255, 256, 257, 700])
@pytest.mark.parametrize("config", [{}, {"mutual": False}, {"ratio": 1.0}])
def test_agrees_with_the_definition_across_blocks(n_query, config):
    """Row counts around the block size; photo descriptors near copies of reference ones so that many match,
    and repeated ones so that columns have tied maxima."""
    rng = np.random.default_rng(n_query)
    ref = _rootsift_like(rng, 300)
    query = _rootsift_like(rng, n_query)
    near = rng.choice(n_query, n_query // 2, replace=False)
    noisy = ref[rng.integers(0, len(ref), len(near))] + rng.normal(0, 0.02, (len(near), 128)).astype(np.float32)
    query[near] = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    query[rng.integers(0, n_query, n_query // 10)] = query[near[: n_query // 10]]
    cfg = {**matching.DEFAULT_CONFIG, **config}
    expected = _by_definition(query, ref, cfg["ratio"], cfg["mutual"])
    assert match_float(query, ref, config).tolist() == expected.tolist()
    if n_query > 2:
        assert len(expected) > n_query // 10


def test_too_few_descriptors_match_nothing():
    one = np.ones((1, 128), np.float32)
    assert match_float(one, np.ones((5, 128), np.float32)).shape == (0, 2)
    assert match_float(np.ones((5, 128), np.float32), one).shape == (0, 2)


@needs_shared
def test_agrees_with_the_definition_on_real_photos():
    """A phone photo against its painting and against another one: RootSIFT as recognition computes it."""
    def descriptors(path):
        return prepare(extract(to_gray(load_image(path, max_side=800).rgb)))

    photo = descriptors(SMVS / "query" / "005.jpg")
    for reference in ("005", "040"):
        ref = descriptors(SMVS / "reference" / f"{reference}.jpg")
        expected = _by_definition(photo, ref)
        assert len(expected) > 10  # ratio-test survivors (RANSAC sorts them): enough to compare
        assert match_float(photo, ref).tolist() == expected.tolist()
