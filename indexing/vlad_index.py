"""The VLAD shortlist index of a build: visual vocabulary, PCA-whitening and the index of compact VLADs.

Everything here reads the references' descriptors one artwork (or one sample) at a time, so the build's memory
does not grow with the collection: the vocabulary trains on a seeded sample of descriptors, the PCA on the VLADs of
a seeded sample of artworks (all of them in collections of up to ``pca_artworks``), and the whole-image VLAD of
every artwork is compacted as soon as it is computed.
"""

from __future__ import annotations

import faiss
import numpy as np

from artlens.errors import CollectionError
from artlens.verification import matching_space

from . import vector_index, vocabulary
from .store import vlad
from .store.bundle import ReferenceFeatures

# Artworks whose whole and regional VLADs train the PCA: 6 VLADs of 16 384 floats each (0.6 GB) and an N × N Gram
# matrix; the build process peaked at 6.7 GB of anonymous memory in this stage at 100 000 artworks.
PCA_ARTWORKS = 1500
COMPACT_BATCH = 256  # whole-image VLADs projected at a time


def _space(features: ReferenceFeatures, start: int, stop: int) -> np.ndarray:
    return np.ascontiguousarray(matching_space(np.asarray(features.descriptors[start:stop]), features.method),
                                np.float32)


def _vocabulary_sample(features: ReferenceFeatures, cfg: dict) -> np.ndarray:
    """The descriptors ``train_vocabulary`` would sample from all of them (same seed, same rows)."""
    total = int(features.offsets[-1])
    if total <= cfg["train_sample"]:
        return _space(features, 0, total)
    pick = np.sort(np.random.default_rng(cfg["seed"]).choice(total, cfg["train_sample"], replace=False))
    return np.ascontiguousarray(matching_space(np.asarray(features.descriptors)[pick], features.method), np.float32)


def _vlads(features: ReferenceFeatures, row: int, words: np.ndarray) -> np.ndarray:
    """Row ``row``'s VLADs: the whole image, then its regions."""
    ref = features.get(row)
    desc = _space(features, int(features.offsets[row]), int(features.offsets[row + 1]))
    return vlad.aggregate_regions(desc, words, vlad.region_masks(ref.keypoints, ref.image_size))


def build_vlad_index(features: ReferenceFeatures, vlad_config: dict, index_config: dict,
                     pca_artworks: int = PCA_ARTWORKS) -> tuple[np.ndarray, faiss.Index, dict]:
    """Visual vocabulary + VLAD index: the shortlist that works without pretrained weights.

    The index holds PCA-whitened compact VLADs and carries the projection, so it is searched with raw VLADs. The
    PCA is learnt on the VLADs of the whole image and of the regions a query photo is split into."""
    if features.method in {"orb", "akaze"}:
        raise CollectionError("the VLAD shortlist needs float descriptors (rootsift or sift), not binary ones")
    visual_words = vocabulary.train_vocabulary(_vocabulary_sample(features, vlad_config), vlad_config)
    rows = len(features)
    sampled = np.arange(rows)
    if rows > pca_artworks:
        sampled = np.sort(np.random.default_rng(vlad_config["seed"]).choice(rows, pca_artworks, replace=False))
    whole, regional = [], []
    for row in sampled:
        row_vlads = _vlads(features, int(row), visual_words)
        whole.append(row_vlads[0])
        regional.extend(row_vlads[1:])
    samples = np.concatenate([np.stack(whole), np.stack(regional)]) if regional else np.stack(whole)
    sample_count = len(samples)
    projection = vocabulary.fit_projection(samples, len(visual_words), vlad_config)
    del samples, regional
    if len(sampled) == rows:
        compacted = vlad.compact(np.stack(whole), projection)
    else:
        del whole
        parts = []
        for start in range(0, rows, COMPACT_BATCH):
            batch = [_vlads(features, row, visual_words)[0] for row in range(start, min(rows, start + COMPACT_BATCH))]
            parts.append(vlad.compact(np.stack(batch), projection))
        compacted = np.concatenate(parts)
    inner, desc = vector_index.build_index(compacted, index_config)
    index = vlad.projection_index(projection, inner)
    desc.update(method="vlad", words=int(visual_words.shape[0]), vlad=vlad_config,
                projection=None if projection is None else {
                    "kind": "pca-whitening", "dims": projection.dims, "from_dim": int(visual_words.size),
                    "samples": sample_count})
    return visual_words, index, desc
