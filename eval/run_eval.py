"""One evaluation run, as `artlens eval` makes it: dataset → bundle → recognition of each query set → report.

:func:`main` is the entry; the caller shows progress and results through :class:`EvalHooks`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.errors import CollectionError, ModelError
from artlens.indexing.store.bundle import GLOBAL_SHORTLISTS
from artlens.local_features import checked_features, is_learned
from artlens.local_model import read_local_model_json
from artlens.recognition.recognizer import Recognizer

from .bench import describe_machine
from .evaluate import evaluate
from .registry import Prepared, prepare
from .report import build_report, write_report

PhaseTick = Callable[..., None]  # (done, total[, stage]): moves the phase's progress, optionally renaming it


@contextmanager
def _no_progress(description: str) -> Iterator[PhaseTick]:
    yield lambda *args: None


@dataclass(frozen=True)
class EvalConf:
    index: Path | None = None  # the bundle; with a dataset and none given, built under `work`
    queries: Path | None = None  # labelled photos (CSV image,expected), a query set of its own
    dataset: str | None = None  # registered dataset name or a folder (eval/registry.py)
    severity: str = "real,default"  # comma-separated query sets of the dataset
    seed: int = 1  # seed of the simulated photos
    work: Path = Path("out/datasets")  # where datasets, simulated photos and dataset bundles are kept
    model: Path | None = None  # model directory (default: the bundle's; builds the dataset bundle)
    top_k: int | None = None
    shortlist: str = "auto"
    features: str = "rootsift"  # local features the dataset's bundle is built with (artlens.local_features.METHODS)
    features_model: Path | None = None  # the learned method's model directory (`artlens export local-features`)
    json_out: Path | None = None  # report.json of one set, or the full report of several
    report_dir: Path | None = None  # report.json, report.md and the plots


@dataclass(frozen=True)
class EvalHooks:
    """What the caller shows while the run goes on; each does nothing by default."""

    phase: Callable[[str], AbstractContextManager[PhaseTick]] = _no_progress  # one per phase, named
    recognizer_ready: Callable[[Recognizer], None] = field(default=lambda recognizer: None)
    report_ready: Callable[[str, dict], None] = field(default=lambda label, report: None)
    wrote: Callable[[Path, str | None], None] = field(default=lambda path, kind: None)  # kind None: the --json file


def main(conf: EvalConf, hooks: EvalHooks | None = None) -> Path | None:
    """Run the evaluation ``conf`` describes; returns the JSON report written (``json_out``, else the report
    folder's report.json), None when neither was asked for."""
    hooks = hooks or EvalHooks()
    if conf.dataset is None and (conf.index is None or conf.queries is None):
        raise CollectionError("give --index and --queries, or --dataset NAME (see `artlens dataset list`)")
    features = checked_features(conf.features, conf.features_model)  # before any dataset is prepared
    if (conf.dataset is None or conf.index is not None) and (conf.features != "rootsift" or conf.features_model):
        raise ModelError("--features and --features-model choose how the dataset's bundle is built: give them with"
                         " --dataset and without --index (a bundle keeps the features it was built with)")
    index, title = conf.index, str(conf.queries)
    query_sets: dict[str, Any] = {"queries": conf.queries} if conf.dataset is None else {}
    if conf.dataset is not None:
        with hooks.phase(f"preparing {conf.dataset}"):
            prep = prepare(conf.dataset, conf.work, [s.strip() for s in conf.severity.split(",") if s.strip()],
                           conf.seed)
        query_sets = {**prep.query_sets, **({"queries": conf.queries} if conf.queries else {})}
        title = prep.name
        if not query_sets:
            raise CollectionError(f"dataset {conf.dataset}: no query set among {conf.severity!r}")
        if index is None:
            index = _dataset_bundle(prep, conf.work, conf.model, conf.shortlist, hooks.phase, features)
    recognizer = Recognizer(index, conf.model, config={"shortlist": conf.shortlist})
    hooks.recognizer_ready(recognizer)
    runs = []
    for label, path in query_sets.items():
        with hooks.phase(label) as tick:
            report = evaluate(recognizer, path, top_k=conf.top_k, progress=tick)
        hooks.report_ready(label, report)
        runs.append((label, report))
    written: Path | None = None
    several = len(runs) > 1
    full = build_report(runs, title=title, machine=describe_machine(recognizer)) \
        if conf.report_dir or (conf.json_out and several) else None
    if conf.report_dir and full is not None:
        for kind, path in write_report(full, conf.report_dir).items():
            hooks.wrote(path, kind)
            written = path if kind == "json" else written
    if conf.json_out:
        conf.json_out.parent.mkdir(parents=True, exist_ok=True)
        conf.json_out.write_text(json.dumps(full if several else runs[0][1], indent=2))
        hooks.wrote(conf.json_out, None)
        written = conf.json_out
    return written


def dataset_bundle_path(name: str, work: Path, model: Path, shortlist: str, features: dict | None = None) -> Path:
    """Where the bundle of dataset ``name`` built with ``model``, for ``shortlist`` and with local ``features``
    (:func:`artlens.local_features.checked_features`; default RootSIFT), is kept under ``work``. A learned method's
    bundle is named after the method and its model's checksum, so two exports of it never share a bundle."""
    features = features or {"method": "rootsift"}
    built_for = shortlist if shortlist in GLOBAL_SHORTLISTS else "auto"
    name_parts = [f"bundle-{model.resolve().name}"]
    if is_learned(features["method"]):
        onnx_sha = str(read_local_model_json(Path(features["model_dir"]))["onnx"].get("sha256", ""))
        name_parts.append(features["method"] + (f"-{onnx_sha[:8]}" if onnx_sha else ""))
    elif features["method"] != "rootsift":
        name_parts.append(features["method"])
    if built_for != "auto":
        name_parts.append(built_for)
    return work / name / "-".join(name_parts)


def _dataset_bundle(prep: Prepared, work: Path, model: Path | None, shortlist: str,
                    phase: Callable[[str], AbstractContextManager[PhaseTick]], features: dict | None = None) -> Path:
    """The dataset's bundle for ``model``, ``shortlist`` and local ``features``, built (and calibrated on simulated
    photos) the first time; a global shortlist gets a bundle of its own (built with global embeddings), and so
    does every feature method (:func:`dataset_bundle_path`)."""
    if model is None:
        raise ModelError("--dataset without --index needs --model DIR to build the dataset's bundle")
    built_for = shortlist if shortlist in GLOBAL_SHORTLISTS else "auto"
    bundle = dataset_bundle_path(prep.name, work, model, shortlist, features)
    if not (bundle / "bundle.json").is_file():
        config: dict = {"shortlist": built_for, **({"features": features} if features else {})}
        learned = features is not None and is_learned(features["method"])
        with phase(f"indexing {prep.name}" + (f" ({features['method']})" if learned else "")) as tick:
            build_calibrated_bundle(model, prep.collection, bundle, config=config,
                                    progress=lambda stage, done, total: tick(done, total, stage))
    return bundle
