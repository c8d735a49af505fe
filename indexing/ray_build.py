"""The per-artwork shards of an index build (indexing/shards.py) as Ray Data stages.

Three stages over a dataset of one item per unfinished shard: decode + local features + rendition (CPU tasks), global
embeddings (an actor pool, one ONNX session per actor; only where the bundle stores embeddings), and the shard's
files (tasks; the manifest last). Tasks are retried and actors restarted when a worker dies; what a retry redoes
is one shard. The merge runs in the caller's process (indexing/build.py), exactly as after an in-process run.

Ray is optional (``pip install 'artlens[cluster]'``). On a cluster (``address``) the staging directory and the
collection's images must be on a file system every node sees.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import pickle
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import ClassVar

import numpy as np

from artlens.errors import ArtlensError

from . import shards

INSTALL_HINT = "pip install 'artlens[cluster]'"
RETRIES = 3  # attempts after a worker died, per shard task and per embedding actor


def ray_available() -> bool:
    try:
        return importlib.util.find_spec("ray") is not None and importlib.util.find_spec("ray.data") is not None
    except (ImportError, ValueError):
        return False


def asked_for_ray(workers: int | None, address: str | None) -> bool:
    """Whether the options ask for Ray: more than one worker, or a cluster's address."""
    return address is not None or (workers is not None and workers > 1)


def require_ray() -> None:
    """A one-line error when the distributed build is asked for and Ray is not installed."""
    try:
        import ray.data  # noqa: F401
    except ImportError:
        raise ArtlensError(f"--workers and --ray-address need Ray, which is not installed: {INSTALL_HINT}") from None


def _extract(item: dict) -> dict:
    task: shards.ShardTask = pickle.loads(item["task"])
    # One extractor per worker process (a learned model's ONNX session, loaded from the bundle's staged copy), on
    # the one CPU the task holds.
    extractor = shards.extractor_for(task, threads=1)
    return {"payload": shards.pack(shards.extract_shard(task, extractor=extractor)), "shard_dir": item["shard_dir"],
            "method": item["method"]}


class _Embed:
    """One ONNX session per actor, reused for every shard the actor is given. The model is a class attribute of a
    subclass made per build (:func:`_embed_class`): an actor with no constructor arguments restarts on its own."""

    model_dir = ""
    batch_size = 16

    def __init__(self) -> None:
        from artlens.embedder import Embedder

        self.embedder = Embedder(self.model_dir)

    def __call__(self, batch: dict) -> dict:
        payloads = [shards.pack(shards.embed_shard(shards.unpack(p), self.embedder, self.batch_size))
                    for p in batch["payload"]]
        return {"payload": np.array(payloads, dtype=object), "shard_dir": batch["shard_dir"],
                "method": batch["method"]}


def _embed_class(model_dir: str, batch_size: int) -> type[_Embed]:
    return type("EmbedShard", (_Embed,), {"model_dir": model_dir, "batch_size": batch_size})


class _Segment:
    """One SAM and one DINOv2 session per actor (a build with segments): the shard's artworks segmented, and
    embedded by the same forwards. Settings are class attributes of a subclass made per build, as for _Embed."""

    model_dir = ""
    spec: ClassVar[dict] = {}

    def __init__(self) -> None:
        from artlens.embedder import Embedder

        from .segment_collection import SegmentCollector

        spec = self.spec
        self.collector = SegmentCollector(spec["sam_dir"], Embedder(self.model_dir), spec["config"],
                                          spec["feature_config"], global_embedding=spec["global_embedding"])

    def __call__(self, batch: dict) -> dict:
        from .segment_collection import segment_shard

        payloads = [shards.pack(segment_shard(shards.unpack(p), self.collector)) for p in batch["payload"]]
        return {"payload": np.array(payloads, dtype=object), "shard_dir": batch["shard_dir"],
                "method": batch["method"]}


def _write(item: dict) -> dict:
    summary = shards.write_shard(Path(item["shard_dir"]), shards.unpack(item["payload"]), item["method"])
    return {"summary": json.dumps(summary)}


@contextmanager
def ray_session(cpus: int, address: str | None) -> Iterator[None]:
    """Ray for the stages run inside: the cluster at ``address``, a local Ray started here with ``cpus`` CPUs, or
    the Ray already up in this process. Ray Data's own progress bars and logs are off (the CLI draws its own
    progress)."""
    require_ray()
    import ray
    import ray.data

    started_here = not ray.is_initialized()
    if started_here:
        try:
            ray.init(address=address, num_cpus=None if address else cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=True, logging_level=logging.ERROR)
        except (ConnectionError, ValueError, RuntimeError) as exc:
            where = f"the Ray cluster at {address}" if address else "a local Ray"
            raise ArtlensError(f"cannot start {where}: {exc}") from None
    try:
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        context.print_on_execution_start = False
        yield
    finally:
        if started_here:
            ray.shutdown()


def run_on_ray(tasks: list[shards.ShardTask], *, shard_dir: Path, method: str, model_dir: str | Path,
               batch_size: int, workers: int, address: str | None,
               on_shard: Callable[[dict], None], on_start: Callable[[], None] | None = None,
               segments: dict | None = None) -> None:
    """Run ``tasks`` on a local Ray started here (``workers`` CPUs) or on the cluster at ``address``; ``on_shard``
    gets each written shard's summary (index, rows, artworks, skipped) as it completes, in completion order;
    ``on_start`` runs once Ray is up (progress counts from there). ``segments`` (sam_dir, config, feature_config,
    global_embedding): a build with segments, whose segment actors also give the embeddings."""
    require_ray()
    if not tasks:
        if on_start is not None:
            on_start()
        return
    import ray
    import ray.data

    # A local Ray holds one CPU per shard reader (each reads on one thread), and one more for an actor stage (the
    # embedding or segment actors), whose actors would otherwise wait for the readers.
    actor_stage = segments is not None or tasks[0].global_embedding
    with ray_session(workers + (1 if actor_stage else 0), address):
        if on_start is not None:
            on_start()
        items = [{"task": pickle.dumps(t), "shard_dir": str(shard_dir), "method": method} for t in tasks]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            # Bounded retries (Ray Data's default retries a dying worker forever) are passed as Ray remote
            # arguments, which Ray 2.60 (the pinned version) flags as deprecated but honours.
            warnings.simplefilter("ignore", DeprecationWarning)
            ds = ds.map(_extract, num_cpus=1, max_retries=RETRIES)
            if segments is not None:
                segment_class = type("SegmentShard", (_Segment,), {"model_dir": str(model_dir), "spec": segments})
                ds = ds.map_batches(segment_class, batch_size=1,
                                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers)),
                                    num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
            elif tasks[0].global_embedding:
                ds = ds.map_batches(_embed_class(str(model_dir), batch_size), batch_size=1,
                                    compute=ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, workers // 2)),
                                    num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
            ds = ds.map(_write, num_cpus=0, max_retries=RETRIES)  # file writes: no CPU of a reader's
        for row in ds.iter_rows():
            on_shard(json.loads(row["summary"]))
