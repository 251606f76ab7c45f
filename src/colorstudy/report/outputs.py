"""The report's machine-readable files: headline metrics, plot data, comparison table."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from colorstudy.config import NOT_COMPUTED
from colorstudy.evaluate import BASELINE
from colorstudy.metrics import METRICS
from colorstudy.report.inputs import ARROWS, ModelResult, backbone_label, is_random, mean_of, not_computed_metrics

FIGURES = "figures"
SUMMARY = "summary"
PLOTS = "plots"
# The headline: the ranking metrics, plus the backbone-based ones only when their
# backbone is pretrained (a random-init LPIPS or FID is no headline number) or when
# they were not computed: then the file says so in words (no number stands in for it).
HEADLINE_METRICS = ("psnr", "ssim", "ciede2000", "delta_colorfulness")
BACKBONE_HEADLINE_METRICS = ("lpips", "fid")
PLOT_BASELINE = "grayscale"  # the baseline's name in plots/*.csv, drawn dashed / gray


def headline_metrics(rows: Sequence[ModelResult], available: Sequence[str]) -> list[str]:
    """The few numbers ``dvc metrics show`` presents (see HEADLINE_METRICS)."""
    skipped = not_computed_metrics(rows)
    pretrained = [m for m in BACKBONE_HEADLINE_METRICS if m in skipped
                  or (m in available and not is_random(backbone_label(rows, METRICS[m].backbone)))]
    return [m for m in (*HEADLINE_METRICS, *pretrained) if m in available or m in skipped]


def headline_value(r: ModelResult, metric: str) -> float | str:
    """The mean of ``metric``, or, when its evaluation did not compute it, why: the provenance
    label up to its first ";" (``not computed (evaluate.fid_weights=none)``), short enough that
    `dvc metrics show` stays within 160 columns; the report says how to turn it on."""
    if metric in r.summary:
        return mean_of(r.summary, metric)
    label = str(r.summary.get("provenance", {}).get(METRICS[metric].backbone, NOT_COMPUTED))
    head, sep, _ = label.partition(";")
    return f"{head})" if sep and "(" in head else label


def clear_outputs(directory: Path, *patterns: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for pattern in patterns:
        for old in directory.glob(pattern):  # ours: a dropped model's file must not linger
            old.unlink()


def write_summary(summary_dir: Path, models: Sequence[ModelResult], baseline: ModelResult,
                   ranking: dict[str, Any], names: Sequence[str]) -> None:
    # One small file per model: `dvc metrics show` prints a row per file and a column per
    # key, so the table stays a few columns wide however many models the study has.
    clear_outputs(summary_dir, "*.json")
    for r in [*models, baseline]:
        values: dict[str, Any] = {m: headline_value(r, m) for m in names}
        if r.model_id != BASELINE:  # the means are over seeds too: how many is part of the number
            values = {"rank": ranking["ranking"].index(r.model_id) + 1, "seeds": len(r.seeds), **values}
        (summary_dir / f"{file_safe(r.model_id)}.json").write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")


def write_plot_data(plots_dir: Path, models: Sequence[ModelResult], baseline: ModelResult,
                     curves: dict[str, dict[str, pd.DataFrame]]) -> None:
    # Long format, one `model` column: DVC colors one file's rows by a field of our choosing
    # (the templates in .dvc/plots), where a file per model would be colored by revision.
    clear_outputs(plots_dir, "*.csv")
    rows = [*models, baseline]
    with open(plots_dir / "means.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "metric", "mean", "ci95_low", "ci95_high"])
        for m in HEADLINE_METRICS:
            if METRICS[m].scope != "image" or m not in baseline.summary:
                continue
            label = f"{METRICS[m].label} {ARROWS[METRICS[m].direction]}"
            for r in rows:
                v = r.summary[m]
                name = PLOT_BASELINE if r.model_id == BASELINE else r.model_id
                w.writerow([name, label, v["mean"], v["ci95_low"], v["ci95_high"]])
    names = ("val/ab_l1", "val/ab_error")
    with open(plots_dir / "curves.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["epoch", "model", "val_ab_l1", "val_ab_error"])
        for r in models:
            c = curves.get(r.model_id, {})
            if all(n in c for n in names):
                for (step, a), d in zip(c[names[0]][["step", "value"]].itertuples(index=False), c[names[1]]["value"]):
                    w.writerow([int(step) + 1, r.model_id, a, d])
        base = next((c for c in curves.values() if all(f"val/baseline_{n[4:]}" in c for n in names)), None)
        if base is not None:  # the baseline's validation scores, the same for every model
            ab, de = (base[f"val/baseline_{n[4:]}"] for n in names)
            for step, a, d in zip(ab["step"], ab["value"], de["value"]):
                w.writerow([int(step) + 1, PLOT_BASELINE, a, d])


def file_safe(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


def write_comparison(out_dir: Path, rows: Sequence[ModelResult], metrics: Sequence[str]) -> None:
    def values(r: ModelResult, m: str) -> list[Any]:
        v = r.summary[m]
        if not isinstance(v, dict):
            return [v, "", "", ""]
        sd = v.get("seed_sd")
        return [v["mean"], "" if sd is None else sd, v["ci95_low"], v["ci95_high"]]

    # seed_sd: SD of the per-seed means (empty for the seedless baseline); the interval is
    # over photos and seeds (colorstudy.report.pooling)
    with open(out_dir / "comparison.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "metric", "mean", "seed_sd", "ci95_low", "ci95_high"])
        for m in metrics:
            for r in rows:
                w.writerow([r.model_id, m, *values(r, m)])
