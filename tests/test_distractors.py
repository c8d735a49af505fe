"""Distractor artworks of the scale benchmark: real images kept once and only when they can be indexed, collages
that are the same image for the same number, and collections that name every image's source and licence."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from artlens.eval.distractors import collage, real_sources, write_collection, write_distractors

from .conftest import SMVS, needs_shared


def _debian_root(tmp_path, images: dict[str, Image.Image | str]):
    """A fake unpacked package: files under usr/share/backgrounds and the package's file list."""
    root = tmp_path / "debian"
    folder = root / "usr" / "share" / "backgrounds"
    folder.mkdir(parents=True)
    for name, image in images.items():
        if isinstance(image, str):
            shutil.copy(image, folder / name)
        else:
            image.save(folder / name)
    (root / "mate-backgrounds.list").write_text("".join(f"/usr/share/backgrounds/{n}\n" for n in images))
    return root


@needs_shared
def test_real_sources_keep_each_picture_once_and_only_pictures_with_detail(tmp_path):
    gradient = Image.fromarray(np.tile(np.linspace(0, 255, 600, dtype=np.uint8), (400, 1))).convert("RGB")
    root = _debian_root(tmp_path, {"a.jpg": str(SMVS / "reference" / "001.jpg"),
                                   "a-copy.jpg": str(SMVS / "reference" / "001.jpg"),  # the same picture again
                                   "b.jpg": str(SMVS / "reference" / "002.jpg"),
                                   "plain.png": gradient,  # a gradient wallpaper: no features to index
                                   "icon.png": Image.new("RGB", (64, 64))})
    sources = [s for s in real_sources(root, shared=tmp_path) if s.origin.startswith("Debian")]
    names = [s.path.name for s in sources]
    assert len(names) == 2 and names[1] == "b.jpg" and names[0] in ("a.jpg", "a-copy.jpg")
    assert {s.licence for s in sources} == {"GPL-2+"}


@needs_shared
def test_collages_are_reproducible_and_name_their_sources(tmp_path):
    root = _debian_root(tmp_path, {f"{n}.jpg": str(SMVS / "reference" / f"{n}.jpg")
                                   for n in ("001", "002", "003", "004", "005")})
    sources = [s for s in real_sources(root, shared=tmp_path) if s.origin.startswith("Debian")]
    one, used = collage(sources, 7, seed=0)
    again, used_again = collage(sources, 7, seed=0)
    assert used == used_again and 2 <= len(used) <= 4 and len(set(used)) == len(used)
    assert np.array_equal(np.asarray(one), np.asarray(again))
    assert not np.array_equal(np.asarray(one), np.asarray(collage(sources, 8, seed=0)[0]))
    assert max(one.size) <= 800

    rows = write_distractors(sources, 8, tmp_path / "work")
    assert [r["object_id"] for r in rows] == [f"distractor-{i:06d}" for i in range(8)]
    assert all("collage of Debian mate-backgrounds" in r["source"] for r in rows[5:])
    assert Image.open(rows[7]["image"]).size == one.size  # collage 7, drawn as above
    # a second run finds the collages on disk and describes them the same way
    assert write_distractors(sources, 8, tmp_path / "work") == rows

    collection = write_collection(tmp_path / "c.csv", SMVS / "collection.csv", rows)
    with open(collection, newline="") as fh:
        table = list(csv.DictReader(fh))
    assert len(table) == 91 + 8 and table[0]["source"] == "reference" and table[-1]["licence"] == "GPL-2+"
    assert table[-1]["related"] == ";".join(f"distractor-{u:06d}" for u in used)  # collage 7 names its sources


def test_too_few_real_images_is_a_clear_error(tmp_path):
    from artlens.errors import CollectionError

    with pytest.raises(CollectionError, match="only 0 real distractor images"):
        write_distractors([], 10, tmp_path)


def test_related_rows_link_collages_their_sources_and_each_other():
    from artlens.calibration.photos import related_rows

    artworks = [{"object_id": "a", "metadata": {"related": ""}},
                {"object_id": "b", "metadata": {}},
                {"object_id": "c", "metadata": {"related": "a; b"}},  # a collage of a and b
                {"object_id": "d", "metadata": {"related": "b"}},  # another cut from b
                {"object_id": "e", "sources": ["a"]},  # a feature-level artwork made of a
                {"object_id": "f", "metadata": {"related": "gone"}}]  # its source is not in the collection
    related = related_rows(artworks)
    assert related[0] == {2, 4}  # a photo of a may match what is cut from it
    assert related[1] == {2, 3}
    assert related[2] == {0, 1, 3, 4}  # its sources, and what shares a source with it
    assert related[3] == {1, 2}
    assert related[4] == {0, 2}
    assert 5 not in related


def test_related_rows_follow_collages_of_collages():
    """A feature-level artwork cut from a collage shares picture content with the collage's own sources: a photo
    of such a source may rightly match it (the 100,000-artwork benchmark's feature collages of image collages)."""
    from artlens.calibration.photos import related_rows

    artworks = [{"object_id": "a", "metadata": {}},
                {"object_id": "b", "metadata": {}},
                {"object_id": "c", "metadata": {"related": "a; b"}},  # an image collage of a and b
                {"object_id": "y", "sources": ["c"]},  # a feature-level artwork cut from c
                {"object_id": "z", "sources": ["z", "y"]},  # made of itself (bad data) and of y
                {"object_id": "q", "metadata": {}}]  # unrelated
    related = related_rows(artworks)
    assert related[0] == {2, 3, 4}  # a photo of a may match c, y (cut from c) and z (cut from y)
    assert related[3] == {0, 1, 2, 4}
    assert related[4] == {0, 1, 2, 3}
    assert 5 not in related
