"""The study report: every model and the grayscale baseline, side by side.

:func:`build_report` reads the evaluate stages' outputs (``<eval>/<id>/metrics.json``
and ``per_image.parquet``, ``<pred>/<id>.npz``), the test split (for the gray inputs
and the ground truth), the training logs dvclive wrote (``<train>/<id>/plots/metrics``),
the preprocess stage's counts and ``params.yaml``, and writes into ``out_dir``:

* ``report.md`` (GitHub-rendered; figures as relative links to ``figures/*.jpg``) and
  ``report.html`` (the same content, self-contained: each figure embedded once as a
  ``data:`` URI);
* ``figures/``: comparison grid and best/worst examples per model (``*.jpg``), metric
  charts with CI whiskers and training curves (palette ``*.png``), at the size shown;
* ``summary/<id>.json`` and ``summary/baseline.json``: the headline numbers, the metrics
  ``dvc metrics show`` / ``dvc exp show`` present (numbers only: a rank, the ranking
  metrics' means, LPIPS and FID only with ImageNet backbones);
* ``plots/curves.csv`` (validation curves per model, the grayscale baseline as model
  ``grayscale``) and ``plots/means.csv`` (headline means with CIs), which dvc.yaml's
  top-level plots draw;
* ``ranking.json``: ``{"best", "ranking", "formula", ...}`` (``colorize`` reads ``best``);
* ``comparison.csv`` (model, metric, mean, ci95_low, ci95_high): every metric.

Deterministic: no timestamps, fixed iteration order (the study order of ``params.yaml``),
fixed number formatting, matplotlib's default style with fixed sizes, images without
metadata: the same inputs give byte-identical files on the same machine.
"""

from __future__ import annotations

import base64
import dataclasses
import contextlib
import csv
import html
import io
import json
import math
import platform
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import colorstudy
from colorstudy import lab
from colorstudy.config import (
    AdversarialParams,
    DataParams,
    EvaluateParams,
    LossWeights,
    PerceptualParams,
    ReportParams,
    TrainParams,
    section,
)
from colorstudy.data.shards import FIXED_SPLIT_DATASETS, LabShards
from colorstudy.evaluate import BASELINE, METRICS_FILE, PER_IMAGE_FILE, load_predictions, round_sig
from colorstudy.metrics import METRICS, bootstrap_ci, colorfulness
from colorstudy.models.patchgan import layers_for, receptive_field
from colorstudy.paired import PairedDifference, paired_difference, tied_with
from colorstudy.weights import RANDOM_NOTE

DPI = 100
FIGURES = "figures"
SUMMARY = "summary"
PLOTS = "plots"
# Photos as JPEG without chroma subsampling (a colorization report must not smear the
# colors it compares); charts as palette PNG (flat colors and text, where JPEG rings).
JPEG_QUALITY = 85
CHART_COLORS = 64
# The headline: the ranking metrics, plus the backbone-based ones only when their
# backbone is pretrained (a random-init LPIPS or FID is no headline number).
HEADLINE_METRICS = ("psnr", "ssim", "ciede2000", "delta_colorfulness")
BACKBONE_HEADLINE_METRICS = ("lpips", "fid")
PLOT_BASELINE = "grayscale"  # the baseline's name in plots/*.csv, drawn dashed / gray
ARROWS = {"higher": "↑", "lower": "↓"}
# The ranking's metrics: fidelity (PSNR, SSIM), color error (CIEDE2000), color
# distribution (ΔColorfulness) and perceptual similarity (LPIPS, FID); a backbone
# metric takes part only when its backbone has pretrained weights.
RANKING_METRICS = ("psnr", "ssim", "ciede2000", "delta_colorfulness", "lpips", "fid")
TIE_BREAK = "ciede2000"
TABLE_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("Fidelity to the ground truth", ("psnr", "ssim", "mse_rgb", "mae_rgb", "ciede2000", "delta_e76")),
    ("Chroma, colorfulness and perceptual metrics",
     ("mse_ab", "mae_ab", "psnr_ab", "colorfulness", "delta_colorfulness", "lpips", "fid")),
)
RANDOM_SHORT = "random init, not comparable to published numbers"

# docs/study.md: the reference study's settings and published numbers.
REFERENCE_DATA = "Kaggle image-colorization-dataset, 4,750 train / 250 val / 739 test photos at 256×256, 50 epochs"
PUBLISHED = {  # id: PSNR, SSIM, CIEDE2000, LPIPS
    "A": (23.71, 0.9229, 10.17, 0.2016),
    "E": (23.68, 0.9235, 10.26, 0.2094),
    "C": (21.05, 0.8560, 13.41, 0.2490),
    "D": (21.51, 0.7101, 12.40, 0.2112),
    "B": (20.83, 0.8298, 13.75, 0.2715),
    "F": (19.55, 0.8112, 15.41, 0.3041),
}
PUBLISHED_METRICS = ("psnr", "ssim", "ciede2000", "lpips")
FACES_DATA = "the 750 face photos, 70/15/15 random split, 256×256"
FACES_PUBLISHED = (  # (their model, our closest id, ab-PSNR, SSIM, ΔE76, MSE ab)
    ("convolutional encoder–decoder", "autoencoder", 31.18, 0.98, 4.16, 0.0013),
    ("adversarial", "B", 29.37, 0.98, 5.53, 0.0016),
)
FACES_METRICS = ("psnr_ab", "ssim", "delta_e76", "mse_ab")


class ReportError(RuntimeError):
    """An input of the report is missing or stale; the message says which and what to rerun."""


# -- a small document model, rendered to Markdown and to HTML --------------------------

_INLINE = re.compile(r"(`[^`]+`)|(\*\*.+?\*\*)|(\[[^\]]+\]\([^)\s]+\))")


def _inline_html(text: str) -> str:
    """``code``, **bold** and [links](url) of our Markdown subset -> HTML, the rest escaped."""
    out, at = [], 0
    for m in _INLINE.finditer(text):
        out.append(html.escape(text[at:m.start()]).replace("&lt;br&gt;", "<br>"))
        token = m.group(0)
        if m.group(1):
            out.append(f"<code>{html.escape(token[1:-1])}</code>")
        elif m.group(2):
            out.append(f"<strong>{_inline_html(token[2:-2])}</strong>")
        else:
            label, href = token[1:].split("](", 1)
            out.append(f'<a href="{html.escape(href[:-1])}">{_inline_html(label)}</a>')
        at = m.end()
    out.append(html.escape(text[at:]).replace("&lt;br&gt;", "<br>"))
    return "".join(out)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


@dataclass
class Doc:
    """Blocks of a report: ``(kind, payload)``, rendered by :meth:`markdown` / :meth:`html`."""

    blocks: list[tuple[str, Any]] = field(default_factory=list)

    def heading(self, level: int, text: str) -> None:
        self.blocks.append(("heading", (level, text)))

    def para(self, text: str) -> None:
        self.blocks.append(("para", text))

    def bullets(self, items: Iterable[str]) -> None:
        self.blocks.append(("bullets", list(items)))

    def table(self, header: Sequence[str], rows: Iterable[Sequence[str]]) -> None:
        self.blocks.append(("table", (list(header), [list(r) for r in rows])))

    def image(self, alt: str, path: str) -> None:
        self.blocks.append(("image", (alt, path)))

    def code(self, text: str) -> None:
        self.blocks.append(("code", text))

    def markdown(self) -> str:
        parts = []
        for kind, payload in self.blocks:
            if kind == "heading":
                parts.append("#" * payload[0] + " " + payload[1])
            elif kind == "para":
                parts.append(payload)
            elif kind == "bullets":
                parts.append("\n".join(f"- {item}" for item in payload))
            elif kind == "table":
                header, rows = payload
                lines = ["| " + " | ".join(_md_cell(h) for h in header) + " |",
                         "|" + "|".join("---" for _ in header) + "|"]
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in rows]
                parts.append("\n".join(lines))
            elif kind == "image":
                parts.append(f"![{payload[0]}]({payload[1]})")
            elif kind == "code":
                parts.append(f"```\n{payload}\n```")
        return "\n\n".join(parts) + "\n"

    def html(self, root: Path, title: str) -> str:
        """Self-contained HTML: images are read from ``root / path`` and embedded."""
        body = []
        for kind, payload in self.blocks:
            if kind == "heading":
                body.append(f"<h{payload[0]}>{_inline_html(payload[1])}</h{payload[0]}>")
            elif kind == "para":
                body.append(f"<p>{_inline_html(payload)}</p>")
            elif kind == "bullets":
                body.append("<ul>\n" + "\n".join(f"<li>{_inline_html(i)}</li>" for i in payload) + "\n</ul>")
            elif kind == "table":
                header, rows = payload
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                trs = "\n".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in row) + "</tr>" for row in rows)
                body.append(f'<div class="scroll"><table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{trs}\n'
                            f"</tbody>\n</table></div>")
            elif kind == "image":
                data = base64.b64encode((root / payload[1]).read_bytes()).decode("ascii")
                mime = "image/jpeg" if payload[1].endswith((".jpg", ".jpeg")) else "image/png"
                body.append(f'<p><img alt="{html.escape(payload[0])}" src="data:{mime};base64,{data}"></p>')
            elif kind == "code":
                body.append(f"<pre><code>{html.escape(payload)}</code></pre>")
        style = ("body{font-family:system-ui,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;"
                 "line-height:1.45}table{border-collapse:collapse;font-size:0.85em}"
                 "th,td{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}"
                 "th{background:#f3f3f3}.scroll{overflow-x:auto}img{max-width:100%}"
                 "code,pre{background:#f6f6f6}pre{padding:0.6em}")
        return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
                f"<title>{html.escape(title)}</title>\n<style>{style}</style>\n</head>\n<body>\n"
                + "\n".join(body) + "\n</body>\n</html>\n")


# -- inputs ---------------------------------------------------------------------------

@dataclass
class ModelResult:
    model_id: str
    summary: dict[str, Any]
    per_image: pd.DataFrame
    rgb: np.ndarray  # uint8 [N, H, W, 3]


def study_order(params: dict[str, Any], eval_dir: Path) -> tuple[list[str], list[str], list[str]]:
    """``(evaluated ids in study order, ids of params without an evaluation, stale evaluations)``."""
    found = sorted(p.name for p in eval_dir.iterdir() if (p / METRICS_FILE).is_file()) if eval_dir.is_dir() else []
    listed = [str(k) for k in (params.get("models") or {})]
    if not listed:
        return [i for i in found if i != BASELINE], [], []
    ids = [i for i in listed if i in found]
    return ids, [i for i in listed if i not in found], [i for i in found if i not in listed and i != BASELINE]


def load_result(model_id: str, eval_dir: Path, pred_dir: Path, test_ids: list[str]) -> ModelResult:
    folder = eval_dir / model_id
    summary = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    per_image = pd.read_parquet(folder / PER_IMAGE_FILE)
    pred_path = pred_dir / f"{model_id}.npz"
    if not pred_path.is_file():
        raise ReportError(f"{pred_path} is missing: rerun the evaluate stage of {model_id} (dvc repro)")
    ids, rgb = load_predictions(pred_path)
    if ids != test_ids or per_image["id"].tolist() != test_ids:
        raise ReportError(f"{folder} / {pred_path} were made on another test split than the current shards: "
                          f"rerun the evaluate stage of {model_id} (dvc repro)")
    return ModelResult(model_id, summary, per_image, rgb)


def read_curves(train_dir: Path, model_id: str) -> dict[str, pd.DataFrame]:
    """dvclive's ``plots/metrics/**.tsv`` of a model: name (``val/ab_l1``) -> columns step, value."""
    root = train_dir / model_id / "plots" / "metrics"
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


def display(label: str) -> str:
    """A provenance label as the report prints it: random backbones say so in one phrase."""
    return label.replace(RANDOM_NOTE, RANDOM_SHORT)


def backbone_label(results: Sequence[ModelResult], key: str) -> str:
    """What every result says about backbone ``key`` (``lpips``, ``fid``), joined when they differ."""
    labels = sorted({display(r.summary.get("provenance", {}).get(key, "unknown")) for r in results})
    return "; ".join(labels)


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


def formula_text(used: Sequence[str], dropped: Sequence[str]) -> str:
    parts = ", ".join(f"{m} ({METRICS[m].direction} is better)" for m in used)
    text = (f"mean rank over {len(used)} metrics: {parts}. For each metric the models (not the grayscale "
            f"baseline) are ranked 1..N by their test-set value (mean over images; FID per set), ties sharing "
            f"the average rank; the model with the lowest mean rank is best; equal mean ranks are ordered by "
            f"{TIE_BREAK} mean, then by id.")
    if dropped:
        text += (f" Left out: {', '.join(dropped)}, computed with a randomly initialized backbone "
                 f"(not comparable to published numbers).")
    return text


# -- figures --------------------------------------------------------------------------

def _figure(width: float, height: float):  # -> matplotlib.figure.Figure
    from matplotlib.figure import Figure

    return Figure(figsize=(round(width, 2), round(height, 2)), dpi=DPI)


def _save(fig: Any, path: Path) -> None:
    """``*.jpg``: a figure of photos; ``*.png``: a chart (see JPEG_QUALITY)."""
    if path.suffix == ".jpg":
        fig.savefig(path, dpi=DPI, format="jpeg",
                    pil_kwargs={"quality": JPEG_QUALITY, "subsampling": 0, "optimize": True})
        return
    from PIL import Image

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=DPI, format="png")
    chart = Image.open(buffer).convert("RGB").quantize(CHART_COLORS, method=Image.Quantize.MEDIANCUT,
                                                          dither=Image.Dither.NONE)
    chart.save(path, format="png", optimize=True)


@contextlib.contextmanager
def _style() -> Iterator[None]:
    """matplotlib's default style (whatever a matplotlibrc says), restored afterwards."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update({"font.size": 8, "axes.titlesize": 8})
        yield


def _colors(ids: Sequence[str]) -> dict[str, Any]:
    from matplotlib import colormaps

    cmap = colormaps["tab20"]  # the 10 strong colors first, then their light partners
    colors = {i: cmap((2 * k) % 20 + (k // 10) % 2) for k, i in enumerate(ids)}
    colors[BASELINE] = (0.45, 0.45, 0.45, 1.0)
    return colors


def _show(ax: Any, image: np.ndarray) -> None:
    ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def grid_figure(path: Path, indices: Sequence[int], test_ids: Sequence[str], gray: np.ndarray, truth: np.ndarray,
                results: Sequence[ModelResult]) -> None:
    columns = [("gray input", gray), ("ground truth", truth)] + [(r.model_id, r.rgb) for r in results]
    cell = 0.8  # inches: 80 px a crop at DPI 100, near the study's 64 px (JPEG bytes grow with the area)
    fig = _figure(cell * len(columns) + 0.7, cell * len(indices) + 0.3)
    axes = fig.subplots(len(indices), len(columns), squeeze=False)
    for row, index in enumerate(indices):
        for col, (name, images) in enumerate(columns):
            ax = axes[row][col]
            _show(ax, images[index])
            if row == 0:  # long ids on two lines, or neighbours overlap
                ax.set_title(name if len(name) <= 12 else name.replace("_", "_\n", 1), fontsize=5.5)
            if col == 0:
                ax.set_ylabel(_short(test_ids[index]), fontsize=5)
    fig.subplots_adjust(left=0.04, right=0.995, top=1 - 0.3 / fig.get_figheight(), bottom=0.01,
                        wspace=0.05, hspace=0.05)
    _save(fig, path)


def _short(text: str, n: int = 18) -> str:
    return text if len(text) <= n else text[:8] + "…" + text[-(n - 9):]


def examples_figure(path: Path, result: ModelResult, picks: Sequence[tuple[str, int, float]], gray: np.ndarray,
                    truth: np.ndarray, test_ids: Sequence[str]) -> None:
    rows = [("gray input", gray), (f"{result.model_id}", result.rgb), ("ground truth", truth)]
    cell = 0.9
    fig = _figure(cell * len(picks) + 0.8, cell * len(rows) + 0.55)
    axes = fig.subplots(len(rows), len(picks), squeeze=False)
    for col, (kind, index, value) in enumerate(picks):
        for row, (name, images) in enumerate(rows):
            ax = axes[row][col]
            _show(ax, images[index])
            if row == 0:
                ax.set_title(f"{kind}\n{_short(test_ids[index])}\nCIEDE2000 {value:.2f}", fontsize=6)
            if col == 0:
                ax.set_ylabel(name, fontsize=7)
    fig.subplots_adjust(left=0.12, right=0.99, top=1 - 0.5 / fig.get_figheight(), bottom=0.01,
                        wspace=0.05, hspace=0.05)
    _save(fig, path)


def bars_figure(path: Path, results: Sequence[ModelResult], metrics: Sequence[str], colors: dict[str, Any]) -> None:
    ncols = 3
    nrows = math.ceil(len(metrics) / ncols)
    per_row = 0.19 * len(results) + 0.9
    fig = _figure(15, per_row * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    ids = [r.model_id for r in results]
    y = np.arange(len(results))
    for k, name in enumerate(metrics):
        ax = axes[k // ncols][k % ncols]
        spec = METRICS[name]
        means = np.array([mean_of(r.summary, name) for r in results], dtype=float)
        shown = np.where(np.isfinite(means), means, np.nan)
        bars = ax.barh(y, np.nan_to_num(shown), color=[colors[i] for i in ids])
        if spec.scope == "image":
            low = np.array([r.summary[name]["ci95_low"] for r in results], dtype=float)
            high = np.array([r.summary[name]["ci95_high"] for r in results], dtype=float)
            ok = np.isfinite(low) & np.isfinite(high) & np.isfinite(means)
            err = np.vstack((np.where(ok, means - low, 0), np.where(ok, high - means, 0)))
            ax.errorbar(np.nan_to_num(shown), y, xerr=err, fmt="none", ecolor="black", elinewidth=0.8, capsize=2)
        del bars
        ax.set_yticks(y, ids, fontsize=6)
        ax.invert_yaxis()
        title = f"{spec.label} {ARROWS[spec.direction]}"
        if spec.backbone and is_random(backbone_label(results, spec.backbone)):
            title += f"\n({RANDOM_SHORT})"
        ax.set_title(title, fontsize=7)
        ax.tick_params(axis="x", labelsize=6)
    for k in range(len(metrics), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    fig.subplots_adjust(left=0.08, right=0.99, top=0.97, bottom=0.03, wspace=0.45, hspace=0.55)
    _save(fig, path)


def curves_figure(path: Path, names: Sequence[str], curves: dict[str, dict[str, pd.DataFrame]],
                  colors: dict[str, Any], baseline: dict[str, pd.DataFrame] | None = None) -> None:
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure(4.6 * ncols + 1.6, 3.0 * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for k, name in enumerate(names):
        ax = axes[k // ncols][k % ncols]
        for model_id, model_curves in curves.items():
            if name in model_curves:
                c = model_curves[name]
                ax.plot(c["step"] + 1, c["value"], color=colors[model_id], linewidth=1.0, marker=".",
                        markersize=3, label=model_id)
        if baseline and name in baseline:
            c = baseline[name]
            ax.plot(c["step"] + 1, c["value"], color="black", linestyle="--", linewidth=1.0,
                    label="grayscale baseline")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.grid(True, linewidth=0.3)
    for k in range(len(names), nrows * ncols):
        axes[k // ncols][k % ncols].set_visible(False)
    handles, labels = [], []
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    fig.legend(handles, labels, loc="center right", fontsize=6, frameon=False)
    fig.subplots_adjust(left=0.06, right=1 - 1.5 / fig.get_figwidth(), top=1 - 0.35 / fig.get_figheight(),
                        bottom=0.5 / fig.get_figheight(), wspace=0.3, hspace=0.6)
    _save(fig, path)


# -- the report -------------------------------------------------------------------------

def _param_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, (tuple, list)):
        return "(" + ", ".join(_param_value(x) for x in v) + ")"
    return str(v)


def _patchgan_layers(layers: int | str, image_size: int) -> str:
    n = layers_for(image_size) if layers == "auto" else int(layers)
    return f"{'auto: ' if layers == 'auto' else ''}{n} ({receptive_field(n)}×{receptive_field(n)} patches)"


def differing_params(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(setting, this run, reference study)`` for every setting that differs from docs/study.md."""
    data = section(params, "data", DataParams)
    train = section(params, "train", TrainParams)
    loss = section(params, "loss", LossWeights)
    perceptual = section(params, "perceptual", PerceptualParams)
    adversarial = section(params, "adversarial", AdversarialParams)
    evaluation = section(params, "evaluate", EvaluateParams)
    rows: list[tuple[str, Any, Any]] = [
        ("learning rate (`train.lr`)", train.lr, 2e-4),
        ("Adam betas (`train.beta1`, `train.beta2`)", (train.beta1, train.beta2), (0.5, 0.999)),
        ("batch size (`train.batch_size`)", train.batch_size, 64),
        ("epochs (`train.epochs`)", train.epochs, 50),
        ("epochs of linear decay (`train.decay_epochs`)", train.decay_epochs, 25),
        ("seed (`train.seed`)", train.seed, 42),
        ("checkpoint scored (`train.select`)", train.select, "val_ab_l1"),
        ("augmentation (`train.augment`)", train.augment, True),
        ("image size (`data.image_size`)", f"{data.image_size}×{data.image_size}", "256×256"),
        ("generator base width (`train.width`)", train.width, 64),
        ("PatchGAN base width (`adversarial.width`)", adversarial.width, 64),
        ("PatchGAN layers (`adversarial.layers`)", _patchgan_layers(adversarial.layers, data.image_size),
         "3 (70×70 patches)"),
        ("adversarial loss (`adversarial.mode`)", adversarial.mode, "bce"),
        ("λ L1 (`loss.l1`)", loss.l1, 100.0),
        ("λ perceptual (`loss.perceptual`)", loss.perceptual, 10.0),
        ("λ adversarial (`loss.adversarial`)", loss.adversarial, 1.0),
        ("perceptual-loss VGG16 weights (`perceptual.weights`)", perceptual.weights, "imagenet"),
        ("LPIPS AlexNet weights (`evaluate.lpips_weights`)", evaluation.lpips_weights, "imagenet"),
        ("FID Inception weights (`evaluate.fid_weights`)", evaluation.fid_weights, "imagenet"),
    ]
    for model_id, spec in (params.get("models") or {}).items():
        if isinstance(spec, dict) and spec.get("generator") == "resnet_unet":
            weights = (spec.get("arch") or {}).get("weights", "random")
            rows.append((f"{model_id}: ResNet-34 encoder weights (`models.{model_id}.arch.weights`)", weights,
                         "imagenet"))
    return [(name, _param_value(ours), _param_value(ref)) for name, ours, ref in rows
            if _param_value(ours) != _param_value(ref)]


def _objective(params: dict[str, Any], model_id: str) -> str:
    try:
        from colorstudy.study import resolve_model

        terms = resolve_model(params, model_id)["terms"]
        return ", ".join(f"{t} {w:g}" for t, w in terms.items())
    except Exception:  # noqa: BLE001  (a partial params file: show the declared terms)
        spec = (params.get("models") or {}).get(model_id) or {}
        return ", ".join(spec.get("terms", [])) or "?"


def _training_backbones(summary: dict[str, Any]) -> str:
    prov = summary.get("provenance", {})
    parts = []
    if prov.get("perceptual_loss", "not used") != "not used":
        parts.append(f"perceptual loss: {display(prov['perceptual_loss'])}")
    encoder = prov.get("generator_encoder", "")
    if encoder and not encoder.startswith("none"):
        parts.append(f"encoder: {display(encoder)}")
    return "; ".join(parts) or "—"


def _ci_cell(summary: dict[str, Any], name: str, decimals: int, bold: bool) -> str:
    value = summary.get(name)
    if value is None:
        return "—"
    if isinstance(value, dict):
        mean = fmt(float(value["mean"]), decimals)
        text = f"**{mean}**" if bold else mean
        return f"{text} [{fmt(float(value['ci95_low']), decimals)}, {fmt(float(value['ci95_high']), decimals)}]"
    text = fmt(float(value), decimals)
    return f"**{text}**" if bold else text


def _header(name: str, results: Sequence[ModelResult]) -> str:
    spec = METRICS[name]
    text = f"{spec.label}{' [' + spec.unit + ']' if spec.unit else ''} {ARROWS[spec.direction]}"
    if spec.backbone:
        text += f"<br>{backbone_label(results, spec.backbone)}"
    return text


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
    models = [load_result(i, eval_dir, pred_dir, test_ids) for i in ids]
    baseline = load_result(BASELINE, eval_dir, pred_dir, test_ids)
    rows = [*models, baseline]
    metrics = metric_names(rows)
    n = len(test_ids)

    # ground truth and gray input of the test images (what the models saw)
    L, ab = shards.split("test")
    truth_u8 = np.concatenate([lab.to_uint8(lab.colorize(L[i:i + 64], ab[i:i + 64]).permute(0, 2, 3, 1))
                               for i in range(0, n, 64)])
    gray_u8 = baseline.rgb
    truth_cf = torch.cat([colorfulness(lab.colorize(L[i:i + 64], ab[i:i + 64])) for i in range(0, n, 64)])
    groups = baseline.per_image["group"].to_numpy()
    truth_cf_ci = bootstrap_ci(truth_cf.double().numpy(), eval_params.bootstrap, eval_params.seed, groups=groups)

    used, dropped = ranking_metrics(models, metrics)
    order, mean_rank, ranks = rank_models(models, used)
    formula = formula_text(used, dropped)
    boot = {"n_resamples": eval_params.bootstrap, "seed": eval_params.seed}
    paired_metrics = {m: METRICS[m].direction for m in used if METRICS[m].scope == "image"}
    versus = {r.model_id: {m: paired_difference(r.per_image, baseline.per_image, m, **boot) for m in paired_metrics}
              for r in models}
    tables = {r.model_id: r.per_image for r in models}
    ranking = {"best": order[0] if order else None, "ranking": order, "formula": formula, "metrics": used,
               "mean_rank": mean_rank,
               # the leader is not distinguishably better than these on any per-image ranking metric
               "tied_with_best": tied_with(order[0], tables, paired_metrics, **boot) if order else [],
               "versus_baseline": {i: {m: {k: round_sig(v) if isinstance(v, float) else v
                                           for k, v in d.as_dict().items()} for m, d in per.items()}
                                   for i, per in versus.items()}}

    out_dir.mkdir(parents=True, exist_ok=True)
    fig_dir = out_dir / FIGURES
    _clear(fig_dir, "*.png", "*.jpg")
    figures: list[Path] = []
    colors = _colors(ids)
    with _style():
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
            path = fig_dir / f"examples_{_safe(r.model_id)}.jpg"
            examples_figure(path, r, [*best, *worst], gray_u8, truth_u8, test_ids)
            examples[r.model_id] = path
            figures.append(path)
        bars = fig_dir / "metrics.png"
        bars_figure(bars, rows, metrics, colors)
        figures.append(bars)
        curves = {i: c for i in ids if (c := read_curves(train_dir, i))}
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
                curve_figures.append(("validation metrics per epoch (dashed: grayscale baseline)", path))
            train_names = [m for m in names if m.startswith("train/")]
            if train_names:
                path = fig_dir / "training_losses.png"
                curves_figure(path, train_names, curves, colors)
                curve_figures.append(("training losses per epoch (weighted terms)", path))
            figures += [p for _, p in curve_figures]

    data_params = dataclasses.replace(data_params, image_size=shards.image_size)  # what the shards hold
    n_photos = int(shards.rows("test")["group"].nunique())
    doc = _document(params, data_params, eval_params, report_params, models, baseline, metrics,
                    ranking, ranks, dropped, truth_cf_ci, n, n_photos, indices, examples, curve_figures, missing,
                    stale, preprocess_json, out_dir, versus, train_dir)
    md_path, html_path = out_dir / "report.md", out_dir / "report.html"
    md_path.write_text(doc.markdown(), encoding="utf-8")
    html_path.write_text(doc.html(out_dir, "Colorization study report"), encoding="utf-8")
    (out_dir / "ranking.json").write_text(json.dumps(ranking, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    _write_comparison(out_dir, rows, metrics)
    _write_summary(out_dir / SUMMARY, models, baseline, ranking, headline_metrics(rows, metrics))
    _write_plot_data(out_dir / PLOTS, models, baseline, curves)
    return ReportFiles(md_path, html_path, ranking, figures)


def headline_metrics(rows: Sequence[ModelResult], available: Sequence[str]) -> list[str]:
    """The few numbers ``dvc metrics show`` presents (see HEADLINE_METRICS)."""
    pretrained = [m for m in BACKBONE_HEADLINE_METRICS
                  if m in available and not is_random(backbone_label(rows, METRICS[m].backbone))]
    return [m for m in (*HEADLINE_METRICS, *pretrained) if m in available]


def _clear(directory: Path, *patterns: str) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for pattern in patterns:
        for old in directory.glob(pattern):  # ours: a dropped model's file must not linger
            old.unlink()


def _write_summary(summary_dir: Path, models: Sequence[ModelResult], baseline: ModelResult,
                   ranking: dict[str, Any], names: Sequence[str]) -> None:
    # One small file per model: `dvc metrics show` prints a row per file and a column per
    # key, so the table stays a few columns wide however many models the study has.
    _clear(summary_dir, "*.json")
    for r in [*models, baseline]:
        values: dict[str, Any] = {m: mean_of(r.summary, m) for m in names}
        if r.model_id != BASELINE:
            values = {"rank": ranking["ranking"].index(r.model_id) + 1, **values}
        (summary_dir / f"{_safe(r.model_id)}.json").write_text(json.dumps(values, indent=2) + "\n", encoding="utf-8")


def _write_plot_data(plots_dir: Path, models: Sequence[ModelResult], baseline: ModelResult,
                     curves: dict[str, dict[str, pd.DataFrame]]) -> None:
    # Long format, one `model` column: DVC colors one file's rows by a field of our choosing
    # (the templates in .dvc/plots), where a file per model would be colored by revision.
    _clear(plots_dir, "*.csv")
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


def _safe(model_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", model_id)


def _write_comparison(out_dir: Path, rows: Sequence[ModelResult], metrics: Sequence[str]) -> None:
    def values(r: ModelResult, m: str) -> list[Any]:
        v = r.summary[m]
        return [v["mean"], v["ci95_low"], v["ci95_high"]] if isinstance(v, dict) else [v, "", ""]

    with open(out_dir / "comparison.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "metric", "mean", "ci95_low", "ci95_high"])
        for m in metrics:
            for r in rows:
                w.writerow([r.model_id, m, *values(r, m)])


def _document(params: dict[str, Any], data: DataParams, eval_params: EvaluateParams, report_params: ReportParams,
              models: list[ModelResult], baseline: ModelResult, metrics: list[str],
              ranking: dict[str, Any], ranks: pd.DataFrame, dropped: list[str], truth_cf: tuple[float, float, float],
              n: int, n_photos: int, grid_indices: list[int], examples: dict[str, Path],
              curve_figures: list[tuple[str, Path]],
              missing: list[str], stale: list[str], preprocess_json: Path, out_dir: Path,
              versus: dict[str, dict[str, PairedDifference]], train_dir: Path) -> Doc:
    doc = Doc()
    rows = [*models, baseline]
    rel = lambda p: p.relative_to(out_dir).as_posix()  # noqa: E731
    lpips_label = backbone_label(rows, "lpips")
    fid_label = backbone_label(rows, "fid")

    doc.heading(1, "Colorization study report")
    doc.para(f"Generated by the `report` stage of `dvc repro` from the evaluations in this repository; do not "
             f"edit by hand. Dataset `{data.dataset}`, {data.image_size}×{data.image_size} px, "
             f"{len(models)} model(s) and the grayscale baseline, scored on the same {n} test images "
             f"({_photos(n, n_photos)}).")
    if ranking["best"] is not None:
        best = ranking["best"]
        beats = _beats_baseline(versus)
        tied = ranking["tied_with_best"]
        doc.para(f"**Best model on these data: {best}** (mean rank {ranking['mean_rank'][best]:g}; ranking "
                 f"formula below). Paired with the grayscale baseline on the same photos, it is distinguishably "
                 f"better on {beats[best]} of {len(versus[best])} per-image ranking metrics. "
                 + (f"**Not distinguishable from {best}** (its paired 95% CI contains 0 on every per-image "
                    f"ranking metric, so the order among these is not established): {', '.join(tied)}."
                    if tied else f"It is distinguishably better than every other model on at least one "
                                 f"per-image ranking metric."))
        caveats = _caveats(data, models, rows, n, n_photos)
        if caveats:
            doc.para("**Read with care:**")
            doc.bullets(caveats)
        if any("ciede2000" in v for v in versus.values()):
            same = [i for i, v in versus.items() if not v["ciede2000"].distinguishable]
            worse = [i for i, v in versus.items() if v["ciede2000"].favours_a("higher")]
            if same:
                doc.para(f"**Not distinguishable from gray** on CIEDE2000 (paired 95% CI of model − baseline "
                         f"contains 0): {', '.join(same)}.")
            if worse:
                doc.para(f"**Worse than gray** on CIEDE2000 (confident wrong colors cost more than none): "
                         f"{', '.join(worse)}.")
            if not same and not worse:
                doc.para("Every model beats the grayscale baseline on CIEDE2000 with a paired 95% CI that "
                         "excludes 0.")
    else:
        doc.para("No model has been evaluated yet: the tables show the grayscale baseline only.")
    if missing:
        doc.para(f"Models of `params.yaml` without an evaluation (not shown): {', '.join(missing)}.")
    if stale:
        doc.para(f"Evaluations of models no longer in `params.yaml` (ignored): {', '.join(stale)}.")

    # -- the study table
    doc.heading(2, "Results on the test split")
    doc.para(f"Every per-image metric is the **mean over the {n} test images** with a 95% confidence interval "
             f"from a percentile bootstrap over the {n_photos} source photos (crops of one photo are drawn "
             f"together; {eval_params.bootstrap} resamples, seed {eval_params.seed}), never a sum; FID is one number for the whole colorized test set against its "
             f"ground truth (no CI). Each cell: mean [95% CI]; **bold** = best in its "
             f"column (the baseline included); ↑ higher is better, ↓ lower is better. The grayscale baseline "
             f"predicts ab = 0 (the input's lightness alone): a model that does not beat it has learned nothing. "
             f"Backbone-based numbers carry their backbone's weights in the column header (LPIPS, FID) or "
             f"in the “training backbones” column (models trained with a perceptual loss or a pretrained "
             f"encoder).")
    for title, group in TABLE_GROUPS:
        names = [m for m in group if m in metrics]
        if title == TABLE_GROUPS[-1][0]:
            names += [m for m in metrics if not any(m in g for _, g in TABLE_GROUPS)]
        if not names:
            continue
        doc.heading(3, title)
        decimals = {m: decimals_for([*(mean_of(r.summary, m) for r in rows),
                                     *([truth_cf[0]] if m == "colorfulness" else [])]) for m in names}
        best = {m: best_ids({r.model_id: mean_of(r.summary, m) for r in rows}, METRICS[m].direction) for m in names}
        table_rows = []
        for r in rows:
            label = "grayscale baseline (ab = 0)" if r.model_id == BASELINE else r.model_id
            table_rows.append([label, *(_ci_cell(r.summary, m, decimals[m], r.model_id in best[m]) for m in names),
                               _training_backbones(r.summary)])
        if "colorfulness" in names:
            cells = ["—"] * len(names)
            d = decimals["colorfulness"]
            cells[names.index("colorfulness")] = f"{fmt(truth_cf[0], d)} [{fmt(truth_cf[1], d)}, {fmt(truth_cf[2], d)}]"
            table_rows.append(["ground truth (reference, not ranked)", *cells, "—"])
        doc.table(["model", *(_header(m, rows) for m in names), "training backbones"], table_rows)
    doc.para("ab-PSNR and MSE/MAE (ab/128) follow the faces study's convention (normalized ab, peak 1.0); they "
             "are not comparable to the sRGB PSNR. SSIM is skimage's default: a 7×7 uniform window, not Wang et "
             "al.'s 11×11 Gaussian (σ 1.5). Colorfulness: Hasler & Süsstrunk with |rg|, |yb| (the variant of "
             "published colorization tables) and, beside it, the 2003 paper's signed original; ΔColorfulness = "
             "|CF(prediction) − CF(truth)| per image (|rg|, |yb| variant).")

    # -- paired against gray
    if versus:
        doc.heading(2, "Against the grayscale baseline, paired")
        names = list(next(iter(versus.values())))
        doc.para(f"Each cell: the mean over the test images of (model − grayscale baseline) on the same image, "
                 f"and its 95% CI from the bootstrap over the {n_photos} photos. All models see the same images, so "
                 f"this interval is what says whether a model is better than gray; “≈ gray” marks an interval "
                 f"that contains 0.")
        d = {m: decimals_for([v[m].mean for v in versus.values()]) for m in names}
        table_rows = []
        for model_id, per in versus.items():
            cells = []
            for m in names:
                diff = per[m]
                text = f"{fmt(diff.mean, d[m])} [{fmt(diff.low, d[m])}, {fmt(diff.high, d[m])}]"
                if not diff.distinguishable:
                    text += " ≈ gray"
                elif diff.favours_a(METRICS[m].direction):
                    text = f"**{text}**"
                cells.append(text)
            table_rows.append([model_id, *cells])
        doc.table(["model", *(f"Δ {METRICS[m].label} {ARROWS[METRICS[m].direction]}" for m in names)], table_rows)
        doc.para("**Bold**: distinguishably better than gray; unmarked: distinguishably worse.")

    # -- ranking
    doc.heading(2, "Overall ranking")
    doc.para(f"Formula: {ranking['formula']}")
    if ranking["ranking"]:
        beats = _beats_baseline(versus)
        tied = set(ranking["tied_with_best"])
        header = ["rank", "model", "mean rank", *(f"rank: {m}" for m in ranking["metrics"]),
                  "better than gray on (paired CI)", "vs #1"]
        table_rows = []
        for k, model_id in enumerate(ranking["ranking"], 1):
            per = [f"{ranks.loc[model_id, m]:g}" for m in ranking["metrics"]]
            table_rows.append([str(k), f"**{model_id}**" if k == 1 else model_id,
                               f"{ranking['mean_rank'][model_id]:g}", *per,
                               f"{beats[model_id]} / {len(versus[model_id])}",
                               "—" if k == 1 else ("tied (not distinguishable)" if model_id in tied else "behind")])
        doc.table(header, table_rows)
        doc.para("“vs #1”: *tied* where #1 is not distinguishably better (paired 95% CI over photos) on any "
                 "per-image ranking metric; the mean ranks order point estimates and do not by themselves say "
                 "that one model beats another.")
        doc.para("`reports/ranking.json` holds this order; `colorstudy colorize` uses its `best` model by default.")

    # -- published numbers
    doc.heading(2, "Published numbers beside ours")
    doc.para(f"**Different data and image size: not directly comparable.** Ours: dataset `{data.dataset}` at "
             f"{data.image_size}×{data.image_size}, {n} test images, settings below. Reference study: "
             f"{REFERENCE_DATA}.")
    lpips_ours = f"LPIPS ours ({lpips_label})"
    header = ["id", "PSNR ours", "PSNR published", "SSIM ours", "SSIM published", "CIEDE2000 ours",
              "CIEDE2000 published", lpips_ours, "LPIPS published"]
    pub_rows = []
    for r in rows:
        published = PUBLISHED.get(r.model_id)
        if published is None and r.model_id != BASELINE:
            continue
        cells = [r.model_id if r.model_id != BASELINE else "grayscale baseline"]
        for k, m in enumerate(PUBLISHED_METRICS):
            decimals = 4 if m in ("ssim", "lpips") else 2
            ours = fmt(mean_of(r.summary, m), decimals) if m in r.summary else "—"
            cells += [ours, f"{published[k]:.{decimals}f}" if published else "—"]
        pub_rows.append(cells)
    if len(pub_rows) > 1:
        doc.table(header, pub_rows)
    else:
        doc.para("None of the reference study's ids (A–F) was evaluated in this run.")
    faces_rows = []
    for theirs, ours_id, *values in FACES_PUBLISHED:
        match = next((r for r in models if r.model_id == ours_id), None)
        cells = [f"{theirs} (faces study) vs our `{ours_id}`"]
        for m, v in zip(FACES_METRICS, values):
            decimals = {"ssim": 2, "mse_ab": 4}.get(m, 2)
            ours = fmt(mean_of(match.summary, m), decimals) if match else "not run"
            cells += [ours, f"{v:.{decimals}f}"]
        faces_rows.append(cells)
    doc.para(f"Faces study ({FACES_DATA}); their PSNR and MSE are on normalized ab (ab/128, peak 1.0), our "
             f"ab-PSNR / MSE (ab/128) columns:")
    doc.table(["model", "ab-PSNR ours", "ab-PSNR published", "SSIM ours", "SSIM published", "ΔE76 ours",
               "ΔE76 published", "MSE (ab/128) ours", "MSE (ab/128) published"], faces_rows)
    doc.para(f"State of the art on ImageNet val (first 5,000 images, 256×256): DDColor (2023) FID 3.92, "
             f"colorfulness 38.26 (ground truth 38.21), PSNR 23.85; pix2pix-style and regression models land "
             f"around FID 6–9 there. Our FID is computed on {n} images (FID is biased upwards on small sets) with "
             f"{fid_label}: compare it between our models only.")

    # -- figures
    doc.heading(2, "The same test images, every model")
    doc.para(f"{len(grid_indices)} test images evenly spaced through the test split (`report.grid_images` = "
             f"{report_params.grid_images}): gray input (= the grayscale baseline's output), ground truth, then "
             f"every model in study order.")
    doc.image("comparison grid", rel(out_dir / FIGURES / "comparison_grid.jpg"))
    doc.heading(2, "Best and worst examples per model")
    doc.para(f"Per model, its {report_params.examples} best and {report_params.examples} worst test images by "
             f"CIEDE2000 (lower is better): gray input, the model's colorization, ground truth.")
    for r in models:
        doc.heading(3, r.model_id)
        doc.image(f"best and worst examples of {r.model_id}", rel(examples[r.model_id]))
    doc.heading(2, "Metrics with 95% confidence intervals")
    doc.para(f"Bars: mean over the test images; whiskers: bootstrap 95% CI (FID: one number per set, no CI); "
             f"gray bar: grayscale baseline. LPIPS: {lpips_label}. FID: {fid_label}. Every value: "
             f"`reports/comparison.csv`; `dvc plots show` draws the headline metrics (`reports/plots/means.csv`).")
    doc.image("metric bar charts", rel(out_dir / FIGURES / "metrics.png"))
    doc.heading(2, "Training curves")
    if curve_figures:
        for caption, path in curve_figures:
            doc.para(caption[0].upper() + caption[1:] + ":")
            doc.image(caption, rel(path))
    else:
        doc.para("No training logs found (dvclive's `reports/train/<id>/plots/metrics`).")

    # -- what was run
    doc.heading(2, "What was run")
    doc.bullets(_data_lines(data, preprocess_json, n))
    doc.heading(3, "Models")
    model_rows = []
    for r in models:
        spec = (params.get("models") or {}).get(r.model_id) or {}
        ckpt = r.summary.get("checkpoint", {})
        model_rows.append([r.model_id, str(spec.get("generator", ckpt.get("architecture", "?"))),
                           _objective(params, r.model_id), _training_backbones(r.summary),
                           f"{ckpt.get('epoch', '?')} of {ckpt.get('epochs', '?')} ({ckpt.get('select', '?')})",
                           _perceptual_share(read_curves(train_dir, r.model_id))])
    doc.table(["id", "generator", "objective (term λ)", "training backbones",
               "checkpoint scored: epoch of run (`train.select`)", "perceptual share of the loss (last epoch)"],
              model_rows)
    doc.heading(3, "Backbone weights")
    doc.bullets([f"LPIPS (AlexNet trunk, v0.1 heads): {lpips_label}",
                 f"FID (Inception pool3): {fid_label}",
                 "perceptual loss and ResNet-34 encoder: per model, in the “training backbones” column above "
                 "(`none`/`—` = the model has no pretrained part)"])
    doc.heading(3, "Settings that differ from the reference study")
    diffs = differing_params(params)
    if diffs:
        doc.table(["setting", "this run", "reference study"], [list(d) for d in diffs])
    else:
        doc.para("None: this run uses the reference study's settings.")
    doc.para("Reference: Adam lr 2e-4, betas (0.5, 0.999), batch 64, 50 epochs (constant for 25, then linear "
             "decay to zero), seed 42, 256×256, generator width 64, 70×70 PatchGAN (width 64) with BCE, "
             "ImageNet backbones; λ L1 100, λ perceptual 10, λ adversarial 1.")
    doc.heading(3, "Versions and how to reproduce")
    doc.bullets([f"Python {platform.python_version()}", f"torch {torch.__version__}",
                 f"colorstudy {colorstudy.__version__}"])
    doc.code("pip install -r requirements.txt\ndvc repro")
    doc.para("`dvc repro` reruns only the stages whose inputs changed; `dvc exp run -S key=value` tries another "
             "setting of `params.yaml`.")
    return doc


def _caveats(data: DataParams, models: Sequence[ModelResult], rows: Sequence[ModelResult], n: int,
             n_photos: int) -> list[str]:
    """What limits the headline, in the reader's words; empty when nothing does."""
    out = []
    if data.dataset == "sample":
        out.append("dataset `sample` is the handful of demo photos that ship with scikit-image, matplotlib and "
                   "scikit-learn: "
                   "this run shows that the pipeline works, not which model colorizes best")
    if n_photos < 10:
        out.append(f"the test split holds {n_photos} photo(s)" + (f" ({n} crops)" if n_photos < n else "")
                   + f": the intervals resample photos, and a bootstrap over so few cannot show much, so every "
                     f"comparison here rests on those {n_photos} photo(s)")
    elif n < 100:
        out.append(f"{n} test images: small differences between models are within noise (see the intervals)")
    epochs = [r.summary.get("checkpoint", {}) for r in models]
    first = [r.model_id for r, c in zip(models, epochs) if c.get("epoch") == 1 and (c.get("epochs") or 0) > 1]
    if first:
        out.append(f"{len(first)} of {len(models)} models are scored on their epoch-1 checkpoint (the validation "
                   f"metric of `train.select` never improved after it): {', '.join(first)}")
    random = sorted({label.split(":")[0] for r in rows for label in r.summary.get("provenance", {}).values()
                     if is_random(label)})
    if random:
        out.append(f"randomly initialized backbones ({', '.join(random)}): the numbers that depend on them (LPIPS, "
                   f"FID, a perceptual loss) are not comparable to published ones")
    return out


def _beats_baseline(versus: dict[str, dict[str, PairedDifference]]) -> dict[str, int]:
    """Per model: on how many per-image ranking metrics its paired CI against gray is in its favour."""
    return {i: sum(d.favours_a(METRICS[m].direction) for m, d in per.items()) for i, per in versus.items()}


def _perceptual_share(curves: dict[str, pd.DataFrame]) -> str:
    """The weighted perceptual term over the generator's whole weighted objective, last epoch's mean.

    Why: with a random VGG the term can be a few % of the objective, and then a model
    "with" it is the same model as one without (C ≈ B): the λ ablations test little."""
    terms = {k: float(v["value"].iloc[-1]) for k, v in curves.items()
             if k.startswith("train/") and k != "train/discriminator"}
    if "train/perceptual" not in terms:
        return "—"
    total = sum(abs(v) for v in terms.values())
    return f"{100 * terms['train/perceptual'] / total:.1f} %" if total > 0 else "?"


def _photos(n: int, n_photos: int) -> str:
    return f"{n_photos} photos" if n_photos == n else f"crops of {n_photos} photos"


def _data_lines(data: DataParams, preprocess_json: Path, n: int) -> list[str]:
    source = f"`{data.dataset}`" + (f" (folder `{data.path}`)" if data.dataset == "folder" and data.path else "")
    if data.split == "official":
        split = "the dataset's official split"
    elif data.dataset in FIXED_SPLIT_DATASETS:
        split = "the split the dataset fixes"
    else:
        split = f"random split by photo (val {data.val_fraction:g}, test {data.test_fraction:g}, seed {data.seed})"
    lines = [f"dataset: {source}, {split}; photos resized and center-cropped to {data.image_size}×{data.image_size}"]
    if preprocess_json.is_file():
        p = json.loads(preprocess_json.read_text(encoding="utf-8"))
        kept = p.get("kept", {})
        rejected = p.get("rejected", {})
        reasons = ", ".join(f"{k} {v}" for k, v in sorted((rejected.get("by_reason") or {}).items()))
        lines += [
            f"source photos: {p.get('sources', '?')}",
            f"kept: {kept.get('total', '?')} (train {kept.get('train', '?')}, val {kept.get('val', '?')}, "
            f"test {kept.get('test', '?')})",
            f"rejected: {rejected.get('total', '?')}" + (f" ({reasons})" if reasons else ""),
            f"excluded by the color test (`data/shards/rejects.csv` gives each reason): grayscale "
            f"{p.get('grayscale_excluded', '?')}, toned monochrome {p.get('monochrome_excluded', '?')}; "
            f"duplicates removed: {p.get('duplicates_removed', '?')}",
        ]
    else:
        lines.append(f"preprocess counts: {preprocess_json.as_posix()} not found")
    lines.append(f"test images evaluated: {n}")
    return lines


__all__ = ["Doc", "ModelResult", "ReportError", "ReportFiles", "build_report", "differing_params", "rank_models",
           "ranking_metrics", "read_curves", "study_order"]
