"""What a Recognizer runs with, resolved once from the defaults, a config dict, the model's ``pretrained`` flag and
the shortlist the bundle was built for.

Every "auto" choice (shortlist mode, similar-artworks method, segment search space) and whether a photo goes through
the model at all is decided here (the shortlist rule itself lives beside the bundle, which a build records it in:
indexing/store/bundle.py) and nowhere else: the server, calibration and evaluation read the resolved values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from artlens.errors import ArtlensError
from artlens.indexing.store.bundle import SHORTLIST_MODES as SHORTLIST_MODES  # the modes, one list for all
from artlens.indexing.store.bundle import resolve_shortlist, uses_global_embedding
from artlens.indexing.store.votes import SEARCH_CONFIG as VOTES_CONFIG
from artlens.verification import VERIFY_CONFIG

from .walls import DEFAULT_CONFIG as WALLS_CONFIG
from .walls import config_of as walls_config

SIMILAR_METHODS = ("auto", "vlad", "dinov2")
# Mutual-nearest-neighbour matching of learned descriptors (no ratio test) gives wrong references more chance
# inliers than RootSIFT's ratio test: on SMVS the most any wrong candidate of a photo got was 13 (median),
# 32 (99th percentile), 35 (max) with XFeat, 11 / 36 / 39 with ALIKED, against RootSIFT's 5 / 7 / 7. The second
# look's hint (walls.py: a plausible, unverified candidate shows where a painting hangs) starts above that floor, or
# it fires on every photo; one value serves both learned methods.
LEARNED_WALLS = {"hint_inliers": 40}
SEGMENT_SPACES = ("auto", "dinov2", "local")
DEFAULT_TOP_K = 20  # shortlist verified per photo: SMVS gate precision@1 0.957 (eval/baselines/smvs-tiny.json)


class MethodUnavailable(ArtlensError):
    """A search method or space that this bundle holds no data for (built without global embeddings)."""

    code = "method_unavailable"


@dataclass(frozen=True, kw_only=True)
class SegmentSettings:
    """Segment votes, region verification and segment search (bundles built with --segments)."""

    enabled: bool = True  # False: a bundle's segments are ignored in recognition (whole-image only, for comparisons)
    hits_per_query: int = 30  # segment hits taken per query descriptor (whole photo and each VLAD region)
    slots: int = 5  # the segment ranking's best artworks are verified even beyond the shortlist's K
    # Segment rankings only *add* candidates (slots) by default. Fused into the whole-image reciprocal-rank fusion
    # they also reorder it, and on SMVS whole photos they pushed one right artwork out of K = 20 (0.935 → 0.913).
    fuse: bool = False
    region_verify: int = 10  # the segment rankings' best artworks are also verified against their segment's region
    region_margin: float = 0.25  # a segment's bbox grows by this fraction of its size on each side for verification
    min_region_keypoints: int = 24  # fewer reference keypoints there: verify against the whole reference only
    detail_fraction: float = 0.6  # a verified match shows a detail when less than this share of the artwork is in view
    shown_coverage: float = 0.5  # the segment shown is the largest with at least this share of its mask in view
    polygon_tolerance: float = 1.5  # mask pixels (at the stored mask resolution) of polygon simplification
    detail_cache: int = 512  # segments whose detail features are kept in matching space (≈ 0.5 MB each)
    # Resolved from the model: a random-init model's DINOv2 vectors rank at chance, so only a pretrained model's
    # DINOv2 segment index votes, and "auto" searches it only then.
    pretrained: bool
    search_space: str  # what space="auto" searches: "dinov2" or "local"

    def resolve_space(self, space: str) -> str:
        """The segment search space to use for ``space`` (one of SEGMENT_SPACES)."""
        if space not in SEGMENT_SPACES:
            raise ValueError(f"unknown segment search space {space!r} ({', '.join(SEGMENT_SPACES)})")
        return self.search_space if space == "auto" else space


def _votes_default() -> Mapping[str, Any]:
    return MappingProxyType(dict(VOTES_CONFIG))


def _verify_default() -> Mapping[str, Any]:
    return MappingProxyType(dict(VERIFY_CONFIG))


def _walls_default() -> Mapping[str, Any]:
    return MappingProxyType(dict(WALLS_CONFIG))


@dataclass(frozen=True, kw_only=True)
class RecognitionSettings:
    """One Recognizer's settings; ``resolve_settings`` builds it."""

    top_k: int = DEFAULT_TOP_K
    # Which rankings make the shortlist: "fused" (DINOv2 and VLAD by reciprocal-rank fusion), "global" (DINOv2
    # only) or "local" (VLAD only). Asked as "auto": the one the bundle was built for, else fused for a pretrained
    # model, local for a random-init one (its descriptors rank SMVS at chance level, recall@10 0.17, and would only
    # take verification slots).
    shortlist: str
    shortlist_requested: str = "auto"  # as configured, before "auto" was resolved (evaluation reports record it)
    # Whether a photo goes through the model at all: its global embedding is read by a fused or global shortlist,
    # by a pretrained model's calibration (similarity) and DINOv2 segment votes. False: no forward pass.
    uses_global_embedding: bool
    rrf_k: int = 60
    # VLAD of the whole photo plus of 5 overlapping regions (4 quadrants of 60 %, the centre): a painting that fills
    # a small part of a gallery-wall photo dominates some region's VLAD. A reference scores its best similarity over
    # the regions (docs/benchmarks.md, "Shortlist").
    vlad_regions: bool = True
    # Bundles with a vote index: the descriptor-vote ranking (indexing/store/votes.py) takes every other
    # shortlist slot, alternating with the ranking above, so neither can crowd the other out.
    votes: Mapping[str, Any] = field(default_factory=_votes_default)
    verify: Mapping[str, Any] = field(default_factory=_verify_default)
    max_overlap: float = 0.5  # two verified outlines overlapping more than this are one artwork: keep the best
    # A second, closer look at a photo of several paintings (recognition/walls.py DEFAULT_CONFIG, docs/walls.md);
    # given keys replace the defaults one by one.
    walls: Mapping[str, Any] = field(default_factory=_walls_default)
    descriptor_cache: int = 1024  # prepared reference descriptors kept in memory (≈0.5 MB each)
    # Threads verifying one photo's shortlist (0: one per core, at most 4); the answers do not depend on it.
    verify_threads: int = 0
    pretrained: bool  # the model's weights are pretrained (its global descriptor carries meaning)
    # What method="auto" uses for similar artworks: "dinov2" with pretrained weights, else "vlad" (weight-free;
    # random-init DINOv2 similarity is chance level).
    similar_method: str
    segments: SegmentSettings

    def shortlist_size(self, top_k: int | None) -> int:
        """The shortlist size for a request's ``top_k`` (None or 0: the configured one)."""
        k = int(top_k or self.top_k)
        if k < 1:
            raise ValueError("top_k must be at least 1")
        return k

    def resolve_similar_method(self, method: str) -> str:
        """The similar-artworks method to use for ``method`` (one of SIMILAR_METHODS)."""
        if method not in SIMILAR_METHODS:
            raise ValueError(f"unknown similarity method {method!r} ({', '.join(SIMILAR_METHODS)})")
        return self.similar_method if method == "auto" else method


_RESOLVED = {"shortlist", "shortlist_requested", "uses_global_embedding", "pretrained", "similar_method", "segments",
             "search_space"}


def _tunable(cls: type, given: Mapping[str, Any], what: str, known: tuple[str, ...] = ()) -> dict[str, Any]:
    """``given`` checked against ``cls``'s configurable fields (and ``known``, taken care of by the caller),
    numbers converted to the field's type."""
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name not in _RESOLVED}
    unknown = sorted(set(given) - set(fields))
    if unknown:
        raise ValueError(f"unknown {what} setting(s) {', '.join(map(repr, unknown))}"
                         f" ({', '.join([*known, *fields])})")
    converters = {"int": int, "float": float}
    out = {}
    for name, value in given.items():
        convert = converters.get(str(fields[name].type))
        out[name] = convert(value) if convert and value is not None else value
        if name in ("votes", "verify"):
            out[name] = MappingProxyType(dict(value or {}))
        if name == "walls":
            out[name] = MappingProxyType(walls_config(value))
    return out


def resolve_segment_settings(config: Mapping[str, Any] | None = None, *, pretrained: bool) -> SegmentSettings:
    """Segment settings: the defaults, then ``config``; "auto" resolved for a (non-)``pretrained`` model."""
    return SegmentSettings(**_tunable(SegmentSettings, config or {}, "segment"), pretrained=pretrained,
                           search_space="dinov2" if pretrained else "local")


def resolve_settings(config: Mapping[str, Any] | None = None, *, pretrained: bool, built_for: str | None = None,
                     calibrated_on_similarity: bool = False, matching: Mapping[str, Any] | None = None,
                     learned_features: bool = False) -> RecognitionSettings:
    """Recognition settings: the defaults, then ``config`` (keys as RecognitionSettings' fields, ``segments`` a
    dict of SegmentSettings' fields); every "auto" resolved for a (non-)``pretrained`` model and the shortlist the
    bundle was ``built_for`` (bundle.json "shortlist"; None for older bundles). ``calibrated_on_similarity``: the
    bundle's calibration reads the global-descriptor similarity, so the photo's embedding is needed. ``matching``:
    the descriptor matching the bundle's features record (bundle.json features.matching: learned descriptors by
    mutual nearest neighbours), the default under a ``verify`` config's own keys. ``learned_features``: the bundle's
    local features come from a network (:data:`LEARNED_WALLS` under a ``walls`` config's own keys)."""
    given = dict(config or {})
    if matching is not None:
        given["verify"] = {**VERIFY_CONFIG, "matching": dict(matching), **dict(given.get("verify") or {})}
    if learned_features:
        given["walls"] = {**LEARNED_WALLS, **dict(given.get("walls") or {})}
    requested = given.pop("shortlist", "auto")
    shortlist = resolve_shortlist(requested, pretrained=pretrained, built_for=built_for)
    segments = resolve_segment_settings(given.pop("segments", None), pretrained=pretrained)
    tunable = _tunable(RecognitionSettings, given, "recognition", ("shortlist", "segments"))
    embedding_used = uses_global_embedding(shortlist, pretrained=pretrained) or calibrated_on_similarity
    return RecognitionSettings(**tunable, shortlist=shortlist, shortlist_requested=requested,
                               uses_global_embedding=embedding_used, pretrained=pretrained,
                               similar_method="dinov2" if pretrained else "vlad", segments=segments)
