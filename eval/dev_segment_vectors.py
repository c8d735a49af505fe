"""Stand-in segment vectors for developing the segment index, until the real Segment-Anything pipeline exists.

Each reference image goes once through the DINOv2 ONNX model (``Embedder.forward``: patch tokens on the
``size / patch`` grid, 32×32 at 448 px); every "segment" is a random axis-aligned rectangle of that grid and
its vector is the GeM (p = 3) pool of the patch tokens under it, L2-normalised — the pooling ``Embedder.pool``
applies to a whole image. Real segments are masks, not rectangles; swap this out for the real vectors with
``bench_segment_index(real_vectors)``.

    python -m artlens.eval.dev_segment_vectors --model models/dinov2-small --out out/segvec-dev.npy \
        ../shared/data/smvs-museum/reference/*.jpg ../shared/data/estense/reference/*.png
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from artlens.embedder import GEM_P, Embedder
from artlens.imaging import load_image


def random_boxes(rng: np.random.Generator, grid_h: int, grid_w: int, count: int) -> np.ndarray:
    """``count`` rectangles [y0, x0, y1, x1) on the patch grid, area log-uniform from 1 % to 50 % of the image
    (SAM's segments range from a face or a signature to a whole figure), aspect ratio log-uniform 1:3 … 3:1."""
    area = np.exp(rng.uniform(np.log(0.01), np.log(0.5), count)) * grid_h * grid_w
    aspect = np.exp(rng.uniform(np.log(1 / 3), np.log(3), count))
    h = np.clip(np.round(np.sqrt(area / aspect)), 1, grid_h).astype(int)
    w = np.clip(np.round(np.sqrt(area * aspect)), 1, grid_w).astype(int)
    y0 = rng.integers(0, grid_h - h + 1)
    x0 = rng.integers(0, grid_w - w + 1)
    return np.stack([y0, x0, y0 + h, x0 + w], axis=1)


def gem_pool(tokens: np.ndarray, p: float = GEM_P) -> np.ndarray:
    """GeM over tokens [N, D] as ``Embedder.pool`` does (tokens are signed: clamp first), then L2."""
    out = np.power(np.mean(np.maximum(tokens, 1e-6) ** p, axis=0), 1.0 / p)
    return out / max(float(np.linalg.norm(out)), 1e-12)


def dev_segment_vectors(model_dir: str | Path, images: list[str | Path], *, boxes_per_image: int = 40,
                        seed: int = 0) -> tuple[np.ndarray, np.ndarray, dict]:
    """(vectors float32 [len(images)·boxes, D], image index int32 per vector, description)."""
    embedder = Embedder(model_dir)
    rng = np.random.default_rng(seed)
    vectors, owners = [], []
    start = time.perf_counter()
    for i, path in enumerate(images):
        rgb = load_image(path, max_side=1024).rgb
        batch = embedder.preprocess(rgb)[None]
        _, patches = embedder.forward(batch)
        gh, gw = batch.shape[2] // embedder.patch, batch.shape[3] // embedder.patch
        grid = patches[0].reshape(gh, gw, -1)
        for y0, x0, y1, x1 in random_boxes(rng, gh, gw, boxes_per_image):
            vectors.append(gem_pool(grid[y0:y1, x0:x1].reshape(-1, grid.shape[-1])))
            owners.append(i)
    vecs = np.asarray(vectors, dtype=np.float32)
    desc = {"how_made": f"GeM (p={GEM_P:g}) of DINOv2 patch tokens under {boxes_per_image} random rectangles "
                        f"(1–50 % of the image, log-uniform) per reference image, L2-normalised",
            "model": embedder.info.public(), "images": len(images), "boxes_per_image": boxes_per_image,
            "seed": seed, "count": len(vecs), "dim": int(vecs.shape[1]) if len(vecs) else embedder.dim,
            "seconds": round(time.perf_counter() - start, 1)}
    return vecs, np.asarray(owners, dtype=np.int32), desc


def mean_pairwise_cosine(vectors: np.ndarray, sample: int = 2000, seed: int = 0) -> float:
    """Mean cosine over distinct pairs of a random sample (vectors assumed L2-normalised)."""
    rng = np.random.default_rng(seed)
    x = vectors[rng.choice(len(vectors), size=min(sample, len(vectors)), replace=False)].astype(np.float64)
    g = x @ x.T
    n = len(x)
    return float((g.sum() - np.trace(g)) / (n * (n - 1)))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("images", nargs="+")
    ap.add_argument("--model", default="models/dinov2-small")
    ap.add_argument("--out", default="out/segvec-dev.npy")
    ap.add_argument("--boxes", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    vecs, owners, desc = dev_segment_vectors(args.model, sorted(args.images), boxes_per_image=args.boxes,
                                             seed=args.seed)
    desc["mean_pairwise_cosine"] = round(mean_pairwise_cosine(vecs), 4)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.save(out, vecs)
    np.save(out.with_name(out.stem + "-owners.npy"), owners)
    out.with_suffix(".json").write_text(json.dumps(desc, indent=2))
    print(json.dumps(desc, indent=2))


if __name__ == "__main__":
    main()
