"""The service layer that routes call; the bundle, model and recognizer load once at start-up and are shared.

:class:`IndexHolder` (server/index_holder.py) swaps the served :class:`IndexState` atomically (a request finishes
on the snapshot it read) and follows the bundle on disk;
:class:`RecognitionService` runs recognitions in a bounded thread pool (then 503 + Retry-After), micro-batching
their ONNX forwards; :class:`CatalogueService` serves browsing, renditions and similarity.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import hashlib
import logging
import math
import random
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor

from artlens.embedder import Embedder
from artlens.errors import ArtlensError
from artlens.imaging import DecodeBusy, release_memory
from artlens.indexing import incremental
from artlens.indexing.collection import fetch_bytes
from artlens.indexing.store import renditions
from artlens.recognition.batching import MicroBatcher
from artlens.recognition.burst import recognize_burst
from artlens.recognition.filters import allowed_rows

from . import schemas
from .errors import Overloaded, ServiceError
from .index_holder import IndexHolder, IndexState
from .prometheus import Metrics
from .settings import Settings

__all__ = ["CatalogueService", "IndexHolder", "IndexState", "RecognitionService"]

log = logging.getLogger("artlens.server")


class RecognitionService:
    def __init__(self, holder: IndexHolder, settings: Settings, metrics: Metrics) -> None:
        self.holder = holder
        self.settings = settings
        self.metrics = metrics
        self.executor = ThreadPoolExecutor(settings.inference_threads, thread_name_prefix="artlens-infer")
        self.admin_executor = ThreadPoolExecutor(1, thread_name_prefix="artlens-admin")
        self.pending = 0  # admitted, not finished (touched only on the event loop)
        self._seconds = 1.0  # moving average of one recognition, for Retry-After
        self._batchers: dict[int, MicroBatcher] = {}  # one per embedder (a reload may bring another model)
        self._batchers_lock = threading.Lock()

    @property
    def capacity(self) -> int:
        return self.settings.inference_threads + self.settings.max_queue

    def _embed_fn(self, embedder: Embedder):
        if not self.settings.micro_batching:
            return None
        with self._batchers_lock:
            batcher = self._batchers.get(id(embedder))
            if batcher is None or batcher.embedder is not embedder:
                batcher = MicroBatcher(embedder, max_batch=self.settings.batch_max,
                                       max_wait_ms=self.settings.batch_wait_ms,
                                       on_batch=self.metrics.batch_size.observe)
                self._batchers[id(embedder)] = batcher
        return batcher.embed

    async def run_admin(self, fn, *args):
        """Index changes run off the event loop too (they embed an image and write a bundle)."""
        ctx = contextvars.copy_context()
        return await asyncio.get_running_loop().run_in_executor(self.admin_executor,
                                                                functools.partial(ctx.run, fn, *args))

    async def recognize(self, frames: list[bytes], *, top_k: int | None, min_confidence: float | None,
                        filters: dict[str, str]) -> schemas.RecognizeResponse:
        if self.pending >= self.capacity:
            self.metrics.rejected.inc()
            raise Overloaded(self._retry_after(self.pending + 1))
        self.pending += 1
        self.metrics.queue_depth.set(self.pending)
        state = self.holder.state  # this request's snapshot: a concurrent swap does not affect it
        started = time.perf_counter()
        try:
            ctx = contextvars.copy_context()
            job = functools.partial(ctx.run, self._recognize, state, frames, top_k, min_confidence, filters)
            response = await asyncio.get_running_loop().run_in_executor(self.executor, job)
        except DecodeBusy as exc:  # other requests' large images are being decoded: retry once they are through
            self.metrics.rejected.inc()
            raise Overloaded(self._retry_after(1), str(exc)) from None
        finally:
            self.pending -= 1
            self.metrics.queue_depth.set(self.pending)
        self._seconds = 0.8 * self._seconds + 0.2 * (time.perf_counter() - started)
        self.metrics.observe_recognition(response.status, response.timings_ms)
        return response

    def _retry_after(self, ahead: int) -> int:
        """Seconds until ``ahead`` recognitions are through, from the recent time of one."""
        return int(min(60, max(1, math.ceil(self._seconds * ahead / self.settings.inference_threads))))

    def _recognize(self, state: IndexState, frames: list[bytes], top_k: int | None, min_confidence: float | None,
                   filters: dict[str, str]) -> schemas.RecognizeResponse:
        allowed = allowed_rows(state.bundle, filters)
        names = ["image" if len(frames) == 1 else f"image {i + 1} of {len(frames)}" for i in range(len(frames))]
        try:
            # No micro-batcher where no photo goes through the model.
            embed = self._embed_fn(state.recognizer.embedder) if state.settings.uses_global_embedding else None
            burst = recognize_burst(state.recognizer, frames, top_k=top_k, min_confidence=min_confidence,
                                    allowed=allowed, embed=embed, names=names,
                                    max_pixels=self.settings.max_pixels, max_bytes=self.settings.max_image_bytes,
                                    budget=self.holder.decode_budget)
        finally:
            if self.pending <= 1:  # the last recognition in flight: give the heap its threads grew back to the OS
                release_memory()
        result = burst.recognition

        def present(cand):
            art = state.bundle.artworks[state.rows[cand.object_id]]
            return schemas.RecognizedArtwork.from_candidate(cand, burst.frames.get(cand.object_id, 0),
                                                            burst.support.get(cand.object_id, 0),
                                                            [int(art.get("width", 0)), int(art.get("height", 0))])

        return schemas.RecognizeResponse(
            status=result.status, matches=[present(c) for c in result.matches],
            best_rejected=present(result.best_rejected) if result.best_rejected else None,
            threshold=result.threshold, top_k=result.top_k, frames=burst.frame_count, image_size=result.image_size,
            filters=filters, model=state.model_info(), bundle_version=state.version, timings_ms=result.timings_ms,
            signals=result.signals)

    def close(self) -> None:
        self.executor.shutdown(wait=True, cancel_futures=True)
        self.admin_executor.shutdown(wait=True)
        for batcher in self._batchers.values():
            batcher.close()


class CatalogueService:
    def __init__(self, holder: IndexHolder, settings: Settings) -> None:
        self.holder = holder
        self.settings = settings
        self._renditions: OrderedDict[tuple[str, int], tuple[bytes, str]] = OrderedDict()
        self._warned: set[tuple[str, int]] = set()  # bundle versions already logged as lacking renditions
        self._lock = threading.Lock()

    def random(self, count: int, seed: int | None) -> schemas.ArtworkList:
        arts = self.holder.state.bundle.artworks
        picks = random.Random(seed).sample(range(len(arts)), min(count, len(arts)))
        return schemas.ArtworkList([schemas.Artwork.from_row(arts[i]) for i in picks], len(arts))

    def page(self, offset: int, limit: int) -> schemas.ArtworkList:
        arts = self.holder.state.bundle.artworks
        return schemas.ArtworkList([schemas.Artwork.from_row(a) for a in arts[offset:offset + limit]], len(arts))

    def get(self, object_id: str) -> schemas.Artwork:
        state = self.holder.state
        return schemas.Artwork.from_row(state.bundle.artworks[state.row(object_id)])

    def rendition(self, object_id: str, size: int) -> tuple[bytes, str]:
        """JPEG of the reference image, longer side ``size`` (never upscaled), and its ETag (content hash).

        Read from the rendition stored in the bundle (checksum checked on every read from disk); an artwork of
        an older bundle without one falls back to its recorded source, with a log line saying how to upgrade.
        A stored image that is missing or damaged is the server's fault: 500 ``image_unavailable``, with the
        file named in the log and never in the answer."""
        state = self.holder.state
        try:
            return self._rendition(state, object_id, size)
        except ServiceError:
            # Another process may have replaced the bundle directory this snapshot reads its files from (a
            # deleted artwork's rendition goes with its version): answer from the version now on disk.
            fresh = self.holder.newer_state(state)
            if fresh is None:
                raise
            return self._rendition(fresh, object_id, size)

    def _rendition(self, state: IndexState, object_id: str, size: int) -> tuple[bytes, str]:
        bundle = state.bundle
        row = state.row(object_id)
        stored = bundle.artworks[row].get("rendition")
        if not stored and not bundle.artworks[row].get("image") and not bundle.artworks[row].get("stored_image"):
            raise ServiceError("no_image", f"artwork {object_id!r} has no reference image (it was indexed from"
                               " local features alone)", 404)
        # Stored renditions are named by their content, so the name is a safe cache key across versions.
        key = (stored or f"{bundle.path}#{state.version}#{row}", size)
        with self._lock:
            hit = self._renditions.get(key)
            if hit:
                self._renditions.move_to_end(key)
                return hit
        name = f"reference image of {object_id!r}"
        try:
            if stored:
                data = renditions.read_verified(bundle.path, stored, bundle.meta.get("checksums", {}))
            else:
                self._warn_no_rendition(state, object_id)
                data = fetch_bytes(incremental.image_source(bundle, row))
            body = renditions.derive(data, size, stored=bool(stored), name=name)
        except ArtlensError as exc:
            log.error("%s is unavailable: %s", name, exc)
            raise ServiceError("image_unavailable", f"the {name} is unavailable on this server (missing or damaged"
                               " in the index bundle); the request id identifies it in the logs", 500) from None
        entry = (body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"')
        with self._lock:
            self._renditions[key] = entry
            while len(self._renditions) > self.settings.rendition_cache:
                self._renditions.popitem(last=False)
        return entry

    def _warn_no_rendition(self, state: IndexState, object_id: str) -> None:
        """One log line per bundle version: its artworks without renditions read their recorded sources."""
        key = (str(state.bundle.path), state.version)
        with self._lock:
            if key in self._warned:
                return
            self._warned.add(key)
        log.warning("bundle %s (version %d) stores no rendition for artwork %r (and perhaps others): reading the"
                    " source image recorded at build time instead, which a container or another machine may not"
                    " have; store renditions with `artlens index renditions --index %s`", state.bundle.path,
                    state.version, object_id, state.bundle.path)

    def _segments(self, state: IndexState):
        if state.recognizer.segments is None:
            raise ServiceError("no_segments", "this index was built without segments (artlens index build --segments"
                               " --sam DIR)", 404)
        return state.recognizer.segments

    def segments_of(self, object_id: str) -> schemas.SegmentList:
        state = self.holder.state
        art = state.bundle.artworks[state.row(object_id)]
        return schemas.SegmentList(object_id, [int(art["width"]), int(art["height"])],
                                   self._segments(state).segments_of(object_id, with_polygons=True))

    def similar_segments(self, segment_id: str, count: int, space: str) -> schemas.SimilarSegments:
        state = self.holder.state
        segment_search = self._segments(state)
        hits = segment_search.similar_segments(segment_id, count, space=space, with_polygons=True)
        arts = state.bundle.artworks
        used = segment_search.settings.resolve_space(space)
        return schemas.SimilarSegments(segment_id, used, state.settings.pretrained, [
            schemas.SimilarSegment.from_hit(h, [int(arts[state.rows[h.object_id]]["width"]),
                                                int(arts[state.rows[h.object_id]]["height"])]) for h in hits])

    def similar(self, object_id: str, count: int, method: str) -> schemas.SimilarResponse:
        """Nearest artworks to ``object_id`` by VLAD (weight-free) or DINOv2 vectors ("auto": the recognition
        settings' similar_method)."""
        state = self.holder.state
        bundle = state.bundle
        row = state.row(object_id)
        method, hits = state.recognizer.similar_artworks(row, count, method)
        results = [schemas.SimilarArtwork(schemas.Artwork.from_row(bundle.artworks[hit]), round(score, 5))
                   for hit, score in hits]
        return schemas.SimilarResponse(object_id=object_id, method=method, pretrained=state.settings.pretrained,
                                       results=results)
