"""Intervals: the percentile bootstrap of a mean over test images, by photo."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

def bootstrap_ci(values: Iterable[float] | np.ndarray | torch.Tensor, n_resamples: int = 1000, seed: int = 42,
                 confidence: float = 0.95, groups: Sequence[Any] | np.ndarray | None = None,
                 ) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean over images and its percentile bootstrap CI.

    Resamples images with replacement, or, given ``groups`` (the source photo of each
    image), whole groups: crops of one photo are not independent samples, and treating
    them so makes the interval as narrow as the crop count allows while the result rests
    on a few photos. A resample's mean is then the mean over every image of the drawn
    groups (a cluster bootstrap); without ``groups`` each image is its own group, the
    same draws as the plain bootstrap. numpy ``default_rng(seed)``: the same numbers
    for the same seed. ``low``/``high`` are the lower/upper order statistics at the
    tails, never interpolated between two resample means (so the interval is
    conservative by at most one resample step, and ±inf stays exact).
    NaN is an error (a metric broke on some image; averaging around it would hide
    that). ±inf is kept: a PSNR of +inf (an image identical to its truth) makes the
    mean +inf, which the report shows; +inf and -inf together are an error.
    """
    x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    if x.size == 0:
        raise ValueError("bootstrap_ci: no values")
    if np.isnan(x).any():
        raise ValueError(f"bootstrap_ci: {int(np.isnan(x).sum())} of {x.size} values are NaN")
    if np.isposinf(x).any() and np.isneginf(x).any():
        raise ValueError("bootstrap_ci: values hold both +inf and -inf; their mean is undefined")
    if not 0.0 < confidence < 1.0 or n_resamples < 1:
        raise ValueError(f"bootstrap_ci: need 0 < confidence < 1 and n_resamples >= 1, "
                         f"got {confidence} and {n_resamples}")
    if groups is None:
        sums, counts = x, np.ones_like(x)
    else:
        labels = np.asarray(groups).ravel()
        if labels.size != x.size:
            raise ValueError(f"bootstrap_ci: {labels.size} group labels for {x.size} values")
        _, inverse = np.unique(labels, return_inverse=True)  # sorted labels: the same draws on every run
        sums = np.bincount(inverse, weights=x) if np.isfinite(x).all() else \
            np.array([x[inverse == g].sum() for g in range(inverse.max() + 1)])
        counts = np.bincount(inverse).astype(np.float64)
    rng = np.random.default_rng(seed)
    means = np.empty(n_resamples)
    n = sums.size
    rows = max(1, 4_000_000 // n)  # bounded index memory for large test sets
    for start in range(0, n_resamples, rows):
        stop = min(start + rows, n_resamples)
        draw = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = x[draw].mean(axis=1) if groups is None else sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    tail = (1.0 - confidence) / 2.0
    low = np.quantile(means, tail, method="lower")
    high = np.quantile(means, 1.0 - tail, method="higher")
    return float(x.mean()), float(low), float(high)
