"""One reference image read the way every bundle stores it: decoded, its local features, and its rendition.

The index build (a collection row) and the admin add (an uploaded image) both read references through
:func:`read_reference`, so an artwork added later is described exactly like one built with the collection.
"""

from __future__ import annotations

from dataclasses import dataclass

from artlens.imaging import DecodedImage, load_image
from artlens.local_features import FeatureExtractor
from artlens.verification import LocalFeatures

from .collection import check_reference_features
from .renditions import make_rendition


@dataclass(frozen=True)
class Reference:
    image: DecodedImage  # decoded at the features' max_side: what the model and the feature extractor see
    features: LocalFeatures
    rendition: bytes  # the JPEG the bundle stores for it (renditions.py)


def read_reference(data: bytes, *, name: str, extractor: FeatureExtractor, **load_limits) -> Reference:
    """Decode ``data``, extract its local features with the bundle's ``extractor`` (an artwork needs enough of them:
    ``TooFewFeatures`` otherwise) and make its rendition. ``name`` labels the image in error messages;
    ``load_limits`` are :func:`artlens.imaging.load_image`'s (max_pixels, max_bytes, budget)."""
    image = load_image(data, name=name, max_side=extractor.config["max_side"], **load_limits)
    features = extractor.extract(image.rgb)
    check_reference_features(len(features), name)
    return Reference(image, features, make_rendition(data, name=name))
