"""Directories written whole: built in a sibling staging directory, then renamed over their destination.

A reader sees either the previous directory or the complete new one, never a half-written one. Light on purpose
(standard library only): the model exporters use it as well as the index builders.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def staging_directory(out: Path, label: str) -> Path:
    """A fresh hidden directory beside ``out`` (same file system, so renaming it over ``out`` is atomic)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{label}-", dir=out.parent))


def swap_into_place(staging: Path, out: Path) -> None:
    """Rename ``staging`` to ``out``; an existing ``out`` is replaced only now, when the new one is complete, and
    put back if the rename fails."""
    if not out.exists():
        os.replace(staging, out)
        return
    old = out.with_name(f".{out.name}.old-{uuid.uuid4().hex[:8]}")
    os.replace(out, old)
    try:
        os.replace(staging, out)
    except OSError:
        os.replace(old, out)  # the previous directory rather than nothing
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextmanager
def moved_into_place(staging: Path, out: Path) -> Iterator[Path]:
    """Fill ``staging`` inside the block; when it completes, ``staging`` replaces ``out`` (:func:`swap_into_place`).
    When the block or the swap fails, ``staging`` is removed and ``out`` is left as it was."""
    try:
        yield staging
        swap_into_place(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
