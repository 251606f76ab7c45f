"""The overall ranking: mean rank over the ranking metrics, with its formula in words."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from colorstudy.metrics import METRICS
from colorstudy.report.inputs import ModelResult, backbone_label, is_random, mean_of, not_computed_metrics

# The ranking's metrics: fidelity (PSNR, SSIM), color error (CIEDE2000), color
# distribution (ΔColorfulness) and perceptual similarity (LPIPS, FID); a backbone
# metric takes part only when its backbone has pretrained weights and it was computed.
RANKING_METRICS = ("psnr", "ssim", "ciede2000", "delta_colorfulness", "lpips", "fid")
TIE_BREAK = "ciede2000"


def ranking_metrics(results: Sequence[ModelResult], available: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(metrics used, metrics left out because their backbone is randomly initialized)``."""
    used, dropped = [], []
    for name in RANKING_METRICS:
        if name not in available:
            continue
        backbone = METRICS[name].backbone
        if backbone and is_random(backbone_label(results, backbone)):
            dropped.append(name)
        else:
            used.append(name)
    return used, dropped


def not_ranked(results: Sequence[ModelResult]) -> list[tuple[str, str]]:
    """``(metric, why)`` of the ranking metrics the evaluations did not compute
    (``evaluate.fid_weights=none``): the formula names them and the setting that turns them on."""
    skipped = not_computed_metrics(results)
    return [(m, backbone_label(results, METRICS[m].backbone)) for m in RANKING_METRICS if m in skipped]


def rank_models(results: Sequence[ModelResult], metrics: Sequence[str]) -> tuple[list[str], dict[str, float],
                                                                                pd.DataFrame]:
    """``(ids best first, mean rank per id, per-metric ranks)``: rank 1 = best by the metric's
    direction, ties share the average rank; ordered by mean rank, then CIEDE2000, then id."""
    if not results:
        return [], {}, pd.DataFrame()
    ids = [r.model_id for r in results]
    values = pd.DataFrame({m: [mean_of(r.summary, m) for r in results] for m in metrics}, index=ids)
    ranks = pd.DataFrame({m: values[m].rank(ascending=METRICS[m].direction == "lower", method="average")
                          for m in metrics}, index=ids)
    mean_rank = ranks.mean(axis=1)
    tie = {r.model_id: mean_of(r.summary, TIE_BREAK) if TIE_BREAK in r.summary else 0.0 for r in results}
    order = sorted(ids, key=lambda i: (mean_rank[i], tie[i], i))
    return order, {i: round(float(mean_rank[i]), 6) for i in order}, ranks


def formula_text(used: Sequence[str], dropped: Sequence[str], skipped: Sequence[tuple[str, str]] = ()) -> str:
    parts = ", ".join(f"{m} ({METRICS[m].direction} is better)" for m in used)
    per_set = "" if any(m == "fid" for m, _ in skipped) else "; FID per set"
    text = (f"mean rank over {len(used)} metrics: {parts}. For each metric the models (not the grayscale "
            f"baseline) are ranked 1..N by their test-set value (mean over images{per_set}), ties sharing "
            f"the average rank; the model with the lowest mean rank is best; equal mean ranks are ordered by "
            f"{TIE_BREAK} mean, then by id.")
    if dropped:
        text += (f" Left out: {', '.join(dropped)}, computed with a randomly initialized backbone "
                 f"(not comparable to published numbers).")
    if skipped:
        text += " Not ranked: " + "; ".join(f"{m}, {why}" for m, why in skipped) + "."
    return text
