"""The reference study (docs/study.md): its settings and published numbers, defined once."""

from __future__ import annotations

from typing import Any

from colorstudy.config import (
    AdversarialParams,
    DataParams,
    EvaluateParams,
    LossWeights,
    PerceptualParams,
    TrainParams,
    section,
)
from colorstudy.models.patchgan import layers_for, receptive_field

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
    ("convolutional encoder–decoder (ResNet-34 to layer2, no skips)", "resnet_encdec", 31.18, 0.98, 4.16, 0.0013),
    ("adversarial", "B", 29.37, 0.98, 5.53, 0.0016),
)
FACES_METRICS = ("psnr_ab", "ssim", "delta_e76", "mse_ab")


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


# docs/study.md's settings as params keys: the one place they are written. Not its seed:
# the studies report one run (seed 42), and one seed cannot tell a model from its training
# run, so the full study keeps train.seeds' several seeds (the report names them). The report's
# "differs from the reference" table and the README's command for the full study
# (tests/test_report.py) are derived from it.
REFERENCE_SETTINGS: dict[str, Any] = {
    "train.lr": 2e-4, "train.beta1": 0.5, "train.beta2": 0.999, "train.batch_size": 64, "train.epochs": 50,
    "train.decay_epochs": 25, "train.select": "val_ab_l1", "train.augment": True,
    "data.image_size": 256, "train.width": 64, "adversarial.width": 64, "adversarial.layers": 3,
    "adversarial.mode": "bce", "loss.l1": 100.0, "loss.perceptual": 10.0, "loss.adversarial": 1.0,
    "perceptual.weights": "imagenet", "evaluate.lpips_weights": "imagenet", "evaluate.fid_weights": "imagenet",
    "models.resnet_unet.arch.weights": "imagenet",
}
# (label, params keys, how a value shows) of each row the report compares
_ROWS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("learning rate (`train.lr`)", ("train.lr",)),
    ("Adam betas (`train.beta1`, `train.beta2`)", ("train.beta1", "train.beta2")),
    ("batch size (`train.batch_size`)", ("train.batch_size",)),
    ("epochs (`train.epochs`)", ("train.epochs",)),
    ("epochs of linear decay (`train.decay_epochs`)", ("train.decay_epochs",)),
    ("checkpoint scored (`train.select`)", ("train.select",)),
    ("augmentation (`train.augment`)", ("train.augment",)),
    ("image size (`data.image_size`)", ("data.image_size",)),
    ("generator base width (`train.width`)", ("train.width",)),
    ("PatchGAN base width (`adversarial.width`)", ("adversarial.width",)),
    ("PatchGAN layers (`adversarial.layers`)", ("adversarial.layers",)),
    ("adversarial loss (`adversarial.mode`)", ("adversarial.mode",)),
    ("λ L1 (`loss.l1`)", ("loss.l1",)),
    ("λ perceptual (`loss.perceptual`)", ("loss.perceptual",)),
    ("λ adversarial (`loss.adversarial`)", ("loss.adversarial",)),
    ("perceptual-loss VGG16 weights (`perceptual.weights`)", ("perceptual.weights",)),
    ("LPIPS AlexNet weights (`evaluate.lpips_weights`)", ("evaluate.lpips_weights",)),
    ("FID Inception weights (`evaluate.fid_weights`)", ("evaluate.fid_weights",)),
)


def _settings(params: dict[str, Any]) -> dict[str, Any]:
    """This run's value of every reference setting, read through the validating sections."""
    parsed = {name: section(params, name, cls) for name, cls in (
        ("data", DataParams), ("train", TrainParams), ("loss", LossWeights), ("perceptual", PerceptualParams),
        ("adversarial", AdversarialParams), ("evaluate", EvaluateParams))}
    return {key: getattr(parsed[key.split(".")[0]], key.split(".")[1])
            for key in REFERENCE_SETTINGS if not key.startswith("models.")}


def _shown(key: str, value: Any, image_size: int) -> str:
    if key == "data.image_size":
        return f"{value}×{value}"
    if key == "adversarial.layers":
        return _patchgan_layers(value, image_size)
    return _param_value(value)


def _joined(values: list[str]) -> str:
    return "(" + ", ".join(values) + ")" if len(values) > 1 else values[0]


def _reference_value(keys: tuple[str, ...]) -> str:
    return _joined([_shown(k, REFERENCE_SETTINGS[k], REFERENCE_SETTINGS["data.image_size"]) for k in keys])


def reference_line() -> str:
    """Every reference setting in one sentence, for the report's prose."""
    parts = [f"{label.split(' (`')[0]} {_reference_value(keys)}" for label, keys in _ROWS]
    return (f"Reference study: {', '.join(parts)}, ResNet-34 encoder weights "
            f"{REFERENCE_SETTINGS['models.resnet_unet.arch.weights']}.")


def differing_params(params: dict[str, Any]) -> list[tuple[str, str, str]]:
    """``(setting, this run, reference study)`` for every setting that differs from docs/study.md."""
    ours = _settings(params)
    rows: list[tuple[str, str, str]] = []
    for label, keys in _ROWS:
        mine = [_shown(k, ours[k], ours["data.image_size"]) for k in keys]
        rows.append((label, _joined(mine), _reference_value(keys)))
    for model_id, spec in (params.get("models") or {}).items():
        if isinstance(spec, dict) and spec.get("generator") == "resnet_unet":
            weights = (spec.get("arch") or {}).get("weights", "random")
            rows.append((f"{model_id}: ResNet-34 encoder weights (`models.{model_id}.arch.weights`)", weights,
                         REFERENCE_SETTINGS["models.resnet_unet.arch.weights"]))
    return [row for row in rows if row[1] != row[2]]
