"""artlens.export — DINOv2 → ONNX + model.json (docs/model-contract.md).

Needs the ``export`` extra (torch, transformers, onnx). Importing this package does not import them, so the
``artlens`` CLI starts without them; they load when an export runs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from artlens.export.errors import ExportError

if TYPE_CHECKING:
    from artlens.export.dinov2 import CONFIG, export_dinov2
    from artlens.export.sam import export_sam

__all__ = ["CONFIG", "ExportError", "export_dinov2", "export_sam"]


def __getattr__(name: str) -> Any:
    if name in ("export_dinov2", "CONFIG"):
        from artlens.export import dinov2

        return getattr(dinov2, name)
    if name == "export_sam":
        from artlens.export import sam

        return sam.export_sam
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
