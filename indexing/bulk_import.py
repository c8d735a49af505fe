"""Bulk import: a CSV of artworks whose images lie under a server-side import root, read row by row through the
build's per-artwork path (shards.py) and appended to the bundle as ONE new version (incremental.append_artworks:
the bundle's trained vocabulary, projection and vote lists, as an admin add uses them).

The CSV is checked before a job starts (:func:`plan_import`): an image that is a URL, an absolute path or resolves
outside the import root (symbolic links followed) refuses the whole CSV, naming the line and never the path. Rows
that fail while read (missing file, not an image, too few features, an id the index already holds) are skipped
and reported by CSV line. Messages name no server path: images are labelled by their object id.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np

from artlens.embedder import Embedder
from artlens.errors import ArtlensError, CollectionError
from artlens.files import staging_directory
from artlens.imaging import DecodeBusy
from artlens.indexing.store.bundle import Bundle, ReferenceFeatures
from artlens.local_features import FeatureExtractor

from . import shards
from .bundle_lock import bundle_lock
from .collection import URL_SCHEMES, Row, fetch_bytes, parse_collection
from .incremental import IMAGE_DIR, append_artworks

log = logging.getLogger("artlens.import")
CSV_LABEL = Path("import CSV")  # how messages name the uploaded CSV (it has no path on the server)
SHARD_SIZE = 32
BUSY_RETRY_S = 60.0  # how long a row waits for the decode budget while recognitions use it


class ImportRefused(ArtlensError):
    """An import CSV that names images outside the import root (or none at all): no job is started."""

    code = "bad_import_path"


class ImportFailed(ArtlensError):
    code = "import_failed"


@dataclass
class ImportPlan:
    rows: list[Row]  # rows to read, images relative to the import root
    skipped: list[tuple[int, str]]  # (CSV line, reason) of rows refused before reading
    total: int  # data rows in the CSV


def plan_import(data: bytes, root: Path, existing: set[str]) -> ImportPlan:
    """The rows of an uploaded CSV to import; ``existing``: object ids the index already holds (skipped)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise CollectionError(f"{CSV_LABEL}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    collection = parse_collection(text, CSV_LABEL)
    root = root.resolve()
    outside = [row.number for row in collection.rows if _source(root, row.image) is None]
    if outside:
        lines = ", ".join(str(n) for n in outside[:10]) + (" …" if len(outside) > 10 else "")
        raise ImportRefused(f"{CSV_LABEL}: the image of line(s) {lines} is not a relative path inside the import"
                            " root (URLs, absolute paths and '..' leaving it are refused); nothing was imported")
    rows, skipped = [], list(collection.problems)
    for row in collection.rows:
        if row.object_id in existing:
            skipped.append((row.number, f"artwork {row.object_id!r} is already in this index; delete it first to"
                                        " replace it"))
        else:
            rows.append(row)
    if not collection.rows and not collection.problems:
        raise CollectionError(f"{CSV_LABEL}: no rows below the header; nothing to import")
    return ImportPlan(rows, sorted(skipped), len(collection.rows) + len(collection.problems))


def _source(root: Path, image: str) -> Path | None:
    """The file ``image`` names inside ``root`` (resolved), or None when it is a URL or leads outside."""
    if image.startswith(URL_SCHEMES) or "\0" in image:
        return None
    if PurePosixPath(image).is_absolute() or PureWindowsPath(image).is_absolute() or PureWindowsPath(image).drive:
        return None
    try:
        resolved = (root / image).resolve()
    except (OSError, RuntimeError, ValueError):  # a symlink loop, a name too long
        return None
    return resolved if resolved.is_relative_to(root) and resolved != root else None


@dataclass
class ImportJob:
    """One import's progress, read by GET /v1/jobs/{id} while its thread updates it."""

    total: int
    skipped: list[tuple[int, str]]
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:16])
    status: str = "queued"  # queued | running | done | failed
    done: int = 0  # rows read (skipped ones included)
    added: int = 0
    bundle_version: int | None = None
    error: str | None = None
    created: str = field(default_factory=lambda: _now())
    finished: str | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **changes) -> None:
        with self._lock:
            for key, value in changes.items():
                setattr(self, key, value)

    def skip(self, line: int, reason: str) -> None:
        with self._lock:
            self.skipped.append((line, reason))
            self.done += 1

    def snapshot(self) -> dict:
        with self._lock:
            return {"id": self.id, "status": self.status, "rows_total": self.total, "rows_done": self.done,
                    "added": self.added, "skipped": [{"line": n, "reason": r} for n, r in sorted(self.skipped)],
                    "bundle_version": self.bundle_version, "error": self.error, "created": self.created,
                    "finished": self.finished}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# write(append) → the new version: runs ``append(current bundle)`` under the bundle's writer lock.
Writer = Callable[[Callable[[Bundle], Bundle]], Bundle]


def run_import(job: ImportJob, plan: ImportPlan, root: Path, bundle: Bundle, embedder: Embedder, write: Writer,
               **load_limits) -> None:
    """Read every planned row, then append the artworks read as one new bundle version through ``write``.
    ``bundle``: the version at the start (its feature settings and model); ``load_limits``: read_reference's
    (max_pixels, budget) plus ``max_bytes`` per image file. Never raises: the job records the outcome."""
    job.update(status="running")
    staging = None
    try:
        staging = staging_directory(bundle.path, "import")  # beside the bundle: its files are linked into it
        merged, lines = _read_rows(job, plan, root.resolve(), bundle, embedder, staging, load_limits)
        if not merged.artworks:
            raise ImportFailed(f"no row could be imported ({len(job.skipped)} skipped: see `skipped`)")
        new = write(lambda current: _append(job, current, merged, lines, staging, embedder, bundle.meta))
        job.update(status="done", bundle_version=int(new.meta.get("version", 1)), finished=_now())
    except ArtlensError as exc:
        job.update(status="failed", error=exc.reason, finished=_now())
    except Exception as exc:  # the job thread has no caller: its record must say it failed
        log.exception("import job %s failed", job.id)
        job.update(status="failed", error=f"the import failed unexpectedly ({type(exc).__name__}); the server log"
                                          " has the details", finished=_now())
    finally:
        if staging is not None:
            shutil.rmtree(staging, ignore_errors=True)


def _read_rows(job: ImportJob, plan: ImportPlan, root: Path, bundle: Bundle, embedder: Embedder, staging: Path,
               load_limits: dict) -> tuple[shards.MergedShards, dict[str, int]]:
    """Every row → its features, rendition and stored original in ``staging``, in shards as a build writes them."""
    with bundle_lock(bundle.path, shared=True):  # a learned feature model loads from the bundle directory
        extractor = FeatureExtractor.for_bundle(bundle.meta, bundle.path)
    method = bundle.features.method
    embed = bundle.embeddings is not None
    max_bytes = load_limits.pop("max_bytes", 64 * 1024 * 1024)
    shard_dir = staging / shards.SHARD_DIR
    chunks = shards.plan_shards(plan.rows, SHARD_SIZE)
    lines: dict[str, int] = {}
    for index, chunk in enumerate(chunks):
        result = shards.ShardResult(index, rows=len(chunk))
        for row in chunk:
            read = _read_row(row, root, staging, extractor, max_bytes, load_limits)
            if isinstance(read, str):
                job.skip(row.number, read)
                continue
            artwork, features, rgb = read
            result.artworks.append(artwork)
            result.features.append(features)
            if embed:
                result.images.append(rgb)
            lines[row.object_id] = row.number
            job.update(done=job.done + 1)
        if embed:
            shards.embed_shard(result, embedder, 16)
        shards.write_shard(shard_dir, result, method)
    return shards.load_shards(shard_dir, len(chunks), method, embed), lines


def _read_row(row: Row, root: Path, staging: Path, extractor: FeatureExtractor, max_bytes: int,
              load_limits: dict) -> tuple[dict, object, np.ndarray] | str:
    """One row read as the build reads it, its original stored beside its rendition; or why it is skipped."""
    source = _source(root, row.image)
    name = f"image of {row.object_id!r}"
    if source is None or not source.is_file():
        return f"{name}: file not found in the import root"
    deadline = time.monotonic() + BUSY_RETRY_S
    while True:
        try:
            data = fetch_bytes(source, max_bytes=max_bytes)
            artwork, features, rgb = shards.reference_artwork(row, data, staging, extractor, name=name,
                                                              **load_limits)
            break
        except DecodeBusy:  # recognitions are using the decode budget: they come first, the import waits
            if time.monotonic() > deadline:
                return f"{name}: the server stayed too busy to decode it; import this row again"
            time.sleep(0.5)
        except ArtlensError as exc:
            return f"{name}: {exc.reason}" if not exc.reason.startswith(name) else exc.reason
    extension = (source.suffix.lstrip(".").lower() or "jpg")[:5]
    stored = f"{IMAGE_DIR}/{hashlib.sha256(data).hexdigest()[:32]}.{extension if extension.isalnum() else 'jpg'}"
    (staging / IMAGE_DIR).mkdir(exist_ok=True)
    (staging / stored).write_bytes(data)
    return {**artwork, "image": stored, "stored_image": stored}, features, rgb


def _append(job: ImportJob, bundle: Bundle, merged: shards.MergedShards, lines: dict[str, int], staging: Path,
            embedder: Embedder, read_with: dict) -> Bundle:
    """The read artworks appended to ``bundle``, the version current under the writer lock (``read_with``: the
    bundle.json they were read for): ids another write added meanwhile are skipped now."""
    if merged.embeddings is not None and bundle.meta["model"].get("sha256") != embedder.info.sha256:
        raise ImportFailed("the index was replaced by one of another model while the import ran; run it again")
    if bundle.meta["features"] != read_with["features"]:
        raise ImportFailed("the index was replaced by one with other local features while the import ran; run it"
                           " again")
    keep = [i for i, art in enumerate(merged.artworks) if art["object_id"] not in bundle.rows]
    for i in sorted(set(range(len(merged.artworks))) - set(keep)):
        object_id = merged.artworks[i]["object_id"]
        job.skip(lines[object_id], f"artwork {object_id!r} was added to the index while the import ran")
        job.update(done=job.done - 1)  # counted once already, when it was read
    if not keep:
        raise ImportFailed(f"no row could be imported ({len(job.skipped)} skipped: see `skipped`)")
    artworks = [merged.artworks[i] for i in keep]
    features = ReferenceFeatures.from_list([merged.features.get(i) for i in keep], merged.features.method)
    embeddings = None if merged.embeddings is None else merged.embeddings[keep]
    files = {rel: staging / rel for art in artworks for rel in (art["rendition"], art["stored_image"])}
    new = append_artworks(bundle, artworks, features, embeddings, change=f"import {len(artworks)} artworks",
                          new_files=files)
    job.update(added=len(artworks))
    return new
