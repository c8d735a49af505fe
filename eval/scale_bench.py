"""`artlens bench scale`: precision, shortlist recall, latency and memory as the collection grows.

Each size is a collection of the 91 SMVS references plus distractor artworks (eval/distractors.py) built through
the real build path (``build_calibrated_bundle``: shards, Ray above its row threshold, merge, calibration); sizes
above ``image_limit`` extend that bundle with feature-level distractors (eval/feature_distractors.py). The
queries are the SMVS photos (46 of an artwork, 50 of no artwork). For a bundle whose vote index is compressed, the
same photos are also run on an uncompressed (SQ8) vote index of the same bundle, so the compression's cost is
measured at the same size. Serve RSS is read from a real `artlens serve` process after it answered every photo.
Built bundles are kept in ``work`` with their build record, so a later run measures without rebuilding.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from artlens.calibration.calibrate import build_calibrated_bundle
from artlens.calibration.queries import read_queries
from artlens.indexing.build import build_bundle
from artlens.indexing.descriptor_votes import with_encoding
from artlens.indexing.ray_build import ray_session
from artlens.indexing.store.bundle import load_bundle
from artlens.recognition.recognizer import Recognizer

from .bench import describe_machine
from .datasets import shared_dataset
from .distractors import real_sources, write_collection, write_distractors
from .evaluate import evaluate
from .feature_distractors import extend_bundle
from .loadtest import ServerProcess

Progress = Callable[[str], None]
# The uncompressed comparison: the bundle's own inverted lists with SQ8 codes (128 B + an 8 B id per descriptor,
# ≈ 180 B measured while the lists grow: FAISS grows each list's vector by doubling), skipped where it would not
# fit in memory beside the loaded bundle (at 100,000 artworks: 16.5 GB of the 23 GB VM).
SQ8_BYTES = 180
MEMORY_HEADROOM = 1 * 2**30


def _status_mb(pid: int) -> dict[str, float]:
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            values[key] = round(int(rest.split()[0]) / 1024, 1)
    return values


def _dir_mb(path: Path) -> float:
    return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 2**20, 1)


def build_size(model: Path, size: int, work: Path, sources: list, references: Path, *, progress: Progress) -> dict:
    """The bundle of ``size`` artworks in ``work``, built unless its record says it was; returns the record."""
    out, record_path = work / f"bundle-{size}", work / f"bundle-{size}.build.json"
    if record_path.is_file() and out.is_dir():
        return json.loads(record_path.read_text())
    references_count = len(_object_ids(references))
    distractors = write_distractors(sources, size - references_count, work / "distractors")
    collection = write_collection(work / f"collection-{size}.csv", references, distractors)
    progress(f"building {size} artworks")
    started = time.perf_counter()
    report = build_calibrated_bundle(model, collection, out)
    seconds = time.perf_counter() - started
    real = sum(1 for d in distractors if not d["source"].startswith("collage"))
    record = {"size": size, "indexed": report.indexed, "skipped": len(report.skipped), "build_s": round(seconds, 1),
              "build_s_per_artwork": round(seconds / max(report.indexed, 1), 4),
              "distractors": {"real_images": real, "collages": len(distractors) - real},
              "from_images": report.indexed, "from_features": 0}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def extend_size(size: int, image_limit: int, work: Path, *, progress: Progress) -> dict:
    """The bundle of ``size`` artworks: the ``image_limit`` bundle built from image files, extended by feature-level
    distractors (eval/feature_distractors.py); built unless its record says it was; returns the record."""
    out, record_path = work / f"bundle-{size}", work / f"bundle-{size}.build.json"
    if record_path.is_file() and out.is_dir():
        return json.loads(record_path.read_text())
    base = json.loads((work / f"bundle-{image_limit}.build.json").read_text())
    progress(f"building {size} artworks: {image_limit} from images + {size - image_limit} from features")
    extended = extend_bundle(work / f"bundle-{image_limit}", out, size)
    seconds = base["build_s"] + extended["build_s"]
    record = {"size": size, "indexed": size, "skipped": 0, "build_s": round(seconds, 1),
              "build_s_per_artwork": round(seconds / size, 4), "from_images": extended["from_images"],
              "from_features": extended["from_features"], "image_build_s": base["build_s"],
              "feature_build_s": extended["build_s"],
              "feature_build_s_per_artwork": round(extended["build_s"] / max(extended["from_features"], 1), 4),
              "feature_build": extended, "distractors": base["distractors"]}
    record_path.write_text(json.dumps(record, indent=2))
    return record


def _object_ids(collection_csv: Path) -> list[str]:
    from artlens.indexing.collection import read_collection

    return [row.object_id for row in read_collection(collection_csv).rows]


def measure_size(bundle_dir: Path, queries: Path, *, progress: Progress, compare_uncompressed: bool = True) -> dict:
    """Recognition metrics of the SMVS photos on one bundle (and on its uncompressed vote index where the bundle's
    is compressed), and the bundle's footprint."""
    bundle = load_bundle(bundle_dir)
    votes = bundle.meta.get("votes") or {}
    progress(f"{len(bundle.artworks)} artworks: recognising the photos")
    report = evaluate(Recognizer(bundle), queries)
    row = _metrics(report)
    row.update(size=len(bundle.artworks), votes_factory=votes.get("factory"),
               bundle_mb=_dir_mb(bundle_dir), footprint=_footprint_summary(bundle.meta))
    row["shortlist_recall_uncompressed"] = row["shortlist_recall"]
    if compare_uncompressed and votes and not votes.get("factory", "").endswith(",SQ8"):
        needed, available = len(bundle.features.descriptors) * SQ8_BYTES, _available_bytes()
        if needed > available - MEMORY_HEADROOM:
            row["uncompressed"] = {"skipped": f"an SQ8 vote index needs {needed / 2**30:.1f} GiB, "
                                              f"{available / 2**30:.1f} GiB available"}
            return row
        progress(f"{len(bundle.artworks)} artworks: the same photos on an uncompressed vote index")
        exact, exact_desc = with_encoding(bundle.votes, bundle.features, "SQ8")
        uncompressed = evaluate(Recognizer(dataclasses.replace(bundle, votes=exact)), queries)
        row["uncompressed"] = {**_metrics(uncompressed), "votes_factory": exact_desc["factory"]}
        row["shortlist_recall_uncompressed"] = row["uncompressed"]["shortlist_recall"]
        del exact
    return row


def _available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def _metrics(report: dict) -> dict:
    keys = ("precision_at_1", "recall", "false_positive_rate", "shortlist_recall", "n_match_queries",
            "n_nomatch_queries", "n_errors", "threshold")
    return {**{k: report[k] for k in keys}, "model": report["model"],  # pretrained: false for random-init weights
            "latency_ms": {"p50": report["latency_ms"]["p50"], "p95": report["latency_ms"]["p95"]}}


def _footprint_summary(meta: dict) -> dict:
    footprint = meta.get("footprint") or {}
    if not footprint:
        return {}
    return {"ram_kb_per_artwork": round(footprint["per_artwork"]["ram_bytes"] / 1024, 1),
            "disk_kb_per_artwork": round(footprint["per_artwork"]["disk_bytes"] / 1024, 1),
            "fixed_ram_mb": round(footprint["fixed"]["ram_bytes"] / 2**20, 1),
            "ram_mb": round(footprint["total"]["ram_bytes"] / 2**20, 1),
            "components_ram_kb_per_artwork": {c["name"]: round(c["ram_per_artwork"] / 1024, 2)
                                              for c in footprint["components"] if c.get("ram_per_artwork")}}


def serve_rss(bundle_dir: Path, photos: list[Path], *, progress: Progress) -> dict:
    """RSS of `artlens serve` on the bundle after it answered every photo once (one client, no batching)."""
    progress(f"serving {bundle_dir.name}")
    with ServerProcess(bundle_dir, None, False, "scale-bench-key", {}) as server:
        ready = _status_mb(server.proc.pid)
        with httpx.Client(base_url=server.url, timeout=300) as http:
            statuses = [http.post("/v1/recognize", files={"image": (p.name, p.read_bytes(), "image/jpeg")}
                                  ).status_code for p in photos]
        after = _status_mb(server.proc.pid)
    return {"serve_rss_mb": after.get("VmRSS"), "serve_peak_rss_mb": after.get("VmHWM"),
            "serve_rss_ready_mb": ready.get("VmRSS"), "serve_rss_anon_mb": after.get("RssAnon"),
            "serve_rss_file_mb": after.get("RssFile"), "serve_non_200": sum(s != 200 for s in statuses)}


def build_scaling(model: Path, collection: Path, count: int, work: Path, *, progress: Progress) -> dict:
    """Artworks per second of the whole build (shards and merge, no calibration) of the first ``count`` rows on a
    local Ray of one and of two workers (one CPU each: Ray started here with that many CPUs, inside the timed
    span), and in this process (OpenCV's own threads on every core) for reference; with the rate of the shard
    stage alone (the merge runs in one process whatever the workers)."""
    lines = collection.read_text(encoding="utf-8").splitlines(keepends=True)
    subset = work / f"scaling-{count}.csv"
    subset.write_text("".join(lines[: count + 1]), encoding="utf-8")
    runs = {}
    for name, workers in (("in_process", None), ("workers_1", 1), ("workers_2", 2)):
        out = work / f"scaling-{count}-{name}"
        shutil.rmtree(out, ignore_errors=True)
        progress(f"build throughput, {name.replace('_', ' ')}, {count} artworks")
        runs[name] = _timed_build(model, subset, out, workers)
        shutil.rmtree(out, ignore_errors=True)
    rate = {name: round(run["artworks_per_s"], 2) for name, run in runs.items()}
    shard_rate = {name: round(run["shard_artworks_per_s"], 2) for name, run in runs.items()}
    return {"artworks": count, "workers_1_artworks_per_s": rate["workers_1"],
            "workers_2_artworks_per_s": rate["workers_2"],
            "speedup": round(rate["workers_2"] / rate["workers_1"], 2),
            "in_process_artworks_per_s": rate["in_process"],
            "shard_stage_artworks_per_s": shard_rate,
            "shard_stage_speedup": round(shard_rate["workers_2"] / shard_rate["workers_1"], 2),
            "workers": "a local Ray started with 1 or 2 CPUs, one shard reader per CPU, each on one thread"}


def _timed_build(model: Path, subset: Path, out: Path, workers: int | None) -> dict:
    marks: list[tuple[float, int]] = []

    def tick(stage: str, done: int, total: int) -> None:
        if stage == "artworks":
            marks.append((time.perf_counter(), done))

    started = time.perf_counter()
    if workers is None:
        report = build_bundle(model, subset, out, workers=1, progress=tick)
    else:
        with ray_session(workers, None):  # a local Ray of ``workers`` CPUs, which the build joins
            report = build_bundle(model, subset, out, workers=workers, ray_address="auto", progress=tick)
    seconds = time.perf_counter() - started
    (t0, _), (t1, done) = marks[0], marks[-1]
    return {"artworks_per_s": report.indexed / seconds, "shard_artworks_per_s": done / max(t1 - t0, 1e-9)}


def run_scale_bench(model: Path, sizes: list[int], work: Path, *, debian_root: Path | None,
                    scaling_artworks: int = 1000, serve: bool = True, image_limit: int = 10000,
                    compare_uncompressed: bool = True,
                    progress: Progress = print) -> dict:
    """Every size up to ``image_limit`` is built from image files; larger ones are the ``image_limit`` bundle
    extended by feature-level distractors (eval/feature_distractors.py)."""
    smvs = shared_dataset("smvs-museum")
    work.mkdir(parents=True, exist_ok=True)
    sources = real_sources(debian_root)
    references = len(_object_ids(smvs.collection))
    photos = [photo for _, photo, _ in read_queries(smvs.queries)]
    rows = []
    if max(sizes) > image_limit:  # the bundle the larger ones extend
        build_size(model, image_limit, work, sources, smvs.collection, progress=progress)
    for size in [references, *sorted(sizes)]:
        if size > image_limit:
            record = extend_size(size, image_limit, work, progress=progress)
        else:
            record = build_size(model, size, work, sources, smvs.collection, progress=progress)
        row = {**measure_size(work / f"bundle-{size}", smvs.queries, progress=progress,
                              compare_uncompressed=compare_uncompressed),
               "build_s_per_artwork": record["build_s_per_artwork"], "build": record,
               "from_images": record.get("from_images", record["indexed"]),
               "from_features": record.get("from_features", 0)}
        if size > image_limit:
            row["feature_build_s"] = record["feature_build_s"]
        if serve:
            row.update(serve_rss(work / f"bundle-{size}", photos, progress=progress))
        rows.append(row)
    base = rows[0]
    for row in rows:
        row["latency_p50_vs_91"] = round(row["latency_ms"]["p50"] / base["latency_ms"]["p50"], 2)
    if serve and len(rows) > 1:
        small, large = rows[0], rows[-1]
        slope = (large["serve_rss_mb"] - small["serve_rss_mb"]) * 1024 / max(large["size"] - small["size"], 1)
        ram_slope = {"from": small["size"], "to": large["size"], "kb_per_artwork": round(slope, 1)}
    else:
        ram_slope = None
    scaling = None
    if scaling_artworks:
        scaling = build_scaling(model, work / f"collection-{min(max(sizes), image_limit)}.csv", scaling_artworks, work,
                                progress=progress)
    return {"machine": describe_machine(), "model": base["model"], "queries": str(smvs.queries), "baseline": base,
            "sizes": rows[1:], "serve_rss_per_artwork": ram_slope, "build_scaling": scaling,
            "distractor_sources": _source_counts(sources)}


def _source_counts(sources: list) -> list[dict]:
    counts: dict[tuple[str, str], int] = {}
    for s in sources:
        counts[(s.origin, s.licence)] = counts.get((s.origin, s.licence), 0) + 1
    return [{"origin": o, "licence": lic, "images": n} for (o, lic), n in counts.items()]
