"""Feature-level distractor artworks: an image-built bundle extended to many more artworks without images.

Each new artwork is a collage made of local features instead of pixels: two to four pieces, each a random crop of
the keypoints and descriptors of a random *distractor* artwork of the image bundle (never a reference of the
evaluation set), its keypoints moved by a random homography (a quarter turn, mild perspective, rotation, scale) into
its cell of a new canvas, its descriptors perturbed in their stored uint8 SIFT form by noise as large as the
difference between a reference descriptor and its match in a real phone photo, and the whole capped at the build's
``max_keypoints``. Quarter turns, rotation and scale move keypoints without changing SIFT descriptors (they are
normalised to the keypoint's orientation and scale), so a piece is what the detector would find on that crop of
the picture, re-photographed. Mirroring is left out: it would change the descriptors in a way that cannot be
computed from them.

The extended bundle is written by the build's own merge (``shards.load_shards``, memory-mapped into the bundle's
feature files) and indexes (VLAD vocabulary and PCA, vote index, global index) trained on the whole extended
collection, then calibrated on simulated photos of the artworks that have an image. The new artworks have no
image and no rendition; a global embedding (where the bundle stores them) is the mean of the pieces' sources'
embeddings weighted by the keypoints each piece keeps.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from artlens.calibration.calibrate import calibrate_bundle
from artlens.config import with_defaults
from artlens.errors import ArtlensError
from artlens.files import moved_into_place
from artlens.indexing import bundle_writer, descriptor_votes, renditions, shards, vector_index, vlad_index
from artlens.indexing.store.bundle import Bundle, ReferenceFeatures, load_bundle
from artlens.verification import LocalFeatures

from .distractors import _plan

ID_PREFIX = "feature-"
REFERENCE_PREFIX = "smvs-"  # the evaluation set's references: never a source of a distractor
SHARD_ARTWORKS = 256  # new artworks generated per shard file (the unit kept on disk until the merge)
# L2 distance, in the stored uint8 SIFT form, between a reference descriptor and the descriptor of its geometric
# inlier in a real SMVS phone photo: quantiles 10, 25, 50, 75, 90 % of the 6 922 inlier matches in 44 of the 46
# photos (:func:`measure_match_noise`; SIFT vectors have norm 512). Each new descriptor draws its distance from
# this distribution (before rounding and clipping into uint8, which shorten it a little).
MATCH_DISTANCE_QUANTILES = (0.10, 0.25, 0.50, 0.75, 0.90)
MATCH_DISTANCES = (84.8, 110.9, 150.2, 196.7, 241.0)
METHODS = ("rootsift", "sift")  # uint8 gradient histograms: the noise above is measured on them

Progress = Callable[[str, int, int], None]


def source_rows(artworks: list[dict], reference_prefix: str = REFERENCE_PREFIX) -> list[int]:
    """Rows that may lend features: artworks built from an image that are not references of the evaluation set."""
    return [row for row, art in enumerate(artworks)
            if art.get("image") and not str(art["object_id"]).startswith(reference_prefix)]


def perturb(descriptors: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Descriptors moved by a random direction over a distance drawn from :data:`MATCH_DISTANCES`, rounded and
    clipped back into uint8."""
    if not len(descriptors):
        return descriptors.astype(np.uint8)
    distance = np.interp(rng.uniform(0, 1, len(descriptors)), (0.0, *MATCH_DISTANCE_QUANTILES, 1.0),
                         (0.5 * MATCH_DISTANCES[0], *MATCH_DISTANCES, 1.2 * MATCH_DISTANCES[-1]))
    direction = rng.normal(size=descriptors.shape)
    direction /= np.maximum(np.linalg.norm(direction, axis=1, keepdims=True), 1e-9)
    moved = descriptors.astype(np.float32) + (direction * distance[:, None]).astype(np.float32)
    return np.clip(np.rint(moved), 0, 255).astype(np.uint8)


def piece_homography(crop: tuple[float, float, float, float], cell: tuple[float, float, float, float],
                     quarter_turns: int, rng: np.random.Generator) -> np.ndarray:
    """Crop (source pixels) → cell (canvas pixels): ``quarter_turns`` turns (the crop has the cell's aspect ratio
    once turned), corners jittered by up to 6 % of the cell (mild perspective), a rotation of up to 10° and a scale
    of 0.85–1 about the cell's centre."""
    x0, y0, x1, y1 = crop
    corners = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float32)
    corners = np.roll(corners, quarter_turns, axis=0)
    cx0, cy0, cx1, cy1 = cell
    size = np.array([cx1 - cx0, cy1 - cy0], np.float32)
    target = np.array([[cx0, cy0], [cx1, cy0], [cx1, cy1], [cx0, cy1]], np.float32)
    target += (rng.uniform(-0.06, 0.06, size=(4, 2)) * size).astype(np.float32)
    warp = cv2.getPerspectiveTransform(corners, target)
    centre = np.array([(cx0 + cx1) / 2, (cy0 + cy1) / 2])
    angle, scale = np.deg2rad(rng.uniform(-10, 10)), rng.uniform(0.85, 1.0)
    turn = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]) * [
        [scale], [scale], [1]]
    to_centre, back = np.eye(3), np.eye(3)
    to_centre[:2, 2], back[:2, 2] = -centre, centre
    return back @ turn @ to_centre @ warp


def feature_artwork(features: ReferenceFeatures, sources: list[int], number: int, seed: int, max_side: int,
                    max_keypoints: int) -> tuple[LocalFeatures, list[tuple[int, tuple[int, ...], int]]]:
    """Artwork ``number``'s features (deterministic in ``seed`` and ``number``) and its pieces: (source row, crop in
    source pixels, keypoints kept)."""
    rng, width, height, layout, picks = _plan(len(sources), number, seed + 7919, max_side)
    keypoints, descriptors, pieces = [], [], []
    for (u0, v0, u1, v1), pick in zip(layout, picks, strict=True):
        row = sources[pick]
        source = features.get(row)
        w, h = source.image_size
        cell = (u0 * width, v0 * height, u1 * width, v1 * height)
        turns = int(rng.integers(0, 4))
        aspect = (cell[2] - cell[0]) / max(cell[3] - cell[1], 1e-6)
        aspect = aspect if turns % 2 == 0 else 1 / aspect  # of the crop: the cell's once turned
        area = float(rng.uniform(0.2, 0.6))  # of the source
        cw = min(w, np.sqrt(area * w * h * aspect))
        ch = min(h, max(1.0, cw / aspect))
        x, y = float(rng.uniform(0, w - cw)), float(rng.uniform(0, h - ch))
        crop = (x, y, x + cw, y + ch)
        inside = ((source.keypoints[:, 0] >= x) & (source.keypoints[:, 0] < x + cw)
                  & (source.keypoints[:, 1] >= y) & (source.keypoints[:, 1] < y + ch))
        homography = piece_homography(crop, cell, turns, rng)
        moved = cv2.perspectiveTransform(source.keypoints[inside].reshape(-1, 1, 2).astype(np.float64),
                                         homography).reshape(-1, 2) if inside.any() else np.zeros((0, 2))
        # The rotated, jittered piece may reach past its cell: what falls outside is hidden by its neighbours.
        kept = ((moved[:, 0] >= cell[0]) & (moved[:, 0] < cell[2]) & (moved[:, 1] >= cell[1])
                & (moved[:, 1] < cell[3]))
        keypoints.append(moved[kept].astype(np.float32))
        descriptors.append(perturb(source.descriptors[inside][kept], rng))
        pieces.append((row, tuple(round(v) for v in crop), int(kept.sum())))
    kp, desc = np.concatenate(keypoints), np.concatenate(descriptors)
    if len(kp) > max_keypoints:  # the detector's cap: a random subset (the sources' responses are not stored)
        keep = np.sort(rng.choice(len(kp), max_keypoints, replace=False))
        kp, desc = kp[keep], desc[keep]
        counts = np.bincount(np.searchsorted(np.cumsum([p[2] for p in pieces]), keep, side="right"),
                             minlength=len(pieces))
        pieces = [(r, c, int(n)) for (r, c, _), n in zip(pieces, counts, strict=True)]
    return LocalFeatures(kp, desc, (width, height), features.method), pieces


def _embedding(bundle: Bundle, pieces: list) -> np.ndarray:
    weights = np.array([max(n, 1) for _, _, n in pieces], np.float32)
    mixed = (np.asarray(bundle.embeddings)[[r for r, _, _ in pieces]] * weights[:, None]).sum(axis=0)
    return (mixed / max(float(np.linalg.norm(mixed)), 1e-9)).astype(np.float32)


def _index_config(description: dict) -> dict:
    """The source build's index setting, as its bundle.json records it."""
    return {"exact_below": description["exact_below"]} if "exact_below" in description else {}


def _link_renditions(source: Path, staging: Path, artworks: list[dict]) -> None:
    """The image artworks' renditions, hard-linked where the file system allows (they are immutable, named by
    content), copied otherwise."""
    for rel in renditions.stored_files(artworks):
        target = staging / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source / rel, target)
        except OSError:
            shutil.copyfile(source / rel, target)


def extend_bundle(source_dir: str | Path, out: str | Path, total: int, *, seed: int = 0,
                  reference_prefix: str = REFERENCE_PREFIX, calibration: dict | None = None,
                  votes_config: dict | None = None, progress: Progress | None = None) -> dict:
    """The bundle at ``source_dir`` plus feature-level artworks up to ``total`` artworks, built and calibrated into
    ``out`` (replaced atomically); returns a record of what was built and how long each part took."""
    started = time.perf_counter()
    source_dir, out = Path(source_dir), Path(out)
    # Only the source's features, embeddings and artworks are read: its indexes are retrained on the whole.
    bundle = dataclasses.replace(load_bundle(source_dir), index=None, votes=None)
    meta, method = bundle.meta, bundle.features.method
    count = total - len(bundle.artworks)
    if count <= 0:
        raise ArtlensError(f"the bundle already holds {len(bundle.artworks)} artworks; nothing to add for {total}")
    if method not in METHODS:
        raise ArtlensError(f"feature-level distractors need {' or '.join(METHODS)} descriptors, not {method}")
    if meta.get("segments"):
        raise ArtlensError("feature-level distractors have no segments: extend a bundle built without --segments")
    sources = source_rows(bundle.artworks, reference_prefix)
    if len(sources) < 4:
        raise ArtlensError(f"only {len(sources)} distractor artworks with an image in the bundle; at least 4 are"
                           f" needed (artworks whose id starts with {reference_prefix!r} are never used)")
    feature_config = meta["features"]["config"]
    tick = progress or (lambda stage, done, total: None)
    bundle_writer.check_replaceable(out)
    staging = bundle_writer.staging_dir(out)
    with moved_into_place(staging, out):
        shard_dir = staging / shards.SHARD_DIR
        plan = [range(s, min(count, s + SHARD_ARTWORKS)) for s in range(0, count, SHARD_ARTWORKS)]
        for index, numbers in enumerate(plan):
            result = shards.ShardResult(index, rows=len(numbers))
            vectors = []
            for number in numbers:
                feats, pieces = feature_artwork(bundle.features, sources, number, seed, int(feature_config["max_side"]),
                                                int(feature_config["max_keypoints"]))
                result.features.append(feats)
                result.artworks.append({
                    "object_id": f"{ID_PREFIX}{number:06d}", "width": feats.image_size[0],
                    "height": feats.image_size[1],
                    # Calibration leaves this artwork out of the answers judged for a photo of a source.
                    "sources": sorted({bundle.artworks[r]["object_id"] for r, _, _ in pieces}),
                    "metadata": {"source": "feature-level collage of " + "; ".join(
                        f"{bundle.artworks[r]['object_id']} crop {list(c)} ({n} keypoints)" for r, c, n in pieces)}})
                if bundle.embeddings is not None:
                    vectors.append(_embedding(bundle, pieces))
                tick("feature artworks", number + 1, count)
            if vectors:
                result.embeddings = np.stack(vectors)
            shards.write_shard(shard_dir, result, method)
        generated = time.perf_counter() - started
        head = shards.MergedShards(bundle.artworks, [], bundle.features, bundle.embeddings)
        merged = shards.load_shards(shard_dir, len(plan), method, bundle.embeddings is not None,
                                    into=staging / "features", head=head)
        shutil.rmtree(shard_dir)
        _link_renditions(source_dir, staging, bundle.artworks)
        merge_s = time.perf_counter() - started - generated
        tick("index", 0, 1)
        index, index_desc = None, None
        if merged.embeddings is not None:
            index, index_desc = vector_index.build_index(merged.embeddings, _index_config(meta["index"]))
        visual_words, local_index, local_desc = vlad_index.build_vlad_index(
            merged.features, meta["local_index"]["vlad"], _index_config(meta["local_index"]))
        votes, votes_desc = None, None
        if meta.get("votes"):
            t_votes = time.perf_counter()
            votes, votes_desc = descriptor_votes.build_vote_index(
                merged.features, with_defaults(descriptor_votes.DEFAULT_CONFIG, votes_config))
            votes_desc["build_s"] = round(time.perf_counter() - t_votes, 2)
        tick("index", 1, 1)
        indexed_s = time.perf_counter() - started - generated - merge_s
        record = {"from_images": len(bundle.artworks), "from_features": count, "seed": seed,
                  "source_bundle": str(source_dir), "source_artworks": len(sources),
                  "match_distances": dict(zip([f"q{round(q * 100)}" for q in MATCH_DISTANCE_QUANTILES],
                                              MATCH_DISTANCES, strict=True))}
        new_meta = {key: value for key, value in meta.items() if key not in ("checksums", "footprint", "version")}
        new_meta.update(
            created=datetime.now(UTC).isoformat(timespec="seconds"), calibration=None, index=index_desc,
            local_index=local_desc, counts={"artworks": len(merged.artworks),
                                            "keypoints": int(merged.features.offsets[-1])},
            renditions=renditions.describe(staging, merged.artworks), feature_distractors=record)
        if votes_desc:
            new_meta["votes"] = votes_desc
        bundle_writer.write_bundle_files(staging, new_meta, merged.artworks, merged.embeddings, index,
                                         merged.features, visual_words, local_index, votes)
        del merged, votes, local_index, index
        t_calibrate = time.perf_counter()
        calibrate_bundle(staging, config=calibration,
                         progress=lambda done, of: tick("calibration", done, of))
        calibrate_s = time.perf_counter() - t_calibrate
    return {**record, "artworks": total, "generate_s": round(generated, 2), "merge_s": round(merge_s, 2),
            "index_s": round(indexed_s, 2), "calibrate_s": round(calibrate_s, 2),
            "build_s": round(time.perf_counter() - started, 2)}


def measure_match_noise(collection_csv: Path, queries_csv: Path) -> dict:
    """How far a real photo moves a reference's descriptors: the L2 distance, in the stored uint8 form, between
    each reference descriptor and its geometric inlier in every labelled photo (ratio-test matches, then the
    verification's homography). Gives :data:`MATCH_DISTANCES`."""
    from artlens.calibration.queries import read_queries
    from artlens.imaging import load_image
    from artlens.indexing.collection import read_collection, resolve_image
    from artlens.local_features import FeatureExtractor
    from artlens.verification import FEATURE_CONFIG, geometry, matching
    from artlens.verification.verify import DEFAULT_CONFIG as VERIFY_CONFIG
    from artlens.verification.verify import prepare

    extractor = FeatureExtractor(FEATURE_CONFIG)
    collection = read_collection(collection_csv)
    images = {row.object_id: resolve_image(collection.path, row.image) for row in collection.rows}
    distances, per_photo = [], []
    for _, photo, expected in read_queries(queries_csv):
        if not expected:
            continue
        query = extractor.extract(load_image(Path(photo).read_bytes()).rgb)
        ref = extractor.extract(load_image(Path(images[sorted(expected)[0]]).read_bytes()).rgb)
        pairs = matching.match_float(prepare(query), prepare(ref), VERIFY_CONFIG["matching"])
        if len(pairs) < 8:
            continue
        _, inliers = geometry.estimate_homography(ref.keypoints[pairs[:, 1]], query.keypoints[pairs[:, 0]],
                                                  query.image_size, VERIFY_CONFIG["geometry"])
        if inliers is None or inliers.sum() < 8:
            continue
        good = pairs[np.asarray(inliers, bool)]
        q = query.descriptors[good[:, 0]].astype(np.uint8).astype(np.float32)
        r = ref.descriptors[good[:, 1]].astype(np.uint8).astype(np.float32)
        distances.append(np.linalg.norm(q - r, axis=1))
        per_photo.append(len(good))
    found = np.concatenate(distances)
    return {"matches": len(found), "photos": len(per_photo),
            "quantiles": {f"q{round(q * 100)}": round(float(np.quantile(found, q)), 1)
                          for q in MATCH_DISTANCE_QUANTILES},
            "mean_norm": round(float(np.mean(np.linalg.norm(r, axis=1))), 1)}
