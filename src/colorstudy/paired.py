"""Paired comparisons: two predictors scored on the same test images.

Every model, and the grayscale baseline, is scored on the very same photos, so the
question "is A better than B?" is about the per-image difference ``A - B``, whose
interval is much narrower than the two marginal intervals side by side (the photo's
own difficulty cancels). The interval is the cluster bootstrap of
:func:`colorstudy.intervals.bootstrap_ci` over source photos: crops of one photo are
one sample, so a test set of two photos cannot make a difference look certain.

A difference is *distinguishable* when its 95% interval excludes 0. Where it does
not, the report says "not distinguishable" instead of naming a winner.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from colorstudy.intervals import bootstrap_ci


@dataclass(frozen=True)
class PairedDifference:
    """Mean of the per-image ``a - b`` and its 95% bootstrap interval over photos."""

    mean: float
    low: float
    high: float

    @property
    def distinguishable(self) -> bool:
        return self.low > 0 or self.high < 0

    def favours_a(self, direction: Literal["higher", "lower"]) -> bool:
        """``a`` is better than ``b`` by more than the resampling of photos explains."""
        return self.low > 0 if direction == "higher" else self.high < 0

    def as_dict(self) -> dict[str, float | bool]:
        return {"mean": self.mean, "ci95_low": self.low, "ci95_high": self.high,
                "distinguishable": self.distinguishable}


def paired_difference(a: pd.DataFrame, b: pd.DataFrame, metric: str, *, n_resamples: int,
                      seed: int) -> PairedDifference:
    """``a[metric] - b[metric]`` image by image (tables from ``per_image.parquet``, same ids in the same order)."""
    if a["id"].tolist() != b["id"].tolist():
        raise ValueError("paired_difference: the two tables score different test images")
    diff = a[metric].to_numpy(np.float64) - b[metric].to_numpy(np.float64)
    if not np.isfinite(diff).all():  # e.g. PSNR +inf on both sides: equal images, no difference to speak of
        diff = np.where(np.isnan(diff), 0.0, diff)
    mean, low, high = bootstrap_ci(diff, n_resamples=n_resamples, seed=seed, groups=a["group"].to_numpy())
    return PairedDifference(mean, low, high)


def tied_with(leader: str, tables: dict[str, pd.DataFrame], metrics: dict[str, Literal["higher", "lower"]], *,
              n_resamples: int, seed: int) -> list[str]:
    """The models the leader is not distinguishably better than on any of ``metrics`` (name -> direction)."""
    tied = []
    for other, table in tables.items():
        if other == leader:
            continue
        if not any(paired_difference(tables[leader], table, m, n_resamples=n_resamples, seed=seed).favours_a(d)
                   for m, d in metrics.items()):
            tied.append(other)
    return tied


__all__ = ["PairedDifference", "paired_difference", "tied_with"]
