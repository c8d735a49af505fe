"""`artlens bench recognition`: the bare ONNX forward pass and full recognition timed side by side, photo by photo."""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.calibration.queries import read_queries
from artlens.embedder import library_versions
from artlens.errors import ImageError
from artlens.imaging import load_image
from artlens.recognition.recognizer import Recognizer

from .evaluate import percentiles


def describe_machine(recognizer: Recognizer | None = None) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
            "libraries": library_versions()}
    if recognizer is not None:
        info["onnxruntime_providers"] = recognizer.embedder.providers
    return info


def bench_recognition(recognizer: Recognizer, queries: str | Path, *, top_k: int | None = None, repeat: int = 2,
                      warmup: int = 3, progress: Callable[[int, int], None] | None = None) -> dict:
    """Alternate, per photo, one bare forward and one full recognition, so both see the same machine state.

    The bare forward gets the photo already decoded and preprocessed; recognition gets the encoded bytes
    (as the service does) and pays for decoding, features, search, verification and the decision.
    """
    k = recognizer.settings.shortlist_size(top_k)
    photos = [p for _, p, _ in read_queries(queries)]
    encoded = []
    for p in photos:
        if not p.is_file():
            raise ImageError(str(p), "file not found", code="missing_image")
        try:
            encoded.append(p.read_bytes())
        except OSError as exc:
            raise ImageError(str(p), f"cannot read photo: {exc.strerror}", code="missing_image") from None
    emb = recognizer.embedder
    inputs = []
    for data, p in zip(encoded, photos, strict=True):
        rgb = load_image(data, name=str(p), max_side=recognizer.feature_config["max_side"]).rgb
        inputs.append(emb.preprocess(rgb)[None])
    for i in range(min(warmup, len(photos))):
        emb.forward(inputs[i])
        recognizer.recognize(encoded[i], top_k=k)
    forward_ms, recognize_ms, stages = [], [], {}
    total = repeat * len(photos)
    for r in range(repeat):
        for i, data in enumerate(encoded):
            t0 = time.perf_counter()
            emb.forward(inputs[i])
            t1 = time.perf_counter()
            result = recognizer.recognize(data, top_k=k)
            t2 = time.perf_counter()
            forward_ms.append((t1 - t0) * 1e3)
            recognize_ms.append((t2 - t1) * 1e3)
            for stage, ms in result.timings_ms.items():
                if stage != "total":
                    stages.setdefault(stage, []).append(ms)
            if progress:
                progress(r * len(photos) + i + 1, total)
    fwd, rec = percentiles(forward_ms), percentiles(recognize_ms)
    return {
        "queries": str(queries), "bundle": str(recognizer.bundle.path), "top_k": k, "n_photos": len(photos),
        # The model forward is timed bare either way; recognition runs it only where "global_embedding" is a signal.
        "shortlist": recognizer.settings.shortlist, "signals": list(recognizer.signals),
        "repeat": repeat, "model_forward_ms": fwd, "recognize_ms": rec,
        "ratio_p50": round(rec["p50"] / fwd["p50"], 4) if fwd["p50"] else float("nan"),
        "ratio_p95": round(rec["p95"] / fwd["p95"], 4) if fwd["p95"] else float("nan"),
        "stages_ms": {s: percentiles(v) for s, v in stages.items()},
        "stage_share_p50": {s: round(float(np.median(v)) / rec["p50"], 4) for s, v in stages.items()},
        "model": {**recognizer.embedder.info.public()},
        "execution_provider": emb.execution_provider,
        "machine": describe_machine(recognizer),
    }
