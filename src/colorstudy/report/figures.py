"""The report's figures: comparison grid, examples, metric bars and training curves."""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from colorstudy.evaluate import BASELINE
from colorstudy.metrics import METRICS
from colorstudy.report.inputs import ARROWS, RANDOM_SHORT, ModelResult, backbone_label, is_random, mean_of

DPI = 100
# Photos as JPEG without chroma subsampling (a colorization report must not smear the
# colors it compares); charts as palette PNG (flat colors and text, where JPEG rings).
JPEG_QUALITY = 85
CHART_COLORS = 64


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
def figure_style() -> Iterator[None]:
    """matplotlib's default style (whatever a matplotlibrc says), restored afterwards."""
    import matplotlib

    with matplotlib.rc_context():
        matplotlib.rcdefaults()
        matplotlib.rcParams.update({"font.size": 8, "axes.titlesize": 8})
        yield


def model_colors(ids: Sequence[str]) -> dict[str, Any]:
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
