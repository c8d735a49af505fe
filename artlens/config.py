"""Stage settings are plain dicts: a module's ``DEFAULT_CONFIG`` with a caller's overrides on top."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def with_defaults(defaults: Mapping[str, Any], *overrides: Mapping[str, Any] | None) -> dict[str, Any]:
    """A new dict: ``defaults``, then each of ``overrides`` in turn (None skipped). One level deep: a nested dict
    given in an override replaces the default's nested dict whole."""
    merged = dict(defaults)
    for override in overrides:
        merged.update(override or {})
    return merged
