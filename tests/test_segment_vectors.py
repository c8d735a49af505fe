"""Segment vectors: pooled under masks from one forward, and one forward per masked cut-out (crop)."""

import numpy as np
import pytest

from artlens.embedder import Embedder
from artlens.indexing.amg import Segment
from artlens.indexing.segment_vectors import (
    crop_vectors,
    cutout,
    forward_grid,
    mask_coverage,
    neutral_fill,
    patch_grid,
    pooled_vectors,
    segment_vectors_pooled,
)


@pytest.fixture(scope="module")
def embedder(tiny_model):
    return Embedder(tiny_model)


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 255, size=(150, 200, 3), dtype=np.uint8)
    img[40:110, 60:160] = (200, 40, 40)  # a block so segments differ from the background
    return img


def _segment(mask: np.ndarray, image_hw: tuple[int, int]) -> Segment:
    ys, xs = np.nonzero(mask)
    sy, sx = image_hw[0] / mask.shape[0], image_hw[1] / mask.shape[1]
    bbox = (xs.min() * sx, ys.min() * sy, (xs.max() - xs.min() + 1) * sx, (ys.max() - ys.min() + 1) * sy)
    return Segment(mask=mask, bbox=bbox, area=float(mask.mean()), predicted_iou=0.9, stability=0.95,
                   point=(bbox[0], bbox[1]))


def _masks(side_h: int = 75, side_w: int = 100) -> list[np.ndarray]:
    """Masks at a working resolution that is not the grid's: a rectangle, an ellipse, a thin strip."""
    rect = np.zeros((side_h, side_w), bool)
    rect[20:55, 30:80] = True
    yy, xx = np.mgrid[:side_h, :side_w]
    ellipse = ((yy - 30) / 20.0) ** 2 + ((xx - 40) / 30.0) ** 2 <= 1
    strip = np.zeros((side_h, side_w), bool)
    strip[:, 90:] = True
    return [rect, ellipse, strip]


def test_patch_grid_reshapes_row_major_and_rejects_mismatch(embedder):
    d = 5
    gh, gw = 448 // embedder.patch, 448 // embedder.patch
    row = np.arange(gh * gw * d, dtype=np.float32).reshape(gh * gw, d)
    grid = patch_grid(embedder, row, (448, 448))
    assert grid.shape == (gh, gw, d)
    assert np.array_equal(grid[1, 2], row[1 * gw + 2])
    with pytest.raises(ValueError, match="grid"):
        patch_grid(embedder, row[:-1], (448, 448))


def test_coverage_is_exact_area_fraction():
    mask = np.zeros((4, 4), bool)
    mask[:2, :1] = True  # half of the top-left grid cell (its 2×2 mask pixels)
    cov = mask_coverage([mask], (2, 2))[0]
    assert np.allclose(cov, [[0.5, 0.0], [0.0, 0.0]])
    up = mask_coverage([np.array([[True, False]])], (2, 4))[0]  # upsampling: cells inside the pixel → 1
    assert np.allclose(up, [[1, 1, 0, 0], [1, 1, 0, 0]])
    odd = mask_coverage([np.ones((7, 9), bool)], (3, 4))[0]
    assert np.allclose(odd, 1.0)


def test_full_image_mask_pooled_equals_whole_image_gem_of_the_same_forward(embedder, image):
    whole, grid = forward_grid(embedder, image)
    assert np.allclose(whole, embedder.embed_arrays([image])[0], atol=1e-5)
    for shape in [(75, 100), grid.shape[:2], (448, 448)]:
        full = pooled_vectors(grid, [np.ones(shape, bool)])[0]
        assert np.allclose(full, whole, atol=1e-5)


def test_pooled_shapes_norms_determinism_and_mask_sensitivity(embedder, image):
    masks = _masks()
    _, vecs = segment_vectors_pooled(embedder, image, masks)
    assert vecs.shape == (3, embedder.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    _, again = segment_vectors_pooled(embedder, image, masks)
    assert np.array_equal(vecs, again)
    assert not np.allclose(vecs[0], vecs[2], atol=1e-3)  # different regions, different vectors
    assert pooled_vectors(np.ones((2, 2, 4), np.float32), []).shape == (0, 4)
    with pytest.raises(ValueError, match="empty"):
        pooled_vectors(np.ones((2, 2, 4), np.float32), [np.zeros((3, 3), bool)])


def test_cutout_keeps_the_mask_and_fills_the_rest(embedder, image):
    mask = np.zeros((75, 100), bool)
    mask[20:55, 30:80] = True
    mask[20:30, 30:40] = False  # a notch that must be filled
    seg = _segment(mask, image.shape[:2])
    fill = neutral_fill(embedder)
    cut = cutout(image, seg, fill)
    assert cut.shape == (70, 100, 3)  # bbox at 2× the mask's resolution
    assert np.array_equal(cut[30:, 30:], image[40 + 30 : 110, 60 + 30 : 160])
    assert np.all(cut[:20, :20] == fill)
    normalised = (fill / 255.0 - embedder.mean.reshape(3)) / embedder.std.reshape(3)
    assert np.all(np.abs(normalised) < 0.01)  # the fill is ≈ 0 after preprocessing: neutral input


def test_crop_vectors_shapes_norms_determinism_and_batching(embedder, image):
    segs = [_segment(m, image.shape[:2]) for m in _masks()]
    vecs = crop_vectors(embedder, image, segs, batch_size=2)
    assert vecs.shape == (3, embedder.dim) and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    assert np.allclose(vecs, crop_vectors(embedder, image, segs, batch_size=16), atol=1e-5)
    one = crop_vectors(embedder, image, segs[:1])
    assert np.allclose(one[0], embedder.embed_arrays([cutout(image, segs[0], neutral_fill(embedder))])[0])
    assert crop_vectors(embedder, image, []).shape == (0, embedder.dim)
