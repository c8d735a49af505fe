"""An index bundle on disk, read and checked: one directory, every file checksummed in ``bundle.json``.

``load_bundle`` gives a :class:`Bundle`; any missing, altered or malformed file is a ``BundleError`` whose
reason names no path. The files and their formats: docs/bundle-format.md; writing one: indexing/bundle_writer.py.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import faiss
import numpy as np

from artlens.errors import BundleError, artwork_row
from artlens.hashing import file_sha256
from artlens.verification import LocalFeatures
from artlens.verification.features import LEARNED_METHODS, quantise_unit

from .segments import SegmentStore

T = TypeVar("T")
FORMAT = "artlens-bundle/1"
VOTES_FILE = "votes.faiss"
FEATURE_FILES = ("keypoints.npy", "descriptors.npy", "offsets.npy", "sizes.npy")
GLOBAL_EMBEDDING_FILES = ("embeddings.npy", "index.faiss")

# Which rankings make the shortlist (recognition/settings.py): "fused" (DINOv2 and VLAD), "global" (DINOv2 only),
# "local" (VLAD only). Here because a build decides from it whether a bundle stores global embeddings at all.
SHORTLIST_MODES = ("auto", "fused", "global", "local")
GLOBAL_SHORTLISTS = ("fused", "global")


def resolve_shortlist(requested: str, *, pretrained: bool, built_for: str | None = None) -> str:
    """The shortlist mode ``requested`` means: "auto" is the one the bundle was built for (``built_for``, bundle.json
    "shortlist"), else fused for a pretrained model and local for a random-init one (its global descriptors rank at
    chance level and would only take verification slots)."""
    if requested not in SHORTLIST_MODES:
        raise ValueError(f"unknown shortlist mode {requested!r} ({', '.join(SHORTLIST_MODES)})")
    if requested != "auto":
        return requested
    if built_for in SHORTLIST_MODES[1:]:
        return built_for
    return "fused" if pretrained else "local"


def uses_global_embedding(shortlist: str, *, pretrained: bool) -> bool:
    """Whether recognition with the resolved ``shortlist`` reads the model's global embedding: a global ranking
    takes part, or the model is pretrained (its similarity is calibration evidence and its segment vectors vote)."""
    return pretrained or shortlist in GLOBAL_SHORTLISTS


@dataclass
class ReferenceFeatures:
    """All references' local features in flat arrays (memory-mapped: a large collection stays on disk)."""

    keypoints: np.ndarray
    descriptors: np.ndarray
    offsets: np.ndarray
    sizes: np.ndarray
    method: str

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def get(self, row: int) -> LocalFeatures:
        a, b = int(self.offsets[row]), int(self.offsets[row + 1])
        w, h = (int(v) for v in self.sizes[row])
        return LocalFeatures(np.asarray(self.keypoints[a:b]), np.asarray(self.descriptors[a:b]), (w, h), self.method)

    @classmethod
    def from_list(cls, feats: list[LocalFeatures], method: str) -> ReferenceFeatures:
        dim = feats[0].descriptors.shape[1] if feats else 128
        counts = [len(f) for f in feats]
        offsets = np.zeros(len(feats) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum(counts)
        kp = np.concatenate([f.keypoints for f in feats]) if feats else np.zeros((0, 2), np.float32)
        desc = np.concatenate([f.descriptors for f in feats]) if feats else np.zeros((0, dim), np.uint8)
        sizes = np.array([f.image_size for f in feats], dtype=np.int32).reshape(-1, 2)
        if method in LEARNED_METHODS and desc.dtype != np.uint8:  # float unit vectors: stored quantised
            desc = quantise_unit(desc)
        return cls(kp.astype(np.float32), desc.astype(np.uint8), offsets, sizes, method)


@dataclass
class Bundle:
    path: Path
    meta: dict
    artworks: list[dict]
    embeddings: np.ndarray | None  # None: built without global embeddings (bundle.json model.global_embedding)
    index: faiss.Index | None  # the FAISS index over ``embeddings``; None with them
    features: ReferenceFeatures
    vocabulary: np.ndarray
    local_index: faiss.Index
    segments: SegmentStore | None = None
    votes: faiss.Index | None = None  # descriptor-vote index (descriptor_votes.py); None in older bundles

    @functools.cached_property
    def rows(self) -> dict[str, int]:
        """object_id → bundle row (ids are unique in a bundle)."""
        return {art["object_id"]: row for row, art in enumerate(self.artworks)}

    def row(self, object_id: str) -> int:
        """The bundle row of ``object_id``; :class:`ArtworkNotFound` when the bundle does not hold it."""
        return artwork_row(self.rows, object_id)

    @property
    def pretrained(self) -> bool:
        return bool(self.meta["model"]["pretrained"])

    @property
    def calibration(self) -> dict | None:
        return self.meta.get("calibration")

    @property
    def built_for(self) -> str | None:
        """The shortlist mode the bundle was built for (None: built before bundles recorded it)."""
        return self.meta.get("shortlist")


def has_global_embedding(meta: dict) -> bool:
    """Whether bundle.json's bundle stores global embeddings; bundles without the key (older ones) all do."""
    return meta["model"].get("global_embedding", True) is not False


def read_meta(path: str | Path) -> dict:
    """bundle.json, checked to have what loading a bundle relies on. Anything else is a :class:`BundleError`
    whose ``reason`` names no path (the service shows it to clients)."""
    meta_path = Path(path) / "bundle.json"
    try:
        if not meta_path.is_file():
            raise BundleError("not an index bundle (no bundle.json); build one with `artlens index build`", path=path)
        raw = meta_path.read_bytes()
    except OSError as exc:  # a name too long, a permission, a file system error: the path cannot be used
        raise BundleError(f"cannot read the bundle ({exc.strerror or type(exc).__name__})", path=path) from None
    try:
        meta = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BundleError(f"bundle.json is unreadable (not UTF-8 text: byte {exc.start})", path=path) from None
    except json.JSONDecodeError as exc:
        raise BundleError(f"bundle.json is unreadable (not valid JSON: {exc.msg} at line {exc.lineno}, column"
                          f" {exc.colno})", path=path) from None
    if not isinstance(meta, dict):
        raise BundleError(f"bundle.json holds {_json_kind(meta)}, not an object; rebuild the bundle", path=path)
    if meta.get("format") != FORMAT:
        raise BundleError(f"bundle format {meta.get('format')!r}, this artlens reads {FORMAT!r}; rebuild it",
                          path=path)
    problem = _meta_problem(meta)
    if problem:
        raise BundleError(f"bundle.json {problem}; rebuild the bundle", path=path)
    return meta


def _json_kind(value: object) -> str:
    kinds = {list: "a list", str: "a string", bool: "a boolean", int: "a number", float: "a number"}
    return "null" if value is None else kinds.get(type(value), type(value).__name__)


def _meta_problem(meta: dict) -> str | None:
    """What is missing or malformed in bundle.json (the keys loading and serving read), or None."""
    for key in ("model", "features", "local_index"):
        if not isinstance(meta.get(key), dict):
            return f"has no {key!r} object"
    if not isinstance(meta["model"].get("pooling"), str):
        return "has no model pooling"
    if not isinstance(meta["model"].get("global_embedding", True), bool):
        return "model.global_embedding is not true or false"
    if has_global_embedding(meta) and not isinstance(meta.get("index"), dict):
        return "has no 'index' object"
    if meta.get("shortlist") is not None and meta["shortlist"] not in SHORTLIST_MODES[1:]:
        return f"'shortlist' is not one of {', '.join(SHORTLIST_MODES[1:])}"
    config = meta["features"].get("config")
    if not isinstance(config, dict) or not isinstance(config.get("method"), str) \
            or not isinstance(config.get("max_side"), int):
        return "has no local-feature settings (features.config with method and max_side)"
    if config["method"] in LEARNED_METHODS:
        model = meta["features"].get("model")
        if not isinstance(model, dict) or not isinstance(model.get("files"), list) or not model["files"] \
                or not all(isinstance(name, str) for name in model["files"]):
            return f"has no model for its {config['method']} local features (features.model with its files)"
    for key in ("segments", "votes", "collection"):
        if meta.get(key) is not None and not isinstance(meta[key], dict):
            return f"{key!r} is not an object"
    checksums = meta.get("checksums", {})
    if not isinstance(checksums, dict) or not all(isinstance(v, str) for v in checksums.values()):
        return "'checksums' is not an object of file names and hashes"
    for name in checksums:  # relative names inside the bundle: nothing outside it is read
        if not name or name.startswith(("/", "\\")) or ".." in Path(name).parts:
            return f"checksums name a file outside the bundle ({name[:80]!r})"
    if not isinstance(meta.get("version", 1), int):
        return "'version' is not a number"
    return None


def _read_index(file: Path) -> faiss.Index:
    return faiss.read_index(str(file))


def _load_file(path: Path, name: str, loader: Callable[[Path], T]) -> T:
    """``loader(path / name)``; any failure is a BundleError naming the file. The libraries' own messages name
    their source files and internals, so only the kind of failure is kept."""
    try:
        return loader(path / name)
    except BundleError:
        raise
    except Exception as exc:
        raise BundleError(f"{name} cannot be loaded ({type(exc).__name__}); rebuild the bundle", path=path) from None


def load_bundle(path: str | Path, *, verify_checksums: bool = True) -> Bundle:
    """Load and check a bundle. Any missing, truncated or altered file is a :class:`BundleError`."""
    path = Path(path)
    meta = read_meta(path)
    if verify_checksums:
        for name, expected in meta.get("checksums", {}).items():
            file = path / name
            if not file.is_file():
                raise BundleError(f"{name} is missing; rebuild the bundle", path=path)
            try:
                actual = file_sha256(file)
            except OSError as exc:
                raise BundleError(f"{name} cannot be read ({exc.strerror or type(exc).__name__})", path=path) from None
            if actual != expected:
                raise BundleError(f"{name} does not match its checksum (corrupted or edited); rebuild it", path=path)
    artworks = _load_file(path, "artworks.json", lambda f: json.loads(f.read_text(encoding="utf-8")))
    if not isinstance(artworks, list) or not all(isinstance(a, dict) and isinstance(a.get("object_id"), str)
                                                 for a in artworks):
        raise BundleError("artworks.json is not a list of artworks with object ids; rebuild the bundle", path=path)
    mapped = functools.partial(np.load, mmap_mode="r")
    embeddings, index = None, None
    if has_global_embedding(meta):
        embeddings = _load_file(path, "embeddings.npy", mapped)
        index = _load_file(path, "index.faiss", _read_index)
    vocabulary = _load_file(path, "vocabulary.npy", np.load)
    local_index = _load_file(path, "local_index.faiss", _read_index)
    feats = ReferenceFeatures(
        keypoints=_load_file(path, "features/keypoints.npy", mapped),
        descriptors=_load_file(path, "features/descriptors.npy", mapped),
        offsets=_load_file(path, "features/offsets.npy", np.load),
        sizes=_load_file(path, "features/sizes.npy", np.load),
        method=meta["features"]["config"]["method"],
    )
    segments = None
    if meta.get("segments"):
        segments = _load_file(path, "segments", lambda _: SegmentStore.load(path, meta["segments"]))
    votes = _load_file(path, VOTES_FILE, _read_index) if meta.get("votes") else None
    n = len(artworks)
    if (embeddings is not None and embeddings.ndim != 2) or feats.offsets.ndim != 1 or not len(feats.offsets):
        raise BundleError("embeddings.npy or features/offsets.npy has the wrong shape; rebuild the bundle", path=path)
    counts = {"artworks": n}
    if embeddings is not None:
        counts.update({"embeddings": embeddings.shape[0], "index": index.ntotal})
    counts.update({"local index": local_index.ntotal, "features": len(feats)})
    if len(set(counts.values())) != 1:
        raise BundleError("inconsistent counts (" + ", ".join(f"{what} {count}" for what, count in counts.items())
                          + "); rebuild it", path=path)
    if votes is not None and votes.ntotal != int(feats.offsets[-1]):
        raise BundleError(f"inconsistent counts (vote index {votes.ntotal}, keypoints"
                          f" {int(feats.offsets[-1])}); rebuild it", path=path)
    if segments is not None and not (segments.consistent() and (segments.artwork < n).all()):
        raise BundleError(f"inconsistent segment files ({len(segments)} segments); rebuild it", path=path)
    return Bundle(path, meta, artworks, embeddings, index, feats, vocabulary, local_index, segments, votes)
