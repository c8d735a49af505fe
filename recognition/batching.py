"""Micro-batching of model forwards: photos that arrive together share one ONNX Runtime call.

Request threads call :meth:`MicroBatcher.embed` (blocking). One batching thread takes the first waiting photo,
waits up to ``max_wait_ms`` for more (at most ``max_batch``), runs them through the embedder in one call and
hands each caller its row. Whether this raises throughput depends on the hardware (a GPU gains a lot; two CPU
cores may not): the service keeps it switchable, and ``artlens bench http`` measures both (docs/service.md).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future

import numpy as np

from artlens.embedder import Embedder


class MicroBatcher:
    def __init__(self, embedder: Embedder, *, max_batch: int = 8, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.embedder = embedder
        self.on_batch = on_batch  # called with each batch's size (metrics)
        self.max_batch = max(1, int(max_batch))
        self.max_wait = max(0.0, float(max_wait_ms)) / 1e3
        self._queue: queue.Queue[tuple[np.ndarray, Future] | None] = queue.Queue()
        self.batches = 0  # forwards run (for metrics and tests)
        self.items = 0  # photos embedded
        self._thread = threading.Thread(target=self._run, name="artlens-batcher", daemon=True)
        self._thread.start()

    def embed(self, rgb: np.ndarray) -> np.ndarray:
        """This photo's descriptor [D]; blocks until its batch has run."""
        job: Future = Future()
        self._queue.put((rgb, job))
        return job.result()

    def close(self) -> None:
        self._queue.put(None)
        self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                return
            batch = [first]
            stop = False
            deadline = _now() + self.max_wait
            while len(batch) < self.max_batch:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - _now()))
                except queue.Empty:
                    break
                if item is None:
                    stop = True
                    break
                batch.append(item)
            try:
                vectors = self.embedder.embed_arrays([rgb for rgb, _ in batch], batch_size=self.max_batch)
                self.batches += 1
                self.items += len(batch)
                if self.on_batch:
                    self.on_batch(len(batch))
                for (_, job), vec in zip(batch, vectors, strict=True):
                    job.set_result(vec)
            except BaseException as exc:  # the callers see the failure; the batcher keeps serving
                for _, job in batch:
                    if not job.done():
                        job.set_exception(exc)
            if stop:
                return


def _now() -> float:
    import time

    return time.monotonic()
