"""Seed-aware statistics: a model's mean over test photos *and* training seeds.

A claim about a model ("C beats B") must hold for another sample of photos and for
another training run, so its interval has to cover both sources of variation (see
``docs/study.md``, Statistics). The input, per model, is a photos x seeds table of
photo-level means (the crops of a photo averaged first; the same photos for every seed).

Model: the crossed random-effects model ``y_ps = mu + a_p + b_s + e_ps`` (photo effect
``a``, seed effect ``b``, photo-by-seed residual ``e``; independent, zero mean), for which
``Var(grand mean) = s_a^2/N + s_b^2/K + s_e^2/(NK)``. The two-way ANOVA mean squares
have ``E[MS_photo] = s_e^2 + K s_a^2``, ``E[MS_seed] = s_e^2 + N s_b^2`` and
``E[MS_resid] = s_e^2``, so ``Var = (MS_photo + MS_seed - MS_resid) / (NK)``.

Interval: that variance is split into two pieces, each an estimate with known degrees
of freedom, and each gets its own t quantile (``scipy.stats.t``); the half-width is
``sqrt(t_seed^2 * seed_piece + t_photo^2 * photo_piece)``. The residual goes with the
piece that has fewer degrees of freedom, which then is an exact chi-square: with
``K <= N`` the seed piece is ``MS_seed/(NK)`` (df ``K-1``) and the photo piece
``max(MS_photo - MS_resid, 0)/(NK)`` (df ``N-1``, floored since a variance is not
negative); with ``N < K`` the roles swap. Why not one Satterthwaite df for the sum: with
3 seeds the seed piece rests on 2 df, and when it comes out small by chance
Satterthwaite hands the whole sum the photos' large df, so the interval under-covers
(117 photos: 87 % at K = 2, 93 % at K = 3; ``test_why_not_one_satterthwaite_df``). Each
piece with its own quantile (Banerjee's construction for a sum of variances) keeps the
few-seed piece at ``t(K-1)``: 97 % at the same sizes, and >= 94.7 % at every N in
2..117 and K in 2..10 of a 12-setting development grid (20,000 studies per cell). A
bootstrap is no alternative at these sizes: over 2 photos its interval is the range of
the two photo means, and 3 seeds cannot be resampled.

Limits: like any test of a mean, it leans on the photo effects being roughly normal.
A strongly skewed photo-by-model effect with little seed noise makes it liberal at
small N; ``MIN_PHOTOS`` covers that at K = 3, but with K >= 5 seeds (whose smaller
t quantile no longer adds slack) the development grid measured 8 % false positives at
N = 10 and 6 % at N = 20 for an exponential-shaped effect.

Degenerate sizes: with one seed (K = 1) the seed component cannot be estimated and the
interval is photo-only (``covers_seed_variance=False``: it under-covers the model's mean
whenever seeds matter); with one photo (N = 1) it is seed-only
(``covers_photo_variance=False``); with one of each there is no interval (NaN).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy import stats

# Below 10 photos a claim rests on the photo effects being near normal, which so few
# photos cannot check. With a skewed photo-by-model effect (a model that fails badly on a
# few photos) the false-positive rate at K = 3 is 7.5 % at N = 3, 5.6 % at N = 6, 5.4 % at
# N = 8 and 4.9 % at N = 10; at N = 2 a true gap of 1 (3x the seed SD) is found in under
# 10 % of studies against ~50 % at N = 10 (``python tests/test_seed_stats.py`` prints
# both). Normal effects keep it <= 5 % at every N, so the rule is about robustness and
# power. 10 is also above 6, the fewest photos at which a sign test can reach 5 %.
MIN_PHOTOS = 10
# One seed cannot separate "this model" from "this training run".
MIN_SEEDS = 2


@dataclass(frozen=True)
class ModelInterval:
    """The grand mean over photos and seeds and its interval (see the module docstring)."""

    mean: float
    low: float
    high: float
    se: float  # sqrt of the estimated Var(grand mean)
    multiplier: float  # (high - low) / 2 / se: 1.96 for a large normal sample, ~4.3 when resting on 3 seeds
    seed_sd: float | None  # SD over seeds of the per-seed means; None at K = 1
    n_photos: int
    n_seeds: int
    confidence: float
    covers_photo_variance: bool
    covers_seed_variance: bool

    @property
    def covers_both(self) -> bool:
        """The interval speaks for another sample of photos *and* another training run."""
        return self.covers_photo_variance and self.covers_seed_variance

    def as_dict(self) -> dict[str, float | int | bool | None]:
        return {"mean": self.mean, "ci_low": self.low, "ci_high": self.high, "se": self.se,
                "multiplier": self.multiplier, "seed_sd": self.seed_sd, "n_photos": self.n_photos,
                "n_seeds": self.n_seeds, "confidence": self.confidence,
                "covers_photo_variance": self.covers_photo_variance,
                "covers_seed_variance": self.covers_seed_variance}


@dataclass(frozen=True)
class SeedPairedDifference:
    """``a - b`` over photos and seeds, and whether this study size can tell them apart."""

    interval: ModelInterval
    valid: bool  # the test is trusted at this size (>= MIN_PHOTOS photos, >= MIN_SEEDS seeds)
    distinguishable: bool  # valid and the interval excludes 0
    verdict: str  # "a better", "b better" or "cannot tell with N photos and K seeds"
    reason: str  # why the verdict, in words a report can print

    def as_dict(self) -> dict[str, float | int | bool | str | None]:
        return {**self.interval.as_dict(), "valid": self.valid, "distinguishable": self.distinguishable,
                "verdict": self.verdict, "reason": self.reason}


def _table(values: ArrayLike, name: str) -> np.ndarray:
    """``values`` as a float64 photos x seeds array, or a ValueError saying what is wrong."""
    y = np.asarray(values, dtype=np.float64)
    if y.ndim != 2:
        raise ValueError(f"{name}: need a 2-D table (N photos, K seeds), got shape {y.shape}; "
                         f"for one seed pass values[:, None]")
    n, k = y.shape
    if n < 1 or k < 1:
        raise ValueError(f"{name}: need N >= 1 photos and K >= 1 seeds, got N={n}, K={k}")
    bad = ~np.isfinite(y)
    if bad.any():  # a broken metric (NaN) or an infinite PSNR: a mean or variance around it means nothing
        rows = sorted({int(r) for r in np.nonzero(bad)[0]})[:5]
        raise ValueError(f"{name}: {int(bad.sum())} of {y.size} values are not finite (NaN or inf), "
                         f"first at photo rows {rows}")
    return y


def _mean_squares(y: np.ndarray) -> tuple[float, float, float]:
    """Two-way ANOVA mean squares ``(photo, seed, resid)``; NaN where the size has none."""
    n, k = y.shape
    grand = y.mean()
    photo, seed = y.mean(axis=1), y.mean(axis=0)
    ms_p = float(k * np.sum((photo - grand) ** 2) / (n - 1)) if n > 1 else math.nan
    ms_s = float(n * np.sum((seed - grand) ** 2) / (k - 1)) if k > 1 else math.nan
    ms_e = math.nan
    if n > 1 and k > 1:
        resid = y - photo[:, None] - seed[None, :] + grand
        ms_e = float(np.sum(resid ** 2) / ((n - 1) * (k - 1)))
    return ms_p, ms_s, ms_e


def _variance_pieces(y: np.ndarray) -> list[tuple[float, int]]:
    """``(piece of N*K*Var(grand mean), its df)``; the pieces sum to ``MS_p + MS_s - MS_e``, floored."""
    n, k = y.shape
    ms_p, ms_s, ms_e = _mean_squares(y)
    if n > 1 and k > 1:
        # The residual rides with the piece of fewer df: that piece is then an exact
        # chi-square, and the difference of mean squares sits where df are plentiful.
        if k <= n:
            return [(ms_s, k - 1), (max(ms_p - ms_e, 0.0), n - 1)]
        return [(ms_p, n - 1), (max(ms_s - ms_e, 0.0), k - 1)]
    if n > 1:  # one seed: the photo spread alone, seed variance unseen
        return [(ms_p, n - 1)]
    if k > 1:  # one photo: the seed spread alone, photo variance unseen
        return [(ms_s, k - 1)]
    return []


def model_interval(values: ArrayLike, confidence: float = 0.95) -> ModelInterval:
    """Grand mean of a photos x seeds table and its interval over photos and seeds.

    ``values[p, s]``: the photo-level mean (crops averaged) of photo ``p`` under the model
    trained with seed ``s``. The interval is described in the module docstring. Check
    ``covers_both`` before reading it as a claim about the model: at K = 1 it covers
    photos only, at N = 1 seeds only, and at N = K = 1 it is NaN.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"model_interval: need 0 < confidence < 1, got {confidence}")
    y = _table(values, "model_interval")
    n, k = y.shape
    mean = float(y.mean())
    seed_sd = float(np.std(y.mean(axis=0), ddof=1)) if k > 1 else None
    pieces = _variance_pieces(y)
    if pieces:
        var = np.array([v for v, _ in pieces]) / (n * k)
        t = stats.t.ppf(0.5 + confidence / 2.0, [d for _, d in pieces])
        se, half = math.sqrt(var.sum()), math.sqrt(float(np.sum(t ** 2 * var)))
        multiplier = half / se if se > 0 else float(t.max())  # no spread: the bound still says which quantile
    else:
        se = half = multiplier = math.nan
    return ModelInterval(mean=mean, low=mean - half, high=mean + half, se=se, multiplier=multiplier,
                         seed_sd=seed_sd, n_photos=n, n_seeds=k, confidence=confidence,
                         covers_photo_variance=n > 1, covers_seed_variance=k > 1)


def paired_difference(a: ArrayLike, b: ArrayLike, *, direction: Literal["higher", "lower"],
                      confidence: float = 0.95) -> SeedPairedDifference:
    """Is ``a`` better than ``b``? Photos x seeds tables on the same photos, same row order.

    ``b`` has the same K seeds as ``a``, or one column (the grayscale baseline has no
    seeds; each of ``a``'s seeds is then differenced with it). Seeds are paired by
    column: the two models' seed draws are independent, so any pairing is a valid one,
    and where one seed number drives both runs (same data order) pairing cancels what they share.
    ``direction``: whether a higher metric is better (PSNR) or a lower one (CIEDE2000).
    A winner is named only when the test is valid at this size (``MIN_PHOTOS`` photos,
    ``MIN_SEEDS`` seeds) and the interval of the mean difference excludes 0.
    """
    if direction not in ("higher", "lower"):
        raise ValueError(f"paired_difference: direction must be 'higher' or 'lower', got {direction!r}")
    ya, yb = _table(a, "paired_difference: a"), _table(b, "paired_difference: b")
    if ya.shape[0] != yb.shape[0]:
        raise ValueError(f"paired_difference: a has {ya.shape[0]} photos, b has {yb.shape[0]}: "
                         f"the comparison must be on the same photos")
    if yb.shape[1] not in (1, ya.shape[1]):
        raise ValueError(f"paired_difference: a has {ya.shape[1]} seeds, b has {yb.shape[1]}; "
                         f"need the same seed count, or one column for a seedless baseline")
    interval = model_interval(ya - yb, confidence)
    n, k = ya.shape
    size = f"{n} photo{'s' * (n != 1)} and {k} seed{'s' * (k != 1)}"
    valid = n >= MIN_PHOTOS and k >= MIN_SEEDS
    excludes_zero = interval.low > 0.0 or interval.high < 0.0
    if not valid:
        need = [f">= {MIN_PHOTOS} photos"] if n < MIN_PHOTOS else []
        need += [f">= {MIN_SEEDS} seeds"] if k < MIN_SEEDS else []
        reason = f"too small to test: needs {' and '.join(need)}"
    elif not excludes_zero:
        reason = f"the {confidence:.0%} interval of the mean difference includes 0"
    else:
        reason = f"the {confidence:.0%} interval of the mean difference excludes 0"
    if valid and excludes_zero:
        a_wins = (interval.low > 0.0) == (direction == "higher")
        verdict = "a better" if a_wins else "b better"
    else:
        verdict = f"cannot tell with {size}"
    return SeedPairedDifference(interval=interval, valid=valid, distinguishable=valid and excludes_zero,
                                verdict=verdict, reason=reason)


__all__ = ["MIN_PHOTOS", "MIN_SEEDS", "ModelInterval", "SeedPairedDifference", "model_interval",
           "paired_difference"]
