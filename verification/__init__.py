"""Geometric verification: local features, matching, RANSAC homography, evidence. Pure functions on arrays.

This package imports nothing else of artlens, so both the offline index build and online recognition use it.
"""

from .features import DEFAULT_CONFIG as FEATURE_CONFIG
from .features import LocalFeatures, extract, matching_space
from .verify import DEFAULT_CONFIG as VERIFY_CONFIG
from .verify import Verification, prepare, verify
from .vlad import DEFAULT_CONFIG as VLAD_CONFIG
from .vlad import Projection as VladProjection
from .vlad import aggregate as vlad_aggregate
from .vlad import compact as vlad_compact
from .vlad import encode as vlad_encode
from .vlad import fit_projection as fit_vlad_projection
from .vlad import projection_index as vlad_projection_index
from .vlad import region_masks as vlad_region_masks
from .vlad import split_index as vlad_split_index
from .vlad import train_vocabulary

__all__ = [
    "FEATURE_CONFIG", "VERIFY_CONFIG", "VLAD_CONFIG", "LocalFeatures", "Verification", "VladProjection", "extract",
    "fit_vlad_projection", "matching_space", "prepare", "train_vocabulary", "verify", "vlad_aggregate", "vlad_compact",
    "vlad_encode", "vlad_projection_index", "vlad_region_masks", "vlad_split_index",
]
