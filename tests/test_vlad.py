"""VLAD encoding (the read side, artlens.indexing.store.vlad) with its trained vocabulary and projection."""

import faiss
import numpy as np

from artlens.indexing.store import vlad
from artlens.indexing.vocabulary import fit_projection, train_vocabulary


def test_compact_vlad_index_is_searched_with_raw_vlads_and_keeps_its_projection(tmp_path):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(40, 128))
    descs = [np.abs(centres[rng.integers(0, 40, 300)] + rng.normal(scale=0.3, size=(300, 128))) for _ in range(30)]
    descs = [(d / np.linalg.norm(d, axis=1, keepdims=True)).astype(np.float32) for d in descs]
    vocabulary = train_vocabulary(np.concatenate(descs), {"words": 16})
    raw = np.stack([vlad.aggregate(d, vocabulary) for d in descs])
    projection = fit_projection(raw, 16, {"pca_dims": 8})
    assert projection.matrix.shape == (8, 16 * 128)
    whitened = raw @ projection.matrix.T + projection.bias
    assert np.allclose(np.cov(whitened, rowvar=False, bias=True), np.eye(8), atol=1e-3)  # whitened: unit variance
    compact = vlad.compact(raw, projection)
    assert compact.shape == (30, 8) and np.allclose(np.linalg.norm(compact, axis=1), 1, atol=1e-5)
    assert np.allclose(vlad.encode(descs[3], vocabulary, projection), compact[3], atol=1e-5)
    inner = faiss.IndexFlatIP(8)
    inner.add(compact)
    faiss.write_index(vlad.projection_index(projection, inner), str(tmp_path / "vlad.faiss"))
    index = faiss.read_index(str(tmp_path / "vlad.faiss"))
    sims, rows = index.search(raw[:5], 3)  # raw VLADs in, the stored projection applied by the index
    assert rows[:, 0].tolist() == [0, 1, 2, 3, 4] and np.allclose(sims[:, 0], 1, atol=1e-4)
    stored, inner = vlad.split_index(index, 16)
    assert inner.ntotal == 30 and np.allclose(vlad.compact(raw, stored), compact, atol=1e-4)
    direct = raw[:2] @ projection.matrix.T + projection.bias  # compact() computes this word by word
    assert np.allclose(vlad.compact(raw[:2], projection), direct / np.linalg.norm(direct, axis=1, keepdims=True),
                       atol=1e-5)
    assert fit_projection(raw, 16, {"pca_dims": 0}) is None and np.array_equal(vlad.compact(raw, None), raw)


def _row_by_row_vlad(descriptors: np.ndarray, vocabulary: np.ndarray) -> np.ndarray:
    """VLAD written the plain way: each descriptor's whole residual row added to its word's row in turn."""
    words, dim = vocabulary.shape
    sums = np.zeros((words, dim), dtype=np.float32)
    if len(descriptors):
        assign = np.argmax(descriptors @ vocabulary.T, axis=1)
        np.add.at(sums, assign, descriptors - vocabulary[assign])
        sums = np.sign(sums) * np.sqrt(np.abs(sums))
        sums /= np.maximum(np.linalg.norm(sums, axis=1, keepdims=True), 1e-12)
    flat = sums.ravel()
    return flat / max(float(np.linalg.norm(flat)), 1e-12)


def test_region_vlads_are_bit_for_bit_those_of_each_region_alone():
    rng = np.random.default_rng(3)
    vocabulary = np.abs(rng.normal(size=(32, 128))).astype(np.float32)
    vocabulary /= np.linalg.norm(vocabulary, axis=1, keepdims=True)
    # Many descriptors per word, so that the order in which residuals are summed matters in float32.
    descriptors = np.abs(vocabulary[rng.integers(0, 6, 900)] + rng.normal(scale=0.2, size=(900, 128)))
    descriptors = (descriptors / np.linalg.norm(descriptors, axis=1, keepdims=True)).astype(np.float32)
    keypoints = rng.uniform(0, 1, size=(900, 2)).astype(np.float32) * [800, 600]
    masks = vlad.region_masks(keypoints, (800, 600))
    assert len(masks) == 6
    masks.append(np.zeros(900, dtype=bool))  # a subset without descriptors: zeros, as aggregate gives for none
    together = vlad.aggregate_regions(descriptors, vocabulary, masks)
    assert together.shape == (7, 32 * 128) and together.dtype == np.float32
    for vector, mask in zip(together, masks, strict=True):
        assert np.array_equal(vector.view(np.uint32), _row_by_row_vlad(descriptors[mask], vocabulary).view(np.uint32))
    assert np.array_equal(vlad.aggregate(descriptors, vocabulary), together[0])
    assert not together[-1].any() and not vlad.aggregate(descriptors[:0], vocabulary).any()
    assert vlad.aggregate_regions(descriptors[:0], vocabulary, [np.ones(0, dtype=bool)]).shape == (1, 32 * 128)


def test_vlad_index_of_a_large_collection_learns_its_pca_on_a_sample(recognizer):
    """Above ``pca_artworks`` the PCA is fitted on a seeded sample of artworks and every artwork's VLAD is
    compacted in batches: every row is indexed, and the rows still find their own artworks."""
    from artlens.config import with_defaults
    from artlens.indexing import vector_index, vocabulary
    from artlens.indexing.vlad_index import build_vlad_index

    features = recognizer.bundle.features
    config = with_defaults(vocabulary.DEFAULT_CONFIG, {"pca_dims": 16})
    assert len(features) > 5
    words, index, desc = build_vlad_index(features, config, vector_index.DEFAULT_CONFIG, pca_artworks=5)
    assert index.ntotal == len(features) and desc["projection"]["dims"] == 16
    assert 5 <= desc["projection"]["samples"] <= 5 * 6  # 5 artworks' whole and regional VLADs
    full_words, _, full_desc = build_vlad_index(features, config, vector_index.DEFAULT_CONFIG)
    assert full_desc["projection"]["samples"] > desc["projection"]["samples"]
    assert np.array_equal(words, full_words)  # the vocabulary does not depend on the PCA sample
    from artlens.verification import matching_space

    rows = range(0, len(features), 2)
    raw = np.stack([vlad.aggregate(matching_space(features.get(r).descriptors, features.method), words)
                    for r in rows]).astype(np.float32)
    _, ids = index.search(raw, 1)  # the index carries the projection: it is searched with raw VLADs
    assert ids[:, 0].tolist() == list(rows)
