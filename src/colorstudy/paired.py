"""Comparisons over photos *and* seeds: two predictors scored on the same test images.

Every model, and the grayscale baseline, is scored on the very same photos, so the
question "is A better than B?" is about the per-image difference ``A - B`` (the photo's
own difficulty cancels). Each model was trained once per seed, so the question is also
whether the difference would hold for another training run. Both are answered by
:mod:`colorstudy.seed_stats` on a photos x seeds table of photo-level means (crops of one
photo are averaged first: they are one sample, not several).

A difference is *distinguishable* only where the test is valid at the study's size
(``seed_stats.MIN_PHOTOS`` photos and ``MIN_SEEDS`` seeds) and its 95% interval excludes
0; otherwise the verdict reads "cannot tell with N photos and K seeds" and no winner is named.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from colorstudy import seed_stats

Direction = Literal["higher", "lower"]


def photo_table(tables: Sequence[pd.DataFrame], metric: str) -> np.ndarray:
    """Photos x seeds: ``metric`` averaged over each photo's crops, one column per run's table
    (``per_image.parquet``: columns ``id``, ``group`` (the source photo), the metrics)."""
    columns = []
    for table in tables:
        if table["id"].tolist() != tables[0]["id"].tolist():
            raise ValueError("photo_table: the runs score different test images; rerun their evaluate stages")
        columns.append(table.groupby("group", sort=False)[metric].mean().to_numpy(np.float64))
    return np.column_stack(columns)


def image_mean(tables: Sequence[pd.DataFrame], metric: str) -> float:
    """The mean over test images and runs: what each run's metrics.json averages, averaged."""
    return float(np.mean([t[metric].to_numpy(np.float64).mean() for t in tables]))


@dataclass(frozen=True)
class PairedDifference:
    """Mean of ``a - b`` over images and seeds, its 95% interval over photos and seeds, and the verdict."""

    mean: float
    low: float
    high: float
    valid: bool  # the study's size supports a test (seed_stats.MIN_PHOTOS photos, MIN_SEEDS seeds)
    verdict: str  # "a better", "b better" or "cannot tell with N photos and K seeds"
    reason: str

    @property
    def distinguishable(self) -> bool:
        return self.valid and (self.low > 0 or self.high < 0)

    def favours_a(self, direction: Direction) -> bool:
        """``a`` is better than ``b`` by more than photos and seeds explain, at a valid size."""
        return self.distinguishable and (self.low > 0 if direction == "higher" else self.high < 0)

    def as_dict(self) -> dict[str, float | bool | str]:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high, "valid": self.valid,
                "distinguishable": self.distinguishable, "verdict": self.verdict}


def paired_difference(a: Sequence[pd.DataFrame], b: Sequence[pd.DataFrame], metric: str,
                      direction: Direction) -> PairedDifference:
    """``a - b`` on ``metric``: per-image tables of ``a``'s seeds, and of ``b``'s (the same
    number, or one table for the seedless grayscale baseline)."""
    if a[0]["id"].tolist() != b[0]["id"].tolist():
        raise ValueError("paired_difference: the two models were scored on different test images")
    ya, yb = photo_table(a, metric), photo_table(b, metric)
    mean = image_mean(a, metric) - image_mean(b, metric)
    try:
        test = seed_stats.paired_difference(ya, yb, direction=direction)
    except ValueError as e:  # e.g. an infinite PSNR: no mean difference to test
        return PairedDifference(mean, math.nan, math.nan, False, "cannot tell", str(e))
    # The interval is the photo-level mean's; it is centred on the image mean, which is the
    # same number whenever every photo gives the same count of crops (every data set here).
    centre = test.interval.mean
    return PairedDifference(mean, mean - (centre - test.interval.low), mean + (test.interval.high - centre),
                            test.valid, test.verdict, test.reason)


def tied_with(leader: str, tables: dict[str, Sequence[pd.DataFrame]], metrics: dict[str, Direction]) -> list[str]:
    """The models the leader is not distinguishably better than on any of ``metrics`` (name ->
    direction), by the seed-aware test; at a size too small to test, every other model."""
    return [other for other, runs in tables.items() if other != leader and not any(
        paired_difference(tables[leader], runs, m, d).favours_a(d) for m, d in metrics.items())]


__all__ = ["PairedDifference", "image_mean", "paired_difference", "photo_table", "tied_with"]
