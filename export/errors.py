"""The one error type of the export stage: something the user can fix, shown as one line by the CLI."""

from artlens.errors import ArtlensError


class ExportError(ArtlensError):
    """Weights could not be loaded, the graph could not be exported, or ONNX disagrees with PyTorch."""

    code = "export_failed"
