"""Micro-batching: photos embedded from several threads at once share ONNX calls and get their own rows."""

from __future__ import annotations

import threading

import numpy as np

from artlens.embedder import Embedder
from artlens.recognition.batching import MicroBatcher


def test_concurrent_photos_share_calls_and_get_their_own_vectors(tiny_model):
    embedder = Embedder(tiny_model)
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 255, size=(60 + 7 * i, 80, 3), dtype=np.uint8) for i in range(6)]
    expected = embedder.embed_arrays(photos)
    sizes: list[int] = []
    batcher = MicroBatcher(embedder, max_batch=8, max_wait_ms=200, on_batch=sizes.append)
    got: dict[int, np.ndarray] = {}
    barrier = threading.Barrier(len(photos))

    def worker(i: int) -> None:
        barrier.wait()
        got[i] = batcher.embed(photos[i])

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(photos))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    batcher.close()
    assert sorted(got) == list(range(len(photos)))
    for i, vec in got.items():
        np.testing.assert_allclose(vec, expected[i], atol=1e-4)
    assert sum(sizes) == len(photos) and len(sizes) < len(photos)  # at least one call carried several photos
