"""The pieces of text the report's sections are made of: table cells and headers,
caveats, the data and model lines of "What was run"."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from colorstudy.config import DataParams, ParamsError
from colorstudy.data.splits import FIXED_SPLIT_DATASETS
from colorstudy.metrics import METRICS
from colorstudy.paired import PairedDifference
from colorstudy.seed_stats import MIN_PHOTOS
from colorstudy.report.inputs import ARROWS, ModelResult, backbone_label, display, fmt, is_random
from colorstudy.report.reference import REFERENCE_SETTINGS


def objective_text(params: dict[str, Any], model_id: str) -> str:
    from colorstudy.study import resolve_model

    try:
        terms = resolve_model(params, model_id).terms
        return ", ".join(f"{t} {w:g}" for t, w in terms.items())
    except ParamsError:  # a partial params file: show the declared terms
        spec = (params.get("models") or {}).get(model_id) or {}
        return ", ".join(spec.get("terms", [])) or "?"


def training_backbones(summary: dict[str, Any]) -> str:
    prov = summary.get("provenance", {})
    parts = []
    if prov.get("perceptual_loss", "not used") != "not used":
        parts.append(f"perceptual loss: {display(prov['perceptual_loss'])}")
    encoder = prov.get("generator_encoder", "")
    if encoder and not encoder.startswith("none"):
        parts.append(f"encoder: {display(encoder)}")
    return "; ".join(parts) or "—"


def ci_cell(summary: dict[str, Any], name: str, decimals: int, bold: bool) -> str:
    """``mean sd x [low, high]``: the seed SD beside the mean, where the model has seeds."""
    value = summary.get(name)
    if value is None:
        return "—"
    if isinstance(value, dict):
        mean = fmt(float(value["mean"]), decimals)
        text = f"**{mean}**" if bold else mean
        if value.get("seed_sd") is not None:
            text += f" sd {fmt(float(value['seed_sd']), decimals)}"
        return f"{text} [{fmt(float(value['ci95_low']), decimals)}, {fmt(float(value['ci95_high']), decimals)}]"
    text = fmt(float(value), decimals)
    return f"{text}" if not bold else f"**{text}**"


def metric_header(name: str, results: Sequence[ModelResult]) -> str:
    spec = METRICS[name]
    text = f"{spec.label}{' [' + spec.unit + ']' if spec.unit else ''} {ARROWS[spec.direction]}"
    if spec.backbone:
        text += f"<br>{backbone_label(results, spec.backbone)}"
    return text


# What a random-init backbone makes incomparable, in the reader's words
RANDOM_BACKBONE_USE = {"alexnet": "LPIPS", "inception_fid": "FID", "vgg16": "the perceptual loss",
                       "resnet34": "the ResNet encoders"}


def headline_caveats(data: DataParams, models: Sequence[ModelResult], rows: Sequence[ModelResult], n: int,
             n_photos: int) -> list[str]:
    """What limits the headline, in the reader's words; empty when nothing does."""
    out = []
    if data.dataset == "sample":
        out.append("dataset `sample` is the handful of demo photos that ship with scikit-image, matplotlib and "
                   "scikit-learn: "
                   "this run shows that the pipeline works, not which model colorizes best")
    if n_photos < MIN_PHOTOS:
        out.append(f"the test split holds {n_photos} photo(s)" + (f" ({n} crops)" if n_photos < n else "")
                   + f": too few to test a difference between models (at least {MIN_PHOTOS} are needed), so the "
                     f"report names no winner; the intervals, resting on {n_photos} photo(s), are wide")
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
        uses = ", ".join(f"{name}: {RANDOM_BACKBONE_USE.get(name, 'its numbers')}" for name in random)
        out.append(f"randomly initialized backbones ({uses}): the numbers that depend on them are not comparable "
                   f"to published ones")
    return out


SHORT_TRAINING_STEPS = 2000  # below this many optimizer steps a run is far from converged


def training_length(train: Mapping[str, Any], preprocess_json: Path) -> str | None:
    """A caveat when every model trained fewer than ``SHORT_TRAINING_STEPS`` optimizer steps."""
    if not preprocess_json.is_file():
        return None
    n_train = int(json.loads(preprocess_json.read_text(encoding="utf-8"))["kept"]["train"])
    epochs, batch = int(train["epochs"]), int(train["batch_size"])
    steps = epochs * (n_train // batch)
    if steps >= SHORT_TRAINING_STEPS:
        return None
    # Not "the default's size": committed studies of other sizes print this too.
    return (f"each model trained {epochs} epoch(s): {steps} optimizer steps of {batch} of the {n_train} training "
            f"images (`train.epochs`; the reference study trained {REFERENCE_SETTINGS['train.epochs']} epochs). "
            f"Under {SHORT_TRAINING_STEPS:,} steps a run stops short of convergence: models that learn at "
            f"different speeds can change order with longer training")


def beats_baseline(versus: dict[str, dict[str, PairedDifference]]) -> dict[str, int]:
    """Per model: on how many per-image ranking metrics its paired CI against gray is in its favour."""
    return {i: sum(d.favours_a(METRICS[m].direction) for m, d in per.items()) for i, per in versus.items()}


def perceptual_share(curves: dict[str, pd.DataFrame]) -> str:
    """The weighted perceptual term over the generator's whole weighted objective, last epoch's mean.

    Why: with a random VGG the term can be a few % of the objective, and then a model
    "with" it is the same model as one without (C ≈ B): the λ ablations test little."""
    terms = {k: float(v["value"].iloc[-1]) for k, v in curves.items()
             if k.startswith("train/") and k != "train/discriminator"}
    if "train/perceptual" not in terms:
        return "—"
    total = sum(abs(v) for v in terms.values())
    return f"{100 * terms['train/perceptual'] / total:.1f} %" if total > 0 else "?"


def study_size(n_photos: int, n_seeds: int) -> str:
    """``117 photos and 3 seeds``: the two sample sizes every claim of the report rests on."""
    return f"{n_photos} photo{'s' * (n_photos != 1)} and {n_seeds} seed{'s' * (n_seeds != 1)}"


def photos_text(n: int, n_photos: int) -> str:
    return f"{n_photos} photos" if n_photos == n else f"crops of {n_photos} photos"


def data_lines(data: DataParams, preprocess_json: Path, n: int) -> list[str]:
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
