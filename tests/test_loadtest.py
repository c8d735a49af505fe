"""The load test's RSS trend (eval/loadtest.rss_trend): least-squares slope after warm-up, not last minus first."""

from __future__ import annotations

import numpy as np

from artlens.eval.loadtest import rss_trend


def test_flat_rss_with_spikes_has_no_slope():
    rng = np.random.default_rng(0)
    t = np.arange(0, 600.0)
    rss = 1200 + rng.normal(0, 15, len(t))
    rss[300] += 250  # one allocation spike, freed again
    trend = rss_trend(list(zip(t, rss, strict=True)), warmup=60)
    assert abs(trend["slope_mb_per_min"]) < 1.0 and abs(trend["slope_second_half_mb_per_min"]) < 2.0
    assert trend["samples"] == 540 and trend["minutes"] == 8.98
    assert trend["peak"] == round(float(rss[60:].max()), 1) and trend["after_warmup"] == round(float(rss[60]), 1)


def test_growth_and_growth_that_levels_off():
    t = np.arange(0, 600.0)
    leak = rss_trend(list(zip(t, 1000 + 0.5 * t, strict=True)), warmup=60)  # 0.5 MB/s: a leak
    assert leak["slope_mb_per_min"] == 30.0 and leak["slope_second_half_mb_per_min"] == 30.0
    assert leak["end"] == 1299.5 and leak["low"] == 1030.0
    # A cache that fills for two minutes after warm-up, then stays full: the second half is flat.
    filling = rss_trend(list(zip(t, 1000 + np.minimum(t, 180) * 0.5, strict=True)), warmup=60)
    assert filling["slope_mb_per_min"] > 3 and filling["slope_second_half_mb_per_min"] == 0.0


def test_too_few_samples_give_no_slope():
    trend = rss_trend([(0.0, 900.0), (61.0, 1000.0), (62.0, 1001.0)], warmup=60)
    assert trend["slope_mb_per_min"] is None and trend["after_warmup"] == 1000.0 and trend["samples"] == 2
    assert rss_trend([], warmup=60)["end"] is None
