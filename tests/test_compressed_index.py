"""indexing.compressed_index: exact below the threshold, compressed above it with tuned, recorded search settings
that survive FAISS serialisation; and a smoke run of `artlens bench index --quick`."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest
from typer.testing import CliRunner

from artlens.cli import app
from artlens.indexing.compressed_index import build_compressed_index, recall_at
from artlens.indexing.store.vectors import search_compressed


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray]:
    """Vectors with a shared mean direction on a 40-dim subspace plus a little full-rank noise (as embeddings
    are: concentrated, low intrinsic dimension); the last 200 are held-out queries."""
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.standard_normal((128, 40)))[0].T
    z = rng.standard_normal((6200, 40)) / np.sqrt(np.arange(1, 41))
    x = 0.8 * basis[0] + z @ basis * 0.3 + 0.01 * rng.standard_normal((6200, 128))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    return x[:6000], x[6000:]


@pytest.fixture(scope="module")
def compressed(data):
    vectors, _ = data
    return build_compressed_index(vectors, {"exact_below": 1000, "recipe": "pca88-ivf-sq8", "tune_queries": 200})


def _truth(vectors, queries, k=10):
    return faiss.knn(queries, vectors, k, metric=faiss.METRIC_INNER_PRODUCT)


def test_small_sets_are_exact(data):
    vectors, queries = data
    index, desc = build_compressed_index(vectors[:500], {"exact_below": 1000})
    assert desc["exact"] and desc["type"] == "IndexFlatIP" and desc["count"] == 500
    scores, ids = search_compressed(index, queries, 10, desc)
    ref_scores, ref_ids = _truth(vectors[:500], queries)
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_allclose(scores, ref_scores, rtol=1e-5)


def test_compressed_index_records_its_settings_and_finds_neighbours(data, compressed):
    vectors, queries = data
    index, desc = compressed
    assert not desc["exact"] and desc["recipe"] == "pca88-ivf-sq8" and desc["count"] == 6000
    assert desc["projection"] == "uncentred PCA 128→88" and desc["codec"] == "SQ8"
    assert desc["nlist"] == 128 and 1 <= desc["nprobe"] <= desc["nlist"]
    assert desc["target_met"] == (desc["tuned_recall_10at10"] >= desc["target_recall_10at10"] == 0.95)
    assert desc["tuned_recall_10at10"] >= 0.9
    _, ids = search_compressed(index, queries, 10, desc)
    recall = recall_at(_truth(vectors, queries)[1], ids)  # held-out queries, not the tuning sample
    assert recall["10-recall@10"] >= 0.85 and recall["1-recall@10"] >= 0.97


def test_settings_round_trip_through_faiss_serialisation(data, compressed):
    _, queries = data
    index, desc = compressed
    scores, ids = search_compressed(index, queries, 10, desc)
    again = faiss.deserialize_index(faiss.serialize_index(index))
    assert faiss.extract_index_ivf(again).nprobe == desc["nprobe"]
    scores2, ids2 = again.search(queries, 10)  # no parameters applied: the stored ones hold
    np.testing.assert_array_equal(ids, ids2)
    np.testing.assert_allclose(scores, scores2)
    faiss.extract_index_ivf(again).nprobe = 1
    search_compressed(again, queries, 10, desc)  # the recorded value is applied again
    assert faiss.extract_index_ivf(again).nprobe == desc["nprobe"]


def test_compressed_codes_take_under_100_bytes_per_vector(compressed):
    index, _ = compressed
    full = len(faiss.serialize_index(index))
    empty = faiss.deserialize_index(faiss.serialize_index(index))
    empty.reset()  # keeps the trained parts (projection, coarse centroids, quantiser ranges)
    per_vector = (full - len(faiss.serialize_index(empty))) / index.ntotal
    assert per_vector <= 100  # 88 code bytes + an 8-byte id


def test_bench_index_quick_cli(tmp_path):
    out = tmp_path / "index.json"
    result = CliRunner().invoke(app, ["bench", "index", "--quick", "--json", str(out)])
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["machine"]["cores"] and report["k"] == 10
    recipes = {r["recipe"]: r for r in report["runs"]}
    assert set(recipes) == {"flat", "pca88-ivf-sq8"}
    assert recipes["flat"]["10-recall@10"] == 1.0 and recipes["flat"]["bytes_per_vector"] >= 4 * 384
    run = recipes["pca88-ivf-sq8"]
    assert 0 < run["bytes_per_vector_marginal"] <= 100 and run["projected_gb_25m"] < 3
    assert 0 <= run["10-recall@10"] <= run["1-recall@10"] <= 1 and run["latency_ms"]["batch1_p50"] > 0
    assert "| flat |" in result.stdout


def test_bench_index_bad_vectors_file_is_one_line(tmp_path):
    bad = tmp_path / "v.npy"
    bad.write_text("not numpy")
    result = CliRunner().invoke(app, ["bench", "index", "--vectors", str(bad), "--json", str(tmp_path / "o.json")])
    assert result.exit_code == 2 and "not a NumPy .npy array" in " ".join(result.stderr.split())


def test_exact_rerank_from_memory_mapped_vectors(data, compressed, tmp_path):
    vectors, queries = data
    index, desc = compressed
    np.save(tmp_path / "v.npy", vectors)
    on_disk = np.load(tmp_path / "v.npy", mmap_mode="r")
    scores, ids = search_compressed(index, queries, 10, desc, rerank=on_disk, rerank_k=100)
    ref_scores, ref_ids = _truth(vectors, queries)
    assert recall_at(ref_ids, ids)["10-recall@10"] >= 0.99
    np.testing.assert_allclose(scores[:, 0], ref_scores[:, 0], rtol=1e-5)  # exact scores, not code estimates


def test_segment_index_is_compressed_above_the_threshold(data):
    """The bundle's segment index goes through the compressed builder: exact for small collections, compressed
    (with its settings recorded) above ``exact_below``; re-ranking from the float vectors restores the order."""
    from artlens.indexing.segment_collection import segment_vector_index

    vectors, queries = data
    small, small_desc = segment_vector_index(vectors[:500], {"exact_below": 1000})
    assert small_desc["exact"] and small.ntotal == 500
    index, desc = segment_vector_index(vectors, {"exact_below": 1000, "tune_queries": 200})
    assert not desc["exact"] and desc["recipe"] == "pca88-ivf-sq8" and "nprobe" in desc
    _, truth = _truth(vectors, queries)
    _, found = search_compressed(index, queries, 10, desc, rerank=vectors, rerank_k=100)
    assert recall_at(truth, found)["10-recall@10"] >= 0.95
