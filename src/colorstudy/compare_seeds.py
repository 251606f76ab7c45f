"""The seed-mean rows of a comparison: each trained model's mean over its seeds, judged on
any machine kind by :mod:`colorstudy.seed_rule`.

The per-seed files (``reports/eval/ID/seedS/metrics.json``) are compared one by one in
:mod:`colorstudy.compare`; here they are grouped by model, and per model and judged
metric one row holds both runs' seed-means and the bound. A model needs ``MIN_SEEDS``
seeds on both sides: with fewer, one trained on another kind cannot be judged at all (its
seed can be anywhere in the seed distribution), which fails; on the same kind the strict
per-seed rule still holds, so a one-seed study runs CI on its own kind of machine only.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import replace

from colorstudy.compare_rows import TRAINED_ON, Metrics, Row, is_number
from colorstudy.seed_rule import FALSE_ALARM_RATE, SeedMeanTest, detectable_lines, judge, rule_line
from colorstudy.seed_stats import MIN_SEEDS

EVAL_SEED = re.compile(r"reports/eval/(?P<model>[^/]+)/seed(?P<seed>\d+)/metrics\.json")
SEED_MEAN = "seed_mean"  # the row's metric: "psnr.seed_mean"

Runs = dict[str, dict[int, Metrics]]  # model -> seed -> that run's flat metrics.json


def seed_runs(metrics: Mapping[str, Metrics]) -> Runs:
    """The evaluation files of trained runs, by model and seed."""
    runs: Runs = {}
    for path, values in metrics.items():
        match = EVAL_SEED.fullmatch(path)
        if match:
            runs.setdefault(match["model"], {})[int(match["seed"])] = values
    return runs


def model_path(model: str) -> str:
    return f"reports/eval/{model}/seed*"


def seed_mean_rows(committed: Runs, reproduced: Runs, judged: Mapping[str, list[str]],
                   rel_floor: float) -> tuple[list[Row], tuple[str, ...]]:
    """Rows for every model on both sides (a side without it fails in its files already),
    and the summary's lines on the rule. ``judged``: model -> the metric stems the rule
    judges (those with a committed interval, descriptive ones left out)."""
    rows: list[Row] = []
    samples: dict[tuple[str, str], tuple[list[float], list[float]]] = {}
    for model in sorted(committed.keys() & reproduced.keys()):
        old, new = committed[model], reproduced[model]
        other_kind = sorted(s for s in old.keys() & new.keys() if old[s].get(TRAINED_ON) != new[s].get(TRAINED_ON))
        if min(len(old), len(new)) < MIN_SEEDS:
            if other_kind:
                rows.append(_too_few_seeds(model, old, new, other_kind))
            continue  # same kind: the per-seed rule judges it
        for stem in judged.get(model, []):
            a = [old[s].get(f"{stem}.mean") for s in sorted(old)]
            b = [new[s].get(f"{stem}.mean") for s in sorted(new)]
            if all(map(is_number, a + b)):  # a missing value fails in its file's rows
                samples[(model, stem)] = (a, b)
    tests = judge(samples, rel_floor=rel_floor)
    rows += [_row(t, len(committed[t.model]), len(reproduced[t.model])) for t in tests]
    return rows, (rule_line(tests), *detectable_lines(tests))


def _row(test: SeedMeanTest, k1: int, k2: int) -> Row:
    row = Row(model_path(test.model), f"{test.metric}.{SEED_MEAN}", test.committed_mean, test.reproduced_mean,
              f"±{test.bound:.3g}", "seed_mean", "ok")
    if test.shift == 0:
        return row
    if test.passed:
        return replace(row, status="moved")
    reason = (f"model {test.model}: {test.metric} seed-mean moved {test.committed_mean:.6g} -> "
              f"{test.reproduced_mean:.6g} ({k1} committed seeds {_values(test.committed)}, {k2} rerun seeds "
              f"{_values(test.reproduced)}): |shift| {abs(test.shift):.3g} > bound {test.bound:.3g} (t quantile "
              f"{test.quantile:.3g} at {test.df} df x SE {test.se:.3g}; Bonferroni for a {FALSE_ALARM_RATE:.0%} "
              f"false-alarm rate in the whole comparison): more than {k1} and {k2} seeds explain")
    return replace(row, status="FAIL", reason=f"{model_path(test.model)}: {reason}")


def _too_few_seeds(model: str, old: dict[int, Metrics], new: dict[int, Metrics], other_kind: list[int]) -> Row:
    seeds = ", ".join(map(str, other_kind))
    kind = new[other_kind[0]].get(TRAINED_ON)
    reason = (f"model {model} (seed {seeds}) was trained on another machine kind ({kind}) than the committed run, "
              f"and with {len(old)} committed and {len(new)} rerun seed(s) its seed-mean cannot be judged: CI needs "
              f">= {MIN_SEEDS} seeds on each side (params.yaml train.seeds) to tell a real change from another "
              f"training trajectory")
    return Row(model_path(model), f"({SEED_MEAN})", len(old), len(new), f">= {MIN_SEEDS} seeds", "seed_mean",
               "FAIL", f"{model_path(model)}: {reason}")


def _values(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"
