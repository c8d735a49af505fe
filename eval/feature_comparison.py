"""Local-feature methods compared on the real evaluation sets in one run (`artlens bench features`).

For every set × method: the set's bundle is built with the method (timed, calibrated as `artlens index build`
calibrates), the set's query photos go through the full pipeline (shortlist → features → verification → decision),
and one row collects accuracy, the share of decisions near the threshold, latency per stage and the reference
features' size. One job runs at a time, so every number of the table comes from the same quiet machine.

Sets: the registered datasets with the query set each is judged on (:data:`QUERY_SET`), ``details`` (detail photos
of one collection, made by eval/details.py with a fixed seed; details of the distractors the registry keeps for that
collection are the no-match photos), or a folder with collection.csv + queries.csv.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.calibration.queries import read_queries
from artlens.errors import ArtlensError, CollectionError, ModelError
from artlens.indexing.store.bundle import GLOBAL_SHORTLISTS
from artlens.local_features import LOCAL_MODEL_DIR, METHODS, checked_features, is_learned
from artlens.local_model import read_local_model_json
from artlens.recognition.recognizer import Recognizer

from .bench import describe_machine
from .datasets import met_collection, museum_mix
from .details import make_detail_queries
from .evaluate import evaluate
from .registry import REGISTRY, Prepared, available, prepare
from .run_eval import dataset_bundle_path

DETAILS = "details"
# The query set each registered dataset is judged on: its real photos where it has some, else simulated ones.
QUERY_SET = {"smvs-museum": "real", "estense": "real", "museum-mix": "real", "unraphael": "default",
             "met-synthetic": "default"}
DEFAULT_SETS = ("smvs-museum", "estense", "museum-mix", "unraphael", DETAILS)
STAGE_ORDER = ("decode", "features", "search", "verify", "decide")

Phase = Callable[[str], AbstractContextManager[Callable[..., None]]]


@contextmanager
def _quiet_phase(description: str) -> Iterator[Callable[..., None]]:
    yield lambda *args: None


@dataclass(frozen=True)
class Method:
    """One local-feature method of the comparison: its name and, for a learned one, its model directory."""

    name: str
    model_dir: Path | None = None

    @property
    def features(self) -> dict:
        return checked_features(self.name, self.model_dir)

    def describe(self) -> dict:
        if self.model_dir is None:
            return {"method": self.name}
        onnx = read_local_model_json(self.model_dir)["onnx"]
        return {"method": self.name, "model_dir": str(self.model_dir), "sha256": onnx.get("sha256")}


def parse_method(spec: str) -> Method:
    """``rootsift`` or ``METHOD=MODEL_DIR`` (a learned method and its `artlens export local-features` folder)."""
    name, sep, folder = spec.partition("=")
    name = name.strip()
    if sep and not folder.strip():
        raise ModelError(f"--method {spec!r}: give the model directory after '=' (METHOD=DIR)")
    method = Method(name, Path(folder.strip()) if sep else None)
    if name not in METHODS:
        raise ModelError(f"--method {spec!r}: the method must be one of {', '.join(METHODS)}")
    if is_learned(name) and method.model_dir is None:
        raise ModelError(f"--method {spec!r}: a learned method needs its model: --method {name}=DIR (`artlens export"
                         f" local-features --model {name} --out DIR`)")
    if not is_learned(name) and method.model_dir is not None:
        raise ModelError(f"--method {spec!r}: {name} needs no model directory; write --method {name}")
    if method.model_dir is not None:
        model_method = read_local_model_json(method.model_dir)["method"]
        if model_method != name:
            raise ModelError(f"--method {spec!r}: that directory holds a {model_method} model, not {name}")
    return method


def parse_sets(spec: str) -> list[str]:
    """Comma-separated set names: registered datasets, ``details``, or folders with collection.csv."""
    sets = [s.strip() for s in spec.split(",") if s.strip()]
    if not sets:
        raise CollectionError("--sets names no set")
    for name in sets:
        if name in REGISTRY:
            if not available(REGISTRY[name]):
                raise CollectionError(f"set {name!r}: its data is not here (needs {REGISTRY[name].needs})")
        elif name != DETAILS and not (Path(name) / "collection.csv").is_file():
            raise CollectionError(f"unknown set {name!r}; known: {', '.join([*QUERY_SET, DETAILS])}, or a folder with"
                                  " collection.csv and queries.csv")
    if len(set(sets)) != len(sets):
        raise CollectionError(f"--sets names a set twice: {spec!r}")
    return sets


@dataclass(frozen=True)
class ComparisonConf:
    model: Path  # the DINOv2 model directory every bundle is built with
    methods: tuple[Method, ...]
    sets: tuple[str, ...] = DEFAULT_SETS
    work: Path = Path("out/feature-comparison")  # datasets, detail photos and bundles
    out: Path = Path("out/feature-comparison/report")  # comparison.json and comparison.md
    details_of: str = "smvs-museum"  # the collection the detail photos show
    details_count: int = 91
    details_nomatch: int = 50
    seed: int = 1  # simulated photos and detail photos
    calibration_photos: int = 200
    shortlist: str = "auto"
    reuse_bundles: bool = False  # keep bundles (and their recorded build times) from an earlier run
    command: str = ""


@dataclass(frozen=True)
class ComparisonHooks:
    phase: Phase = _quiet_phase
    row_ready: Callable[[dict], None] = field(default=lambda row: None)


@dataclass
class _EvalSet:
    name: str
    dataset: Prepared  # the collection the bundle is built from
    queries: Path
    query_label: str


def _detail_distractors(name: str, prep: Prepared, work: Path) -> Path | None:
    """Artworks of the same kind that the collection does not hold, as the registry keeps them for ``name``."""
    if name in ("smvs-museum", "estense"):
        return met_collection(work / name / "met").collection
    if name == "museum-mix":
        return museum_mix(work / name / "museum-mix").distractors  # where the registry keeps it
    sibling = prep.collection.parent / "distractors.csv"  # unraphael's held-out copies, or a user folder's own
    return sibling if name == "unraphael" or (Path(name).is_dir() and sibling.is_file()) else None


def _resolve_set(name: str, conf: ComparisonConf, phase: Phase) -> _EvalSet:
    if name == DETAILS:
        base = conf.details_of
        with phase(f"preparing {base}"):
            prep = prepare(base, conf.work, ["real"], conf.seed)
        distractors = _detail_distractors(base, prep, conf.work)
        nomatch = conf.details_nomatch if distractors is not None else 0
        folder = conf.work / prep.name / f"details-seed{conf.seed}-{conf.details_count}-{nomatch}"
        queries = folder / "queries.csv"
        if not queries.is_file():
            with phase(f"detail photos of {prep.name}"):
                make_detail_queries(prep.collection, folder, count=conf.details_count, seed=conf.seed,
                                    distractors_csv=distractors, nomatch_count=nomatch)
        return _EvalSet(DETAILS, prep, queries, f"details of {prep.name}")
    label = QUERY_SET.get(name, "real")
    with phase(f"preparing {name}"):
        prep = prepare(name, conf.work, [label], conf.seed)
    if label not in prep.query_sets:
        raise CollectionError(f"set {name!r} has no {label} query set (a folder needs queries.csv)")
    return _EvalSet(prep.name, prep, prep.query_sets[label], label)


def _build(prep: Prepared, method: Method, conf: ComparisonConf, phase: Phase) -> tuple[Path, dict]:
    """The bundle of ``prep`` with ``method`` and its build record (seconds overall and per build stage)."""
    bundle = dataset_bundle_path(prep.name, conf.work, conf.model, conf.shortlist, method.features)
    record_path = bundle.parent / f"{bundle.name}.build.json"
    if conf.reuse_bundles and (bundle / "bundle.json").is_file() and record_path.is_file():
        return bundle, {**json.loads(record_path.read_text()), "reused": True}
    starts: dict[str, float] = {}
    built_for = conf.shortlist if conf.shortlist in GLOBAL_SHORTLISTS else "auto"
    with phase(f"indexing {prep.name} ({method.name})") as tick:
        def progress(stage: str, done: int, total: int) -> None:
            starts.setdefault(stage, time.perf_counter())
            tick(done, total, f"{prep.name} ({method.name}): {stage}")

        t0 = time.perf_counter()
        report = build_calibrated_bundle(conf.model, prep.collection, bundle,
                                         config={"shortlist": built_for, "features": method.features},
                                         calibration={"synthetic_photos": conf.calibration_photos},
                                         progress=progress)
        seconds = time.perf_counter() - t0
    # A stage lasts from its first progress report to the next stage's (the last one to the end of the build).
    marks = sorted(starts.items(), key=lambda item: item[1])
    ends = [t for _, t in marks[1:]] + [t0 + seconds]
    stages = {stage: round(end - (start if i else t0), 3)
              for i, ((stage, start), end) in enumerate(zip(marks, ends, strict=True))}
    record = {"seconds": round(seconds, 3), "artworks": report.indexed, "skipped": len(report.skipped),
              "seconds_per_artwork": round(seconds / max(report.indexed, 1), 4), "stages_s": stages}
    record_path.write_text(json.dumps(record, indent=1))
    return bundle, {**record, "reused": False}


def _bundle_bytes(bundle: Path) -> dict:
    meta = json.loads((bundle / "bundle.json").read_text())
    artworks = max(int(meta["counts"]["artworks"]), 1)
    feature_bytes = sum(f.stat().st_size for f in (bundle / "features").rglob("*") if f.is_file())
    # What search and verification hold per artwork; renditions and the learned model's copy are not per artwork.
    index_bytes = sum(f.stat().st_size for f in bundle.rglob("*")
                      if f.is_file() and f.relative_to(bundle).parts[0] not in ("renditions", LOCAL_MODEL_DIR))
    return {"features_method": meta["features"]["config"]["method"], "keypoints": meta["counts"].get("keypoints"),
            "feature_bytes_per_artwork": round(feature_bytes / artworks),
            "index_bytes_per_artwork": round(index_bytes / artworks)}


def _row(eval_set: _EvalSet, method: Method, build: dict, bundle: Path, report: dict) -> dict:
    latency = report["latency_ms"]
    return {
        "set": eval_set.name, "query_set": eval_set.query_label, "queries": str(eval_set.queries),
        "method": method.name, "features": method.describe(), "bundle": str(bundle),
        **_bundle_bytes(bundle), "build": build,
        **{key: report[key] for key in ("n_queries", "n_errors", "n_match_queries", "n_nomatch_queries", "threshold",
                                        "precision_at_1", "recall", "precision", "false_positive_rate",
                                        "object_recall", "answer_precision", "shortlist_recall")},
        "near_threshold": report["near_threshold"],
        "latency_ms": {"p50": latency["p50"], "p95": latency["p95"], "stages": latency["stages"]},
        "errors": [d["error"] for d in report["details"] if "error" in d][:5],
    }


def run_comparison(conf: ComparisonConf, hooks: ComparisonHooks | None = None) -> dict:
    """Build, evaluate and tabulate every set × method; writes comparison.json and comparison.md under
    ``conf.out`` after every row (a run cut short keeps the rows it finished). Returns the comparison."""
    hooks = hooks or ComparisonHooks()
    if not conf.methods:
        raise ModelError("give at least one --method")
    if len({m.name for m in conf.methods}) != len(conf.methods):
        raise ModelError("a method is named twice in --method")
    started = time.time()
    eval_sets = [_resolve_set(name, conf, hooks.phase) for name in conf.sets]
    result: dict = {"command": conf.command, "machine": None, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                    "model": str(conf.model), "shortlist": conf.shortlist, "seed": conf.seed,
                    "calibration_photos": conf.calibration_photos,
                    "methods": [m.describe() for m in conf.methods], "rows": []}
    bundles: dict[tuple[str, str], tuple[Path, dict]] = {}
    for eval_set in eval_sets:
        for method in conf.methods:
            key = (str(eval_set.dataset.collection), method.name)
            if key not in bundles:
                bundles[key] = _build(eval_set.dataset, method, conf, hooks.phase)
            bundle, build = bundles[key]
            recognizer = Recognizer(bundle, conf.model, config={"shortlist": conf.shortlist})
            if result["machine"] is None:
                result["machine"] = describe_machine(recognizer)
            _warm_up(recognizer, eval_set.queries)
            with hooks.phase(f"{eval_set.name} ({method.name})") as tick:
                report = evaluate(recognizer, eval_set.queries, progress=tick)
            row = _row(eval_set, method, build, bundle, report)
            result["rows"].append(row)
            result["seconds"] = round(time.time() - started, 1)
            write_comparison(result, conf.out)
            hooks.row_ready(row)
    return result


def _warm_up(recognizer: Recognizer, queries: Path) -> None:
    """One recognition before the timed ones, so ONNX Runtime's first-run set-up is not counted as latency."""
    rows = read_queries(queries)
    if rows:
        with suppress(ArtlensError):  # the evaluation reports the photo's error itself
            recognizer.recognize(rows[0][1])


def _fmt(value: float | None, digits: int = 3) -> str:
    return "–" if value is None or value != value else f"{value:.{digits}f}"


def stage_names(rows: list[dict]) -> list[str]:
    seen = {stage: None for row in rows for stage in row["latency_ms"]["stages"]}
    return [s for s in STAGE_ORDER if s in seen] + [s for s in seen if s not in STAGE_ORDER]


def comparison_markdown(result: dict) -> str:
    rows = result["rows"]
    machine = result.get("machine") or {}
    lines = ["# Local features compared: one run", "",
             f"`{result['command']}`" if result["command"] else "",
             f"Machine: {machine.get('cpu', '?')}, {machine.get('cores', '?')} cores; started {result['started']}.",
             "", "| set | method | queries | P@1 | recall | FPR | object recall | answer precision | near threshold"
             " | p50 ms | p95 ms | build s/artwork | features KB/artwork |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        build = r["build"]
        lines.append(f"| {r['set']} | {r['method']} | {r['n_match_queries']}+{r['n_nomatch_queries']} no-match"
                     f" | {_fmt(r['precision_at_1'])} | {_fmt(r['recall'])} | {_fmt(r['false_positive_rate'])}"
                     f" | {_fmt(r['object_recall'])} | {_fmt(r['answer_precision'])}"
                     f" | {_fmt(r['near_threshold']['share'])} | {_fmt(r['latency_ms']['p50'], 0)}"
                     f" | {_fmt(r['latency_ms']['p95'], 0)} | {_fmt(build['seconds_per_artwork'], 2)}"
                     + (" (reused)" if build.get("reused") else "")
                     + f" | {_fmt(r['feature_bytes_per_artwork'] / 1024, 1)} |")
    stages = stage_names(rows)
    lines += ["", "Latency per stage, p50 ms:", "", "| set | method | " + " | ".join(stages) + " | total p50 |",
              "|---|---|" + "---|" * (len(stages) + 1)]
    for r in rows:
        per_stage = r["latency_ms"]["stages"]
        lines.append(f"| {r['set']} | {r['method']} | "
                     + " | ".join(_fmt(per_stage.get(s, {}).get("p50"), 1) for s in stages)
                     + f" | {_fmt(r['latency_ms']['p50'], 1)} |")
    return "\n".join(lines) + "\n"


def write_comparison(result: dict, out: Path) -> dict[str, Path]:
    out.mkdir(parents=True, exist_ok=True)
    paths = {"json": out / "comparison.json", "markdown": out / "comparison.md"}
    paths["json"].write_text(json.dumps(result, indent=2))
    paths["markdown"].write_text(comparison_markdown(result))
    return paths
