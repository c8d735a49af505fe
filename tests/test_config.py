"""artlens.config.with_defaults: the one way a stage merges its DEFAULT_CONFIG with a caller's overrides."""

from artlens.config import with_defaults


def test_overrides_apply_in_order_and_leave_the_defaults_alone():
    defaults = {"a": 1, "b": {"x": 1}, "c": 3}
    merged = with_defaults(defaults, {"a": 2}, None, {"a": 4, "b": {"y": 2}})
    assert merged == {"a": 4, "b": {"y": 2}, "c": 3}  # one level deep: a nested dict is replaced whole
    assert defaults == {"a": 1, "b": {"x": 1}, "c": 3}
    merged["c"] = 0
    assert defaults["c"] == 3  # a new dict, never the module's defaults
    assert with_defaults(defaults) == defaults and with_defaults(defaults) is not defaults
