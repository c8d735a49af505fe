"""Descriptor votes: the scoring arithmetic, the vote index in a bundle (build, add, delete, upgrade of an older
bundle) and the shortlist that alternates votes with the VLAD ranking."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from artlens.indexing.store.bundle import load_bundle
from artlens.indexing.store.votes import descriptor_owner, vote_ranking, vote_scores
from artlens.recognition.rankings import alternate
from artlens.recognition.recognizer import Recognizer

from .conftest import SMVS, SMVS_SUBSET, needs_shared, write_collection


def test_vote_scores_reward_distinctive_matches_only():
    owner = np.array([0, 0, 1, 1, 2])  # reference descriptor → artwork row
    sims = np.array([[0.9, 0.8, 0.5],  # nearest two are artwork 0's; the nearest other (row 1) is 0.4 behind
                     [0.7, 0.69, 0.1],  # artwork 1 barely ahead of artwork 2: a weak vote
                     [0.6, 0.5, 0.4]])  # all three neighbours are artwork 1's: lead over the 3rd, a lower bound
    ids = np.array([[0, 1, 2], [2, 4, -1], [2, 3, 3]])
    scores = vote_scores(sims, ids, owner, rows=3)
    assert scores == pytest.approx([0.4, 0.01 + 0.2, 0.0])
    assert vote_scores(np.zeros((0, 3)), np.zeros((0, 3), int), owner, rows=3).tolist() == [0, 0, 0]


def test_alternate_takes_turns_without_repeats():
    assert alternate([5, 1, 2], [1, 7], 10) == [5, 1, 7, 2]
    assert alternate([5, 1, 2], [1, 7], 2) == [5, 1]
    assert alternate([], [3, 4], 5) == [3, 4]


def test_descriptor_owner_follows_offsets():
    assert descriptor_owner(np.array([0, 2, 2, 5])).tolist() == [0, 0, 2, 2, 2]


def _photo_descriptors(rec: Recognizer, path) -> np.ndarray:
    from artlens.imaging import load_image

    _, desc = rec._query_features(load_image(path, max_side=rec.feature_config["max_side"]).rgb)
    return desc


@needs_shared
def test_bundle_vote_index_finds_the_photographed_artwork(recognizer):
    bundle = recognizer.bundle
    assert bundle.votes is not None and bundle.votes.ntotal == bundle.features.offsets[-1]
    assert bundle.meta["votes"]["count"] == bundle.meta["counts"]["keypoints"]
    assert "votes.faiss" in bundle.meta["checksums"]
    owner = descriptor_owner(bundle.features.offsets)
    rows = {a["object_id"]: i for i, a in enumerate(bundle.artworks)}
    hits = 0
    for number in SMVS_SUBSET[:6]:  # real phone photos in the museum
        ranking = vote_ranking(bundle.votes, owner, _photo_descriptors(recognizer, SMVS / "query" / f"{number}.jpg"),
                               len(bundle.artworks), 5)
        hits += ranking[:1] == [rows[f"smvs-{number}"]]
    assert hits >= 5
    # metadata filters: an excluded artwork never comes back, whatever its votes
    desc = _photo_descriptors(recognizer, SMVS / "query" / "001.jpg")
    allowed = np.array([r for r in range(len(bundle.artworks)) if r != rows["smvs-001"]])
    assert rows["smvs-001"] not in vote_ranking(bundle.votes, owner, desc, len(bundle.artworks), 5, allowed=allowed)


@needs_shared
def test_add_and_delete_keep_the_vote_index_aligned(smvs_bundle, tmp_path, tiny_model):
    from artlens.embedder import Embedder
    from artlens.indexing.incremental import add_artwork, remove_artwork

    work = tmp_path / "bundle"
    shutil.copytree(smvs_bundle, work)
    bundle = add_artwork(load_bundle(work), Embedder(tiny_model), "smvs-030",
                         (SMVS / "reference" / "030.jpg").read_bytes(), {})
    assert bundle.votes.ntotal == bundle.features.offsets[-1] == bundle.meta["votes"]["count"]
    bundle = remove_artwork(bundle, "smvs-001")  # every later artwork's descriptor positions shift down
    assert bundle.votes.ntotal == bundle.features.offsets[-1]
    rec = Recognizer(bundle)
    owner = descriptor_owner(bundle.features.offsets)
    rows = {a["object_id"]: i for i, a in enumerate(bundle.artworks)}
    for object_id, photo in (("smvs-030", SMVS / "reference" / "030.jpg"), ("smvs-003", SMVS / "query" / "003.jpg")):
        ranking = vote_ranking(bundle.votes, owner, _photo_descriptors(rec, photo), len(bundle.artworks), 3)
        assert ranking[0] == rows[object_id], object_id
    assert rec.recognize(SMVS / "query" / "003.jpg").matches[0].object_id == "smvs-003"


@needs_shared
def test_index_votes_upgrades_a_bundle_built_without_one(tiny_model, tmp_path):
    from typer.testing import CliRunner

    from artlens.cli import app
    from artlens.indexing.build import build_bundle

    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg")} for n in SMVS_SUBSET[:6]]
    collection = write_collection(tmp_path / "collection.csv", rows)
    out = tmp_path / "old"
    build_bundle(tiny_model, collection, out, config={"votes": None})
    assert load_bundle(out).votes is None and "votes" not in load_bundle(out).meta
    res = CliRunner().invoke(app, ["index", "votes", "--index", str(out), "--photos", "12"])
    assert res.exit_code == 0, res.output
    bundle = load_bundle(out)  # checksums verified, counts checked
    assert bundle.votes.ntotal == bundle.features.offsets[-1] and bundle.meta["last_change"] == "vote index"
    assert bundle.meta["calibration"] is not None
    analysis = Recognizer(bundle).analyse(SMVS / "query" / "001.jpg")
    assert analysis.candidates[0].row == 0  # the vote ranking's best comes first in the shortlist
    result = Recognizer(bundle).recognize(SMVS / "query" / "001.jpg")
    assert result.matches and result.matches[0].object_id == "smvs-001"
    missing = CliRunner().invoke(app, ["index", "votes", "--index", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not an index bundle" in " ".join(missing.output.split())


@needs_shared
def test_a_vote_index_that_does_not_match_the_features_is_refused(smvs_bundle, tmp_path):
    import faiss

    from artlens.errors import BundleError
    from artlens.indexing.bundle_writer import write_meta
    from artlens.indexing.store.bundle import VOTES_FILE, read_meta

    work = tmp_path / "bundle"
    shutil.copytree(smvs_bundle, work)
    votes = faiss.read_index(str(work / VOTES_FILE))
    votes.remove_ids(faiss.IDSelectorRange(0, 10))
    faiss.write_index(votes, str(work / VOTES_FILE))
    write_meta(work, read_meta(work))  # fresh checksums: only the count check can catch it
    with pytest.raises(BundleError, match="vote index"):
        load_bundle(work)


class _ThreadsSeen:
    """A real vote index that notes the OpenMP thread count each of its searches ran with."""

    def __init__(self, index):
        self.index, self.ntotal, self.seen = index, index.ntotal, []

    def search(self, x, k, params=None):
        import faiss

        self.seen.append(faiss.omp_get_max_threads())
        return self.index.search(x, k, params=params)


@needs_shared
def test_vote_search_runs_on_one_openmp_thread_of_its_caller_only(recognizer):
    from concurrent.futures import ThreadPoolExecutor

    import faiss

    bundle = recognizer.bundle
    owner, rows = descriptor_owner(bundle.features.offsets), len(bundle.artworks)
    desc = _photo_descriptors(recognizer, SMVS / "query" / "003.jpg")
    index = _ThreadsSeen(bundle.votes)
    main_threads = faiss.omp_get_max_threads()

    def in_a_request_thread():
        faiss.omp_set_num_threads(3)  # what this thread's other OpenMP work uses
        one = vote_ranking(index, owner, desc, rows, 5)
        after = faiss.omp_get_max_threads()
        return one, after, vote_ranking(index, owner, desc, rows, 5, {"threads": 0})

    with ThreadPoolExecutor(1) as pool:
        one, after, library_default = pool.submit(in_a_request_thread).result()
    assert index.seen == [1, 3] and after == 3  # the search's own setting, then the thread's own again
    photographed = next(i for i, a in enumerate(bundle.artworks) if a["object_id"] == "smvs-003")
    assert one == library_default and one[0] == photographed
    assert faiss.omp_get_max_threads() == main_threads  # another thread's setting is not touched


def test_offset_owner_gives_the_rows_of_descriptor_owner():
    from artlens.indexing.store.votes import OffsetOwner

    offsets = np.array([0, 2, 2, 5, 9])
    positions = np.array([[0, 1, 2, 3], [4, 5, 8, 0]])
    assert OffsetOwner(offsets)[positions].tolist() == descriptor_owner(offsets)[positions].tolist()
    assert len(OffsetOwner(offsets)) == 9


def test_vote_index_encoding_follows_the_collection_size():
    from artlens.indexing.descriptor_votes import DEFAULT_CONFIG, _factory

    assert _factory(1164, 84_724, DEFAULT_CONFIG) == "IVF1164,SQ8"  # 91 artworks: the best measured margins
    assert _factory(12_000, 9_300_000, DEFAULT_CONFIG) == "IVF12000_HNSW32,PQ32x8"
    assert _factory(4096, 2_500_000, {**DEFAULT_CONFIG, "encoding": "SQ4"}) == "IVF4096,SQ4"
    with pytest.raises(ValueError, match="quantizer"):
        _factory(16, 1000, {**DEFAULT_CONFIG, "quantizer": "ivf"})


@needs_shared
def test_compressed_vote_index_still_finds_the_photographed_artwork(recognizer):
    """The encoding and quantizer of large collections (PQ, HNSW over the centroids), forced on the small bundle,
    added in chunks smaller than one artwork."""
    from artlens.indexing.descriptor_votes import build_vote_index

    bundle = recognizer.bundle
    index, desc = build_vote_index(bundle.features, {"compress_above": 0, "hnsw_above": 0, "add_chunk": 500})
    assert desc["factory"].endswith("_HNSW32,PQ32x8") and index.ntotal == bundle.features.offsets[-1]
    assert index.code_size == 32  # bytes per descriptor, against 128 for SQ8
    rows = {a["object_id"]: i for i, a in enumerate(bundle.artworks)}
    hits = 0
    for number in SMVS_SUBSET[:6]:
        ranking = vote_ranking(index, descriptor_owner(bundle.features.offsets),
                               _photo_descriptors(recognizer, SMVS / "query" / f"{number}.jpg"),
                               len(bundle.artworks), 5)
        hits += rows[f"smvs-{number}"] in ranking[:3]
    assert hits >= 5


def test_sq8_copy_keeps_the_lists_of_a_compressed_vote_index():
    """The uncompressed comparison of bench scale: same trained lists (each descriptor lands in the same list),
    SQ8 codes, every descriptor found again as its own nearest neighbour."""
    import faiss

    from artlens.indexing.descriptor_votes import build_vote_index, with_encoding
    from artlens.indexing.store.bundle import ReferenceFeatures
    from artlens.verification import matching_space

    rng = np.random.default_rng(3)
    centres = rng.integers(0, 200, (40, 128))
    descriptors = np.clip(centres[rng.integers(0, 40, 20_000)] + rng.integers(-20, 21, (20_000, 128)), 0, 255)
    features = ReferenceFeatures(np.zeros((20_000, 2), np.float32), descriptors.astype(np.uint8),
                                 np.array([0, 10_000, 20_000]), np.array([[100, 100], [100, 100]]), "rootsift")
    compressed, _ = build_vote_index(features, {"compress_above": 0, "hnsw_above": 0, "nlist": 64})
    copy, copy_desc = with_encoding(compressed, features)
    assert copy_desc == {"factory": "IVF64_HNSW32,SQ8", "nlist": 64, "count": 20_000} and copy.code_size == 128
    queries = np.ascontiguousarray(matching_space(descriptors[:300].astype(np.uint8), "rootsift"), np.float32)
    lists = [faiss.extract_index_ivf(i).quantizer.search(queries, 1)[1] for i in (compressed, copy)]
    assert np.array_equal(*lists)
    del compressed  # the copy owns its own quantizer
    _, found = copy.search(queries, 1, params=faiss.SearchParametersIVF(nprobe=4))
    assert (found[:, 0] == np.arange(300)).mean() > 0.95
    with pytest.raises(ValueError, match="SQ8"):
        with_encoding(copy, features, "PQ16")
