"""Metadata filters → the bundle rows a search may return (applied inside the FAISS searches, not after them)."""

from __future__ import annotations

import numpy as np

from artlens.errors import ArtlensError
from artlens.indexing.store.bundle import Bundle


class FilterError(ArtlensError):
    """A metadata filter names a column the bundle does not index."""

    code = "bad_filter"


def metadata_columns(bundle: Bundle) -> list[str]:
    """Columns a filter may name: the collection's metadata columns plus any key an added artwork brought."""
    columns = list(bundle.meta.get("collection", {}).get("metadata_columns", []))
    for art in bundle.artworks:
        columns += [key for key in art["metadata"] if key not in columns]
    return columns


def allowed_rows(bundle: Bundle, filters: dict[str, str] | None) -> np.ndarray | None:
    """Rows whose metadata equals every filter value (case- and surrounding-space-insensitive); None: no filter.

    ``object_id`` may be filtered on as well. An empty result is a valid answer (nothing matches), an unknown
    column is a :class:`FilterError` naming the columns there are.
    """
    if not filters:
        return None
    columns = metadata_columns(bundle)
    unknown = [c for c in filters if c not in columns and c != "object_id"]
    if unknown:
        raise FilterError(f"unknown filter column {unknown[0]!r}; this index has: "
                          + ", ".join(["object_id", *columns]))
    wanted = {col: _norm(value) for col, value in filters.items()}
    rows = [i for i, art in enumerate(bundle.artworks)
            if all(_norm(art["object_id"] if col == "object_id" else art["metadata"].get(col, "")) == value
                   for col, value in wanted.items())]
    return np.asarray(rows, dtype=np.int64)


def _norm(value: str) -> str:
    return " ".join(str(value).split()).casefold()
