"""The exported DINOv2 model on ONNX Runtime: photo → L2-normalised global descriptor.

Shared by the offline index build and online recognition, so both preprocess identically
(the contract is docs/model-contract.md, written by ``artlens export``).
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from artlens.errors import ModelError
from artlens.hashing import file_sha256

POOLINGS = ("gem", "cls", "cls+mean", "mean")
GEOMETRIES = ("squash", "aspect", "center-crop")
GEM_P = 3.0
# The CPU build (the core dependency) and the CUDA build (the `gpu` extra) of ONNX Runtime: both install the one
# `onnxruntime` module, so exactly one of them should be installed.
ONNXRUNTIME_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu")
# Distributions whose versions can change results or speed: reported by tests and benchmarks.
KEY_LIBRARIES = ("numpy", "opencv-python-headless", "faiss-cpu", *ONNXRUNTIME_DISTRIBUTIONS, "pillow", "pillow-heif",
                 "litestar", "torch")

log = logging.getLogger("artlens.embedder")


@dataclass(frozen=True)
class ModelInfo:
    """What every result says about the model that produced it."""

    source: str
    pretrained: bool
    sha256: str
    embedding_dim: int
    pooling: str
    input_size: int
    geometry: str
    precision: str

    def public(self) -> dict:
        return {"id": self.source, "pretrained": self.pretrained, "sha256": self.sha256,
                "pooling": self.pooling, "input_size": self.input_size, "geometry": self.geometry,
                "precision": self.precision}


DEVICES = ("auto", "cpu", "cuda")


def requested_device() -> str:
    """ARTLENS_DEVICE: ``auto`` (CUDA when usable, else CPU), ``cpu``, or ``cuda`` (CUDA or refuse to start)."""
    device = os.environ.get("ARTLENS_DEVICE", "").strip().lower() or "auto"
    if device not in DEVICES:
        raise ModelError(f"ARTLENS_DEVICE={device!r}: choose one of {', '.join(DEVICES)}")
    return device


def cuda_problem() -> str | None:
    """Why ONNX Runtime cannot run on CUDA here, or None when its CUDA provider, the driver and a device answer.

    onnxruntime-gpu lists CUDAExecutionProvider even on machines without a GPU and then logs errors when
    asked for it; checking the driver first keeps CPU machines quiet.
    """
    import ctypes

    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return (f"this ONNX Runtime build ({ort.get_device()}) has no CUDA execution provider: install"
                " onnxruntime-gpu instead of onnxruntime")
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return "no NVIDIA driver (libcuda.so.1 cannot be loaded; with Docker, run with --gpus)"
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0 or count.value < 1:
        return "the NVIDIA driver answers but sees no CUDA device"
    return None


def gpu_usable() -> bool:
    """True only when ONNX Runtime has the CUDA provider *and* a CUDA driver with a device answers."""
    return requested_device() != "cpu" and cuda_problem() is None


def ort_threads_setting() -> int:
    """ARTLENS_ORT_THREADS: ONNX Runtime's intra-op threads (unset or 0: ONNX Runtime's default)."""
    raw = os.environ.get("ARTLENS_ORT_THREADS", "").strip() or "0"
    if not raw.isdigit():
        raise ModelError(f"ARTLENS_ORT_THREADS={raw[:20]!r}: give a whole number of threads (0: ONNX Runtime's"
                         " default)")
    return int(raw)


def library_versions(names: tuple[str, ...] = KEY_LIBRARIES) -> dict[str, str]:
    """Installed version of each named distribution; those not installed are left out."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def onnxruntime_distributions() -> list[str]:
    """Which ONNX Runtime builds are installed (normally one)."""
    return list(library_versions(ONNXRUNTIME_DISTRIBUTIONS))


def read_model_json(model_dir: Path) -> dict:
    meta_path = Path(model_dir) / "model.json"
    if not meta_path.is_file():
        raise ModelError(f"{model_dir}: no model.json — create a model with `artlens export dinov2 --out {model_dir}`"
                         " (add --random-init where no pretrained weights are available)")
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelError(f"{meta_path}: unreadable model.json ({exc})") from None
    for key in ("onnx", "input", "embedding_dim", "pretrained"):
        if key not in meta:
            raise ModelError(f"{meta_path}: missing key {key!r}; re-export the model")
    return meta


def open_session(onnx_path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime session as every model of ours runs: ARTLENS_DEVICE picks the provider, ARTLENS_ORT_THREADS
    (or ``threads``) caps the intra-op threads, idle threads do not spin. ModelError when it cannot start."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # warnings about unused initialisers etc. are noise for operators
    # ORT's idle threads spin after each run and starve the verification that follows on a small CPU:
    # turning it off halved verify time on 2 cores (docs/benchmarks.md) without slowing the forward.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    # ARTLENS_ORT_THREADS caps ONNX Runtime's intra-op threads for a whole deployment (0: ORT's default).
    threads = threads or ort_threads_setting()
    if threads:
        opts.intra_op_num_threads = threads
    providers = ["CPUExecutionProvider"]
    device = requested_device()
    problem = cuda_problem() if device != "cpu" else None
    if device == "cuda" and problem:
        raise ModelError(f"ARTLENS_DEVICE=cuda but CUDA is not usable: {problem}")
    if device != "cpu" and problem is None:
        providers.insert(0, "CUDAExecutionProvider")
    try:
        session = ort.InferenceSession(str(onnx_path), sess_options=opts, providers=providers)
    except Exception as exc:
        raise ModelError(f"{onnx_path}: ONNX Runtime cannot load the model ({exc})") from None
    started = session.get_providers()
    # ORT falls back to the CPU with only a log line when the CUDA provider fails to load (CUDA or cuDNN
    # libraries missing or of another major version): with ARTLENS_DEVICE=cuda that is a start-up error.
    if device == "cuda" and "CUDAExecutionProvider" not in started:
        raise ModelError("ARTLENS_DEVICE=cuda but ONNX Runtime could not start its CUDA execution provider"
                         " (see its log above: CUDA or cuDNN libraries missing or of another version than"
                         " this onnxruntime-gpu was built for)")
    if started[0] != providers[0]:
        log.warning("ONNX Runtime could not start %s; running on %s", providers[0], started[0])
    installed = onnxruntime_distributions()
    if len(installed) > 1:
        log.warning("both %s are installed: they share one module, so the one installed last runs; keep one"
                    " (README, GPU)", " and ".join(installed))
    return session


def checked_onnx_file(model_dir: Path, meta: dict, *, check_sha: bool = True, require_sha: bool = False) -> Path:
    """The ONNX file model.json names, present and (``check_sha``) matching its recorded sha256; ``require_sha``:
    a model.json without one is refused too."""
    onnx_path = model_dir / meta["onnx"].get("file", "model.onnx")
    if not onnx_path.is_file():
        raise ModelError(f"{onnx_path}: ONNX file missing; re-export the model")
    sha = meta["onnx"].get("sha256", "")
    if check_sha and (sha or require_sha) and (not sha or file_sha256(onnx_path) != sha):
        raise ModelError(f"{onnx_path}: sha256 does not match model.json (file changed or truncated); "
                         "re-export the model")
    return onnx_path


class Embedder:
    """ONNX Runtime session + the preprocessing and pooling the model was exported with."""

    def __init__(self, model_dir: str | Path, *, pooling: str | None = None, threads: int | None = None,
                 check_sha: bool = True) -> None:
        self.model_dir = Path(model_dir)
        meta = read_model_json(self.model_dir)
        onnx_path = checked_onnx_file(self.model_dir, meta, check_sha=check_sha)
        self.meta = meta
        inp = meta["input"]
        self.size = int(inp["size"])
        self.patch = int(inp.get("patch_size", 14))
        self.geometry = inp.get("geometry", "squash")
        if self.geometry not in GEOMETRIES:
            raise ModelError(f"{self.model_dir}: unknown input geometry {self.geometry!r}")
        self.mean = np.asarray(inp["mean"], dtype=np.float32).reshape(1, 1, 3)
        self.std = np.asarray(inp["std"], dtype=np.float32).reshape(1, 1, 3)
        self.pooling = pooling or meta.get("pooling", "gem")
        if self.pooling not in POOLINGS:
            raise ModelError(f"unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}")
        self.session = open_session(onnx_path, threads)
        self.providers = self.session.get_providers()
        self.input_name = meta["onnx"].get("input", "pixel_values")
        self.info = ModelInfo(
            source=str(meta.get("source", self.model_dir)), pretrained=bool(meta["pretrained"]),
            sha256=meta["onnx"].get("sha256", ""),
            embedding_dim=self.dim, pooling=self.pooling, input_size=self.size, geometry=self.geometry,
            precision=meta["onnx"].get("precision", "fp32"),
        )

    @property
    def execution_provider(self) -> str:
        """The ONNX Runtime execution provider this session runs on (e.g. CPUExecutionProvider)."""
        return self.providers[0]

    @property
    def dim(self) -> int:
        base = int(self.meta["embedding_dim"])
        return 2 * base if self.pooling == "cls+mean" else base

    # -- preprocessing -----------------------------------------------------------------------------------
    def input_shape(self, width: int, height: int) -> tuple[int, int]:
        """(height, width) the network sees for a photo of this size."""
        if self.geometry == "aspect":
            scale = self.size / max(width, height)
            return (max(self.patch, round(height * scale / self.patch) * self.patch),
                    max(self.patch, round(width * scale / self.patch) * self.patch))
        return self.size, self.size

    def preprocess(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [H, W, 3] → float32 [3, h, w], normalised as at export."""
        height, width = rgb.shape[:2]
        img = Image.fromarray(rgb)
        if self.geometry == "center-crop":
            scale = self.size / min(width, height)
            img = img.resize((max(self.size, round(width * scale)), max(self.size, round(height * scale))),
                             Image.Resampling.BICUBIC, reducing_gap=2.0)
            left = (img.width - self.size) // 2
            top = (img.height - self.size) // 2
            img = img.crop((left, top, left + self.size, top + self.size))
        else:
            out_h, out_w = self.input_shape(width, height)
            img = img.resize((out_w, out_h), Image.Resampling.BICUBIC, reducing_gap=2.0)
        arr = np.asarray(img, dtype=np.float32) / 255.0
        arr = (arr - self.mean) / self.std
        return np.ascontiguousarray(arr.transpose(2, 0, 1))

    # -- inference ---------------------------------------------------------------------------------------
    def forward(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Bare model call: float32 [B, 3, h, w] → (cls [B, D], patch tokens [B, N, D])."""
        cls, patches = self.session.run(None, {self.input_name: batch})
        return cls.astype(np.float32, copy=False), patches.astype(np.float32, copy=False)

    def pool(self, cls: np.ndarray, patches: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            out = cls
        elif self.pooling == "mean":
            out = patches.mean(axis=1)
        elif self.pooling == "cls+mean":
            out = np.concatenate([_l2(cls), _l2(patches.mean(axis=1))], axis=1)
        else:  # GeM over patch tokens (Radenović et al.); tokens are signed, so clamp as GeM does after ReLU
            out = np.power(np.mean(np.maximum(patches, 1e-6) ** GEM_P, axis=1), 1.0 / GEM_P)
        return _l2(out)

    def embed_arrays(self, images: list[np.ndarray], batch_size: int = 16) -> np.ndarray:
        """L2-normalised descriptors, float32 [len(images), dim]; batches images of equal input shape."""
        out = np.zeros((len(images), self.dim), dtype=np.float32)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, rgb in enumerate(images):
            groups.setdefault(self.input_shape(rgb.shape[1], rgb.shape[0]), []).append(i)
        for idx in groups.values():
            for start in range(0, len(idx), batch_size):
                chunk = idx[start : start + batch_size]
                batch = np.stack([self.preprocess(images[i]) for i in chunk])
                out[chunk] = self.pool(*self.forward(batch))
        return out


def _l2(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)
