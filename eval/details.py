"""Detail photos: what a visitor shoots when a face, a vase or a dog in a corner is what caught their eye.

Made reproducibly from the references (seeded): a region showing 10–40 % of the artwork's area (random
position, aspect of a phone frame), seen as a standing visitor sees it (the region is a trapezoid on the canvas:
the visitor looks up at a detail hung above eye level or from one side, and holds the phone slightly rotated),
then the phone's own effects (``calibration.photos.phone_effects``: white balance, exposure, glare, blur,
noise, JPEG). Details of artworks that are *not* in the collection (the distractors) are the no-match queries
that measure the false-positive rate.

Writes ``photos/*.jpg``, ``queries.csv`` (``image,expected``; empty expected = no match) and ``details.json``
(per photo: the region on the reference as a quad in reference pixels, its area fraction, the view parameters).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from artlens.calibration.photos import phone_effects
from artlens.calibration.queries import write_queries
from artlens.config import with_defaults
from artlens.errors import CollectionError
from artlens.indexing.collection import load_row_image, read_collection

DETAIL_CONFIG: dict = {
    "area": (0.10, 0.40),  # fraction of the artwork the detail shows
    "frames": ((4, 3), (3, 4), (16, 9), (9, 16), (1, 1)),  # phone photo aspect ratios
    "out_side": 1024,  # long side of the photo
    "keystone_h": 0.25,  # ± relative height difference of the region's left and right sides (side view)
    "keystone_v": 0.20,  # ± relative width difference of its top and bottom (looking up / down)
    "rotation_deg": 10.0,  # ± in-plane rotation of the phone
    "corner_jitter": 0.03,  # ± per corner, fraction of the region's size (hand-held, lens)
    "max_side": 1600,  # references are decoded at most this large
    "attempts": 50,  # rejection sampling of a region that satisfies the area bounds
}


@dataclass
class DetailView:
    quad: np.ndarray  # float32 [4, 2]: TL, TR, BR, BL of the region on the reference, in reference pixels
    area_fraction: float  # of the reference the region covers (inside the reference)
    frame: tuple[int, int]  # photo (width, height)
    params: dict


def _polygon_area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def sample_view(width: int, height: int, rng: np.random.Generator, config: dict | None = None) -> DetailView:
    """A detail region of a ``width × height`` reference and the view a visitor has of it."""
    cfg = with_defaults(DETAIL_CONFIG, config)
    lo, hi = cfg["area"]
    for _ in range(int(cfg["attempts"])):
        fw, fh = cfg["frames"][int(rng.integers(len(cfg["frames"])))]
        target = rng.uniform(lo, hi) * width * height
        rw = np.sqrt(target * fw / fh)
        rh = rw * fh / fw
        kh = rng.uniform(-cfg["keystone_h"], cfg["keystone_h"])
        kv = rng.uniform(-cfg["keystone_v"], cfg["keystone_v"])
        angle = np.deg2rad(rng.uniform(-cfg["rotation_deg"], cfg["rotation_deg"]))
        jitter = rng.uniform(-cfg["corner_jitter"], cfg["corner_jitter"], size=(4, 2)) * (rw, rh)
        # Region corners around its centre; a side seen from farther away covers more of the canvas.
        corners = np.array([[-rw / 2 * (1 + kv), -rh / 2 * (1 - kh)], [rw / 2 * (1 + kv), -rh / 2 * (1 + kh)],
                            [rw / 2 * (1 - kv), rh / 2 * (1 + kh)], [-rw / 2 * (1 - kv), rh / 2 * (1 - kh)]])
        corners = corners + jitter
        rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
        corners = corners @ rot.T
        span_x = corners[:, 0].max() - corners[:, 0].min()
        span_y = corners[:, 1].max() - corners[:, 1].min()
        if span_x > width or span_y > height:  # this shape does not fit inside the artwork: draw again
            continue
        cx = rng.uniform(-corners[:, 0].min(), width - corners[:, 0].max())
        cy = rng.uniform(-corners[:, 1].min(), height - corners[:, 1].max())
        quad = (corners + np.array([cx, cy])).astype(np.float32)
        fraction = _polygon_area(quad) / (width * height)
        if lo <= fraction <= hi:
            side = int(cfg["out_side"])
            frame = (side, round(side * fh / fw)) if fw >= fh else (round(side * fw / fh), side)
            return DetailView(quad, float(fraction), frame,
                              {"keystone_h": round(float(kh), 3), "keystone_v": round(float(kv), 3),
                               "rotation_deg": round(float(np.rad2deg(angle)), 2), "frame": f"{fw}:{fh}"})
    raise CollectionError(f"no detail region of {lo:.0%}–{hi:.0%} fits a {width}×{height} image "
                          f"(aspect too extreme for a phone frame)")


def detail_photo(rgb: np.ndarray, rng: np.random.Generator, config: dict | None = None) -> tuple[bytes, DetailView]:
    """JPEG bytes of a detail photo of ``rgb`` and the view it shows. Deterministic for a given ``rng`` state."""
    height, width = rgb.shape[:2]
    view = sample_view(width, height, rng, config)
    fw, fh = view.frame
    dst = np.array([[0, 0], [fw, 0], [fw, fh], [0, fh]], np.float32)
    homography = cv2.getPerspectiveTransform(view.quad, dst)
    # Upscaling a small region of a web-sized reference: cubic keeps edges; the phone blur follows anyway.
    photo = cv2.warpPerspective(rgb, homography, (fw, fh), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT)
    return phone_effects(photo.astype(np.float32), rng), view


def _rows_to_photograph(n_rows: int, count: int, rng: np.random.Generator) -> list[int]:
    """``count`` row indices: every row once (random order) before any row twice."""
    picks: list[int] = []
    while len(picks) < count:
        picks += rng.permutation(n_rows)[: count - len(picks)].tolist()
    return picks


def _photograph(collection_csv: Path, count: int, rng: np.random.Generator, out: Path, prefix: str,
                in_collection: bool, cfg: dict) -> list[dict]:
    collection = read_collection(collection_csv)
    if collection.problems:
        line, reason = collection.problems[0]
        raise CollectionError(f"{collection_csv}:{line}: {reason}")
    if not collection.rows:
        raise CollectionError(f"{collection_csv}: no rows to photograph")
    picks = _rows_to_photograph(len(collection.rows), count, rng)
    cache: dict[int, np.ndarray] = {}
    records = []
    for n, i in enumerate(picks, start=1):
        row = collection.rows[i]
        if i not in cache:
            cache = {i: load_row_image(collection, row, max_side=cfg["max_side"])}
        jpeg, view = detail_photo(cache[i], rng, cfg)
        name = f"{prefix}-{n:04d}-{row.object_id}.jpg".replace("/", "_")
        (out / "photos" / name).write_bytes(jpeg)
        h, w = cache[i].shape[:2]
        records.append({"image": f"photos/{name}", "expected": row.object_id if in_collection else "",
                        "object_id": row.object_id, "in_collection": in_collection,
                        "reference_size": [w, h], "quad": [[round(float(v), 1) for v in p] for p in view.quad],
                        "area_fraction": round(view.area_fraction, 4), "photo_size": list(view.frame),
                        **view.params})
    return records


def make_detail_queries(collection_csv: str | Path, out_dir: str | Path, *, count: int, seed: int = 0,
                        distractors_csv: str | Path | None = None, nomatch_count: int | None = None,
                        config: dict | None = None) -> Path:
    """``count`` detail photos of the collection's artworks (+ ``nomatch_count`` of the distractors, default as
    many as ``count``); returns the queries.csv path."""
    cfg = with_defaults(DETAIL_CONFIG, config)
    out = Path(out_dir)
    (out / "photos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    records = _photograph(Path(collection_csv), count, rng, out, "detail", True, cfg)
    if distractors_csv is not None:
        n_nomatch = count if nomatch_count is None else nomatch_count
        if n_nomatch > 0:
            own = {r.object_id for r in read_collection(collection_csv).rows}
            clash = [r.object_id for r in read_collection(distractors_csv).rows if r.object_id in own]
            if clash:
                raise CollectionError(f"{distractors_csv}: {clash[0]} is also in {collection_csv}; distractors must"
                                      " be artworks the collection does not hold")
            records += _photograph(Path(distractors_csv), n_nomatch, rng, out, "nomatch", False, cfg)
    queries = write_queries(out / "queries.csv", ((r["image"], r["expected"]) for r in records))
    summary = {"collection": str(collection_csv), "distractors": str(distractors_csv) if distractors_csv else None,
               "seed": seed, "config": {k: v for k, v in cfg.items()}, "photos": records}
    (out / "details.json").write_text(json.dumps(summary, indent=1))
    return queries
