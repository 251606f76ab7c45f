"""The cross-machine rule for a trained model: the rerun's seed-mean against the committed seeds.

Why: float32 training on another kind of machine (CPU model, SIMD kernels, threads,
torch: ``checkpoint.trained_on``) takes other rounding paths, and a short training can
amplify the first difference into another trajectory, so a rerun's per-seed metrics are
at worst new draws from the model's seed-to-seed distribution. What must still hold is
that the rerun's mean over its K seeds is where the committed K seeds say it can be.

Rule, per (model, judged metric): the two-sample t test of the two runs' per-seed test
means, ``t = (mean_rerun - mean_committed) / (s * sqrt(1/K1 + 1/K2))``, where ``s^2`` is the
variance of *this model's own* seeds pooled over both runs (each run around its own
mean; ``K1 + K2 - 2`` df: 4 with the default 3 seeds a side). It is exact for normal seed
draws whatever the other models do. Bonferroni over every test of the comparison
(``m`` = models x judged metrics, on any machine kind, so the bound does not depend on
where each model happened to run): each is two-sided at ``FALSE_ALARM_RATE / m``, so a
rerun with no real change fails anywhere in the comparison in <= 1 % of reruns. A row
shows the committed and rerun seed-means and the bound ``t_df(1 - rate / (2m)) * SE``;
the summary prints, per metric, the smallest shift detected with ``POWER`` (80 %): the
noncentral-t shift ``delta * SE`` with ``P(|T'| > t_crit) = POWER``, ``T' ~ nct(df, delta)``.

Why each model's own seeds and not a variance shared over models: seed SD differs a lot
between models (an adversarial or perceptual term trains less repeatably), and any
sharing pulls a noisy model's variance toward the quiet ones, inflating its t exactly
in the far tail Bonferroni tests at. Simulated on 16 models x 4 metrics x 3 seeds a
side, no true shift (``tests/test_seed_rule.py``, 4,000-20,000 comparisons each): one
variance pooled over models fails 31 % of comparisons with SDs log-uniform over a 10x range;
limma's empirical-Bayes moderation (Smyth 2004: prior df and scale from the per-model
log-variances, ``s~^2 = (d0 s0^2 + d s^2) / (d0 + d)``, t with ``d0 + d`` df) fails 1.5-1.8 %
there, 4.2 % over a 3x range and 19 % when one model's SD is 3x the other fifteen's
(the noisy GAN among quiet models: with 4 df a 9x variance is within chance, so nothing
can tell it from one to shrink); the conservative variants tried (a 90-99 % upper bound
on the prior's spread, a pretest that leaves outlying models unshrunk) stayed above 1 %
in one setting or another, or lost the power they were for. The own-seed test fails
1.1 % (0.995 % expected) in every setting: a model's t does not depend on its SD. Its
price is power: with 4 df the Bonferroni quantile is large (t = 17.9 for 16 models x 11
metrics against 4.0 for a known variance), so it detects with 80 % power a shift of about
18 seed SDs (``detectable_shift``); with 5 seeds a side (8 df) about 6. ``MIN_SEEDS``
(2 a side) is the least that leaves a variance at all.

Limits: like any t test it leans on roughly normal seed draws; a model whose seeds
sometimes collapse (a GAN that falls back to gray) has heavy tails the 4 df only
partly cover. A seed-mean with no spread at all (every seed gave the same 6-digit
number) gets the floor ``rel_floor * |mean|`` as its bound: it behaves as a
deterministic value.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import optimize, stats

from colorstudy.seed_stats import MIN_SEEDS

# The whole comparison's false-alarm rate: one rerun in 100 with no real change fails CI
# somewhere. Lower costs power in every test (Bonferroni); higher makes a red CI cheap.
FALSE_ALARM_RATE = 0.01
# The power at which the summary states the smallest detectable shift (the usual 80 %).
POWER = 0.8


@dataclass(frozen=True)
class SeedMeanTest:
    """One (model, metric): both runs' per-seed test means and the verdict on their seed-means."""

    model: str
    metric: str  # the metric's stem in metrics.json: "psnr"
    committed: tuple[float, ...]  # per-seed test means, committed run (seed order)
    reproduced: tuple[float, ...]
    se: float  # standard error of the seed-mean difference
    df: int
    quantile: float  # the Bonferroni t quantile: bound = quantile * se (unless floored)
    bound: float  # the largest |shift| that passes
    detectable: float  # the shift detected with POWER
    p_value: float  # two-sided, before Bonferroni

    @property
    def committed_mean(self) -> float:
        return float(np.mean(self.committed))

    @property
    def reproduced_mean(self) -> float:
        return float(np.mean(self.reproduced))

    @property
    def shift(self) -> float:
        return self.reproduced_mean - self.committed_mean

    @property
    def passed(self) -> bool:
        return abs(self.shift) <= self.bound


def pooled_t(committed: np.ndarray, reproduced: np.ndarray) -> tuple[np.ndarray, np.ndarray, int]:
    """``(shift, se, df)`` of the seed-means along the last axis (leading axes: independent tests).

    The variance is each model's own, from both runs' seeds about their own run's mean."""
    committed, reproduced = np.asarray(committed, float), np.asarray(reproduced, float)
    k1, k2 = committed.shape[-1], reproduced.shape[-1]
    df = k1 + k2 - 2
    if k1 < 1 or k2 < 1 or df < 1:
        raise ValueError(f"need >= 1 seed a side and >= 3 in all for a seed variance, got {k1} and {k2}")
    ss = (np.var(committed, axis=-1) * k1 + np.var(reproduced, axis=-1) * k2)  # sums of squares about each mean
    se = np.sqrt(ss / df * (1.0 / k1 + 1.0 / k2))
    return reproduced.mean(axis=-1) - committed.mean(axis=-1), se, df


def critical_t(df: int, n_tests: int, rate: float = FALSE_ALARM_RATE) -> float:
    """The two-sided Bonferroni quantile: |t| above it fails one of ``n_tests`` tests."""
    return float(stats.t.isf(rate / (2 * n_tests), df))


@lru_cache(maxsize=256)
def detectable_shift(df: int, n_tests: int, power: float = POWER, rate: float = FALSE_ALARM_RATE) -> float:
    """The true shift, in units of the SE, that the rule detects with probability ``power``."""
    crit = critical_t(df, n_tests, rate)

    def missing(delta: float) -> float:  # detection probability minus the target
        # the lower tail as sf at -delta: nct.cdf far in its left tail returns NaN
        return float(stats.nct.sf(crit, df, delta) + stats.nct.sf(crit, df, -delta)) - power

    # with probability >= power both Z > -z_q and chi2/df < its (1 - q) quantile, q = (1 - power) / 2,
    # and then Z + delta > crit * sqrt(chi2/df) at this delta: an upper end that always brackets
    q = (1.0 - power) / 2.0
    upper = crit * math.sqrt(stats.chi2.isf(q, df) / df) + float(stats.norm.isf(q))
    return float(optimize.brentq(missing, 0.0, upper))


def p_values(t: np.ndarray, df: int) -> np.ndarray:
    return 2.0 * stats.t.sf(np.abs(t), df)


def judge(samples: Mapping[tuple[str, str], tuple[Sequence[float], Sequence[float]]],
          rel_floor: float = 0.0, rate: float = FALSE_ALARM_RATE) -> list[SeedMeanTest]:
    """Every ``(model, metric) -> (committed per-seed means, reproduced ones)``, each side with
    >= ``MIN_SEEDS`` values, judged at a family-wise ``rate`` (Bonferroni over all of them)."""
    n_tests = len(samples)
    tests = []
    for (model, metric), (committed, reproduced) in sorted(samples.items()):
        if min(len(committed), len(reproduced)) < MIN_SEEDS:
            raise ValueError(f"{model} {metric}: need >= {MIN_SEEDS} seeds a side, got "
                             f"{len(committed)} and {len(reproduced)}")
        shift, se, df = pooled_t(np.array(committed), np.array(reproduced))
        se = float(se)
        quantile = critical_t(df, n_tests, rate)
        bound = max(quantile * se, rel_floor * abs(float(np.mean(committed))))
        p = float(p_values(np.array(float(shift) / se), df)) if se > 0 else float(shift == 0)
        tests.append(SeedMeanTest(model, metric, tuple(map(float, committed)), tuple(map(float, reproduced)), se,
                                  df, quantile, bound, detectable_shift(df, n_tests, POWER, rate) * se, p))
    return tests


def detectable_lines(tests: Sequence[SeedMeanTest]) -> list[str]:
    """Per metric: the smallest seed-mean shift detected with POWER, least to most noisy model."""
    by_metric: dict[str, list[SeedMeanTest]] = {}
    for t in tests:
        by_metric.setdefault(t.metric, []).append(t)
    lines = []
    for metric, group in sorted(by_metric.items()):
        quiet = min(group, key=lambda t: t.detectable)
        noisy = max(group, key=lambda t: t.detectable)
        span = (f"{_g(quiet.detectable)} ({quiet.model})" if quiet is noisy else
                f"{_g(quiet.detectable)} ({quiet.model}) to {_g(noisy.detectable)} ({noisy.model})")
        lines.append(f"  {metric}: {span}")
    return lines


def rule_line(tests: Sequence[SeedMeanTest], rate: float = FALSE_ALARM_RATE) -> str:
    """How the seed-means were judged, in one line for the summary."""
    if not tests:
        return "seed-mean rule: nothing to judge (no model with >= 2 seeds on both sides)"
    dfs = sorted({t.df for t in tests})
    models = len({t.model for t in tests})
    return (f"seed-mean rule: {len(tests)} tests ({models} models x their judged metrics), each model's own "
            f"seed variance over both runs (t with {'/'.join(map(str, dfs))} df), Bonferroni at "
            f"{rate:.0%} for the whole comparison; the smallest seed-mean shift detected with "
            f"{POWER:.0%} power, per metric (least to most noisy model):")


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else "inf"


__all__ = ["FALSE_ALARM_RATE", "POWER", "SeedMeanTest", "critical_t", "detectable_lines", "detectable_shift",
           "judge", "pooled_t", "p_values", "rule_line"]
