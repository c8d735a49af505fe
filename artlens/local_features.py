"""The one way local features are extracted for a bundle: RootSIFT (OpenCV, no weights) or a learned model.

A bundle records its features in bundle.json ``features`` (``config``: method, max_side, max_keypoints; for a
learned method also ``model``: the model's identity and the files of its copy inside the bundle,
:data:`LOCAL_MODEL_DIR`). :class:`FeatureExtractor` is built from that record, so reference images (index build,
admin adds), query photos and the second look at walls are all described by exactly the model the bundle was built
with. Learned descriptors come out quantised (``verification.features.quantise_unit``) on both sides, the way the
bundle stores them.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from artlens.config import with_defaults
from artlens.errors import BundleError, ModelError
from artlens.imaging import to_gray
from artlens.local_model import LocalFeatureModel, LocalModelInfo, read_local_model_json
from artlens.verification.features import DEFAULT_CONFIG as FEATURE_CONFIG
from artlens.verification.features import LEARNED_METHODS, LocalFeatures, extract, quantise_unit

# Where a bundle keeps its copy of a learned local-feature model (model.json + ONNX).
LOCAL_MODEL_DIR = "local_model"
METHODS = ("rootsift", *sorted(LEARNED_METHODS))
# The `artlens export local-features --model` that makes a model of each learned method (ALIKED has variants).
EXPORT_MODELS = {"aliked": "aliked-n16", "xfeat": "xfeat"}
# Descriptor matching per method: learned descriptors by mutual nearest neighbours (no ratio test); the OpenCV ones
# keep the ratio test of verification/matching.py.
LEARNED_MATCHING: dict = {"ratio": None, "mutual": True}


def is_learned(method: str) -> bool:
    return method in LEARNED_METHODS


def matching_config(method: str) -> dict | None:
    """The descriptor-matching settings a bundle of ``method`` features records (None: the verification default)."""
    return dict(LEARNED_MATCHING) if is_learned(method) else None


def checked_features(method: str, model_dir: Path | None) -> dict:
    """The build's ``features`` config for ``--features METHOD [--features-model DIR]`` (ModelError when they do not
    go together)."""
    if method not in METHODS:
        raise ModelError(f"--features must be one of {', '.join(METHODS)}, not {method!r}")
    if is_learned(method) and model_dir is None:
        raise ModelError(f"--features {method} needs --features-model DIR (`artlens export local-features --model"
                         f" {EXPORT_MODELS.get(method, method)} --out DIR`)")
    if not is_learned(method) and model_dir is not None:
        raise ModelError(f"--features-model is for learned features ({', '.join(sorted(LEARNED_METHODS))}), not"
                         f" {method}")
    return {"method": method, **({"model_dir": str(model_dir)} if model_dir is not None else {})}


def model_files(model_dir: Path) -> list[str]:
    """The files a local-feature model directory consists of (model.json first)."""
    meta = read_local_model_json(model_dir)
    return ["model.json", str(meta["onnx"].get("file", "model.onnx"))]


def bundle_model_files(meta: dict) -> list[str]:
    """Paths, relative to the bundle, of the local-feature model copy bundle.json records (none for RootSIFT)."""
    model = meta.get("features", {}).get("model")
    return [str(name) for name in model.get("files", [])] if isinstance(model, dict) else []


def install_model(model_dir: Path, bundle_dir: Path) -> list[str]:
    """Copy a local-feature model into ``bundle_dir`` (:data:`LOCAL_MODEL_DIR`); returns the copied files' paths
    relative to the bundle."""
    target = Path(bundle_dir) / LOCAL_MODEL_DIR
    target.mkdir(parents=True, exist_ok=True)
    copied = []
    for name in model_files(Path(model_dir)):
        shutil.copy2(Path(model_dir) / name, target / name)
        copied.append(f"{LOCAL_MODEL_DIR}/{name}")
    return copied


class FeatureExtractor:
    """Local features of an RGB image with a bundle's (or a build's) feature settings.

    ``config``: verification.features DEFAULT_CONFIG keys (``method``: rootsift | sift | orb | akaze | xfeat |
    aliked);
    ``model_dir``: the model directory of a learned method (``artlens export local-features``);
    ``threads``: its ONNX Runtime intra-op threads (default: ARTLENS_ORT_THREADS)."""

    def __init__(self, config: dict | None = None, model_dir: str | Path | None = None, *,
                 threads: int | None = None) -> None:
        self.config = with_defaults(FEATURE_CONFIG, config)
        self.method = str(self.config["method"])
        self.model: LocalFeatureModel | None = None
        if is_learned(self.method):
            if model_dir is None:
                raise ModelError(f"{self.method} local features need their model: pass --features-model DIR"
                                 f" (`artlens export local-features --model {EXPORT_MODELS.get(self.method)} --out"
                                 " DIR`)")
            self.model = LocalFeatureModel(model_dir, max_side=int(self.config["max_side"]),
                                           max_keypoints=int(self.config["max_keypoints"]), threads=threads)
            if self.model.method != self.method:
                raise ModelError(f"the local-feature model is {self.model.method!r}, the features asked for are"
                                 f" {self.method!r}")
        elif model_dir is not None:
            raise ModelError(f"{self.method} local features need no model; --features-model is for learned"
                             f" features ({', '.join(sorted(LEARNED_METHODS))})")

    @classmethod
    def for_bundle(cls, meta: dict, bundle_dir: str | Path) -> FeatureExtractor:
        """The extractor of the bundle whose bundle.json is ``meta``: a learned method runs the bundle's own copy."""
        config = meta["features"]["config"]
        if not is_learned(config["method"]):
            return cls(config)
        if not bundle_model_files(meta):
            raise BundleError(f"its {config['method']} local features record no model; rebuild the bundle",
                              path=bundle_dir)
        try:
            return cls(config, Path(bundle_dir) / LOCAL_MODEL_DIR)
        except (ModelError, ValueError) as exc:  # their messages name files on disk: only the kind is kept
            raise BundleError(f"its {config['method']} local-feature model cannot be loaded ({type(exc).__name__});"
                              " rebuild the bundle", path=bundle_dir) from None

    @property
    def info(self) -> LocalModelInfo | None:
        """The learned model's identity (None for OpenCV features)."""
        return None if self.model is None else self.model.info

    def record(self, files: list[str] | None = None) -> dict:
        """bundle.json ``features``: the settings, and for a learned method the model and its files in the bundle."""
        out: dict = {"config": dict(self.config), "learned": self.model is not None}
        if self.model is not None:
            out.update(model={**self.model.info.public(), "files": list(files or [])},
                       pretrained=self.model.info.pretrained, matching=matching_config(self.method))
        return out

    def extract(self, rgb: np.ndarray, max_side: int | None = None, max_keypoints: int | None = None
                ) -> LocalFeatures:
        """Keypoints and stored-form descriptors (uint8) of a uint8 RGB image; ``max_side``/``max_keypoints``
        override the configured ones (the second look at walls; a learned model gives at most the keypoints it was
        exported for)."""
        if self.model is not None:
            if max_keypoints is not None:  # the second look may ask for more than the graph's top-k returns
                max_keypoints = min(max_keypoints, self.model.model_max_keypoints)
            feats = self.model.extract(rgb, max_side, max_keypoints)
            return LocalFeatures(feats.keypoints, quantise_unit(feats.descriptors), feats.image_size, feats.method)
        given = {"max_side": max_side, "max_keypoints": max_keypoints}
        return extract(to_gray(rgb), {**self.config, **{k: v for k, v in given.items() if v is not None}})
