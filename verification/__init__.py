"""Geometric verification: local features, matching, RANSAC homography, evidence. Pure functions on arrays.

This package imports nothing else of artlens, so both the offline index build and online recognition use it.
"""

from .features import DEFAULT_CONFIG as FEATURE_CONFIG
from .features import LocalFeatures, extract, matching_space
from .verify import DEFAULT_CONFIG as VERIFY_CONFIG
from .verify import Verification, prepare, verify

__all__ = ["FEATURE_CONFIG", "VERIFY_CONFIG", "LocalFeatures", "Verification", "extract", "matching_space", "prepare",
           "verify"]
