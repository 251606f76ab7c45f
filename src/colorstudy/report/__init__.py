"""The study report: every model (pooled over its seeds) and the grayscale baseline, side by side.

:func:`build_report` reads the evaluate stages' outputs (``<eval>/<id>/seed<S>/metrics.json``
and ``per_image.parquet`` for every seed of ``train.seeds``, ``<pred>/<id>/seed<S>.npz`` of the
first seed, the one the pictures show), the test split (for the gray inputs and the ground
truth), the training logs dvclive wrote (``<train>/<id>/seed<S>/plots/metrics``, first seed),
the preprocess stage's counts and ``params.yaml``, and writes into ``out_dir``:

* ``report.md`` (GitHub-rendered; figures as relative links to ``figures/*.jpg``) and
  ``report.html`` (the same content, self-contained: each figure embedded once as a
  ``data:`` URI);
* ``figures/``: comparison grid and best/worst examples per model (``*.jpg``), metric
  charts with CI whiskers and training curves (palette ``*.png``), at the size shown;
* ``summary/<id>.json`` and ``summary/baseline.json``: the headline numbers, the metrics
  ``dvc metrics show`` / ``dvc exp show`` present (a rank, the ranking metrics' means,
  LPIPS and FID only with ImageNet backbones; a metric not computed, FID with
  ``evaluate.fid_weights=none``, as its reason in words, never a number);
* ``plots/curves.csv`` (validation curves per model, the grayscale baseline as model
  ``grayscale``) and ``plots/means.csv`` (headline means with CIs), which dvc.yaml's
  top-level plots draw;
* ``ranking.json``: ``{"best", "ranking", "formula", ...}`` (``colorize`` reads ``best``);
* ``comparison.csv`` (model, metric, mean, seed_sd, ci95_low, ci95_high): every metric, the
  interval over photos and seeds (:mod:`colorstudy.report.pooling`).

Deterministic: no timestamps, fixed iteration order (the study order of ``params.yaml``),
fixed number formatting, matplotlib's default style with fixed sizes, images without
metadata: the same inputs give byte-identical files on the same machine.
"""


from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from colorstudy import lab
from colorstudy.config import DataParams, EvaluateParams, ReportParams, section
from colorstudy.data.shards import LabShards
from colorstudy.evaluate import BASELINE, METRICS_FILE, round_sig
from colorstudy.metrics import METRICS, colorfulness
from colorstudy.seed_stats import model_interval
from colorstudy.paired import paired_difference, photo_table, tied_with
from colorstudy.report.document import Doc
from colorstudy.report.figures import (
    bars_figure,
    curves_figure,
    examples_figure,
    figure_style,
    grid_figure,
    model_colors,
)
from colorstudy.report.inputs import (
    ModelResult,
    ReportError,
    load_baseline,
    load_model,
    metric_names,
    read_curves,
    study_order,
)
from colorstudy.report.outputs import (
    FIGURES,
    PLOTS,
    SUMMARY,
    clear_outputs,
    file_safe,
    headline_metrics,
    write_comparison,
    write_plot_data,
    write_summary,
)
from colorstudy.report.ranking import formula_text, not_ranked, rank_models, ranking_metrics
from colorstudy.report.reference import differing_params
from colorstudy.report.sections import ReportInputs, document


@dataclass
class ReportFiles:
    markdown: Path
    html: Path
    ranking: dict[str, Any]
    figures: list[Path]


def build_report(eval_dir: str | Path, pred_dir: str | Path, shards_dir: str | Path, train_dir: str | Path,
                 out_dir: str | Path, params: dict[str, Any], *,
                 preprocess_json: str | Path | None = None) -> ReportFiles:
    """Write the report files into ``out_dir`` (see the module docstring)."""
    eval_dir, pred_dir, train_dir, out_dir = Path(eval_dir), Path(pred_dir), Path(train_dir), Path(out_dir)
    preprocess_json = Path(preprocess_json) if preprocess_json else out_dir / "preprocess.json"
    report_params = section(params, "report", ReportParams)
    eval_params = section(params, "evaluate", EvaluateParams)
    data_params = section(params, "data", DataParams)

    ids, missing, stale = study_order(params, eval_dir)
    if not (eval_dir / BASELINE / METRICS_FILE).is_file():
        raise ReportError(f"{eval_dir / BASELINE / METRICS_FILE} is missing: every table carries the grayscale "
                          f"baseline; run the evaluate_baseline stage (dvc repro)")
    shards = LabShards(shards_dir)
    test_ids = shards.rows("test")["id"].astype(str).tolist()
    seeds = list(params["train"]["seeds"])
    models = [load_model(i, seeds, eval_dir, pred_dir, test_ids) for i in ids]
    baseline = load_baseline(eval_dir, pred_dir, test_ids)
    rows = [*models, baseline]
    metrics = metric_names(rows)
    n = len(test_ids)

    # ground truth and gray input of the test images (what the models saw)
    L, ab = shards.split("test")
    truth_u8 = np.concatenate([lab.to_uint8(lab.colorize(L[i:i + 64], ab[i:i + 64]).permute(0, 2, 3, 1))
                               for i in range(0, n, 64)])
    gray_u8 = baseline.rgb
    truth_cf = torch.cat([colorfulness(lab.colorize(L[i:i + 64], ab[i:i + 64])) for i in range(0, n, 64)])
    truth_cf_ci = truth_colorfulness(truth_cf.double().numpy(), baseline.per_image["group"].to_numpy())

    used, dropped = ranking_metrics(models, metrics)
    order, mean_rank, ranks = rank_models(models, used)
    formula = formula_text(used, dropped, not_ranked(models))
    paired_metrics = {m: METRICS[m].direction for m in used if METRICS[m].scope == "image"}
    versus = {r.model_id: {m: paired_difference(r.runs, baseline.runs, m, d) for m, d in paired_metrics.items()}
              for r in models}
    tables = {r.model_id: r.runs for r in models}
    ranking = {"best": order[0] if order else None, "ranking": order, "formula": formula, "metrics": used,
               "mean_rank": mean_rank, "seeds": seeds,
               # the leader is not distinguishably better than these on any per-image ranking metric
               # (all of them when the study is too small for the seed-aware test)
               "tied_with_best": tied_with(order[0], tables, paired_metrics) if order else [],
               "versus_baseline": {i: {m: {k: round_sig(v) if isinstance(v, float) else v
                                           for k, v in d.as_dict().items()} for m, d in per.items()}
                                   for i, per in versus.items()}}
    if order and versus[order[0]]:  # a test's validity is the study's size: the leader's against gray says it
        ranking["test_valid"] = next(iter(versus[order[0]].values())).valid

    out_dir.mkdir(parents=True, exist_ok=True)
    figures = draw_figures(out_dir / FIGURES, report_params, models, rows, metrics, ids, test_ids, gray_u8, truth_u8,
                           train_dir)

    data_params = dataclasses.replace(data_params, image_size=shards.image_size)  # what the shards hold
    n_photos = int(shards.rows("test")["group"].nunique())
    doc = document(ReportInputs(params, data_params, eval_params, report_params, models, baseline, metrics, ranking,
                                ranks, dropped, truth_cf_ci, n, n_photos, figures.grid_indices, figures.examples,
                                figures.curves, missing, stale, preprocess_json, out_dir, versus, train_dir))
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    html_path.write_text(doc.html(out_dir, "Colorization study report"), encoding="utf-8")
    (out_dir / "ranking.json").write_text(json.dumps(ranking, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    write_comparison(out_dir, rows, metrics)
    write_summary(out_dir / SUMMARY, models, baseline, ranking, headline_metrics(rows, metrics))
    write_plot_data(out_dir / PLOTS, models, baseline, figures.logs)
    return ReportFiles(md_path, html_path, ranking, figures.paths)


def truth_colorfulness(values: np.ndarray, groups: np.ndarray) -> tuple[float, float, float]:
    """The ground truth's colorfulness: image mean and a 95% interval over its photos."""
    table = pd.DataFrame({"id": np.arange(len(values)).astype(str), "group": groups, "cf": values})
    interval = model_interval(photo_table([table], "cf"))
    mean = float(values.mean())
    return mean, mean - (interval.mean - interval.low), mean + (interval.high - interval.mean)


@dataclass
class Figures:
    paths: list[Path]  # every file written
    grid_indices: list[int]  # test images in the comparison grid
    examples: dict[str, Path]  # per model, its best/worst examples figure
    curves: list[tuple[str, Path]]  # (caption, path) of the training-curve figures
    logs: dict[str, dict[str, pd.DataFrame]]  # per model, its dvclive curves


def draw_figures(fig_dir: Path, report_params: ReportParams, models: list[ModelResult], rows: list[ModelResult],
                 metrics: list[str], ids: list[str], test_ids: list[str], gray_u8: np.ndarray, truth_u8: np.ndarray,
                 train_dir: Path) -> Figures:
    """The comparison grid, best/worst examples, metric bars and training curves."""
    n = len(test_ids)
    clear_outputs(fig_dir, "*.png", "*.jpg")
    figures: list[Path] = []
    colors = model_colors(ids)
    with figure_style():
        k = min(report_params.grid_images, n)
        indices = sorted({int(round(x)) for x in np.linspace(0, n - 1, k)})
        grid = fig_dir / "comparison_grid.jpg"
        grid_figure(grid, indices, test_ids, gray_u8, truth_u8, models)
        figures.append(grid)
        examples: dict[str, Path] = {}
        for r in models:
            table = r.per_image.reset_index().sort_values(["ciede2000", "id"], kind="stable")
            e = min(report_params.examples, n)
            best = [("best", int(i), float(v)) for i, v in
                    zip(table["index"].iloc[:e], table["ciede2000"].iloc[:e])]
            worst = [("worst", int(i), float(v)) for i, v in
                     zip(table["index"].iloc[::-1].iloc[:e], table["ciede2000"].iloc[::-1].iloc[:e])]
            path = fig_dir / f"examples_{file_safe(r.model_id)}.jpg"
            examples_figure(path, r, [*best, *worst], gray_u8, truth_u8, test_ids)
            examples[r.model_id] = path
            figures.append(path)
        bars = fig_dir / "metrics.png"
        bars_figure(bars, rows, metrics, colors)
        figures.append(bars)
        curves = {r.model_id: c for r in models if (c := read_curves(train_dir, r.model_id, r.shown_seed))}
        seed = models[0].shown_seed if models else None
        curve_figures: list[tuple[str, Path]] = []
        if curves:
            names = sorted({name for c in curves.values() for name in c})
            val = [m for m in ("val/ab_l1", "val/ab_error") if m in names]
            base = next(iter(curves.values()))
            base_curves = {m: base[f"val/baseline_{m.split('/', 1)[1]}"] for m in val
                           if f"val/baseline_{m.split('/', 1)[1]}" in base}
            if val:
                path = fig_dir / "training_validation.png"
                curves_figure(path, val, curves, colors, base_curves)
                curve_figures.append((f"validation metrics per epoch, seed {seed} of each model (dashed: grayscale baseline)", path))
            train_names = [m for m in names if m.startswith("train/")]
            if train_names:
                path = fig_dir / "training_losses.png"
                curves_figure(path, train_names, curves, colors)
                curve_figures.append((f"training losses per epoch, seed {seed} of each model (weighted terms)", path))
            figures += [p for _, p in curve_figures]
    return Figures(figures, indices, examples, curve_figures, curves)


__all__ = ["Doc", "ModelResult", "ReportError", "ReportFiles", "build_report", "differing_params", "rank_models",
           "ranking_metrics", "read_curves", "study_order"]
