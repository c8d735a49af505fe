"""Deleting an artwork's segments from a segment store whose vector index is the compressed one (what large
collections get): the recorded recipe and list count are kept, nprobe is tuned again, ids follow the new rows.
The vectors are random (the index code is what is under test; real SAM segments are in test_server_segments.py)."""

from __future__ import annotations

import numpy as np

from artlens.indexing import vector_index
from artlens.indexing.incremental import remove_artwork_segments
from artlens.indexing.segment_collection import segment_vector_index
from artlens.indexing.store.segments import DetailFeatures, SegmentStore, segment_files
from artlens.indexing.store.vectors import search, search_compressed


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _store(artworks: int = 40, per: int = 50, dim: int = 128, local_dims: int = 16):
    rng = np.random.default_rng(0)
    artwork = np.repeat(np.arange(artworks, dtype=np.int32), per)
    vectors = _unit(rng.normal(size=(len(artwork), dim)))
    local = _unit(rng.normal(size=(len(artwork), local_dims)))
    local[::7] = 0  # segments with too few keypoints have no local descriptor
    counts = {a: 0 for a in range(artworks)}
    records = []
    for row in artwork.tolist():
        records.append({"id": f"art-{row}#{counts[row]}", "artwork": row, "bbox": [0, 0, 1, 1], "area": 0.1})
        counts[row] += 1
    # Force the compressed recipe at this size: exact_below is what large collections cross.
    index, desc = segment_vector_index(vectors, {"exact_below": 100, "recipe": "pca88-ivf-sq8", "nlist": 16})
    local_index, local_desc = vector_index.build_index(local, {"exact_below": 100})  # HNSW above it
    # Detail features: 0–5 keypoints per segment, each keypoint's x = its segment's row in the store (traceable).
    parts = [(np.full((n, 2), j, np.float32), np.full((n, 128), j % 256, np.uint8))
             for j, n in enumerate(rng.integers(0, 6, len(records)))]
    detail = DetailFeatures.from_list(parts)
    store = SegmentStore(records, artwork, vectors, index, local, local_index,
                         np.zeros(local_dims, np.float32), np.eye(local_dims, dtype=np.float32), detail)
    desc = {"count": len(records), "artworks_with_segments": artworks, "index": desc,
            "local": {"method": "vlad-pca", "dims": local_dims, "with_descriptor": int((local != 0).any(1).sum()),
                      "index": local_desc},
            "detail": {"detail_keypoints": 5, "keypoints": int(detail.offsets[-1]),
                       "segments_with_detail": int(np.count_nonzero(np.diff(detail.offsets)))}}
    return store, desc


def test_remove_renumbers_and_rebuilds_compressed_indexes():
    store, desc = _store()
    removed_row = 12
    new, new_desc = remove_artwork_segments(store, desc, removed_row)

    assert len(new) == len(store) - 50 and new.consistent()
    assert not any(r["id"].startswith(f"art-{removed_row}#") for r in new.records)
    # Rows after the removed one moved down by one; the record and the array agree; ids are unchanged.
    for rec, row in zip(new.records, new.artwork, strict=True):
        old_row = int(rec["id"].split("-")[1].split("#")[0])
        assert rec["artwork"] == row == (old_row - 1 if old_row > removed_row else old_row)
    # The same recipe and list count as recorded, tuned again on the kept vectors.
    index_desc = new_desc["index"]
    assert index_desc["recipe"] == "pca88-ivf-sq8" and index_desc["nlist"] == 16 and not index_desc["exact"]
    assert index_desc["count"] == len(new) and "nprobe" in index_desc
    assert new_desc["local"]["index"]["type"] == "IndexHNSWFlat" and new_desc["local"]["index"]["count"] == len(new)
    assert new_desc["count"] == len(new) and new_desc["artworks_with_segments"] == 39
    assert new_desc["local"]["with_descriptor"] == int((new.local != 0).any(1).sum())

    # Detail features follow their segments; the description counts what is left and names the detail files.
    old_rows = {r["id"]: j for j, r in enumerate(store.records)}
    for j, rec in enumerate(new.records):
        kps, desc_ = new.detail.of(j)
        old_kps, old_desc = store.detail.of(old_rows[rec["id"]])
        assert np.array_equal(kps, old_kps) and np.array_equal(desc_, old_desc)
    assert new.detail.count == len(new) and new_desc["detail"]["keypoints"] == int(new.detail.offsets[-1])
    assert new_desc["files"] == segment_files(new_desc) and any("detail_" in f for f in new_desc["files"])

    # A kept segment's own vector finds it at its new row in both rebuilt indexes.
    j = new.by_id["art-30#4"]
    _, ids = search_compressed(new.index, new.vectors[j][None], 5, rerank=new.vectors)
    assert ids[0][0] == j
    _, ids = search(new.local_index, new.local[j][None], 1)
    assert ids[0][0] == j


def test_remove_keeps_a_store_without_dinov2_vectors_without_them():
    """A bundle built without global embeddings has no DINOv2 segment vectors (mode "none"): a delete renumbers and
    rebuilds the local index only, and the description still names no vector files."""
    store, desc = _store(artworks=6, per=5)
    store = SegmentStore(store.records, store.artwork, None, None, store.local, store.local_index, store.pca_mean,
                         store.pca_components, store.detail)
    desc = {**desc, "mode": "none", "index": None}
    new, new_desc = remove_artwork_segments(store, desc, 2)
    assert new.consistent() and len(new) == len(store) - 5 and new.vectors is None and new.index is None
    assert new_desc["mode"] == "none" and new_desc["index"] is None
    assert "segments/vectors.npy" not in new_desc["files"] and "segments/index.faiss" not in new_desc["files"]
    assert new_desc["files"] == segment_files(new_desc) and "segments/local_index.faiss" in new_desc["files"]
