"""Directories written whole (artlens.files): the new one replaces the old only when complete."""

import pytest

from artlens.files import moved_into_place, staging_directory


def _folder(path, text):
    path.mkdir()
    (path / "file.txt").write_text(text)
    return path


def test_a_finished_directory_replaces_the_old_one_and_leaves_nothing_beside_it(tmp_path):
    out = _folder(tmp_path / "out", "old")
    staging = staging_directory(out, "building")
    assert staging.parent == tmp_path and staging.name.startswith(".out.building-")
    with moved_into_place(staging, out):
        (staging / "file.txt").write_text("new")
    assert (out / "file.txt").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_failed_build_removes_its_staging_directory_and_keeps_the_old_one(tmp_path):
    out = _folder(tmp_path / "out", "old")
    staging = staging_directory(out, "building")
    with pytest.raises(KeyboardInterrupt), moved_into_place(staging, out):
        (staging / "file.txt").write_text("half")
        raise KeyboardInterrupt  # any exception, not only errors
    assert (out / "file.txt").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_a_new_destination_and_its_parents_are_created(tmp_path):
    out = tmp_path / "a" / "b" / "out"
    staging = staging_directory(out, "tmp")
    with moved_into_place(staging, out):
        (staging / "file.txt").write_text("new")
    assert (out / "file.txt").read_text() == "new"
