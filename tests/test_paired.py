"""Paired comparisons over photos and seeds: the photo's difficulty cancels, seeds count, small studies name no winner."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from colorstudy.paired import paired_difference, photo_table, tied_with
from colorstudy.report.pooling import pool_runs
from colorstudy.seed_stats import model_interval


def table(values: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"i{k}" for k in range(len(values))], "group": groups, "ciede2000": values})


def seeds_of(values: np.ndarray, groups: np.ndarray, seed_shifts: list[float]) -> list[pd.DataFrame]:
    return [table(values + s, groups) for s in seed_shifts]


def test_pairing_cancels_the_photos_own_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(5, 25, 40)  # some photos are much harder than others, for every model
    groups = np.arange(40).astype(str)
    a = seeds_of(difficulty - 1.0 + rng.normal(0, 0.2, 40), groups, [0.0, 0.05, -0.05])
    b = seeds_of(difficulty + rng.normal(0, 0.2, 40), groups, [0.0, 0.05, -0.05])
    ma, mb = model_interval(photo_table(a, "ciede2000")), model_interval(photo_table(b, "ciede2000"))
    assert ma.high > mb.low  # side by side the marginal intervals overlap: no verdict
    diff = paired_difference(a, b, "ciede2000", "lower")
    assert diff.mean == pytest.approx(-1.0, abs=0.1) and diff.distinguishable and diff.favours_a("lower")
    assert diff.verdict == "a better" and not diff.favours_a("higher")


def test_seed_noise_larger_than_the_gap_is_no_win():
    """Every photo better under a, but a's seeds spread more than the gap: over seeds, a tie."""
    rng = np.random.default_rng(3)
    groups = np.arange(30).astype(str)
    base = rng.uniform(5, 15, 30)
    a = seeds_of(base - 0.3, groups, [-1.0, 1.2, -0.5])
    b = seeds_of(base, groups, [0.4, -0.6, 0.1])
    per_seed = [(x["ciede2000"] - y["ciede2000"]).mean() for x, y in zip(a, b)]
    assert max(per_seed) > 0 > min(per_seed)
    diff = paired_difference(a, b, "ciede2000", "lower")
    assert diff.valid and not diff.distinguishable
    assert tied_with("a", {"a": a, "b": b}, {"ciede2000": "lower"}) == ["b"]


def test_two_photos_cannot_tell_whatever_the_crops_say():
    """One photo better, one worse, 48 crops each, 3 seeds: no verdict, and the words say why."""
    rng = np.random.default_rng(1)
    groups = np.repeat(["chelsea", "coffee"], 48)
    base = rng.uniform(8, 12, 96)
    b = seeds_of(base, groups, [0.0, 0.01, 0.02])
    a = seeds_of(base - 3.0 + rng.normal(0, 0.1, 96), groups, [0.0, 0.01, 0.02])  # better on both photos
    diff = paired_difference(a, b, "ciede2000", "lower")
    assert not diff.valid and not diff.distinguishable and not diff.favours_a("lower")
    assert diff.verdict == "cannot tell with 2 photos and 3 seeds"
    assert tied_with("a", {"a": a, "b": b}, {"ciede2000": "lower"}) == ["b"]


def test_a_clear_leader_has_no_ties_and_tables_must_match():
    rng = np.random.default_rng(2)
    groups = np.arange(30).astype(str)
    base = rng.uniform(5, 15, 30)
    tables = {"good": seeds_of(base - 2, groups, [0.0, 0.1, -0.1]),
              "bad": seeds_of(base + rng.normal(0, 0.1, 30), groups, [0.0, 0.1, 0.05])}
    assert tied_with("good", tables, {"ciede2000": "lower"}) == []
    shuffled = [t.iloc[::-1].reset_index(drop=True) for t in tables["bad"]]
    with pytest.raises(ValueError, match="different test images"):
        paired_difference(tables["good"], shuffled, "ciede2000", "lower")


def test_the_seedless_baseline_pairs_with_every_seed():
    rng = np.random.default_rng(4)
    groups = np.arange(12).astype(str)
    gray = table(rng.uniform(15, 25, 12), groups)
    model = seeds_of(gray["ciede2000"].to_numpy() - 5 + rng.normal(0, 0.3, 12), groups, [0.0, 0.2, -0.1])
    diff = paired_difference(model, [gray], "ciede2000", "lower")
    assert diff.valid and diff.favours_a("lower") and diff.mean == pytest.approx(-5 + 0.1 / 3, abs=0.3)


def test_a_pooled_summary_has_the_seed_mean_its_sd_and_an_interval_over_both():
    rng = np.random.default_rng(5)
    groups = np.arange(20).astype(str)
    base = rng.uniform(5, 15, 20)
    runs = seeds_of(base, groups, [0.0, 0.6, -0.3])
    summaries = [{"model": "A", "n_images": 20, "ciede2000": {"mean": float(t["ciede2000"].mean())}} for t in runs]
    pooled = pool_runs("A", [0, 1, 2], summaries, runs)
    cell = pooled["ciede2000"]
    assert pooled["seeds"] == [0, 1, 2] and pooled["n_images"] == 20
    assert cell["mean"] == pytest.approx(base.mean() + 0.1)
    assert cell["seed_sd"] == pytest.approx(np.std([0.0, 0.6, -0.3], ddof=1))
    direct = model_interval(photo_table(runs, "ciede2000"))
    assert (cell["ci95_low"], cell["ci95_high"]) == pytest.approx((direct.low, direct.high))
