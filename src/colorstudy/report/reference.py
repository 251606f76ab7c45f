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
