"""Labelled photos for calibration: a visitor's phone photos simulated from a bundle's own references.

A simulated photo adds perspective, framing, a gallery wall, light, blur, noise and JPEG to a reference, so
every bundle can be calibrated without anyone's test photos (real labelled photos: ``calibration.queries``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from artlens.indexing.collection import load_collection_image
from artlens.recognition.recognizer import Recognizer


@dataclass
class LabelledPhoto:
    source: str | Path | bytes
    expected: frozenset[int]  # bundle rows that are a correct answer; empty = the artwork is not in the bundle
    name: str
    # Rows made in part of the photographed picture (artworks.json ``sources``: feature-level collages of it):
    # neither a correct nor a wrong answer, so they are left out of the fit.
    related: frozenset[int] = frozenset()


def simulate_visitor_photo(rgb: np.ndarray, rng: np.random.Generator, out_side: int = 1024) -> bytes:
    """A phone photo of ``rgb`` hanging on a wall, as JPEG bytes. Deterministic for a given ``rng`` state."""
    h, w = rgb.shape[:2]
    # How much of the photo's frame the painting spans: log-uniform from a distant view of a gallery wall
    # (0.2) to a detail shot that shows only part of it (up to 2.5× the frame).
    fill = float(np.exp(rng.uniform(np.log(0.2), np.log(2.5 if rng.random() < 0.2 else 0.95))))
    photo_w, photo_h = (out_side, int(out_side * 0.75)) if rng.random() < 0.6 else (int(out_side * 0.75), out_side)
    scale = fill * min(photo_w / w, photo_h / h)
    cw, ch = w * scale, h * scale
    cx = photo_w / 2 + rng.uniform(-0.3, 0.3) * max(photo_w - cw, 0) + rng.uniform(-0.25, 0.25) * min(cw, photo_w)
    cy = photo_h / 2 + rng.uniform(-0.3, 0.3) * max(photo_h - ch, 0) + rng.uniform(-0.25, 0.25) * min(ch, photo_h)
    if rng.random() < 0.25:  # partial framing: the visitor stands close, part of the painting is cut off
        cx += rng.choice([-1, 1]) * rng.uniform(0.2, 0.4) * cw
    jitter = rng.uniform(-0.1, 0.1, size=(4, 2)) * np.array([cw, ch])
    angle = np.deg2rad(rng.uniform(-8, 8))
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    corners = np.array([[-cw / 2, -ch / 2], [cw / 2, -ch / 2], [cw / 2, ch / 2], [-cw / 2, ch / 2]]) + jitter
    dst = (corners @ rot.T + np.array([cx, cy])).astype(np.float32)
    src = np.array([[0, 0], [w, 0], [w, h], [0, h]], dtype=np.float32)
    homography = cv2.getPerspectiveTransform(src, dst)
    wall = rng.uniform(110, 235) + rng.uniform(-12, 12, size=3)  # muted gallery walls: greys, creams
    photo = cv2.warpPerspective(rgb, homography, (photo_w, photo_h), flags=cv2.INTER_AREA,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=tuple(float(v) for v in wall))
    return phone_effects(photo.astype(np.float32), rng)


def phone_effects(img: np.ndarray, rng: np.random.Generator) -> bytes:
    """What a phone adds to a framed view: white balance, exposure, sometimes spotlight glare, blur, noise and
    JPEG compression. ``img`` is float32 RGB ``[H, W, 3]`` in 0…255 (may be modified in place); returns JPEG
    bytes. Deterministic for a given ``rng`` state.

    Shared by :func:`simulate_visitor_photo` and the detail photos of ``artlens.eval.details``; the order of
    the ``rng`` draws is part of the contract (calibration, and so every bundle's threshold, depends on it).
    """
    photo_h, photo_w = img.shape[:2]
    img *= rng.uniform(0.85, 1.15, size=3) * rng.uniform(0.6, 1.25)  # white balance and exposure
    img += rng.uniform(-20, 20)
    if rng.random() < 0.4:  # glare from a gallery spotlight
        yy, xx = np.mgrid[0:photo_h, 0:photo_w]
        gx, gy, radius = rng.uniform(0, photo_w), rng.uniform(0, photo_h), rng.uniform(0.05, 0.15) * photo_w
        img += rng.uniform(60, 160) * np.exp(-((xx - gx) ** 2 + (yy - gy) ** 2) / (2 * radius**2))[..., None]
    sigma = rng.uniform(0, 1.8)
    if sigma > 0.3:
        img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.normal(0, rng.uniform(1, 7), size=img.shape)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(np.clip(img, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR),
                            [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(55, 92))])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    return jpeg.tobytes()


# A collection of fewer references is photographed several times over, up to this many photos (``count``
# allowing): a threshold chosen on the 8 photos of 8 near-identical copies lets another copy through.
MIN_PHOTOS = 64


RELATED_COLUMN = "related"  # collection CSV column: ;-separated ids of artworks this one shows part of


def artwork_sources(artwork: dict) -> list[str]:
    """The ids of the artworks this one is made in part of: artworks.json ``sources`` (feature-level artworks) or
    the collection's ``related`` column (a detail, a print, a collage of other artworks in the collection)."""
    if artwork.get("sources"):
        return list(artwork["sources"])
    value = (artwork.get("metadata") or {}).get(RELATED_COLUMN) or ""
    return [part.strip() for part in str(value).split(";") if part.strip()]


def related_rows(artworks: list[dict], only: Iterable[int] | None = None) -> dict[int, set[int]]:
    """Row → the other rows sharing picture content with it: the artworks it is made of, those made of it, and
    those made of the same artworks — through every level (a collage of a collage is made of the first one's
    sources too). A photo of one of them may rightly match the others, so calibration counts such a match neither
    right nor wrong. ``only``: the rows to relate (the photographed ones): at 10⁵ collages of a few hundred
    pictures each row is related to thousands, too many to hold for every row."""
    rows = {art["object_id"]: row for row, art in enumerate(artworks)}
    direct = {art["object_id"]: set(artwork_sources(art)) for art in artworks}
    made_of: dict[int, set[str]] = {}
    users: dict[str, set[int]] = {}  # object id → rows made in part of it
    for row, art in enumerate(artworks):
        sources, todo = set(), list(direct[art["object_id"]])
        while todo:  # what its sources are made of, and so on (a seen set: a cycle in the data ends here)
            source = todo.pop()
            if source not in sources and source != art["object_id"]:
                sources.add(source)
                todo.extend(direct.get(source, ()))
        if sources:
            made_of[row] = sources
            for source in sources:
                users.setdefault(source, set()).add(row)
    related: dict[int, set[int]] = {}
    for row in range(len(artworks)) if only is None else sorted(set(only)):
        ids = made_of.get(row, set()) | {artworks[row]["object_id"]}
        linked = {rows[i] for i in made_of.get(row, set()) if i in rows}
        for i in ids:
            linked |= users.get(i, set())
        linked.discard(row)
        if linked:
            related[row] = linked
    return related


def synthetic_photos(recognizer: Recognizer, count: int, seed: int) -> list[LabelledPhoto]:
    """``count`` simulated visitor photos of distinct references (all when fewer; a small collection's references
    again, in order, up to ``MIN_PHOTOS``), each labelled with the rows that show the same image. Only artworks
    built from an image are photographed (artworks made of features alone have none: eval/feature_distractors.py);
    the others still take part in every photo's search as wrong candidates."""
    bundle = recognizer.bundle
    rng = np.random.default_rng(seed)
    pictured = [row for row, art in enumerate(bundle.artworks) if art.get("image")]
    n_artworks = len(pictured)
    rows = sorted(pictured[i] for i in rng.choice(n_artworks, size=min(count, n_artworks), replace=False).tolist())
    if n_artworks:
        again = max(0, min(count, MIN_PHOTOS) - len(rows))
        rows += [row for _ in range(-(-again // n_artworks)) for row in pictured][:again]
    csv_path = Path(bundle.meta["collection"]["csv"])
    related = related_rows(bundle.artworks, only=rows)
    photos = []
    for row in rows:
        artwork = bundle.artworks[row]
        image = artwork["image"]
        rgb = load_collection_image(csv_path, image, max_side=1600)
        # The same image listed under several ids (prints, duplicates) is a correct answer under each of them.
        same_image_rows = frozenset(r for r in pictured if bundle.artworks[r]["image"] == image)
        photos.append(LabelledPhoto(simulate_visitor_photo(rgb, rng), same_image_rows,
                                    f"simulated photo of {artwork['object_id']}",
                                    frozenset(related.get(row, ())) - same_image_rows))
    return photos
