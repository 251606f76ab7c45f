"""One model's seeds pooled into the summary every table and figure of the report reads.

Each evaluate@ID-SEED wrote a metrics.json (means with an interval over photos, for that
one training run) and a per-image table. The report speaks of the *model*, so a metric's
row is the mean over test images and seeds, its seed-to-seed SD (the spread of the
per-seed means), and a 95% interval that covers both another sample of photos and
another training run (:func:`colorstudy.seed_stats.model_interval`: crossed
random-effects ANOVA, a t quantile per variance piece). The grayscale baseline has no
seeds: the same interval over its one "run" covers photos only, which for a
deterministic predictor is all there is.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from colorstudy.metrics import METRICS
from colorstudy.paired import image_mean, photo_table
from colorstudy.seed_stats import ModelInterval, model_interval

INTERVAL_METHOD = ("95% interval over photos and seeds (crossed random-effects ANOVA of the photos × seeds "
                   "table of photo means, a t quantile per variance piece; `colorstudy/seed_stats.py`)")


def _interval(y: np.ndarray) -> ModelInterval | None:
    try:
        return model_interval(y)
    except ValueError:  # a non-finite value (an infinite PSNR): no interval to give
        return None


def pooled_metric(summaries: Sequence[dict[str, Any]], tables: Sequence[pd.DataFrame], metric: str) -> dict[str, Any]:
    """``{"mean", "ci95_low", "ci95_high", "seed_sd"}`` of ``metric`` over the runs."""
    per_seed = [float(s[metric]["mean"] if isinstance(s[metric], dict) else s[metric]) for s in summaries]
    seed_sd = float(np.std(per_seed, ddof=1)) if len(per_seed) > 1 else None
    if METRICS[metric].scope == "image" and all(metric in t.columns for t in tables):
        mean, interval = image_mean(tables, metric), _interval(photo_table(tables, metric))
    else:  # one number per run (FID): its interval can only be over seeds
        mean, interval = float(np.mean(per_seed)), _interval(np.asarray(per_seed)[None, :])
    if interval is None or math.isnan(interval.low):
        low = high = math.nan
    else:  # centred on the image mean (equal to the photo mean when photos give equal crop counts)
        low, high = mean - (interval.mean - interval.low), mean + (interval.high - interval.mean)
    return {"mean": mean, "ci95_low": low, "ci95_high": high, "seed_sd": seed_sd}


def pool_runs(model_id: str, seeds: Sequence[int], summaries: Sequence[dict[str, Any]],
              tables: Sequence[pd.DataFrame]) -> dict[str, Any]:
    """A metrics.json-shaped summary of the model over its runs (``seeds[k]`` wrote ``summaries[k]``)."""
    first = summaries[0]
    pooled: dict[str, Any] = {key: value for key, value in first.items() if key not in METRICS}
    pooled["model"] = model_id
    if seeds:  # the seedless baseline gets no `seeds` key
        pooled["seeds"] = list(seeds)
    checkpoints = [s.get("checkpoint", {}) for s in summaries]
    if checkpoints[0]:
        trained_on = sorted({str(c.get("trained_on", "not recorded")) for c in checkpoints})
        pooled["checkpoint"] = {**checkpoints[0], "trained_on": "; ".join(trained_on)}
    for metric in METRICS:
        if metric in first:
            pooled[metric] = pooled_metric(summaries, tables, metric)
    return pooled


__all__ = ["INTERVAL_METHOD", "pool_runs", "pooled_metric"]
