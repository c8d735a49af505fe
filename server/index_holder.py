"""The served index: one :class:`IndexState` swapped atomically (a request finishes on the snapshot it read).

Several serve processes may share one bundle directory. Each follows it on disk (:meth:`IndexHolder.refresh`,
polled every ``ARTLENS_WATCH_INTERVAL`` seconds by a thread): when the directory or its bundle.json changed, the
new version is loaded in full under the bundle's shared lock while the old one keeps serving, then swapped in.
Every admin write holds the bundle's exclusive lock (indexing/bundle_lock.py) and first catches up with the
version on disk, so a write made through another process is built upon, never lost.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from artlens.embedder import Embedder
from artlens.errors import ArtlensError, BundleError, ModelError
from artlens.imaging import DecodeBudget, DecodeBusy
from artlens.indexing import incremental
from artlens.indexing.bundle_lock import Signature, bundle_lock, signature
from artlens.indexing.store.bundle import Bundle, load_bundle
from artlens.recognition.recognizer import Recognizer
from artlens.recognition.settings import RecognitionSettings

from . import schemas
from .errors import Overloaded
from .prometheus import Metrics
from .settings import Settings

log = logging.getLogger("artlens.server")


@dataclass(frozen=True)
class IndexState:
    """One loaded bundle version with its recognizer: never mutated, replaced as a whole."""

    recognizer: Recognizer

    @property
    def bundle(self) -> Bundle:
        return self.recognizer.bundle

    @property
    def rows(self) -> dict[str, int]:
        """object_id → bundle row."""
        return self.bundle.rows

    @property
    def version(self) -> int:
        return incremental.bundle_version(self.bundle)

    @property
    def settings(self) -> RecognitionSettings:
        return self.recognizer.settings

    @functools.cached_property
    def bundle_id(self) -> str:
        """16 hex digits over the bundle's file checksums: differs whenever any of its data differs."""
        checksums = json.dumps(self.bundle.meta.get("checksums", {}), sort_keys=True).encode()
        return hashlib.sha256(checksums).hexdigest()[:16]

    def model_info(self) -> schemas.ModelInfo:
        return schemas.ModelInfo.from_summary(self.recognizer.model_summary, self.settings.shortlist)

    def row(self, object_id: str) -> int:
        return self.bundle.row(object_id)


class IndexHolder:
    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.settings = settings
        self.metrics = metrics
        self._lock = threading.Lock()  # one change (reload/add/delete/refresh) at a time in this process
        self.embedder: Embedder | None = None
        # Pixels being decoded at once by recognitions and admin adds together (bounded memory).
        self.decode_budget = DecodeBudget(settings.max_inflight_pixels)
        self.path = Path(settings.index)
        self.state, self._signature = self._load_current(self.path)
        self._failed: Signature | None = None  # a version on disk that could not be loaded (logged once)
        self._stop = threading.Event()
        self._watcher: threading.Thread | None = None
        log.info("serving %s (version %d, %d artworks, pretrained: %s)", self.state.bundle.path,
                 self.state.version, len(self.state.rows), self.state.settings.pretrained)

    def _embedder_for(self, bundle: Bundle) -> Embedder:
        """The running embedder when the bundle was built with the same model, else that bundle's model."""
        meta = bundle.meta["model"]
        current = self.embedder
        if current is not None and current.info.sha256 == meta.get("sha256") and current.pooling == meta["pooling"]:
            return current
        model_dir = Path(self.settings.model or meta.get("model_dir", ""))
        if not model_dir.is_dir():
            raise ModelError("the bundle's model directory is not found; set ARTLENS_MODEL to the model it was built"
                             " with", path=model_dir)
        try:
            return Embedder(model_dir, pooling=meta["pooling"])
        except ModelError as exc:  # its reason may quote ONNX Runtime: the log gets it, a client a summary
            log.error("model of bundle %s: %s", bundle.path, exc)
            raise ModelError("the bundle's model cannot be loaded (the server log says why); set ARTLENS_MODEL to a"
                             " usable copy of the model it was built with", path=model_dir) from None

    def _load(self, bundle: Bundle) -> IndexState:
        embedder = self._embedder_for(bundle)
        recognizer = Recognizer(bundle, embedder=embedder, config={"top_k": self.settings.default_top_k,
                                                                   "shortlist": self.settings.shortlist})
        state = IndexState(recognizer)
        self.embedder = embedder
        self.metrics.bundle_version.set(state.version)
        self.metrics.artworks.set(len(state.rows))
        return state

    def _load_current(self, path: Path, *, locked: bool = False) -> tuple[IndexState, Signature | None]:
        """The version at ``path`` now, with its signature. Under the shared lock (``locked``: the caller holds
        the exclusive one), so no writer renames the directory while its files are opened one by one."""
        if locked:
            return self._load(load_bundle(path)), signature(path)
        with bundle_lock(path, shared=True):  # the recognizer too: a learned feature model loads from the bundle
            return self._load(load_bundle(path)), signature(path)

    def reload(self, path: str | None) -> tuple[int, IndexState]:
        """Load (and fully check) a bundle, then swap it in; on any error the current one keeps serving."""
        with self._lock:
            previous = self.state.version
            target = Path(path) if path else self.path
            try:
                self.state, self._signature = self._load_current(target)
            except ArtlensError:
                raise
            except Exception:  # data no check foresaw: still a bundle this server cannot use
                log.exception("reload of %.300s failed", target)
                raise BundleError("the bundle could not be loaded (the log has the details); the current index"
                                  " keeps serving") from None
            self.path = target
            log.info("reloaded %s: version %d → %d", target, previous, self.state.version)
            return previous, self.state

    def refresh(self) -> bool:
        """Load the version on disk when it is not the one served (another process wrote it); whether it was.
        A version that cannot be loaded is logged once and the current one keeps serving."""
        current = signature(self.path)
        if current is None or current == self._signature or current == self._failed:
            return False
        with self._lock:
            if signature(self.path) == self._signature:  # another thread of this process caught up meanwhile
                return False
            previous = self.state.version
            try:
                self.state, self._signature = self._load_current(self.path)
            except Exception as exc:  # a replica keeps serving what it has whatever the new one is
                self._failed = current
                log.error("the bundle on disk changed but cannot be loaded (%s); still serving version %d", exc,
                          previous)
                return False
            log.info("followed %s on disk: version %d → %d", self.path, previous, self.state.version)
            return True

    def newer_state(self, state: IndexState) -> IndexState | None:
        """The state after catching up with the bundle on disk, when it differs from ``state`` (a request's
        snapshot whose version was replaced on disk), else None."""
        self.refresh()
        current = self.state
        return None if current is state else current

    def watch(self) -> None:
        """Follow the bundle on disk every ``watch_interval`` seconds (0: never), in a daemon thread."""
        interval = self.settings.watch_interval
        if interval <= 0 or self._watcher is not None:
            return

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    self.refresh()
                except Exception:  # the watcher must outlive any one failure
                    log.exception("following the bundle on disk failed")

        self._watcher = threading.Thread(target=loop, name="artlens-bundle-watch", daemon=True)
        self._watcher.start()

    def close(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.join(timeout=5)

    def write(self, change: Callable[[IndexState], Bundle]) -> IndexState:
        """Apply an admin ``change`` (current state → the new version, written) under the bundle's exclusive lock,
        on the version on disk: one another process wrote since this one loaded is loaded first."""
        with self._lock, bundle_lock(self.path):
            if signature(self.path) != self._signature:
                previous = self.state.version
                self.state, self._signature = self._load_current(self.path, locked=True)
                log.info("caught up with %s before a write: version %d → %d", self.path, previous,
                         self.state.version)
            bundle = change(self.state)
            self.state = self._load(bundle)
            self._signature = signature(self.path)
            return self.state

    def add(self, object_id: str, image: bytes, metadata: dict[str, str], extension: str) -> IndexState:
        def change(state: IndexState) -> Bundle:
            try:
                return incremental.add_artwork(state.bundle, state.recognizer.embedder, object_id, image, metadata,
                                               extension=extension, max_pixels=self.settings.max_pixels,
                                               max_bytes=self.settings.max_image_bytes, budget=self.decode_budget)
            except DecodeBusy as exc:
                raise Overloaded(5, str(exc)) from None

        state = self.write(change)
        log.info("added artwork %s (version %d)", object_id, state.version)
        if state.bundle.segments is not None:
            log.warning("added artwork %s has no SAM segments (the service runs no SAM model); rebuild the"
                        " bundle with --segments to segment it", object_id)
        return state

    def delete(self, object_id: str) -> tuple[IndexState, int | None]:
        """Remove an artwork; returns the new state and how many segments went with it (None: no segments)."""
        removed: list[int | None] = [None]

        def change(state: IndexState) -> Bundle:
            row = state.row(object_id)
            segments = state.bundle.segments
            removed[0] = None if segments is None else len(segments.of_artwork(row))
            return incremental.remove_artwork(state.bundle, object_id)

        state = self.write(change)
        log.info("deleted artwork %s (version %d, %s segments removed)", object_id, state.version,
                 "no" if removed[0] is None else removed[0])
        return state, removed[0]
