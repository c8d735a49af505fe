"""Calibration's evidence as a Ray Data stage: the labelled photos in small chunks, each chunk recognised by an
actor of a pool (one Recognizer per actor, loaded once from the bundle directory), the evidence gathered back in
photo order. The fit itself is a small logistic regression and stays in the caller's process.

Every photo's evidence is the same function of the bundle and the photo wherever it runs, so the fit equals the
in-process one (tests/test_ray_build.py). On a cluster the bundle directory (a build's staging directory) must be
on a file system every node sees, as the build's shards are.
"""

from __future__ import annotations

import pickle
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.indexing.ray_build import RETRIES, ray_session, require_ray
from artlens.recognition.recognizer import Recognizer

from .fit import PhotoEvidence, collect_evidence
from .photos import LabelledPhoto

CHUNK_PHOTOS = 8  # photos per Ray item: what a retry redoes, small against the ~200 photos of a fit
# The recognizer of a fit: the first pass alone (the second look at a wall decides what is weak by a calibration).
FIT_CONFIG = {"walls": {"enabled": False}}


def fit_recognizer(bundle_path: str | Path, model_dir: str | Path | None) -> Recognizer:
    return Recognizer(bundle_path, model_dir, require_calibration=False, config=FIT_CONFIG)


class _Recognise:
    """One recognizer per actor. Its bundle is a class attribute of a subclass made per fit (:func:`_actor_class`):
    an actor with no constructor arguments restarts on its own."""

    bundle_path = ""
    model_dir: str | None = None
    top_k = 0

    def __init__(self) -> None:
        self.recognizer = fit_recognizer(self.bundle_path, self.model_dir)

    def __call__(self, batch: dict) -> dict:
        evidence = [pickle.dumps(collect_evidence(self.recognizer, pickle.loads(p), self.top_k))
                    for p in batch["photos"]]
        return {"chunk": batch["chunk"], "evidence": np.array(evidence, dtype=object)}


def _actor_class(bundle_path: str | Path, model_dir: str | Path | None, top_k: int) -> type[_Recognise]:
    return type("RecogniseChunk", (_Recognise,), {
        "bundle_path": str(bundle_path), "model_dir": None if model_dir is None else str(model_dir), "top_k": top_k})


def collect_evidence_on_ray(bundle_path: str | Path, model_dir: str | Path | None, photos: list[LabelledPhoto],
                            top_k: int, *, workers: int | None, address: str | None = None,
                            progress: Callable[[int, int], None] | None = None) -> list[PhotoEvidence]:
    """:func:`artlens.calibration.fit.collect_evidence` of ``photos`` on ``workers`` recognizer actors (a local Ray
    started here, or the cluster at ``address``: as many as it has CPUs when ``workers`` is None); the same list,
    in the same order."""
    require_ray()
    import ray
    import ray.data

    chunks = [photos[i:i + CHUNK_PHOTOS] for i in range(0, len(photos), CHUNK_PHOTOS)]
    if not chunks:
        return []
    by_chunk: dict[int, list[PhotoEvidence]] = {}
    done = 0
    with ray_session(workers or 1, address):
        actors = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        items = [{"chunk": i, "photos": pickle.dumps(chunk)} for i, chunk in enumerate(chunks)]
        ds = ray.data.from_items(items, override_num_blocks=len(items))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # bounded retries: see indexing/ray_build.py
            ds = ds.map_batches(_actor_class(bundle_path, model_dir, top_k), batch_size=1,
                                compute=ray.data.ActorPoolStrategy(min_size=1, max_size=actors),
                                num_cpus=1, max_restarts=RETRIES, max_task_retries=RETRIES)
        for row in ds.iter_rows():  # in completion order: put back in photo order below
            chunk = int(row["chunk"])
            by_chunk[chunk] = pickle.loads(row["evidence"])
            done += len(chunks[chunk])
            if progress:
                progress(done, len(photos))
    return [evidence for chunk in range(len(chunks)) for evidence in by_chunk[chunk]]
