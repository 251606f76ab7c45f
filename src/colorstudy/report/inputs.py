"""What the report reads: the evaluations, predictions and training logs, and the
number formatting every section shares."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colorstudy.config import NOT_COMPUTED, DataParams, EvaluateParams, ReportParams
from colorstudy.evaluate import BASELINE, METRICS_FILE, PER_IMAGE_FILE, load_predictions
from colorstudy.metrics import METRICS
from colorstudy.paired import PairedDifference
from colorstudy.report.pooling import pool_runs
from colorstudy.weights import RANDOM_NOTE

ARROWS = {"higher": "↑", "lower": "↓"}
RANDOM_SHORT = "random init, not comparable to published numbers"
SETTING = re.compile(r"\b(evaluate\.\w+=\w+)")  # a param setting inside a provenance label


class ReportError(RuntimeError):
    """An input of the report is missing or stale; the message says which and what to rerun."""


# -- inputs ---------------------------------------------------------------------------

@dataclass
class ModelResult:
    """A model over its seeds (or the grayscale baseline, one seedless run).

    ``summary`` pools the runs (:mod:`colorstudy.report.pooling`); ``runs`` are the per-image
    tables of every seed, what the seed-aware tests read; ``per_image`` and ``rgb`` are the
    shown seed's (the first of ``train.seeds``), what the pictures show."""

    model_id: str
    summary: dict[str, Any]
    per_image: pd.DataFrame
    rgb: np.ndarray  # uint8 [N, H, W, 3]
    runs: list[pd.DataFrame]
    seeds: list[int]  # [] for the baseline

    @property
    def shown_seed(self) -> int | None:
        return self.seeds[0] if self.seeds else None


@dataclass(frozen=True)
class ReportInputs:
    """Everything the report's text is made from, gathered once by ``build_report``."""

    params: dict[str, Any]
    data: DataParams
    eval_params: EvaluateParams
    report_params: ReportParams
    models: list[ModelResult]
    baseline: ModelResult
    metrics: list[str]
    ranking: dict[str, Any]
    ranks: pd.DataFrame
    dropped: list[str]
    truth_cf: tuple[float, float, float]
    n: int
    n_photos: int
    grid_indices: list[int]
    examples: dict[str, Path]
    curve_figures: list[tuple[str, Path]]
    missing: list[str]
    stale: list[str]
    preprocess_json: Path
    out_dir: Path
    versus: dict[str, dict[str, PairedDifference]]
    train_dir: Path

    @property
    def rows(self) -> list[ModelResult]:
        """The models and the baseline: every row of a table."""
        return [*self.models, self.baseline]

    @property
    def lpips_label(self) -> str:
        return backbone_label(self.rows, "lpips")

    @property
    def fid_label(self) -> str:
        return backbone_label(self.rows, "fid")

    @property
    def not_computed(self) -> list[str]:
        return not_computed_metrics(self.rows)

    def rel(self, path: Path) -> str:
        return path.relative_to(self.out_dir).as_posix()


def run_dir(eval_dir: Path, model_id: str, seed: int) -> Path:
    """Where evaluate@ID-SEED writes (dvc.yaml's layout)."""
    return eval_dir / model_id / f"seed{seed}"


def study_order(params: dict[str, Any], eval_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """``(ids evaluated with every seed of train.seeds, in study order; ids of params lacking a seed's
    evaluation, with the seeds they lack; stale evaluations)``."""
    seeds = list((params.get("train") or {}).get("seeds") or [])
    found = sorted(p.name for p in eval_dir.iterdir() if p.is_dir() and p.name != BASELINE) if eval_dir.is_dir() else []
    listed = [str(k) for k in (params.get("models") or {})]
    ids, missing = [], []
    for model_id in listed:
        lacking = [s for s in seeds if not (run_dir(eval_dir, model_id, s) / METRICS_FILE).is_file()]
        if lacking:
            missing.append(f"{model_id} (seed{'s' * (len(lacking) > 1)} {', '.join(map(str, lacking))})")
        else:
            ids.append(model_id)
    return ids, missing, [i for i in found if i not in listed]


def _read_run(folder: Path, test_ids: list[str], rerun: str) -> tuple[dict[str, Any], pd.DataFrame]:
    summary = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    per_image = pd.read_parquet(folder / PER_IMAGE_FILE)
    if per_image["id"].tolist() != test_ids:
        raise ReportError(f"{folder} was made on another test split than the current shards: rerun {rerun} (dvc repro)")
    return summary, per_image


def _read_predictions(pred_path: Path, test_ids: list[str], rerun: str) -> np.ndarray:
    if not pred_path.is_file():
        raise ReportError(f"{pred_path} is missing: rerun {rerun} (dvc repro)")
    ids, rgb = load_predictions(pred_path)
    if ids != test_ids:
        raise ReportError(f"{pred_path} was made on another test split than the current shards: rerun {rerun} "
                          f"(dvc repro)")
    return rgb


def load_model(model_id: str, seeds: list[int], eval_dir: Path, pred_dir: Path, test_ids: list[str]) -> ModelResult:
    """Every seed's evaluation of ``model_id``, pooled; the first seed's pictures."""
    runs = [_read_run(run_dir(eval_dir, model_id, s), test_ids, f"evaluate@{model_id}-{s}") for s in seeds]
    rgb = _read_predictions(pred_dir / model_id / f"seed{seeds[0]}.npz", test_ids, f"evaluate@{model_id}-{seeds[0]}")
    tables = [table for _, table in runs]
    summary = pool_runs(model_id, seeds, [summary for summary, _ in runs], tables)
    return ModelResult(model_id, summary, tables[0], rgb, tables, list(seeds))


def load_baseline(eval_dir: Path, pred_dir: Path, test_ids: list[str]) -> ModelResult:
    """The grayscale baseline: one run, no seeds; its intervals recomputed like the models'."""
    summary, table = _read_run(eval_dir / BASELINE, test_ids, "evaluate_baseline")
    rgb = _read_predictions(pred_dir / f"{BASELINE}.npz", test_ids, "evaluate_baseline")
    return ModelResult(BASELINE, pool_runs(BASELINE, [], [summary], [table]), table, rgb, [table], [])


def read_curves(train_dir: Path, model_id: str, seed: int | None) -> dict[str, pd.DataFrame]:
    """dvclive's ``plots/metrics/**.tsv`` of one run: name (``val/ab_l1``) -> columns step, value."""
    root = train_dir / model_id / f"seed{seed}" / "plots" / "metrics"
    curves = {}
    for path in sorted(root.rglob("*.tsv")) if root.is_dir() else []:
        table = pd.read_csv(path, sep="\t")
        value = [c for c in table.columns if c not in ("step", "timestamp")]
        if "step" in table.columns and value:
            curves[path.relative_to(root).with_suffix("").as_posix()] = pd.DataFrame(
                {"step": table["step"], "value": table[value[-1]]})
    return curves


# -- numbers --------------------------------------------------------------------------

def metric_names(results: Sequence[ModelResult]) -> list[str]:
    """Registry metrics present in every result, in registry order."""
    return [m for m in METRICS if all(m in r.summary for r in results)]


def mean_of(summary: dict[str, Any], metric: str) -> float:
    value = summary[metric]
    return float(value["mean"] if isinstance(value, dict) else value)


def decimals_for(values: Iterable[float]) -> int:
    """Decimals showing about 4 significant digits of the column's largest magnitude."""
    finite = [abs(v) for v in values if math.isfinite(v) and v != 0]
    if not finite:
        return 2
    return int(min(6, max(0, 3 - math.floor(math.log10(max(finite))))))


def fmt(x: float, decimals: int) -> str:
    if math.isnan(x):
        return "—"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    return f"{x:.{decimals}f}"


def best_ids(values: dict[str, float], direction: str) -> set[str]:
    finite = {k: v for k, v in values.items() if not math.isnan(v)}
    if not finite:
        return set()
    target = max(finite.values()) if direction == "higher" else min(finite.values())
    return {k for k, v in finite.items() if v == target}


def is_random(label: str) -> bool:
    return "random" in label


def is_not_computed(label: str) -> bool:
    """A provenance label of a metric the evaluation skipped (``evaluate.fid_weights=none``)."""
    return label.startswith(NOT_COMPUTED)


def not_computed_metrics(results: Sequence[ModelResult]) -> list[str]:
    """Backbone metrics some evaluation did not compute, in registry order (absent from its
    metrics.json, which says why under ``provenance``)."""
    return [name for name, spec in METRICS.items() if spec.backbone and any(
        is_not_computed(str(r.summary.get("provenance", {}).get(spec.backbone, ""))) for r in results)]


def display(label: str) -> str:
    """A provenance label as the report prints it: random backbones say so in one phrase;
    a metric not computed names the setting that turns it on as code."""
    if is_not_computed(label):
        return SETTING.sub(r"`\1`", label)
    return label.replace(RANDOM_NOTE, RANDOM_SHORT)


def backbone_label(results: Sequence[ModelResult], key: str) -> str:
    """What every result says about backbone ``key`` (``lpips``, ``fid``), joined when they differ."""
    labels = sorted({display(r.summary.get("provenance", {}).get(key, "unknown")) for r in results})
    return "; ".join(labels)
