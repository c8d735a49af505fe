"""`artlens bench model`: the bare ONNX forward at several batch sizes, for several exports of one model
(fp32 / fp16 / int8 from `artlens export dinov2 --precision`), and what each precision costs in accuracy.

Models are timed interleaved (one batch of each in turn, round after round) so machine load hits them alike.
Accuracy cost: the cosine between each model's embedding and the first (reference) model's, photo by photo.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from artlens.calibration.queries import read_queries
from artlens.embedder import Embedder
from artlens.imaging import load_image

from .bench import describe_machine
from .evaluate import percentiles


def bench_models(model_dirs: list[Path], queries: str | Path, *, batch_sizes: tuple[int, ...] = (1, 4, 16),
                 rounds: int = 3, photos: int = 16, progress: Callable[[int, int], None] | None = None) -> dict:
    embedders = [Embedder(d) for d in model_dirs]
    paths = [p for _, p, _ in read_queries(queries)][:max(photos, max(batch_sizes))]
    rgbs = [load_image(p.read_bytes(), name=str(p), max_side=800).rgb for p in paths]
    inputs = np.stack([embedders[0].preprocess(rgb) for rgb in rgbs])
    for e in embedders[1:]:
        if e.size != embedders[0].size:
            raise ValueError(f"{e.model_dir}: input size {e.size} differs from {embedders[0].model_dir}")
    total = len(batch_sizes) * rounds * len(embedders)
    times: dict[tuple[int, int], list[float]] = {}
    done = 0
    for b in batch_sizes:
        batch = np.ascontiguousarray(np.resize(inputs, (b, *inputs.shape[1:])))
        for e in embedders:  # warm-up: first runs allocate
            e.forward(batch)
        for _ in range(rounds):
            for m, e in enumerate(embedders):
                t0 = time.perf_counter()
                e.forward(batch)
                times.setdefault((m, b), []).append((time.perf_counter() - t0) * 1e3)
                done += 1
                if progress:
                    progress(done, total)
    reference = embedders[0].embed_arrays(rgbs)
    results = []
    for m, e in enumerate(embedders):
        emb = reference if m == 0 else e.embed_arrays(rgbs)
        cos = np.sum(emb * reference, axis=1)
        onnx = e.meta["onnx"]
        row = {"model": str(e.model_dir), "precision": e.info.precision, "mib": round(onnx.get("bytes", 0) / 2**20, 1),
               "cosine_to_reference": {"min": round(float(cos.min()), 5), "mean": round(float(cos.mean()), 5)},
               "execution_provider": e.execution_provider, "forward_ms": {}}
        for b in batch_sizes:
            p = percentiles(times[(m, b)])
            row["forward_ms"][str(b)] = {**p, "per_image_p50": round(p["p50"] / b, 2)}
        results.append(row)
    base = results[0]["forward_ms"]
    for row in results:
        row["speed_vs_reference_p50"] = {b: round(base[b]["p50"] / row["forward_ms"][b]["p50"], 3) for b in base}
    return {"queries": str(queries), "n_photos": len(rgbs), "rounds": rounds, "input_size": embedders[0].size,
            "pretrained": embedders[0].info.pretrained, "models": results, "machine": describe_machine(),
            "execution_provider": embedders[0].execution_provider, "providers": embedders[0].providers}


def bench_verification(recognizer, queries: str | Path, *, photos: int = 12, top_k: int = 20) -> dict:
    """Milliseconds per verified candidate: verification of K candidates timed per photo, divided by K."""
    per_candidate, per_photo = [], []
    for _, path, _ in read_queries(queries)[:photos]:
        analysis = recognizer.analyse(path.read_bytes(), top_k=top_k, name=str(path))
        n = len(analysis.candidates)
        if n:
            per_photo.append(analysis.timings_ms["verify"])
            per_candidate.append(analysis.timings_ms["verify"] / n)
    return {"top_k": top_k, "n_photos": len(per_photo), "verify_ms_per_photo": percentiles(per_photo),
            "ms_per_candidate": percentiles(per_candidate)}
