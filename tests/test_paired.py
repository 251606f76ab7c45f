"""Paired comparisons on the same photos: narrower than marginal intervals, honest about ties."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from colorstudy.intervals import bootstrap_ci
from colorstudy.paired import paired_difference, tied_with

BOOT = {"n_resamples": 2000, "seed": 0}


def table(values: np.ndarray, groups: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"i{k}" for k in range(len(values))], "group": groups, "ciede2000": values})


def test_pairing_cancels_the_photos_own_difficulty():
    rng = np.random.default_rng(0)
    difficulty = rng.uniform(5, 25, 40)  # some photos are much harder than others, for every model
    groups = np.arange(40).astype(str)
    a = table(difficulty - 1.0 + rng.normal(0, 0.2, 40), groups)
    b = table(difficulty + rng.normal(0, 0.2, 40), groups)
    ma, mb = bootstrap_ci(a["ciede2000"], **BOOT, groups=groups), bootstrap_ci(b["ciede2000"], **BOOT, groups=groups)
    assert ma[2] > mb[1]  # side by side the marginal intervals overlap: no verdict
    diff = paired_difference(a, b, "ciede2000", **BOOT)
    assert diff.mean == pytest.approx(-1.0, abs=0.1) and diff.distinguishable and diff.favours_a("lower")
    assert not diff.favours_a("higher")


def test_crops_of_two_photos_do_not_make_a_winner():
    """One photo better, one worse, 48 crops each: by crops a 'significant' win, by photos a tie."""
    rng = np.random.default_rng(1)
    groups = np.repeat(["chelsea", "coffee"], 48)
    b = table(rng.uniform(8, 12, 96), groups)
    a = table(b["ciede2000"].to_numpy() + np.where(groups == "chelsea", -3.0, 2.0) + rng.normal(0, 0.1, 96), groups)
    naive = bootstrap_ci(a["ciede2000"].to_numpy() - b["ciede2000"].to_numpy(), **BOOT)
    assert naive[2] < 0  # crops as independent samples: "a beats b"
    diff = paired_difference(a, b, "ciede2000", **BOOT)
    assert not diff.distinguishable
    tables = {"a": a, "b": b}
    assert tied_with("a", tables, {"ciede2000": "lower"}, **BOOT) == ["b"]


def test_a_clear_leader_has_no_ties_and_tables_must_match():
    rng = np.random.default_rng(2)
    groups = np.arange(30).astype(str)
    base = rng.uniform(5, 15, 30)
    tables = {"good": table(base - 2, groups), "bad": table(base + rng.normal(0, 0.1, 30), groups)}
    assert tied_with("good", tables, {"ciede2000": "lower"}, **BOOT) == []
    with pytest.raises(ValueError, match="different test images"):
        paired_difference(tables["good"], tables["bad"].iloc[::-1].reset_index(drop=True), "ciede2000", **BOOT)
