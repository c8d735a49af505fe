"""Calibration: simulated and labelled visitor photos, the confidence fit, and calibrated bundles."""
