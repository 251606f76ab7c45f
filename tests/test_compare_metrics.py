"""The CI comparator's policy, on the real committed reports and dvc.lock (no DVC run):
the rules for data, deterministic values, presence and a seed's values (the seed-mean
rule: test_compare_seeds.py)."""

from __future__ import annotations

import copy
import json

import pytest

from committed_run import (BASELINE, EVAL, MODEL, ROOT, changed, committed, half_width, lock,  # noqa: F401
                           n_seed_tests, row)
from colorstudy.compare import (DETERMINISTIC_REL_TOL, NOTHING_COMPARED, TOLERANCE_HALF_WIDTHS, Metrics,
                                compare_runs, flatten_metrics, is_compared)
from colorstudy.config import FID_NOT_COMPUTED


def test_identical_runs_pass(committed, lock):
    result = compare_runs(committed, copy.deepcopy(committed), lock, copy.deepcopy(lock))
    assert result.passed, result.reasons()
    assert all(r.status == "ok" for r in result.rows)
    assert result.table() == ""
    # every value of every file, and one seed-mean per model and judged metric
    n = sum(len(m) for m in committed.values()) + n_seed_tests(committed)
    assert sum(r.rule == "seed_mean" for r in result.rows) == n_seed_tests(committed) == 16 * 11
    assert result.summary().startswith(f"{n} metrics compared: {n} identical")
    assert "0 failed" in result.summary()


@pytest.mark.parametrize("widths, passes", [(0.5, True), (1.5, False)])
def test_trained_metric_within_one_half_width(committed, lock, widths, passes):
    value = committed[EVAL]["psnr.mean"] + widths * half_width(committed, EVAL, "psnr")
    result = compare_runs(committed, changed(committed, EVAL, "psnr.mean", value), lock, lock)
    assert result.passed is passes
    assert row(result, EVAL, "psnr.mean").status == ("moved" if passes else "FAIL")
    if not passes:
        assert len(result.failed) == 1
        assert EVAL in result.reasons()[0] and "psnr.mean" in result.reasons()[0]
        assert f"allowed {TOLERANCE_HALF_WIDTHS:g}" in result.reasons()[0]


def test_inverted_interval_fails(committed, lock):
    low = committed[EVAL]["ssim.ci95_high"] + 1e-6  # inside the tolerance, but low > high
    result = compare_runs(committed, changed(committed, EVAL, "ssim.ci95_low", low), lock, lock)
    assert [("ssim.ci95_low", True)] == [(r.metric, "inverted" in r.reason) for r in result.failed]


def test_baseline_is_deterministic(committed, lock):
    ssim = committed[BASELINE]["ssim.mean"]
    result = compare_runs(committed, changed(committed, BASELINE, "ssim.mean", ssim * (1 + 1e-3)), lock, lock)
    assert not result.passed
    assert BASELINE in result.reasons()[0] and "ssim.mean" in result.reasons()[0]
    # the largest drift measured under baseline SIMD (2e-5, FID's matrix square root, when FID
    # was computed by default) stays within tolerance on any baseline metric
    ssim_drifted = changed(committed, BASELINE, "ssim.mean", ssim * (1 + 2e-5))
    result = compare_runs(committed, ssim_drifted, lock, lock)
    assert result.passed and row(result, BASELINE, "ssim.mean").allowed == f"rel {DETERMINISTIC_REL_TOL:g}"


def test_the_gray_images_own_colorfulness_is_held_to_an_absolute_tolerance(committed, lock):
    """Zero in exact arithmetic: measured across CPUs, its ~0.003 moved 1.3e-4 relative (3.7e-7)."""
    cf = committed[BASELINE]["colorfulness.mean"]
    result = compare_runs(committed, changed(committed, BASELINE, "colorfulness.mean", cf + 3.7e-7), lock, lock)
    assert result.passed and row(result, BASELINE, "colorfulness.mean").status == "moved"
    assert row(result, BASELINE, "colorfulness.mean").allowed == "abs 1e-05"
    result = compare_runs(committed, changed(committed, BASELINE, "colorfulness.mean", cf + 1e-3), lock, lock)
    assert [r.metric for r in result.failed] == ["colorfulness.mean"]
    error = committed[BASELINE]["delta_colorfulness.mean"]
    result = compare_runs(committed, changed(committed, BASELINE, "delta_colorfulness.mean", error * 1.001),
                          lock, lock)
    assert [r.metric for r in result.failed] == ["delta_colorfulness.mean"]


def test_trained_fid_is_informational(committed, lock):
    committed = with_fid(committed)
    fid = committed[EVAL]["fid"]
    result = compare_runs(committed, changed(committed, EVAL, "fid", fid * 1.1), lock, lock)
    assert result.passed
    assert row(result, EVAL, "fid").status == "moved"
    assert "1 informational moved" in result.summary()


def test_missing_and_new_metric_fail(committed, lock):
    committed = with_fid(committed)
    reproduced = copy.deepcopy(committed)
    del reproduced[EVAL]["fid"]  # informational values still have to be there
    reproduced[EVAL]["extra"] = 1.0
    result = compare_runs(committed, reproduced, lock, lock)
    assert {(r.metric, r.reason.split(": ", 1)[1]) for r in result.failed} == {
        ("fid", "fid is missing now"), ("extra", "extra is new (not in the committed run)")}


def test_provenance_must_be_equal(committed, lock):
    result = compare_runs(committed, changed(committed, EVAL, "provenance.lpips", "alexnet: pretrained"),
                          lock, lock)
    assert not result.passed and "provenance.lpips" in result.reasons()[0]


def test_data_must_be_byte_identical(committed, lock):
    reproduced_lock = copy.deepcopy(lock)
    shards = next(o for o in reproduced_lock["stages"]["preprocess"]["outs"] if o["path"] == "data/shards")
    shards["md5"] = "0" * 32 + ".dir"
    result = compare_runs(committed, committed, lock, reproduced_lock)
    assert not result.passed
    [reason] = result.reasons()
    assert "preprocess" in reason and "data/shards" in reason and "not byte-identical" in reason


def test_nothing_to_compare_fails():
    result = compare_runs({}, {}, {}, {})
    assert not result.passed
    assert f"FAIL {NOTHING_COMPARED}" in result.reasons()


def test_table_lists_failures_first(committed, lock):
    committed = with_fid(committed)
    reproduced = changed(committed, EVAL, "fid", committed[EVAL]["fid"] * 1.1)  # moved, sorts first by path
    psnr = committed[BASELINE]["psnr.mean"]
    reproduced[BASELINE]["psnr.mean"] = psnr + 1.0  # FAIL, sorts later by path
    lines = compare_runs(committed, reproduced, lock, lock).table().splitlines()
    assert lines[0].split() == ["Path", "Metric", "HEAD", "workspace", "Change", "Allowed", "Status"]
    assert lines[1].startswith(BASELINE) and lines[1].endswith("FAIL")
    assert lines[2].startswith(EVAL) and lines[2].endswith("moved")
    assert len(lines) == 3


def test_every_numbers_file_is_compared(committed):
    assert {"reports/preprocess.json", "reports/ranking.json", EVAL, BASELINE,
            "reports/summary/baseline.json", f"reports/summary/{MODEL}.json"} <= committed.keys()
    assert is_compared("reports/summary/baseline.json") and not is_compared("reports/figures/x.json")
    assert is_compared("reports/eval/A/seed12/metrics.json")
    # the layout before seeds is no file of a run any more
    assert not is_compared("reports/eval/A/metrics.json") and not is_compared("reports/eval/A/seed0/per_image.json")


def test_flatten_matches_dvc(committed):
    """Our flattening must name metrics exactly as `dvc metrics diff` does."""
    show = pytest.importorskip("dvc.repo.metrics.show")
    from dvc.utils.flatten import flatten
    for path in (p.relative_to(ROOT).as_posix() for p in (ROOT / "reports").rglob("*.json")):
        data = json.loads((ROOT / path).read_text())
        assert flatten_metrics(data) == flatten(show._extract_metrics(data, path)), path


def test_output_colorfulness_is_informational_its_error_is_not(committed, lock):
    """Measured across CPUs: colorfulness moved 29 half-widths of its (tiny) interval."""
    moved = changed(committed, EVAL, "colorfulness.mean", committed[EVAL]["colorfulness.mean"] * 1.085)
    result = compare_runs(committed, moved, lock, lock)
    assert result.passed and row(result, EVAL, "colorfulness.mean").status == "moved"
    assert not any(r.metric.startswith("colorfulness") for r in result.rows if r.rule == "seed_mean")
    stem = "delta_colorfulness"
    worse = changed(committed, EVAL, f"{stem}.mean",
                    committed[EVAL][f"{stem}.mean"] + 2 * half_width(committed, EVAL, stem))
    assert not compare_runs(committed, worse, lock, lock).passed


# -- FID off (evaluate.fid_weights=none) ---------------------------------------------------------

SUMMARY = f"reports/summary/{MODEL}.json"
RANDOM_FID = "inception_v3 (pytorch-fid): random init (seed 0)"


def with_fid(metrics: dict[str, Metrics]) -> dict[str, Metrics]:
    """The committed run (FID off by default) as a run with a random-init FID wrote it:
    a number in every evaluation, none in the summaries (a random FID is no headline)."""
    out = copy.deepcopy(metrics)
    evaluations = sorted(p for p in out if p.startswith("reports/eval/"))
    for k, path in enumerate(evaluations):
        out[path]["fid"] = 100.0 + k
        out[path]["provenance.fid"] = RANDOM_FID
    for path, values in out.items():
        if path.startswith("reports/summary/"):
            values.pop("fid", None)
    return out


def without_fid(metrics: dict[str, Metrics]) -> dict[str, Metrics]:
    """The committed run as one with evaluate.fid_weights=none writes it: no `fid` in the
    evaluations, their provenance and every summary file saying "not computed"."""
    out = copy.deepcopy(metrics)
    for path, values in out.items():
        if path.startswith("reports/eval/"):
            values.pop("fid", None)
            values["provenance.fid"] = FID_NOT_COMPUTED
        elif path.startswith("reports/summary/"):
            values["fid"] = FID_NOT_COMPUTED
    return out


def test_two_runs_without_fid_compare_equal(committed, lock):
    off = without_fid(committed)
    result = compare_runs(off, copy.deepcopy(off), lock, lock)
    assert result.passed and all(r.status == "ok" for r in result.rows)
    assert row(result, SUMMARY, "fid").committed == FID_NOT_COMPUTED


def test_fid_turned_off_fails_naming_the_setting(committed, lock):
    """A run without FID against one with it: settings differ, never a rounding difference."""
    committed = with_fid(committed)
    result = compare_runs(committed, without_fid(committed), lock, lock)
    assert not result.passed
    assert row(result, EVAL, "fid").status == "FAIL" and row(result, SUMMARY, "fid").status == "FAIL"
    reasons = result.reasons()
    assert f"FAIL {EVAL}: fid is missing now: in the reproduced run it is {FID_NOT_COMPUTED}" in reasons
    assert f"FAIL {SUMMARY}: fid is new (not in the committed run): in the reproduced run it is " \
           f"{FID_NOT_COMPUTED}" in reasons
    # and back: the committed run without FID, the reproduced one with it
    back = compare_runs(without_fid(committed), committed, lock, lock)
    assert f"FAIL {EVAL}: fid is new (not in the committed run): in the committed run it is {FID_NOT_COMPUTED}" \
        in back.reasons()


def test_a_number_against_not_computed_fails(committed, lock):
    # e.g. a summary with an ImageNet FID (a number) against one without FID: informational
    # files would only show a moved value; this one fails
    with_number = changed(without_fid(committed), SUMMARY, "fid", 12.5)
    result = compare_runs(with_number, without_fid(committed), lock, lock)
    assert row(result, SUMMARY, "fid").status == "FAIL"
    assert f"FAIL {SUMMARY}: fid 12.5 -> {FID_NOT_COMPUTED!r}: computed in one run only, so the runs' settings " \
           f"differ (not their rounding)" in result.reasons()
