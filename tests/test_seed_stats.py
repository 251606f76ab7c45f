"""seed_stats: intervals over photos and seeds, checked by simulation where the truth is known.

Simulated studies follow the crossed model of :mod:`colorstudy.seed_stats`: photo
effects ``a_p ~ N(0, 1)`` (photos differ most), seed effects ``b_s ~ N(0, 0.3)``, residual
``e_ps ~ N(0, 0.3)``; every draw from a fixed numpy Generator, so each test is
deterministic. ``python tests/test_seed_stats.py`` prints the simulation table.
"""

from __future__ import annotations

import math
import sys

import numpy as np
import pytest
from scipy import stats

from colorstudy.intervals import bootstrap_ci
from colorstudy.seed_stats import MIN_PHOTOS, MIN_SEEDS, model_interval, paired_difference

MU = 20.0  # a PSNR-like level: the true mean every interval should cover
SIGMA = {"photo": 1.0, "seed": 0.3, "resid": 0.3}
STUDIES = 1000  # simulated studies per cell: Monte-Carlo SD of a 5 % rate is 0.7 points
SIZES = [(n, k) for n in (2, 10, 117) for k in (1, 3)]
BOOT = 1000  # resamples, as params.yaml's evaluate.bootstrap
FPR_BOUND = stats.binom.ppf(0.95, STUDIES, 0.05) / STUDIES  # a 5 % rate plus Monte-Carlo slack


def draw_models(seed: int, n: int, k: int, *, interaction: float = 0.0, delta: float = 0.0,
                sigma: dict[str, float] = SIGMA, studies: int = STUDIES,
                skewed: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """``(a, b)``, each ``[studies, n, k]``: two models scored on the same photos.

    Model ``a`` is better by ``delta``; ``interaction`` is the SD of a photo-by-model
    effect with mean 0 over photos (a wins some photos, loses others, ties on average),
    exponential-skewed if ``skewed``. Each model has its own seed draws.
    """
    rng = np.random.default_rng(seed)
    photos = rng.normal(0.0, sigma["photo"], (studies, n, 1))  # the same photos for both models
    if skewed:  # mean 0, SD ``interaction``: a model that fails badly on a few photos
        mixed = interaction * (rng.exponential(1.0, (studies, n, 1)) - 1.0)
    else:
        mixed = rng.normal(0.0, interaction, (studies, n, 1))

    def seeds_and_noise() -> np.ndarray:
        return rng.normal(0.0, sigma["seed"], (studies, 1, k)) + rng.normal(0.0, sigma["resid"], (studies, n, k))

    a = MU + delta + photos + mixed + seeds_and_noise()
    return a, MU + photos + seeds_and_noise()


def new_claims(a: np.ndarray, b: np.ndarray, *, valid_only: bool = True) -> float:
    """Share of studies in which seed_stats names a winner (or, not ``valid_only``, its interval excludes 0)."""
    hits = 0
    for x, y in zip(a, b):
        diff = paired_difference(x, y, direction="higher")
        hits += diff.distinguishable if valid_only else (diff.interval.low > 0 or diff.interval.high < 0)
    return hits / len(a)


def old_claims(a: np.ndarray, b: np.ndarray) -> float:
    """Share of studies in which today's paired.py would call ``a - b`` distinguishable.

    paired.py runs the cluster bootstrap of ``bootstrap_ci`` on per-crop differences
    grouped by photo; with equal crops per photo that draws the same resamples as the
    photo-level differences grouped by photo, which is what is passed here. Today has
    one seed per model; given several, the natural extension averages them per photo.
    """
    hits = 0
    photos = np.arange(a.shape[1])
    for i, (x, y) in enumerate(zip(a, b)):
        _, low, high = bootstrap_ci((x - y).mean(axis=1), n_resamples=BOOT, seed=i, groups=photos)
        hits += low > 0 or high < 0
    return hits / len(a)


def coverage(y: np.ndarray, *, old: bool = False) -> float:
    """Share of simulated studies whose 95 % interval of the model's mean holds ``MU``."""
    hits = 0
    photos = np.arange(y.shape[1])
    for i, table in enumerate(y):
        if old:
            _, low, high = bootstrap_ci(table.mean(axis=1), n_resamples=BOOT, seed=i, groups=photos)
        else:
            iv = model_interval(table)
            low, high = iv.low, iv.high
        hits += low <= MU <= high
    return hits / len(y)


# --- unit tests: known tables -----------------------------------------------------

TABLE = np.array([[21.0, 22.5, 20.9], [18.2, 19.0, 18.8], [25.1, 26.0, 24.7], [22.0, 22.4, 21.1],
                  [19.5, 21.0, 19.9]])  # 5 photos x 3 seeds


def test_variance_matches_the_anova_done_by_hand():
    n, k = TABLE.shape
    photo_means, seed_means, grand = TABLE.mean(axis=1), TABLE.mean(axis=0), TABLE.mean()
    ss_total = np.sum((TABLE - grand) ** 2)
    ms_photo = k * np.var(photo_means, ddof=1)  # MS of a factor = replicates x variance of its means
    ms_seed = n * np.var(seed_means, ddof=1)
    ss_resid = ss_total - (n - 1) * ms_photo - (k - 1) * ms_seed
    ms_resid = ss_resid / ((n - 1) * (k - 1))
    assert ms_photo > ms_resid  # no truncation in this table: the textbook formula applies
    iv = model_interval(TABLE)
    assert iv.mean == pytest.approx(grand)
    assert iv.se ** 2 == pytest.approx((ms_photo + ms_seed - ms_resid) / (n * k))
    t_seed, t_photo = stats.t.ppf(0.975, k - 1), stats.t.ppf(0.975, n - 1)
    half = math.sqrt((t_seed ** 2 * ms_seed + t_photo ** 2 * (ms_photo - ms_resid)) / (n * k))
    assert (iv.low, iv.high) == pytest.approx((grand - half, grand + half))
    assert iv.multiplier == pytest.approx(half / iv.se)
    assert iv.seed_sd == pytest.approx(np.std(seed_means, ddof=1))
    assert iv.covers_both and iv.n_photos == 5 and iv.n_seeds == 3


def test_one_seed_or_one_photo_is_the_plain_t_interval_and_flagged():
    column = TABLE[:, :1]
    iv = model_interval(column)
    low, high = stats.t.interval(0.95, 4, loc=column.mean(), scale=stats.sem(column.ravel()))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert iv.seed_sd is None and not iv.covers_seed_variance and iv.covers_photo_variance and not iv.covers_both
    row = TABLE[:1, :]
    iv = model_interval(row)
    low, high = stats.t.interval(0.95, 2, loc=row.mean(), scale=stats.sem(row.ravel()))
    assert (iv.low, iv.high) == pytest.approx((low, high))
    assert not iv.covers_photo_variance and iv.covers_seed_variance
    single = model_interval([[3.0]])
    assert single.mean == 3.0 and math.isnan(single.low) and math.isnan(single.high) and not single.covers_both


def test_truncation_and_degenerate_spread():
    additive = np.add.outer([0.0, 1.0, 5.0, 2.0], [0.0, 0.3, -0.2])  # photo + seed, no residual at all
    iv = model_interval(additive)
    assert iv.se > 0 and iv.low < additive.mean() < iv.high
    flat = np.full((4, 3), 7.5)
    iv = model_interval(flat)
    assert (iv.low, iv.mean, iv.high, iv.se) == (7.5, 7.5, 7.5, 0.0)
    noise = np.random.default_rng(3).normal(0, 1, (6, 3))  # MS_photo may fall below MS_resid: floored, not negative
    assert model_interval(noise).se > 0


@pytest.mark.parametrize("bad, message", [
    (np.zeros((0, 3)), "N >= 1 photos"), (np.zeros((3, 0)), "K >= 1 seeds"),
    (np.zeros(4), "2-D table"), (np.zeros((2, 2, 2)), "2-D table"),
    (np.array([[1.0, np.nan], [2.0, 3.0]]), "1 of 4 values are not finite"),
    (np.array([[1.0, 2.0], [np.inf, 3.0]]), "photo rows \\[1\\]")])
def test_bad_tables_are_refused_with_a_clear_message(bad, message):
    with pytest.raises(ValueError, match=message):
        model_interval(bad)
    with pytest.raises(ValueError, match=message):
        paired_difference(bad, bad, direction="higher")


def test_paired_arguments_are_checked():
    with pytest.raises(ValueError, match="same photos"):
        paired_difference(TABLE, TABLE[:4], direction="lower")
    with pytest.raises(ValueError, match="same seed count"):
        paired_difference(TABLE, TABLE[:, :2], direction="lower")
    with pytest.raises(ValueError, match="direction"):
        paired_difference(TABLE, TABLE, direction="up")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="confidence"):
        model_interval(TABLE, confidence=95)


def test_verdicts_name_the_winner_or_the_study_size():
    rng = np.random.default_rng(4)
    base = rng.normal(20, 2, (12, 1)) + rng.normal(0, 0.1, (12, 3))
    better = base + 1.5 + rng.normal(0, 0.1, (12, 3))
    assert paired_difference(better, base, direction="higher").verdict == "a better"
    assert paired_difference(better, base, direction="lower").verdict == "b better"  # e.g. CIEDE2000: lower wins
    gray = rng.normal(15, 2, (12, 1))  # the grayscale baseline: no seeds, one column
    seedless = paired_difference(better, gray, direction="higher")
    assert seedless.interval == paired_difference(better, np.repeat(gray, 3, axis=1), direction="higher").interval
    small = paired_difference(better[:2], base[:2], direction="higher")
    assert small.interval.low > 0 and not small.distinguishable  # a large gap, but 2 photos cannot carry a claim
    assert small.verdict == "cannot tell with 2 photos and 3 seeds" and f">= {MIN_PHOTOS} photos" in small.reason
    one_seed = paired_difference(better[:, :1], base[:, :1], direction="higher")
    assert one_seed.verdict == "cannot tell with 12 photos and 1 seed" and f">= {MIN_SEEDS} seeds" in one_seed.reason
    assert paired_difference(base, base, direction="higher").verdict == "cannot tell with 12 photos and 3 seeds"


def test_old_bootstrap_over_two_photos_is_their_range():
    """The failure mode in one line: 2 photo means in, their min and max out as the 95 % interval."""
    _, low, high = bootstrap_ci([1.3, 0.2], n_resamples=BOOT, seed=0, groups=["chelsea", "coffee"])
    assert (low, high) == (0.2, 1.3)


# --- simulations --------------------------------------------------------------------

@pytest.mark.parametrize("interaction", [0.0, 0.5], ids=["seed-noise-only", "photo-by-model"])
@pytest.mark.parametrize("n, k", SIZES)
def test_equal_models_are_rarely_called_different(n, k, interaction):
    """(a) Same true mean, each model its own seeds: a winner in <= 5 % of studies."""
    a, b = draw_models(100 + n + k, n, k, interaction=interaction)
    rate = new_claims(a, b)
    assert rate <= FPR_BOUND
    if n < MIN_PHOTOS or k < MIN_SEEDS:
        assert rate == 0.0  # below the size that can carry a claim it never makes one


def test_skewed_photo_effects_at_the_minimum_size():
    """Why ``MIN_PHOTOS`` is 10, not 6: a model failing badly on a few photos still keeps <= 5 %."""
    a, b = draw_models(7, MIN_PHOTOS, 3, interaction=1.0, sigma={"photo": 1.0, "seed": 0.1, "resid": 0.3},
                       skewed=True)
    assert new_claims(a, b) <= FPR_BOUND


def test_two_photos_have_almost_no_power_even_before_the_size_rule():
    """Why N = 2 must not claim: a real gap of 1 (over 3x the seed SD) is found in few studies."""
    a, b = draw_models(8, 2, 3, interaction=0.5, delta=1.0)
    assert new_claims(a, b, valid_only=False) < 0.25
    a, b = draw_models(8, 117, 3, interaction=0.5, delta=1.0)
    assert new_claims(a, b) > 0.5  # the same gap with 117 photos: mostly found


@pytest.mark.parametrize("n", [2, 10, 117])
def test_interval_covers_the_true_mean_with_seeds(n):
    """(b) K >= 2: the interval claims both sources and covers ``MU`` in >= 93 % of studies."""
    for sigma in (SIGMA, {"photo": 0.3, "seed": 0.3, "resid": 1.0}):
        y, _ = draw_models(200 + n, n, 3, sigma=sigma)
        assert model_interval(y[0]).covers_both
        assert coverage(y) >= 0.93


def test_one_seed_under_covers_when_seeds_matter_which_is_why_it_is_flagged():
    """(b) K = 1: photo-only; with many photos the seed's offset dominates and coverage collapses."""
    y, _ = draw_models(300, 117, 1)
    assert not model_interval(y[0]).covers_seed_variance
    assert coverage(y) < 0.7
    y, _ = draw_models(301, 117, 1, sigma={**SIGMA, "seed": 0.0})  # no seed variance: the photo interval is right
    assert coverage(y) >= 0.93


def satterthwaite_half_widths(y: np.ndarray) -> np.ndarray:
    """The textbook alternative, for ``[studies, n, k]`` at once: ``t(Satterthwaite df) * se``.

    Same truncated variance as seed_stats (components floored at 0), one t quantile with
    the Satterthwaite df of ``MS_photo + MS_seed - MS_resid``.
    """
    _, n, k = y.shape
    grand, photo, seed = y.mean(axis=(1, 2)), y.mean(axis=2), y.mean(axis=1)
    ms_p = k * photo.var(axis=1, ddof=1)
    ms_s = n * seed.var(axis=1, ddof=1)
    resid = y - photo[:, :, None] - seed[:, None, :] + grand[:, None, None]
    ms_e = np.sum(resid ** 2, axis=(1, 2)) / ((n - 1) * (k - 1))
    total = np.maximum(ms_p, ms_e) + np.maximum(ms_s, ms_e) - ms_e
    df = total ** 2 / (ms_p ** 2 / (n - 1) + ms_s ** 2 / (k - 1) + ms_e ** 2 / ((n - 1) * (k - 1)))
    return stats.t.ppf(0.975, df) * np.sqrt(total / (n * k))


def test_why_not_one_satterthwaite_df():
    """Few seeds, many photos: a seed term drawn small hands the sum the photos' df and it under-covers."""
    y, _ = draw_models(500, 117, 2, studies=2 * STUDIES)
    satterthwaite = np.mean(np.abs(y.mean(axis=(1, 2)) - MU) <= satterthwaite_half_widths(y))
    assert satterthwaite < 0.91  # about 0.88
    assert coverage(y) >= 0.93


@pytest.mark.parametrize("k", [1, 3])
def test_old_bootstrap_over_two_photos_claims_far_too_often(k):
    """(c) Today's cluster bootstrap at 2 photos: equal models 'distinguishable' in a large share."""
    a, b = draw_models(400 + k, 2, k, interaction=0.5)
    assert old_claims(a, b) > 0.3
    a, b = draw_models(410 + k, 2, k)
    assert old_claims(a, b) > 0.3


def simulation_table() -> list[str]:
    """The report table: false-positive rate and coverage per size, new method and old bootstrap."""
    lines = [f"{STUDIES} simulated studies per cell; sigma photo/seed/resid = "
             f"{SIGMA['photo']}/{SIGMA['seed']}/{SIGMA['resid']}; FPR with photo-by-model SD 0 | 0.5",
             "N    K  new FPR        old FPR        new cover  old cover  new power(d=1, 0.5)"]
    for n, k in SIZES:
        fpr_new, fpr_old = [], []
        for interaction in (0.0, 0.5):
            a, b = draw_models(100 + n + k, n, k, interaction=interaction)
            fpr_new.append(new_claims(a, b))
            fpr_old.append(old_claims(a, b))
        y, _ = draw_models(200 + n, n, k)
        a, b = draw_models(8, n, k, interaction=0.5, delta=1.0)
        lines.append(f"{n:<4} {k}  {fpr_new[0]:.3f} {fpr_new[1]:.3f}    {fpr_old[0]:.3f} {fpr_old[1]:.3f}    "
                     f"{coverage(y):.3f}      {coverage(y, old=True):.3f}      {new_claims(a, b):.3f}")
    return lines


def min_photos_table(studies: int = 4 * STUDIES) -> list[str]:
    """Why ``MIN_PHOTOS``: at K = 3, the interval alone (no size rule) by photo count."""
    skew = {"photo": 1.0, "seed": 0.1, "resid": 0.3}
    lines = [f"{studies} studies per cell, K = 3, interval excludes 0 (no size rule)",
             "N    FPR skewed photo-by-model (SD 1)   power d=1 (photo-by-model SD 0.5)"]
    for n in (2, 3, 6, 8, 10, 20):
        a, b = draw_models(600 + n, n, 3, interaction=1.0, sigma=skew, skewed=True, studies=studies)
        fpr = new_claims(a, b, valid_only=False)
        a, b = draw_models(700 + n, n, 3, interaction=0.5, delta=1.0, studies=studies)
        lines.append(f"{n:<4} {fpr:.3f}                              {new_claims(a, b, valid_only=False):.3f}")
    return lines


if __name__ == "__main__":
    sys.stdout.write("\n".join(simulation_table() + [""] + min_photos_table()) + "\n")
