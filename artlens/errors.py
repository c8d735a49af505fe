"""Errors the user can act on. Each message names the input that was wrong and what to do."""

from __future__ import annotations

import os
from collections.abc import Mapping


class ArtlensError(Exception):
    """Base class: caught by the CLI and the HTTP service and shown as a message, never a traceback.

    ``path``: the file or directory the error is about. The message (``str``) names it for the CLI; ``reason``
    is the message without it, what the HTTP service may show a remote client."""

    code = "artlens_error"

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None) -> None:
        super().__init__(message if path is None else f"{os.fspath(path)}: {message}")
        self.reason = message


class ImageError(ArtlensError):
    """An input image could not be used (missing, not an image, truncated, too large, animated…)."""

    code = "bad_image"

    def __init__(self, source: str, reason: str, *, code: str | None = None) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason
        if code:
            self.code = code


class ModelError(ArtlensError):
    """A model directory is missing, incomplete or does not match what the bundle was built with."""

    code = "bad_model"


class BundleError(ArtlensError):
    """An index bundle is missing, incomplete, corrupted or was built for another model."""

    code = "bad_bundle"


class CollectionError(ArtlensError):
    """A collection CSV (or a queries CSV) is malformed."""

    code = "bad_collection"


class UnknownIdError(ArtlensError):
    """A segment id that the bundle does not hold."""

    code = "not_found"


class ArtworkNotFound(ArtlensError):
    """An object id that the index does not hold (raised by :func:`artwork_row` only)."""

    code = "artwork_not_found"


def artwork_row(rows: Mapping[str, int], object_id: str) -> int:
    """The bundle row of ``object_id`` (``rows``: object id → row); ArtworkNotFound when the index lacks it."""
    row = rows.get(object_id)
    if row is None:
        shown = object_id if len(object_id) <= 80 else object_id[:80] + "…"
        raise ArtworkNotFound(f"no artwork with id {shown!r} in this index")
    return row
