"""Collection CSV → index bundle (one entry function, hloc style: ``build_bundle(…, config)``)."""

from __future__ import annotations

import fcntl
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import cv2
import faiss
import numpy as np

import artlens
from artlens.config import with_defaults
from artlens.embedder import Embedder
from artlens.errors import ArtlensError, CollectionError
from artlens.files import swap_into_place
from artlens.indexing.store.bundle import resolve_shortlist, uses_global_embedding
from artlens.local_features import LOCAL_MODEL_DIR, FeatureExtractor, install_model
from artlens.verification import FEATURE_CONFIG

from . import (
    bundle_writer,
    descriptor_votes,
    renditions,
    segment_collection,
    shards,
    vector_index,
    vlad_index,
    vocabulary,
)
from .collection import read_collection

DEFAULT_CONFIG: dict = {
    "features": FEATURE_CONFIG,
    "index": vector_index.DEFAULT_CONFIG,
    "vlad": vocabulary.DEFAULT_CONFIG,
    "batch_size": 16,
    "segments": segment_collection.DEFAULT_CONFIG,  # used when build_bundle gets a SAM model (sam_dir)
    "votes": descriptor_votes.DEFAULT_CONFIG,  # the descriptor-vote shortlist's index; None: none is built
    # The shortlist the bundle is built for (auto | fused | global | local; "auto": fused for a pretrained model,
    # local for a random-init one). Global embeddings (one DINOv2 forward per artwork) are computed and stored only
    # where recognition reads them: a fused or global shortlist, or a pretrained model.
    "shortlist": "auto",
    "always_embed": False,  # True: store global embeddings even where the shortlist does not read them (benchmarks)
    "shard_size": 32,  # rows per shard: the unit of work of a worker and of resuming (indexing/shards.py)
    # Collections of at least this many rows are built on a local Ray when no worker count is given and Ray is
    # installed (`artlens[cluster]`); below it the process start-up of Ray costs more than it saves.
    "ray_above": 2000,
}

# progress(stage, done, total): the CLI draws rich bars from it; library callers may pass None.
Progress = Callable[[str, int, int], None]


@dataclass
class BuildReport:
    path: Path
    indexed: int
    skipped: list[tuple[int, str]] = field(default_factory=list)  # (CSV line, reason)
    seconds: float = 0.0


def build_bundle(
    model_dir: str | Path,
    collection_csv: str | Path,
    out: str | Path,
    *,
    config: dict | None = None,
    strict: bool = False,
    progress: Progress | None = None,
    before_commit: Callable[[Path], None] | None = None,
    sam_dir: str | Path | None = None,
    workers: int | None = None,
    ray_address: str | None = None,
) -> BuildReport:
    """Extract every artwork's local features, embed it (where the bundle's shortlist reads global embeddings:
    ``config["shortlist"]``), index it, and write the bundle atomically.

    Bad rows (missing or undecodable image, duplicate id, …) are reported with their CSV line; with
    ``strict`` the first one fails the build and nothing is written. ``before_commit`` runs on the finished
    staging directory before it is moved into place (the CLI calibrates there). With ``sam_dir`` every artwork
    is also segmented and its segments indexed (indexing/segment_collection.py, docs/segments.md).

    The per-artwork work runs in shards (indexing/shards.py) kept in the staging directory until the bundle is in
    place, so a build that was killed resumes without redoing finished shards. ``workers`` > 1 or ``ray_address``
    run the shards as Ray Data stages (indexing/ray_build.py); ``workers`` None picks a local Ray for collections
    of ``config["ray_above"]`` rows or more when Ray is installed. Either way the merge is the same.
    """
    cfg = with_defaults(DEFAULT_CONFIG, config)
    feature_config = with_defaults(FEATURE_CONFIG, cfg["features"])
    # A learned method's model directory (``features.model_dir``): copied into the bundle, not recorded as a path.
    features_model = feature_config.pop("model_dir", None)
    extractor = FeatureExtractor(feature_config, features_model)
    started = time.perf_counter()
    out = Path(out)
    bundle_writer.check_replaceable(out)
    collection = read_collection(collection_csv)
    skipped = list(collection.problems)
    if strict and skipped:
        line, reason = skipped[0]
        raise CollectionError(f"{collection.path}:{line}: {reason} (--strict)")
    # Segments go to Ray only when asked for: each worker holds a SAM and a DINOv2 session.
    use_ray = _wants_ray(workers, ray_address, len(collection.rows), cfg["ray_above"] if sam_dir is None else None)
    embedder = Embedder(model_dir)
    try:
        shortlist = resolve_shortlist(cfg["shortlist"], pretrained=embedder.info.pretrained)
    except ValueError as exc:
        raise ArtlensError(f"build setting 'shortlist': {exc}") from None
    global_embedding = cfg["always_embed"] or uses_global_embedding(shortlist, pretrained=embedder.info.pretrained)
    tick = progress or (lambda stage, done, total: None)
    segmenter = None
    if sam_dir is not None:
        segmenter = segment_collection.SegmentCollector(
            sam_dir, embedder, with_defaults(segment_collection.DEFAULT_CONFIG, cfg["segments"]), feature_config,
            global_embedding=global_embedding)
    context = _Context(model_dir, collection, feature_config, global_embedding, strict, cfg, extractor,
                       None if features_model is None else Path(features_model), segmenter=segmenter)

    key = shards.build_key(collection.path, {
        "features": feature_config, "local_model": extractor.info.public() if extractor.info else None,
        "model": embedder.info.public(), "global_embedding": global_embedding,
        "shard_size": cfg["shard_size"], "batch_size": cfg["batch_size"], "artlens": artlens.__version__,
        **({} if segmenter is None else {"segments": segmenter.config, "sam": segmenter.sam.info.public()})})
    staging = out.parent / f".{out.name}.building-{key}"
    with _resumable(staging, out):
        context.install_model(staging)  # before any image: the workers load a learned model from this copy
        shard_dir = staging / shards.SHARD_DIR
        run_shards(context, staging, key, embedder if not use_ray else None, tick, workers=workers,
                   ray_address=ray_address, use_ray=use_ray)
        # Keypoints and descriptors go straight into the bundle's feature files, as memory maps (bounded RAM).
        merged = shards.load_shards(shard_dir, len(context.plan), feature_config["method"], global_embedding,
                                    into=staging / "features",
                                    on_segments=None if segmenter is None else segmenter.absorb)
        skipped += merged.skipped
        indexed = _merge_and_write(context, staging, merged, skipped, embedder, shortlist, segmenter, tick)
        if before_commit:
            before_commit(staging)
        bundle_writer.check_replaceable(out)
    return BuildReport(out, indexed, sorted(skipped), time.perf_counter() - started)


@dataclass
class _Context:
    model_dir: str | Path
    collection: object  # indexing.collection.Collection
    feature_config: dict
    global_embedding: bool
    strict: bool
    cfg: dict
    extractor: FeatureExtractor  # the build's local features; in process, and the record bundle.json keeps
    features_model: Path | None  # a learned method's model directory (copied into the bundle)
    model_files: list[str] = field(default_factory=list)  # that copy's files, relative to the bundle
    segmenter: segment_collection.SegmentCollector | None = None  # builds with segments (SAM)
    staged_model: str | None = None  # the copy's directory: what shard workers load the model from

    def install_model(self, staging: Path) -> None:
        if self.features_model is not None:
            self.model_files = install_model(self.features_model, staging)
            self.staged_model = str(staging / LOCAL_MODEL_DIR)

    @property
    def plan(self) -> list[list]:
        return shards.plan_shards(self.collection.rows, int(self.cfg["shard_size"]))

    def task(self, index: int, rows: list, staging: Path, *, strict: bool | None = None) -> shards.ShardTask:
        return shards.ShardTask(index, rows, str(self.collection.path), str(staging), self.feature_config,
                                self.global_embedding, self.strict if strict is None else strict,
                                self.staged_model, segments=self.segmenter is not None)


def _wants_ray(workers: int | None, ray_address: str | None, rows: int, ray_above: int | None) -> bool:
    """Ray when asked for (more than one worker, or a cluster); by default for ``ray_above`` rows or more where
    Ray is installed (``ray_above`` None: never by default)."""
    from .ray_build import asked_for_ray, ray_available, require_ray

    if asked_for_ray(workers, ray_address):
        require_ray()
        return True
    return workers is None and ray_above is not None and rows >= ray_above and ray_available()


def run_shards(context: _Context, staging: Path, key: str, embedder: Embedder | None, tick: Progress, *,
               workers: int | None, ray_address: str | None, use_ray: bool) -> None:
    """Read, embed and write every shard that is not finished yet: in this process, or as Ray Data stages."""
    shard_dir = staging / shards.SHARD_DIR
    plan = context.plan
    total = len(context.collection.rows)
    shards.write_plan(shard_dir, key, plan)
    finished = shards.finished_shards(shard_dir)
    done = sum(len(plan[i]) for i in finished)
    if not use_ray:
        tick("artworks", done, total)
    todo = [i for i in range(len(plan)) if i not in finished]
    method = context.feature_config["method"]
    if use_ray:
        from .ray_build import run_on_ray

        def shard_done(summary: dict) -> None:
            nonlocal done
            if context.strict and summary["skipped"]:
                line, reason = summary["skipped"][0]
                raise CollectionError(f"{context.collection.path}:{line}: {reason} (--strict)")
            done += summary["rows"]
            tick("artworks", done, total)

        try:
            run_on_ray([context.task(i, plan[i], staging, strict=False) for i in todo], shard_dir=shard_dir,
                       method=method, model_dir=context.model_dir, batch_size=context.cfg["batch_size"],
                       workers=workers or os.cpu_count() or 1, address=ray_address, on_shard=shard_done,
                       on_start=lambda: tick("artworks", done, total), segments=_segment_spec(context))
        except ArtlensError:
            raise
        except Exception as exc:  # what Ray raises when workers die beyond their retries or the cluster goes
            finished_now = len(shards.finished_shards(shard_dir))
            raise shards.ShardStageStopped(
                f"the distributed build stopped ({type(exc).__name__}); {finished_now} of {len(plan)} shards are"
                " finished and kept: run the same command again to resume") from None
        return
    for i in todo:
        def row_done() -> None:
            nonlocal done
            done += 1
            tick("artworks", done, total)

        result = shards.extract_shard(context.task(i, plan[i], staging), on_row=row_done,
                                      extractor=context.extractor)
        if context.segmenter is not None:  # its forward also gives the whole-image embedding
            segment_collection.segment_shard(result, context.segmenter)
        elif context.global_embedding:
            shards.embed_shard(result, embedder, context.cfg["batch_size"])
        shards.write_shard(shard_dir, result, method)


def _segment_spec(context: _Context) -> dict | None:
    """What a Ray worker needs to segment like ``context.segmenter`` (None: a build without segments)."""
    segmenter = context.segmenter
    if segmenter is None:
        return None
    return {"sam_dir": segmenter.sam_dir, "config": segmenter.config, "feature_config": segmenter.feature_config,
            "global_embedding": segmenter.global_embedding}


@contextmanager
def _resumable(staging: Path, out: Path) -> Iterator[Path]:
    """Like ``moved_into_place``, but a build interrupted while its shards are read (Ctrl-C, a killed process,
    workers or the cluster lost) keeps its staging directory: the next build of the same collection with the same
    settings resumes from the finished shards. Any other failure removes it, as ``moved_into_place`` does."""
    # The staging name is the same for the same collection and settings: a lock keeps two such builds apart.
    lock_path = staging.with_name(staging.name + ".lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ArtlensError(f"{out}: another build of the same collection into it is running") from None
        try:
            staging.mkdir(exist_ok=True)
            try:
                yield staging
                shutil.rmtree(staging / shards.SHARD_DIR, ignore_errors=True)
                swap_into_place(staging, out)
            except (KeyboardInterrupt, SystemExit, shards.ShardStageStopped):
                raise
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        finally:
            lock_path.unlink(missing_ok=True)


def _merge_and_write(context: _Context, staging: Path, merged: shards.MergedShards, skipped: list,
                     embedder: Embedder, shortlist: str, segmenter, tick: Progress) -> int:
    """The global half of a build: train what is trained on the whole collection (VLAD vocabulary and PCA, the
    vote index's IVF lists; the same samples and seeds whichever path read the shards), index, write the files."""
    collection, cfg, feature_config = context.collection, context.cfg, context.feature_config
    artworks, features = merged.artworks, merged.features
    if not artworks:
        raise CollectionError(f"{collection.path}: no usable rows ({len(skipped)} skipped); nothing to index")
    embeddings, index, index_desc = None, None, None
    if context.global_embedding:
        embeddings = merged.embeddings
        index, index_desc = vector_index.build_index(embeddings, cfg["index"])
    if features.offsets[-1] == 0:  # nothing to learn a vocabulary from, nothing to verify against
        raise CollectionError(f"{collection.path}: no local features in any of the {len(artworks)} images"
                              " (blank, uniform or tiny images?); artworks need visible detail to be recognised")
    visual_words, local_index, local_desc = vlad_index.build_vlad_index(
        features, with_defaults(vocabulary.DEFAULT_CONFIG, cfg["vlad"]), cfg["index"])
    votes, votes_desc = None, None
    if cfg["votes"] is not None:
        t_votes = time.perf_counter()
        votes, votes_desc = descriptor_votes.build_vote_index(features, cfg["votes"])
        votes_desc["build_s"] = round(time.perf_counter() - t_votes, 2)
    segment_store, segment_desc = None, None
    if segmenter is not None:
        segment_store, segment_desc = segmenter.finish(
            segment_collection.descriptors_in_matching_space(features, feature_config["method"]), visual_words)
    tick("index", 1, 1)

    meta = {
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "collection": {"csv": str(collection.path), "metadata_columns": collection.metadata_columns,
                       "rows": len(collection.rows),
                       "skipped": [{"line": n, "reason": r} for n, r in sorted(skipped)]},
        "model": {**embedder.info.public(), "embedding_dim": embedder.dim, "model_dir": str(context.model_dir),
                  "global_embedding": context.global_embedding},
        "shortlist": shortlist,
        "counts": {"artworks": len(artworks), "keypoints": int(features.offsets[-1])},
        "index": index_desc,  # None: no global embeddings
        "local_index": local_desc,
        "features": context.extractor.record(context.model_files),
        **({"votes": votes_desc} if votes_desc else {}),
        "calibration": None,
        **({"segments": segment_desc} if segment_desc else {}),
        "renditions": renditions.describe(staging, artworks),
        "versions": {"artlens": artlens.__version__, "faiss": faiss.__version__, "opencv": cv2.__version__,
                     "numpy": np.__version__, "python": platform.python_version()},
    }
    if segment_store is not None:  # first: bundle.json's checksums cover these files
        segment_store.write(staging)
    bundle_writer.write_bundle_files(staging, meta, artworks, embeddings, index, features, visual_words,
                                     local_index, votes)
    return len(artworks)
