"""The footprint of a bundle: bundle.json ``footprint`` written by every writer, and ``artlens index info``.

Real builds with the tiny exported model over four SMVS references (global embeddings and a vote index stored),
uncalibrated: about a second each.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import faiss
import pytest
from typer.testing import CliRunner

from artlens.cli import app
from artlens.indexing.build import build_bundle
from artlens.indexing.incremental import remove_artwork
from artlens.indexing.store.bundle import load_bundle, read_meta
from artlens.indexing.store.footprint import compute_footprint
from artlens.indexing.store.vlad import split_index

from .conftest import SMVS, needs_shared, write_collection

pytestmark = needs_shared
runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory, tiny_model) -> Path:
    folder = tmp_path_factory.mktemp("footprint")
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in ("001", "003", "009", "019")]
    out = folder / "bundle"
    build_bundle(tiny_model, write_collection(folder / "collection.csv", rows), out, config={"shortlist": "fused"},
                 before_commit=None)
    return out


def file_sizes(directory: Path) -> dict[str, int]:
    return {p.relative_to(directory).as_posix(): p.stat().st_size for p in directory.rglob("*") if p.is_file()}


def by_name(footprint: dict) -> dict[str, dict]:
    return {row["name"]: row for row in footprint["components"]}


def test_disk_bytes_are_the_files_sizes_but_bundle_json(bundle):
    footprint = read_meta(bundle)["footprint"]
    sizes = file_sizes(bundle)
    counted = sum(size for name, size in sizes.items() if name != "bundle.json")
    assert footprint["total"]["disk_bytes"] == sum(r["disk_bytes"] for r in footprint["components"]) == counted
    assert footprint["not_counted"] == ["bundle.json"]
    listed = {name for row in footprint["components"] for name in row["files"]}
    assert listed == set(sizes) - {"bundle.json"}  # every file of the bundle is in some row, none twice missed
    rows = by_name(footprint)
    assert rows["local features (keypoints, descriptors)"]["disk_bytes"] == \
        sizes["features/keypoints.npy"] + sizes["features/descriptors.npy"]
    assert rows["renditions (JPEG)"]["disk_bytes"] == sum(s for n, s in sizes.items() if n.startswith("renditions/"))
    assert rows["VLAD PCA projection (in local_index.faiss)"]["disk_bytes"] \
        + rows["VLAD vectors (local_index.faiss)"]["disk_bytes"] == sizes["local_index.faiss"]
    assert "other files" not in rows


def test_ram_bytes_match_the_loaded_bundle(bundle):
    loaded = load_bundle(bundle)
    rows = by_name(loaded.meta["footprint"])
    assert rows["local features (keypoints, descriptors)"]["ram_bytes"] == 0  # memory-mapped
    assert rows["global embeddings"]["ram_bytes"] == 0
    assert rows["local feature rows (offsets, sizes)"]["ram_bytes"] == \
        loaded.features.offsets.nbytes + loaded.features.sizes.nbytes
    assert rows["vocabulary (visual words)"]["ram_bytes"] == loaded.vocabulary.nbytes
    assert rows["global index (index.faiss)"]["ram_bytes"] == len(faiss.serialize_index(loaded.index))
    projection, inner = split_index(loaded.local_index, len(loaded.vocabulary))
    pca = rows["VLAD PCA projection (in local_index.faiss)"]["ram_bytes"]
    assert pca == projection.matrix.nbytes + projection.bias.nbytes
    vlad = rows["VLAD vectors (local_index.faiss)"]["ram_bytes"]
    assert pca + vlad == len(faiss.serialize_index(loaded.local_index))
    assert vlad >= inner.sa_code_size() * inner.ntotal  # the codes, plus the serialization's headers
    centroids = rows["descriptor votes: coarse centroids (in votes.faiss)"]["ram_bytes"]
    assert centroids == faiss.extract_index_ivf(loaded.votes).quantizer.ntotal * loaded.votes.d * 4
    votes = rows["descriptor votes (votes.faiss)"]["ram_bytes"]
    assert centroids + votes == len(faiss.serialize_index(loaded.votes))
    ivf = faiss.extract_index_ivf(loaded.votes)
    assert votes >= (ivf.code_size + 8) * ivf.ntotal  # every descriptor's code and id in the inverted lists
    assert rows["renditions (JPEG)"]["ram_bytes"] == 0


def test_per_artwork_is_total_over_artworks_and_fixed_costs_apart(bundle):
    footprint = read_meta(bundle)["footprint"]
    assert footprint["artworks"] == 4
    growing = [r for r in footprint["components"] if r["kind"] == "per_artwork"]
    fixed = [r for r in footprint["components"] if r["kind"] == "fixed"]
    assert {r["name"] for r in fixed} == {"vocabulary (visual words)", "VLAD PCA projection (in local_index.faiss)",
                                          "descriptor votes: coarse centroids (in votes.faiss)"}
    for row in growing:
        assert row["disk_per_artwork"] == row["disk_bytes"] / 4 and row["ram_per_artwork"] == row["ram_bytes"] / 4
    for row in fixed:
        assert row["disk_per_artwork"] is None and row["ram_per_artwork"] is None
    for key in ("disk_bytes", "ram_bytes"):
        assert footprint["per_artwork"][key] == sum(r[key] for r in growing) / 4
        assert footprint["fixed"][key] == sum(r[key] for r in fixed)
        assert footprint["total"][key] == footprint["fixed"][key] + sum(r[key] for r in growing)


def test_an_admin_change_refreshes_the_footprint(bundle, tmp_path):
    work = tmp_path / "bundle"
    shutil.copytree(bundle, work)
    changed = remove_artwork(load_bundle(work), "smvs-003")
    footprint = changed.meta["footprint"]
    assert footprint["artworks"] == 3 and read_meta(work)["footprint"] == footprint
    sizes = file_sizes(work)
    assert footprint["total"]["disk_bytes"] == sum(size for name, size in sizes.items() if name != "bundle.json")
    assert footprint["total"]["disk_bytes"] < read_meta(bundle)["footprint"]["total"]["disk_bytes"]


def test_index_info_prints_the_table_and_json(bundle):
    result = runner.invoke(app, ["index", "info", "--index", str(bundle)], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for text in ("4 artworks", "artlens/dinov2-tiny", "rootsift", "calibration none", "Footprint (bundle.json",
                 "descriptor votes (votes.faiss)", "VLAD PCA projection", "renditions (JPEG)", "per artwork",
                 "not counted: bundle.json"):
        assert text in result.output
    result = runner.invoke(app, ["index", "info", "--index", str(bundle), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    meta = read_meta(bundle)
    assert info["footprint"] == meta["footprint"] and info["footprint_source"] == "bundle.json"
    assert info["artworks"] == 4 and info["features"]["method"] == "rootsift" and info["threshold"] is None
    assert info["global_embedding"] is True and info["descriptors"] == meta["votes"]["count"]
    assert info["manifest_bytes"] == (bundle / "bundle.json").stat().st_size


def test_an_older_bundle_without_footprint_gets_one_computed(bundle, tmp_path):
    work = tmp_path / "older"
    shutil.copytree(bundle, work)
    meta = json.loads((work / "bundle.json").read_text())
    recorded = meta.pop("footprint")
    (work / "bundle.json").write_text(json.dumps(meta))  # bundle.json is not checksummed: the bundle still loads
    load_bundle(work)
    result = runner.invoke(app, ["index", "info", "--index", str(work), "--json"])
    assert result.exit_code == 0, result.output
    info = json.loads(result.output)
    assert info["footprint_source"] == "computed from the files" and info["footprint"] == recorded
    assert compute_footprint(work, meta, 4) == recorded
    table = runner.invoke(app, ["index", "info", "--index", str(work)], env={"COLUMNS": "200"})
    assert table.exit_code == 0 and "Footprint (computed from the files" in table.output


@pytest.mark.parametrize("make", ["missing", "empty", "file", "bad_json"])
def test_not_a_bundle_is_one_error_line(tmp_path, make):
    target = tmp_path / "target"
    if make == "empty":
        target.mkdir()
    elif make == "file":
        target.write_text("not a bundle")
    elif make == "bad_json":
        target.mkdir()
        (target / "bundle.json").write_text("{")
    result = runner.invoke(app, ["index", "info", "--index", str(target)], env={"COLUMNS": "400"})
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_segments_split_into_ram_and_memory_mapped(segment_bundle):
    loaded = load_bundle(segment_bundle)
    footprint = loaded.meta["footprint"]
    rows, store = by_name(footprint), loaded.segments
    sizes = file_sizes(segment_bundle)
    assert footprint["total"]["disk_bytes"] == sum(size for name, size in sizes.items() if name != "bundle.json")
    in_ram = store.artwork.nbytes + store.local.nbytes + len(faiss.serialize_index(store.local_index))
    if store.index is not None:
        in_ram += len(faiss.serialize_index(store.index))
    assert rows["segments: RAM arrays and indexes"]["ram_bytes"] == in_ram
    assert rows["segments: PCA projection"]["ram_bytes"] == store.pca_mean.nbytes + store.pca_components.nbytes
    assert rows["segments: PCA projection"]["kind"] == "fixed"
    assert rows["segments: records (segments.json)"]["disk_bytes"] == sizes["segments/segments.json"]
    mapped = [name for name in sizes if name.startswith(("segments/vectors", "segments/detail_"))]
    if mapped:
        row = rows["segments: memory-mapped (vectors, detail features)"]
        assert row["ram_bytes"] == 0 and row["disk_bytes"] == sum(sizes[name] for name in mapped)
