"""Recognition settings are resolved once: every "auto" decided by the model's pretrained flag, config checked."""

from __future__ import annotations

import dataclasses

import pytest

from artlens.recognition.settings import DEFAULT_TOP_K, resolve_segment_settings, resolve_settings


@pytest.mark.parametrize(("pretrained", "shortlist", "method", "space"), [
    (True, "fused", "dinov2", "dinov2"),
    (False, "local", "vlad", "local"),
])
def test_auto_is_resolved_by_the_pretrained_flag(pretrained, shortlist, method, space):
    settings = resolve_settings(None, pretrained=pretrained)
    assert settings.shortlist == shortlist and settings.shortlist_requested == "auto"
    assert settings.resolve_similar_method("auto") == method and settings.resolve_similar_method("vlad") == "vlad"
    assert settings.segments.resolve_space("auto") == space and settings.segments.resolve_space("local") == "local"
    assert settings.segments.pretrained is pretrained and settings.pretrained is pretrained


def test_a_configured_mode_is_kept_and_unknown_ones_refused():
    assert resolve_settings({"shortlist": "global"}, pretrained=False).shortlist == "global"
    with pytest.raises(ValueError, match="unknown shortlist mode 'best'"):
        resolve_settings({"shortlist": "best"}, pretrained=True)
    with pytest.raises(ValueError, match="unknown segment search space 'pixels'"):
        resolve_segment_settings(pretrained=True).resolve_space("pixels")
    with pytest.raises(ValueError, match="unknown similarity method 'colour'"):
        resolve_settings(None, pretrained=True).resolve_similar_method("colour")


def test_top_k_defaults_once_and_a_request_overrides_it():
    settings = resolve_settings(None, pretrained=False)
    assert settings.top_k == DEFAULT_TOP_K and settings.shortlist_size(None) == DEFAULT_TOP_K
    assert settings.shortlist_size(0) == DEFAULT_TOP_K and settings.shortlist_size(3) == 3
    assert resolve_settings({"top_k": "7"}, pretrained=False).shortlist_size(None) == 7
    with pytest.raises(ValueError, match="top_k must be at least 1"):
        settings.shortlist_size(-1)


def test_config_keys_are_checked_and_the_result_is_frozen():
    settings = resolve_settings({"segments": {"enabled": False, "hits_per_query": 12}}, pretrained=False)
    assert settings.segments.enabled is False and settings.segments.hits_per_query == 12
    assert settings.segments.slots == 5  # untouched defaults stay
    with pytest.raises(ValueError, match=r"unknown segment setting.*'top_k'"):
        resolve_settings({"segments": {"top_k": 30}}, pretrained=False)
    with pytest.raises(ValueError, match=r"unknown recognition setting.*'topk'"):
        resolve_settings({"topk": 5}, pretrained=False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.top_k = 3  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.verify["geometry"] = {}  # type: ignore[index]


@pytest.mark.parametrize(("pretrained", "built_for", "requested", "shortlist", "embedding_used"), [
    (False, None, "auto", "local", False),  # an older random-init bundle: no forward pass
    (False, "local", "auto", "local", False),
    (False, "fused", "auto", "fused", True),  # built with --shortlist fused: "auto" follows the bundle
    (False, "fused", "local", "local", False),  # a request overrides it
    (False, "local", "global", "global", True),
    (True, None, "auto", "fused", True),
    (True, "local", "auto", "local", True),  # pretrained: similarity is calibration evidence, segments vote
])
def test_the_model_runs_only_where_its_embedding_is_used(pretrained, built_for, requested, shortlist,
                                                         embedding_used):
    settings = resolve_settings({"shortlist": requested}, pretrained=pretrained, built_for=built_for)
    assert settings.shortlist == shortlist and settings.shortlist_requested == requested
    assert settings.uses_global_embedding is embedding_used
    # A calibration that reads the similarity needs the embedding whatever the shortlist.
    assert resolve_settings(None, pretrained=pretrained, built_for=built_for,
                            calibrated_on_similarity=True).uses_global_embedding
