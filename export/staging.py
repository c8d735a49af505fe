"""Where an export writes before its model directory is moved into place."""

from pathlib import Path

from artlens.files import staging_directory

from .errors import ExportError


def export_staging(out: Path) -> Path:
    """A staging directory beside ``out``, readable by everyone (mkdtemp makes it private; a model is meant to be
    shared); a place that cannot be written is named as the user's to fix."""
    try:
        tmp = staging_directory(out, "tmp")
        tmp.chmod(0o755)
    except OSError as exc:
        raise ExportError(f"--out {out}: cannot write next to it ({exc.strerror or exc})") from exc
    return tmp
