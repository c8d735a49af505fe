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
