"""Compare a reproduced study run with the committed one, honestly across machines.

Why: float32 training takes other rounding paths on a CPU with another SIMD width, so a
trained model's metrics move from machine to machine, while the data (download,
preprocess) is byte-identical everywhere and the grayscale baseline's evaluation nearly
so. One tolerance for all of it is either too strict (CI fails on every other machine) or
too loose (it hides a broken data pipeline), so each value gets the tolerance its source
earns:

* data outputs in ``dvc.lock``: byte-identical (equal md5);
* deterministic metrics (preprocess counts, the grayscale baseline's evaluation and
  headline row): relative 1e-4;
* a trained model, every model on any kind of machine: per judged test metric (those
  with a bootstrap CI, descriptive ones left out) the rerun's mean over its seeds against
  the committed seeds, a two-sample t bound from the model's own seed variance with a
  Bonferroni share of a 1 % false-alarm rate for the whole comparison
  (:mod:`colorstudy.seed_rule`, which says why and what it can detect;
  :mod:`colorstudy.compare_seeds`); it needs >= 2 seeds on both sides, and a model
  trained on another kind with fewer fails saying so;
* and, stricter, each seed ``reports/eval/ID/seedS/metrics.json`` trained on the same
  kind of machine (CPU model, SIMD kernels, threads, torch: ``checkpoint.trained_on``) as
  its committed seed: every test metric within one committed CI half-width (in practice
  bitwise equal); trained on another kind, the seed's values are shown, judged through
  the seed-mean (measured: a default run moved up to 27 half-widths there);
* other trained-model values (fid, colorfulness, selected epoch, rank): shown when they
  move, never failing; a value, file, seed or model missing on either side always fails;
* a metric one run computed and the other did not (FID with ``evaluate.fid_weights=none``:
  no ``fid`` in metrics.json, ``provenance.fid`` and the summary files say "not computed")
  fails naming that, since the settings differ; two runs without it compare as equal.

:func:`compare_runs` is pure (parsed JSON and YAML in, a :class:`Comparison` out);
``.ci/compare_metrics.py`` feeds it the files of :data:`COMPARED_FILES` at HEAD and in the
work tree (all of them, not only the headline that ``dvc metrics`` shows) and both dvc.lock.
"""
from __future__ import annotations

import fnmatch
import json
import math
import re
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from colorstudy.compare_rows import TRAINED_ON, Comparison, Metrics, Row, Rule, Value, is_number
from colorstudy.compare_seeds import EVAL_SEED, seed_mean_rows, seed_runs
from colorstudy.config import NOT_COMPUTED

# download and preprocess involve no training: they are byte-identical on every machine
# (exact float32 Lab, no SIMD-dependent kernels), so any md5 change is a real change of
# the data, and then every downstream number differs for a reason other than rounding.
DATA_STAGES = ("download", "preprocess")

# No trained weights go into these, so they repeat up to float rounding. Measured under
# baseline SIMD (numpy and torch dispatch turned down to x86-64-v2 / scalar kernels): only fid (its matrix square root) and the gray image's
# near-zero colorfulness moved, by ~2e-5 relative; 1e-4 leaves 5x headroom and still
# fails any real change (those move the 3rd-4th significant digit).
DETERMINISTIC_FILES = ("reports/preprocess.json", "reports/eval/baseline/metrics.json")
DETERMINISTIC_REL_TOL = 1e-4
# Below this, differences are rounding of values that are zero in exact arithmetic.
ABS_FLOOR = 1e-9
# In reports/eval/ID/seedS/metrics.json: the test-set size is data, not training.
EVAL_EXACT_KEYS = ("n_images", "n_photos")

# A trained model's metric carries a percentile-bootstrap 95% CI over the test photos. A
# reproduction that moves by less than the committed interval's own half-width cannot be
# told from a resampling of the test photos; more than that could change what a reader
# concludes from the table, so it fails. Measured on the default run, this machine (AVX-512)
# against a full `bash .ci/run` with torch, oneDNN, MKL and numpy held to AVX2: every
# error metric moved at most 0.46 half-widths (LPIPS; PSNR 0.14, CIEDE2000 0.28).
TOLERANCE_HALF_WIDTHS = 1.0
# ...but only per seed between runs trained on the same kind of machine. Across kinds the
# interval rule does not hold: the committed default run (Xeon, AVX-512) rerun on an
# AVX2-only AMD EPYC moved 37 of its values by 1-27 half-widths (densenet's CIEDE2000
# 14.5 -> 18.4), because 4 epochs on 4 photos amplify the first rounding difference into
# another training trajectory. So another kind's seed is one more draw of the model's
# seed distribution: its values are shown, and the model's seed-mean is judged against
# the committed seeds (compare_seeds); what must match everywhere (data, baseline,
# presence, provenance, interval sanity) still fails per file.
INTERVAL_FIELDS = ("mean", "ci95_low", "ci95_high")
# Not errors against the truth but a description of the output: its interval only says
# how alike the outputs are (near-gray models: ±0.007), while the value follows the
# training trajectory (the same AVX2 run: 8.5%, 29 half-widths). Judged through its
# error, delta_colorfulness, which keeps the interval rule; shown when it moves.
DESCRIPTIVE_METRICS = ("colorfulness", "colorfulness_signed")

# Derived from trained models only, with no interval to judge a move by.
INFORMATIONAL_FILES = ("reports/ranking.json",)

# The gray image's own colorfulness is zero in exact arithmetic: its ~0.003 is which
# pixels' rounding tips a uint8 channel, so its relative drift across CPUs is unbounded
# (measured 1.3e-4 relative, 3.7e-7 absolute, AMD EPYC against Xeon). It is held to an
# absolute 1e-5 instead (27x that drift; a real change of the gray image moves it by >= 0.01).
GRAY_COLORFULNESS_ABS_TOL = 1e-5

# Every file with numbers the pipeline writes: the headline (reports/summary, what
# `dvc metrics show` presents) and the full per-stage files behind it.
# A trained model's evaluation is one file per seed (dvc.yaml's evaluate@ID-SEED); a file
# of the layout before seeds (reports/eval/ID/metrics.json) is compared by no pattern.
COMPARED_FILES = ("reports/preprocess.json", "reports/ranking.json", "reports/summary/*.json",
                  "reports/eval/baseline/metrics.json", "reports/eval/*/seed*/metrics.json")

# The headline repeats the seed-means (judged from the per-seed files) and the rank;
# only the baseline's row is deterministic, and how many seeds a model pooled is a count.
SUMMARY_METRICS = re.compile(r"reports/summary/(?P<model>[^/]+)\.json")
SUMMARY_BASELINE = "reports/summary/baseline.json"
SUMMARY_EXACT_KEYS = ("seeds",)
NOTHING_COMPARED = "no metrics to compare: were reports/ committed and did `dvc repro` run?"


def compare_runs(committed: dict[str, Metrics], reproduced: dict[str, Metrics],
                 committed_lock: dict[str, Any], reproduced_lock: dict[str, Any]) -> Comparison:
    """Judge ``reproduced`` against ``committed`` (each file's flat metrics, keyed by repo
    path: :func:`load_metrics`) and the data hashes of the two parsed dvc.lock."""
    rows = _compare_data(committed_lock, reproduced_lock)
    for path in sorted(committed.keys() | reproduced.keys()):
        old, new = committed.get(path), reproduced.get(path)
        if not old or not new:
            rows.append(_missing_file(path, old, new))
            continue
        same_machine = old.get(TRAINED_ON) == new.get(TRAINED_ON)
        rows += [_compare_metric(path, name, old, new, same_machine) for name in sorted(old.keys() | new.keys())]
    old_runs, new_runs = seed_runs(committed), seed_runs(reproduced)
    judged = {model: _judged_stems(model, seeds) for model, seeds in old_runs.items()}
    seed_rows, notes = seed_mean_rows(old_runs, new_runs, judged, rel_floor=DETERMINISTIC_REL_TOL)
    rows += seed_rows
    if not committed and not reproduced:
        rows.append(Row("", "", None, None, "", "presence", "FAIL", NOTHING_COMPARED))
    return Comparison(rows, notes)


def _judged_stems(model: str, seeds: dict[int, Metrics]) -> list[str]:
    """The metrics whose seed-mean is judged: those the per-seed rule judges by an interval
    in every committed seed (the same set in each, unless a file is broken)."""
    stems: set[str] | None = None
    for seed, values in seeds.items():
        path = f"reports/eval/{model}/seed{seed}/metrics.json"
        mine = {n[:-len(".mean")] for n in values if n.endswith(".mean") and _rule(path, n, values)[0] == "interval"}
        stems = mine if stems is None else stems & mine
    return sorted(stems or ())


def flatten_metrics(data: dict[str, Any], prefix: str = "") -> Metrics:
    """A metrics file as dvc sees it: nested keys dotted, numbers/bools/strings kept,
    lists, nulls and empty objects dropped (``dvc.repo.metrics.show._extract_metrics``)."""
    flat: Metrics = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten_metrics(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float, str)):
            flat[f"{prefix}{key}"] = value
    return flat


def is_compared(path: str) -> bool:
    return any(fnmatch.fnmatchcase(path, pattern) for pattern in COMPARED_FILES)


def load_metrics(texts: Mapping[str, str]) -> dict[str, Metrics]:
    """``{path: file text}`` of the compared files -> ``{path: flat metrics}``."""
    return {path: flatten_metrics(json.loads(text)) for path, text in sorted(texts.items()) if is_compared(path)}


# -- rules ---------------------------------------------------------------------------


def _compare_data(committed_lock: dict[str, Any], reproduced_lock: dict[str, Any]) -> list[Row]:
    rows = []
    for stage in DATA_STAGES:
        old, new = _outs(committed_lock, stage), _outs(reproduced_lock, stage)
        if old is None or new is None:
            side = "committed" if old is None else "reproduced"
            rows.append(Row("dvc.lock", f"stages.{stage}", None, None, "present", "presence", "FAIL",
                            f"stage {stage} is not in the {side} dvc.lock: cannot check the data "
                            f"is byte-identical"))
            continue
        for path in sorted(old.keys() | new.keys()):
            a, b = old.get(path), new.get(path)
            same = a is not None and a == b
            rows.append(Row(path, f"md5 ({stage})", a, b, "identical", "data", "ok" if same else "FAIL",
                            "" if same else
                            f"stage {stage}: {path} is not byte-identical to the committed run "
                            f"(md5 {a} -> {b}), so every downstream stage differs"))
    return rows


def _outs(lock: dict[str, Any], stage: str) -> dict[str, str | None] | None:
    entry = (lock.get("stages") or {}).get(stage)
    return None if entry is None else {out["path"]: out.get("md5") for out in entry.get("outs", [])}


def _missing_file(path: str, old: Metrics | None, new: Metrics | None) -> Row:
    seed, summary = EVAL_SEED.fullmatch(path), SUMMARY_METRICS.fullmatch(path)
    what = (f"model {seed['model']} seed {seed['seed']}: {path}" if seed else
            f"model {summary['model']}: {path}" if summary else path)
    reason = f"{what} is missing now" if not new else f"{what} is new (not in the committed run)"
    return Row(path, "(file)", "present" if old else None, "present" if new else None,
               "present", "presence", "FAIL", reason)


def _compare_metric(path: str, name: str, old: Metrics, new: Metrics, same_machine: bool = True) -> Row:
    a, b = old.get(name), new.get(name)
    rule, tolerance = _rule(path, name, old)
    if rule == "interval" and not same_machine:
        rule, tolerance = "other_machine", math.inf
    abs_tol = max(ABS_FLOOR, tolerance) if rule == "deterministic" else ABS_FLOOR
    allowed = {"deterministic": (f"abs {abs_tol:g}" if abs_tol > ABS_FLOOR else f"rel {DETERMINISTIC_REL_TOL:g}")
               if _is_float_pair(a, b) else "exact",
               "interval": f"±{tolerance:.3g}", "other_machine": "other kind: seed-mean",
               "informational": "info"}[rule]
    row = Row(path, name, a, b, allowed, rule, "ok")
    if a is None or b is None:
        return _fail(row, _presence_reason(name, old, new))
    if _not_computed(a) != _not_computed(b):
        return _fail(row, f"{name} {a!r} -> {b!r}: computed in one run only, so the runs' settings differ "
                          f"(not their rounding)")
    if rule == "informational":
        return row if a == b else _moved(row)
    if rule in ("interval", "other_machine"):
        return _compare_interval(row, new, tolerance)
    if _is_float_pair(a, b):
        if a == b:
            return row
        if math.isclose(a, b, rel_tol=DETERMINISTIC_REL_TOL, abs_tol=abs_tol):
            return _moved(row)
        return _fail(row, f"{name} is deterministic: {a!r} -> {b!r} exceeds relative {DETERMINISTIC_REL_TOL:g}"
                          + (f" and absolute {abs_tol:g}" if abs_tol > ABS_FLOOR else ""))
    if a == b and type(a) is type(b):
        return row
    return _fail(row, f"{name} must be equal: {a!r} -> {b!r}")


def _presence_reason(name: str, old: Metrics, new: Metrics) -> str:
    missing = name not in new
    text = f"{name} is missing now" if missing else f"{name} is new (not in the committed run)"
    # a metric a run skips on purpose (evaluate.fid_weights=none) says so: as its value in
    # the summary files, under provenance in an evaluation's metrics.json
    for side, values in (("reproduced", new), ("committed", old)):
        for why in (values.get(name), values.get(f"provenance.{name}")):
            if _not_computed(why):
                return f"{text}: in the {side} run it is {why}"
    return text


def _not_computed(value: Value | None) -> bool:
    return isinstance(value, str) and value.startswith(NOT_COMPUTED)


def _compare_interval(row: Row, new: Metrics, tolerance: float) -> Row:
    a, b = row.committed, row.reproduced
    if not (is_number(a) and is_number(b)):
        return _fail(row, f"{row.metric} is not a number: {a!r} -> {b!r}")
    stem = row.metric.rsplit(".", 1)[0]
    low, high = new.get(f"{stem}.ci95_low"), new.get(f"{stem}.ci95_high")
    # an inverted interval is reported once, on its low bound
    if row.metric.endswith(".ci95_low") and is_number(low) and is_number(high) and low > high:
        return _fail(row, f"{stem}: reproduced interval is inverted (ci95_low {low} > ci95_high {high})")
    if a == b:
        return row
    if abs(b - a) <= tolerance + ABS_FLOOR:
        return _moved(row)
    widths = abs(b - a) / (tolerance / TOLERANCE_HALF_WIDTHS) if tolerance else math.inf
    return _fail(row, f"{row.metric} moved {a!r} -> {b!r}, {widths:.2f} committed CI half-widths "
                      f"(allowed {TOLERANCE_HALF_WIDTHS:g}): more than resampling the test photos explains")


def _rule(path: str, name: str, committed: Metrics) -> tuple[Rule, float]:
    """Which rule judges ``name`` in ``path``, and its absolute tolerance if an interval."""
    leaf = name.rsplit(".", 1)[-1]
    stem = name.rsplit(".", 1)[0]
    if path in DETERMINISTIC_FILES or path == SUMMARY_BASELINE:
        if stem in DESCRIPTIVE_METRICS:  # the gray image's own colorfulness: see GRAY_COLORFULNESS_ABS_TOL
            return "deterministic", GRAY_COLORFULNESS_ABS_TOL
        return "deterministic", 0.0
    if SUMMARY_METRICS.fullmatch(path):
        return ("deterministic", 0.0) if name in SUMMARY_EXACT_KEYS else ("informational", math.inf)
    if EVAL_SEED.fullmatch(path):
        low, high = committed.get(f"{stem}.ci95_low"), committed.get(f"{stem}.ci95_high")
        if stem in DESCRIPTIVE_METRICS or name == TRAINED_ON:
            return "informational", math.inf
        if leaf in INTERVAL_FIELDS and is_number(low) and is_number(high):
            return "interval", TOLERANCE_HALF_WIDTHS * abs(high - low) / 2
        # provenance and architecture say what was measured: a change is never rounding
        if name in EVAL_EXACT_KEYS or isinstance(committed.get(name), str):
            return "deterministic", 0.0
        return "informational", math.inf
    if path in INFORMATIONAL_FILES:
        return "informational", math.inf
    return "deterministic", 0.0  # a metrics file nobody classified yet: strict until someone does


def _moved(row: Row) -> Row:
    return replace(row, status="moved")


def _fail(row: Row, reason: str) -> Row:
    return replace(row, status="FAIL", reason=f"{row.path}: {reason}")


def _is_float_pair(a: object, b: object) -> bool:
    """Two numbers of which one is a float: compared with a tolerance; ints are exact."""
    return is_number(a) and is_number(b) and (isinstance(a, float) or isinstance(b, float))
