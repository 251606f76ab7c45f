"""The seed-mean rule in the comparator, on the committed reports in the seeds layout:
every trained model's seed-mean judged on any machine kind, the strict per-seed rule on
the same kind, and a model or seed missing (no DVC run)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy import stats

from committed_run import (BASELINE, EVAL, HERE, MODEL, SEED_MEANS, SEED_SD, SEEDS, THERE, changed,  # noqa: F401
                           committed, half_width, lock, n_seed_tests, row, seed_files, shifted, trained_on)
from colorstudy.compare import TRAINED_ON, compare_runs
from colorstudy.compare_seeds import EVAL_SEED
from colorstudy.seed_rule import critical_t, detectable_shift


def test_one_seed_trained_on_another_kind_is_judged_by_its_seed_mean(committed, lock):
    """Measured: the default run trained on another CPU kind moved up to 27 half-widths."""
    here, there = trained_on(committed, HERE), trained_on(committed, THERE)
    far = committed[EVAL]["psnr.mean"] + 27 * half_width(committed, EVAL, "psnr")
    result = compare_runs(there, changed(here, EVAL, "psnr.mean", far), lock, lock)
    assert result.passed, result.reasons()
    moved = row(result, EVAL, "psnr.mean")
    assert (moved.rule, moved.status, moved.allowed) == ("other_machine", "moved", "other kind: seed-mean")
    assert row(result, EVAL, TRAINED_ON).status == "moved"
    # one seed that far is within what 3 + 3 seeds explain (that seed is most of the spread)
    mean = row(result, SEED_MEANS, "psnr.seed_mean")
    assert (mean.rule, mean.status) == ("seed_mean", "moved")
    assert mean.committed == pytest.approx(committed[EVAL]["psnr.mean"])  # seed 1 sits at the seeds' mean
    assert mean.reproduced == pytest.approx((2 * committed[EVAL]["psnr.mean"] + far) / 3)
    assert "1 per-seed values moved on another machine kind" in result.summary()
    assert f"{len([p for p in committed if EVAL_SEED.fullmatch(p)])} trained run(s) (model, seed) are from " \
           f"another kind of machine than the committed run ({HERE} here, {THERE} committed)" in result.summary()
    # the same move on the same kind of machine fails, and what must hold everywhere still does
    assert not compare_runs(here, changed(here, EVAL, "psnr.mean", far), lock, lock).passed
    inverted = changed(here, EVAL, "ssim.ci95_low", committed[EVAL]["ssim.ci95_high"] + 1)
    assert [r.metric for r in compare_runs(there, inverted, lock, lock).failed] == ["ssim.ci95_low"]
    other_backbone = changed(here, EVAL, "provenance.lpips", "alexnet: pretrained")
    assert [r.metric for r in compare_runs(there, other_backbone, lock, lock).failed] == ["provenance.lpips"]
    baseline = changed(here, BASELINE, "ssim.mean", committed[BASELINE]["ssim.mean"] * 1.01)
    assert [r.metric for r in compare_runs(there, baseline, lock, lock).failed] == ["ssim.mean"]


def test_a_model_shifted_on_another_kind_fails_beyond_the_seed_bound(committed, lock):
    """All seeds of one model moved: the bound is the Bonferroni t quantile times the SE
    of the seed-means, the same verdict as scipy's two-sample t test at 1 % / m."""
    here, there = trained_on(committed, HERE), trained_on(committed, THERE)
    m = n_seed_tests(committed)
    hw = np.mean([half_width(committed, p, "ciede2000") for p in seed_files(committed)])
    se = SEED_SD * hw * np.sqrt(2 / len(SEEDS))  # both runs: seeds at -1, 0, +1 SEED_SD half-widths
    bound = critical_t(2 * len(SEEDS) - 2, m) * se
    values = [committed[p]["ciede2000.mean"] for p in seed_files(committed)]
    for factor, passes in ((0.98, True), (1.02, False)):
        result = compare_runs(there, shifted(here, "ciede2000.mean", factor * bound), lock, lock)
        p_value = stats.ttest_ind([v + factor * bound for v in values], values).pvalue
        assert result.passed is passes is bool(p_value > 0.01 / m), (factor, result.reasons())
        judged = row(result, SEED_MEANS, "ciede2000.seed_mean")
        assert judged.allowed == f"±{bound:.3g}"
        assert judged.change == pytest.approx(factor * bound)
        assert judged.status == ("moved" if passes else "FAIL")
    [reason] = result.reasons()
    assert f"model {MODEL}: ciede2000 seed-mean moved" in reason and f"bound {bound:.3g}" in reason
    assert "more than 3 and 3 seeds explain" in reason
    # per-seed values of another kind are not judged one by one: only the seed-mean failed
    assert [r.metric for r in result.failed] == ["ciede2000.seed_mean"]


def test_the_summary_states_the_shift_detected_with_80_percent_power(committed, lock):
    result = compare_runs(committed, trained_on(committed, HERE), lock, lock)
    summary = result.summary()
    m = n_seed_tests(committed)
    assert f"seed-mean rule: {m} tests (16 models x their judged metrics)" in summary
    assert "Bonferroni at 1% for the whole comparison" in summary and "80% power" in summary
    # the stand-in seeds' SD is SEED_SD half-widths: the quietest model's psnr sets the low end
    ses = {model: SEED_SD * np.mean([half_width(committed, p, "psnr") for p in seed_files(committed, model)])
           * np.sqrt(2 / len(SEEDS)) for model in {EVAL_SEED.fullmatch(p)["model"] for p in committed
                                                   if EVAL_SEED.fullmatch(p)}}
    quiet = min(ses, key=ses.get)
    line = next(x for x in summary.splitlines() if x.strip().startswith("psnr:"))
    assert line.strip().startswith(f"psnr: {detectable_shift(4, m) * ses[quiet]:.3g} ({quiet}) to ")


def test_a_same_kind_seed_keeps_the_strict_rule(committed, lock):
    """Within its seed-mean bound, but 1.5 committed half-widths off on the same kind: fails."""
    value = committed[EVAL]["psnr.mean"] + 1.5 * half_width(committed, EVAL, "psnr")
    result = compare_runs(committed, changed(committed, EVAL, "psnr.mean", value), lock, lock)
    assert [(r.path, r.metric) for r in result.failed] == [(EVAL, "psnr.mean")]
    assert row(result, SEED_MEANS, "psnr.seed_mean").status == "moved"


def test_one_seed_on_another_kind_cannot_be_judged(committed, lock):
    one = {p: v for p, v in committed.items() if not EVAL_SEED.fullmatch(p) or p.endswith("/seed0/metrics.json")}
    # on the same kind one seed is judged per seed, as before seeds
    assert compare_runs(one, copy.deepcopy(one), lock, lock).passed
    result = compare_runs(trained_on(one, THERE), trained_on(one, HERE), lock, lock)
    assert len(result.failed) == 16  # one line per model, not per metric
    reason = next(line for line in result.reasons() if f"model {MODEL} " in line)
    assert f"model {MODEL} (seed 0) was trained on another machine kind ({HERE})" in reason
    assert "with 1 committed and 1 rerun seed(s)" in reason and "CI needs >= 2 seeds on each side" in reason


def test_a_missing_seed_fails_naming_model_and_seed(committed, lock):
    reproduced = copy.deepcopy(committed)
    del reproduced[f"reports/eval/{MODEL}/seed2/metrics.json"]
    result = compare_runs(committed, reproduced, lock, lock)
    assert result.reasons() == [f"FAIL model {MODEL} seed 2: reports/eval/{MODEL}/seed2/metrics.json is missing now"]
    added = copy.deepcopy(committed)
    added[f"reports/eval/{MODEL}/seed3/metrics.json"] = copy.deepcopy(committed[EVAL])
    assert compare_runs(committed, added, lock, lock).reasons() == [
        f"FAIL model {MODEL} seed 3: reports/eval/{MODEL}/seed3/metrics.json is new (not in the committed run)"]


def test_the_number_of_seeds_in_the_headline_must_be_equal(committed, lock):
    summary = f"reports/summary/{MODEL}.json"
    result = compare_runs(committed, changed(committed, summary, "seeds", 2), lock, lock)
    assert [(r.path, r.metric) for r in result.failed] == [(summary, "seeds")]


def test_missing_model_fails_naming_it(committed, lock):
    reproduced = {p: v for p, v in committed.items() if p not in seed_files(committed)}
    result = compare_runs(committed, reproduced, lock, lock)
    assert not result.passed
    assert result.reasons() == [f"FAIL model {MODEL} seed {s}: reports/eval/{MODEL}/seed{s}/metrics.json is "
                                f"missing now" for s in SEEDS]
