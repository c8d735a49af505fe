"""Split labelled photos into a part to fit the calibration on and a part held out to measure it.

The photos are split at random (seeded), match and no-match photos separately so both parts hold both kinds;
``artlens.eval.heldout`` fits on one part and reports what the threshold does on the other.
"""

from __future__ import annotations

import numpy as np

from artlens.errors import CollectionError

from .photos import LabelledPhoto


def split_photos(photos: list[LabelledPhoto], fraction: float, seed: int
                 ) -> tuple[list[LabelledPhoto], list[LabelledPhoto]]:
    """(fit, held out): ``fraction`` of the match photos and of the no-match photos go to the fit."""
    if not 0 < fraction < 1:
        raise CollectionError(f"--split must lie strictly between 0 and 1 (got {fraction})")
    rng = np.random.default_rng(seed)
    fit_photos, held_out = [], []
    for group in ([p for p in photos if p.expected], [p for p in photos if not p.expected]):
        order = rng.permutation(len(group))
        n_fit = round(fraction * len(group))
        fit_photos += [group[i] for i in sorted(order[:n_fit].tolist())]
        held_out += [group[i] for i in sorted(order[n_fit:].tolist())]
    if not fit_photos or not held_out:
        raise CollectionError(f"split {fraction} of {len(photos)} photos leaves one side empty")
    return fit_photos, held_out
