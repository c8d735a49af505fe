"""Segment vectors in the embedder's space (L2-normalised, so they share an index with whole-image vectors), two ways.

``pooled`` (default): the GeM pool of the patch tokens under each mask, weighted by how much of each patch it
covers, from the artwork's one forward pass — no extra forward. ``crop``: one forward per masked cut-out,
batched (the baseline ``artlens bench segments`` compares against; it costs a forward per segment).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from artlens.embedder import GEM_P, Embedder

from .amg import Segment

MODES = ("pooled", "crop")


def patch_grid(embedder: Embedder, patches_row: np.ndarray, input_hw: tuple[int, int]) -> np.ndarray:
    """Patch tokens of one image [N, D] as the grid they came from [gh, gw, D] (row-major, per the model
    contract); ``input_hw`` is the preprocessed input's (height, width)."""
    gh, gw = int(input_hw[0]) // embedder.patch, int(input_hw[1]) // embedder.patch
    if patches_row.ndim != 2 or patches_row.shape[0] != gh * gw:
        raise ValueError(f"patch tokens of shape {patches_row.shape} do not form a {gh}×{gw} grid "
                         f"(input {input_hw[0]}×{input_hw[1]}, patch {embedder.patch})")
    return patches_row.reshape(gh, gw, patches_row.shape[1])


def _overlap_matrix(cells: int, pixels: int) -> np.ndarray:
    """[cells, pixels]: the fraction of each grid cell (along one axis) that each mask pixel covers, when both
    span the same extent. Rows sum to 1; exact for up- and down-sampling alike."""
    cell_edges = np.linspace(0.0, pixels, cells + 1)  # in mask-pixel units
    lo = np.maximum(cell_edges[:-1, None], np.arange(pixels)[None, :])
    hi = np.minimum(cell_edges[1:, None], np.arange(1, pixels + 1)[None, :])
    return (np.clip(hi - lo, 0.0, None) / (pixels / cells)).astype(np.float32)


def mask_coverage(masks: Sequence[np.ndarray], grid_hw: tuple[int, int]) -> np.ndarray:
    """Fraction of each grid cell covered by each mask, float32 [S, gh, gw]. Masks may have any resolution;
    each is taken to span the same frame as the grid (the network input)."""
    gh, gw = grid_hw
    out = np.zeros((len(masks), gh, gw), np.float32)
    cache: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}
    for i, mask in enumerate(masks):
        if mask.ndim != 2:
            raise ValueError(f"mask {i}: expected a 2-D boolean mask, got shape {mask.shape}")
        if mask.shape not in cache:
            cache[mask.shape] = (_overlap_matrix(gh, mask.shape[0]), _overlap_matrix(gw, mask.shape[1]))
        rows, cols = cache[mask.shape]
        out[i] = rows @ mask.astype(np.float32) @ cols.T
    return out


def pooled_vectors(patch_grid: np.ndarray, masks: Sequence[np.ndarray], p: float = GEM_P) -> np.ndarray:
    """One L2-normalised vector per mask [S, D]: GeM of the patch tokens weighted by mask coverage.

    A mask covering the whole image gives exactly ``Embedder.pool`` (GeM) of that forward. Tokens are signed,
    so they are clamped at 1e-6 before the power, as the whole-image GeM does.
    """
    gh, gw, dim = patch_grid.shape
    if not len(masks):
        return np.zeros((0, dim), np.float32)
    weights = mask_coverage(masks, (gh, gw)).reshape(len(masks), gh * gw).astype(np.float64)
    totals = weights.sum(axis=1)
    empty = np.flatnonzero(totals <= 0)
    if len(empty):
        raise ValueError(f"mask {int(empty[0])} is empty: nothing to pool")
    powered = np.maximum(patch_grid.reshape(gh * gw, dim).astype(np.float64), 1e-6) ** p
    pooled = ((weights @ powered) / totals[:, None]) ** (1.0 / p)
    pooled /= np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
    return pooled.astype(np.float32)


def forward_grid(embedder: Embedder, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """One DINOv2 forward of an image → (its whole-image vector [D] as ``Embedder.embed_arrays`` gives it,
    its patch grid [gh, gw, D] for ``pooled_vectors``)."""
    batch = embedder.preprocess(rgb)[None]
    cls, patches = embedder.forward(batch)
    whole = embedder.pool(cls, patches)[0]
    return whole, patch_grid(embedder, patches[0], batch.shape[2:4])


def input_masks(embedder: Embedder, masks: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Masks over the full image → masks over what the network sees. Only ``center-crop`` geometry drops part
    of the image; ``squash`` and ``aspect`` show all of it, so masks pass unchanged."""
    if embedder.geometry != "center-crop":
        return list(masks)
    out = []
    for mask in masks:
        mh, mw = mask.shape
        side = min(mh, mw)
        top, left = (mh - side) // 2, (mw - side) // 2
        out.append(mask[top : top + side, left : left + side])
    return out


def segment_vectors_pooled(embedder: Embedder, rgb: np.ndarray, masks: Sequence[np.ndarray]
                           ) -> tuple[np.ndarray, np.ndarray]:
    """(whole-image vector [D], segment vectors [S, D]) from one forward of ``rgb``."""
    whole, grid = forward_grid(embedder, rgb)
    return whole, pooled_vectors(grid, input_masks(embedder, masks))


# Outside-mask pixels of a cut-out are painted with the model's normalisation mean (ImageNet's mean colour):
# after preprocessing they become exactly 0, the least informative input the network can get. Black or white
# would be strongly off-mean inputs that every cut-out shares, pulling all segment vectors towards one
# "black frame" direction and making segments of different artworks look alike.
def neutral_fill(embedder: Embedder) -> np.ndarray:
    return np.clip(np.round(embedder.mean.reshape(3) * 255.0), 0, 255).astype(np.uint8)


def cutout(rgb: np.ndarray, segment: Segment, fill: np.ndarray) -> np.ndarray:
    """The segment's bounding box from ``rgb`` with the pixels outside its mask set to ``fill``."""
    height, width = rgb.shape[:2]
    x, y, w, h = segment.bbox
    x0, y0 = max(0, int(np.floor(x))), max(0, int(np.floor(y)))
    x1, y1 = min(width, max(x0 + 1, int(np.ceil(x + w)))), min(height, max(y0 + 1, int(np.ceil(y + h))))
    crop = rgb[y0:y1, x0:x1].copy()
    mh, mw = segment.mask.shape
    # Nearest sample of the working-resolution mask at each crop pixel's centre (no full-size mask is made).
    rows = np.minimum(((np.arange(y0, y1) + 0.5) * mh / height).astype(np.int64), mh - 1)
    cols = np.minimum(((np.arange(x0, x1) + 0.5) * mw / width).astype(np.int64), mw - 1)
    inside = segment.mask[np.ix_(rows, cols)]
    crop[~inside] = fill
    return crop


def crop_vectors(embedder: Embedder, rgb: np.ndarray, segments: Sequence[Segment], batch_size: int = 16
                 ) -> np.ndarray:
    """One L2-normalised vector per segment [S, D], each from its own forward of the masked cut-out."""
    if not len(segments):
        return np.zeros((0, embedder.dim), np.float32)
    fill = neutral_fill(embedder)
    return embedder.embed_arrays([cutout(rgb, s, fill) for s in segments], batch_size=batch_size)
