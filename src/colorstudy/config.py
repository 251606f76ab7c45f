"""Typed params: one dataclass per ``params.yaml`` section.

Every stage reads its section through :func:`parse`, which rejects unknown keys
(a typo'd key must fail, not be silently ignored) and values of the wrong type,
naming the key. Range checks live in each dataclass's ``__post_init__``. Every default
equals the committed ``params.yaml`` (``tests/test_study.py`` checks), so a key deleted
from it changes nothing; the reference study's settings are ``report.reference``'s.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml entry is wrong; the message names the key and the fix."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return parse(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return {k: _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse(cls: type[T], raw: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``raw``; unknown keys and bad types fail, naming them."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _check_type(value, hints[name], f"{where}.{name}") for name, value in raw.items()}
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParamsError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**values)
    except ParamsError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamsError(f"{where}: {e}") from e


# Where a backbone's weights come from: the ImageNet file in the torch hub cache, or a
# seeded random init (then every report says so next to the number).
WeightsChoice = Literal["imagenet", "random"]
# FID also has `none`: its Inception at 299² was ~95 % of an evaluation's time on a CPU,
# for a number that with random weights is comparable between our own models only.
FidChoice = Literal["none", "imagenet", "random"]
FID_OFF: FidChoice = "none"
NOT_COMPUTED = "not computed"
# What metrics.json says under provenance.fid when FID is off (and the report and the
# summary files repeat): a string where a backbone label would be, naming the param that
# turns it on; never a number that could pass for an FID. Here, not in evaluate, because
# colorstudy.compare (CI, no torch) recognizes it too.
FID_NOT_COMPUTED = f"{NOT_COMPUTED} (evaluate.fid_weights=none; set evaluate.fid_weights=imagenet to compute it)"

DEVICE_PATTERN = re.compile(r"auto|cpu|cuda(:\d+)?")
DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def check_device_name(choice: str) -> str | None:
    """Why ``choice`` is not a device name params accept, or None when it is one."""
    if not isinstance(choice, str) or DEVICE_PATTERN.fullmatch(choice) is None:
        return f"{choice!r} is not a device; use {DEVICE_CHOICES} (N: a GPU index, 0 first)"
    return None


def require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ParamsError(f"{where}: {message}")


def section(params: Mapping[str, Any], name: str, cls: type[T]) -> T:
    return parse(cls, params.get(name), name)


# -- sections ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataParams:
    """``data``: which photos, how they are cleaned, sized and split."""

    dataset: str = "sample"
    path: str | None = "photos"  # root folder for dataset `folder`
    mirror: str | None = None  # local dir or file:// / http:// base URL holding the archives
    image_size: int = 64  # side of the square the photos are resized/cropped to
    split: Literal["random", "official"] = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    # The color test (data/images.py `color_verdict`): a pixel is colored at Lab chroma >=
    # color_chroma; an image needs min_color_fraction of its pixels colored (else gray) and
    # their hues spread by at least min_hue_spread degrees (else a toned monochrome print).
    color_chroma: float = 12.0
    min_color_fraction: float = 0.01
    min_hue_spread: float = 2.5
    min_side: int = 32  # photos smaller than this (pixels, shorter side) are rejected
    max_pixels: int = 89_478_485  # PIL's decompression-bomb limit
    max_images: int | None = None  # keep N sources, drawn by a seeded hash of the path (quick trials)
    shard_size: int = 1024  # images per Arrow shard
    seed: int = 42

    def __post_init__(self) -> None:
        require(self.image_size >= 16 and self.image_size % 16 == 0, "data.image_size",
                f"{self.image_size} must be a multiple of 16, at least 16")
        require(0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1, "data.val_fraction/test_fraction",
                "fractions must be in [0, 1) and leave room for a training split")
        require(self.color_chroma > 0, "data.color_chroma", "must be > 0")
        require(0 <= self.min_color_fraction <= 1, "data.min_color_fraction", "must be in [0, 1]")
        require(0 <= self.min_hue_spread < 180, "data.min_hue_spread", "must be in [0, 180) degrees")
        require(self.shard_size > 0, "data.shard_size", "must be > 0")
        require(self.dataset != "folder" or bool(self.path), "data.path",
                "dataset `folder` needs data.path, the folder of photos")


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """``loss``: the global weights (lambda) of the generator objective's terms."""

    l1: float = 100.0
    mse: float = 1.0
    perceptual: float = 10.0
    adversarial: float = 1.0

    def __post_init__(self) -> None:
        for name, value in dataclasses.asdict(self).items():
            require(value >= 0, f"loss.{name}", f"weight {value} must be >= 0")


@dataclasses.dataclass(frozen=True)
class PerceptualParams:
    """``perceptual``: the VGG16 feature loss."""

    weights: WeightsChoice = "random"
    layers: list[str] = dataclasses.field(default_factory=lambda: ["relu1_2", "relu2_2", "relu3_3"])


@dataclasses.dataclass(frozen=True)
class AdversarialParams:
    """``adversarial``: the PatchGAN discriminator and its loss."""

    mode: Literal["bce", "lsgan"] = "bce"
    width: int = 16  # PatchGAN base width (64: the published 2.8 M parameters)
    # stride-2 layers, or "auto": the deepest whose receptive field is at most the share
    # of the image the published 70x70 patch is of 256 px (models/patchgan.py)
    layers: int | Literal["auto"] = "auto"

    def __post_init__(self) -> None:
        require(self.width > 0, "adversarial.width", "must be > 0")
        require(self.layers == "auto" or 1 <= self.layers <= 5, "adversarial.layers", "must be in 1..5 or auto")


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """The optimization, shared by every model and seed of the study (``train`` less its seeds)."""

    epochs: int = 2
    decay_epochs: int = 1
    batch_size: int = 16
    lr: float = 2e-4
    beta1: float = 0.5
    beta2: float = 0.999
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    width: int = 16  # generator base width (64: the published size)
    augment: bool = True
    num_threads: int = 1  # per process
    # data-parallel processes (torchrun; gloo on CPU, NCCL on GPUs); batch_size is the
    # global batch, split evenly over them
    nproc: int = 1
    # which checkpoint the study scores: the last epoch (pix2pix's choice; the learning
    # rate has decayed to zero there) or the epoch best on a validation metric
    select: Literal["last", "val_ab_l1", "val_ab_error"] = "last"

    def __post_init__(self) -> None:
        require(self.epochs >= 1, "train.epochs", "must be >= 1")
        require(0 <= self.decay_epochs <= self.epochs, "train.decay_epochs", "must be in [0, train.epochs]")
        require(self.batch_size >= 1, "train.batch_size", "must be >= 1")
        require(self.lr > 0, "train.lr", "must be > 0")
        require(0 <= self.beta1 < 1 and 0 <= self.beta2 < 1, "train.beta1/beta2", "must be in [0, 1)")
        require(self.width >= 1, "train.width", "must be >= 1")
        require(self.num_threads >= 1, "train.num_threads", "must be >= 1")
        require(check_device_name(self.device) is None, "train.device", str(check_device_name(self.device)))
        require(self.nproc >= 1, "train.nproc", "must be >= 1 (processes of one data-parallel run)")
        require(self.batch_size % self.nproc == 0, "train.batch_size",
                f"{self.batch_size} does not split over train.nproc={self.nproc} processes; "
                f"make it a multiple of {self.nproc}")
        require(self.nproc == 1 or self.device in ("auto", "cpu", "cuda"), "train.device",
                f"{self.device} names one GPU but train.nproc={self.nproc}: use `cuda` (process k "
                f"takes cuda:k; CUDA_VISIBLE_DEVICES picks which GPUs) or train.nproc=1")


MAX_SEED = 2**31 - 1  # the training seeds torch.manual_seed(seed * 1000 + epoch) with room to spare


@dataclasses.dataclass(frozen=True)
class TrainParams(TrainSettings):
    """``train``: the optimization, and the seeds every model is trained with.

    Each (model, seed) is its own run (DVC stage ``train@ID-SEED``): a second seed is a
    second draw of initial weights, data order, augmentation and dropout, which is how
    the report measures how much a result moves from one training to the next.
    """

    seeds: list[int] = dataclasses.field(default_factory=lambda: [0, 1, 2])

    def __post_init__(self) -> None:
        super().__post_init__()
        require(len(self.seeds) >= 1, "train.seeds", "list at least one seed, e.g. [0, 1, 2]")
        require(len(set(self.seeds)) == len(self.seeds), "train.seeds", f"{self.seeds} repeats a seed")
        require(all(0 <= s <= MAX_SEED for s in self.seeds), "train.seeds", f"seeds must be in 0..{MAX_SEED}")


@dataclasses.dataclass(frozen=True)
class RunTrainParams(TrainSettings):
    """The ``train`` section of one run spec: the shared settings and this run's seed."""

    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        require(0 <= self.seed <= MAX_SEED, "train.seed", f"must be in 0..{MAX_SEED}")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One entry of ``models``: a study id's generator, loss terms and overrides."""

    generator: str
    terms: list[str]
    # this model's λ for some of its terms, over the global `loss` section's
    loss_weights: dict[str, float] = dataclasses.field(default_factory=dict)
    arch: dict[str, Any] = dataclasses.field(default_factory=dict)  # extra generator arguments

    def __post_init__(self) -> None:
        require(len(self.terms) > 0, "terms", "a model needs at least one loss term")
        require(len(set(self.terms)) == len(self.terms), "terms", f"{self.terms} repeats a term")
        for name, value in self.loss_weights.items():
            require(name in self.terms, f"loss_weights.{name}",
                    f"overrides a term the model does not use (terms: {self.terms})")
            require(value >= 0, f"loss_weights.{name}", f"weight {value} must be >= 0")


@dataclasses.dataclass(frozen=True)
class EvaluateParams:
    """``evaluate``: metrics on the test split."""

    batch_size: int = 32
    lpips_weights: WeightsChoice = "random"
    fid_weights: FidChoice = "none"  # none: FID not computed (metrics.json and the report say so)
    bootstrap: int = 1000
    seed: int = 42
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    num_threads: int = 1  # CPU threads, fixed so the metrics repeat bit for bit

    def __post_init__(self) -> None:
        require(self.batch_size >= 1, "evaluate.batch_size", "must be >= 1")
        require(self.num_threads >= 1, "evaluate.num_threads", "must be >= 1")
        require(check_device_name(self.device) is None, "evaluate.device", str(check_device_name(self.device)))
        require(self.bootstrap >= 100, "evaluate.bootstrap", "use at least 100 resamples")


@dataclasses.dataclass(frozen=True)
class ReportParams:
    """``report``: what the report shows."""

    grid_images: int = 6
    examples: int = 2

    def __post_init__(self) -> None:
        require(self.grid_images >= 1, "report.grid_images", "must be >= 1")
        require(self.examples >= 1, "report.examples", "must be >= 1")


# -- the whole file -----------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Params:
    """All of ``params.yaml``, every section parsed: what :meth:`load` returns to the stages.

    A missing section takes its dataclass's defaults (equal to the committed file); an
    unknown section, key or bad value fails naming it, so a typo anywhere stops the
    first stage that reads the file. ``models`` is checked against the model and loss
    registries by :func:`colorstudy.study.validate_params`, which needs the model zoo; the
    data stages do not import it.
    """

    # the study table; the stages that train need it (colorstudy.study.validate_params),
    # the data and evaluation stages do not
    models: dict[str, ModelSpec] = dataclasses.field(default_factory=dict)
    data: DataParams = dataclasses.field(default_factory=DataParams)
    loss: LossWeights = dataclasses.field(default_factory=LossWeights)
    perceptual: PerceptualParams = dataclasses.field(default_factory=PerceptualParams)
    adversarial: AdversarialParams = dataclasses.field(default_factory=AdversarialParams)
    train: TrainParams = dataclasses.field(default_factory=TrainParams)
    evaluate: EvaluateParams = dataclasses.field(default_factory=EvaluateParams)
    report: ReportParams = dataclasses.field(default_factory=ReportParams)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Params:
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise ParamsError(f"params.yaml: unknown section(s) {unknown}; valid: {sorted(names)}")
        models = raw.get("models") or {}
        if not isinstance(models, Mapping):
            raise ParamsError(f"models: expected a table of study ids, got {models!r}")
        if isinstance(raw.get("train"), Mapping) and "seed" in raw["train"]:
            raise ParamsError(f"train.seed: the study trains every model with each of train.seeds (a list); "
                              f"write `seeds: [{raw['train']['seed']}]` for one seed")
        hints = typing.get_type_hints(cls)
        sections = {name: section(raw, name, hints[name]) for name in names if name != "models"}
        return cls(models={str(k): parse(ModelSpec, v, f"models.{k}") for k, v in models.items()}, **sections)

    @classmethod
    def load(cls, path: str | Path = "params.yaml") -> Params:
        return cls.from_dict(load_params(path))
