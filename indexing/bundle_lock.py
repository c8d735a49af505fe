"""Several processes sharing one bundle directory: a lock file beside it, and a cheap signature of its version.

Every admin write replaces the whole directory by a rename (artlens.files.moved_into_place), so writers of
different processes take the exclusive lock around "read the current version, write the next one"; a reader
loading a version takes the shared lock, so no rename happens while it opens the version's files by path.
The lock file lives beside the bundle, not inside it: the directory itself is replaced on every write.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from artlens.errors import BundleError

# (device, inode) of the directory and (inode, mtime, size) of its bundle.json: a rename over the path gives a new
# directory inode, an edit in place (calibration) a new bundle.json.
Signature = tuple[int, int, int, int, int]


def lock_file(bundle: str | os.PathLike[str]) -> Path:
    path = Path(bundle)
    return path.parent / f".{path.name}-lock"


def signature(bundle: str | os.PathLike[str]) -> Signature | None:
    """The identity of the bundle version at ``bundle`` now; None while there is none (mid-swap, or removed)."""
    try:
        directory = os.stat(bundle)
        meta = os.stat(Path(bundle) / "bundle.json")
    except OSError:
        return None
    return directory.st_dev, directory.st_ino, meta.st_ino, meta.st_mtime_ns, meta.st_size


@contextmanager
def bundle_lock(bundle: str | os.PathLike[str], *, shared: bool = False, timeout_s: float = 600.0) -> Iterator[bool]:
    """Hold the bundle's lock: exclusive for a writer, shared for a reader. Yields whether a lock is held: a reader
    on a read-only file system (no lock file can be made) goes without one, a writer there cannot write anyway.
    A lock not obtained within ``timeout_s`` is a BundleError (another process is stuck in a write)."""
    path = lock_file(bundle)
    fd = _open_lock(path, shared)
    if fd is None:
        yield False
        return
    try:
        mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise BundleError(f"another process has held the bundle's lock for over {timeout_s:.0f} s;"
                                      " try again later") from None
                time.sleep(0.05)
        yield True
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def _open_lock(path: Path, shared: bool) -> int | None:
    """The lock file's descriptor; None where there is nothing to lock (no such directory: loading or writing
    the bundle then fails with its own message) or, for a reader, no lock file can be made."""
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ENAMETOOLONG):
            return None
        if not shared:
            raise BundleError(f"cannot open the bundle's lock file ({exc.strerror or type(exc).__name__})",
                              path=path) from None
    try:
        return os.open(path, os.O_RDONLY)  # flock works on a descriptor opened for reading too
    except OSError:
        return None
