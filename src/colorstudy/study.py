"""The study table: resolving one model id of ``params.yaml`` into its full objective.

``resolve_model`` turns ``models.<id>`` and one of ``train.seeds``, plus the global sections
they draw on, into one self-contained JSON document (the "run spec"). The ``resolve`` DVC stage writes
it and ``train@<id>`` depends on that file instead of on params. DVC cannot list a
model's params dependencies from data (its templating does not expand lists), but
it skips a stage whose inputs hash the same: so ``dvc exp run -S loss.perceptual=20``
rewrites every spec, only the specs of models whose objective uses the global
perceptual weight change, and only those models retrain. Exact by construction,
with no hand-kept dependency lists.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from collections.abc import Mapping
from typing import Any

from colorstudy.models.patchgan import layers_for as patchgan_layers_for
from colorstudy.config import (
    AdversarialParams,
    LossWeights,
    Params,
    ParamsError,
    PerceptualParams,
    RunTrainParams,
    TrainParams,
    parse,
    require,
)

def validate_params(params: Params | Mapping[str, Any]) -> Params:
    """The whole file parsed, its study table checked against the model and loss
    registries: a typo anywhere fails before any stage does work."""
    from colorstudy.losses import LOSSES
    from colorstudy.models import GENERATORS

    parsed = params if isinstance(params, Params) else Params.from_dict(params)
    if not parsed.models:
        raise ParamsError("models: the study table is missing or empty")
    for model_id, spec in parsed.models.items():
        where = f"models.{model_id}"
        if spec.generator not in GENERATORS:
            raise ParamsError(f"{where}.generator: unknown architecture {spec.generator!r}; "
                              f"registered: {sorted(GENERATORS)}")
        for term in spec.terms:
            if term not in LOSSES or not hasattr(LossWeights, term):
                raise ParamsError(f"{where}.terms: unknown loss term {term!r}; "
                                  f"known: {sorted(t for t in LOSSES if hasattr(LossWeights, t))}")
    return parsed


def default_arch_kwargs(generator: str, image_size: int, width: int) -> dict[str, Any]:
    """Generator arguments the study derives from the data and train sections."""
    from colorstudy.models import GENERATORS

    return {"width": width, **GENERATORS[generator].arguments_for(image_size)}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One study id resolved: everything its training reads, and nothing else.

    ``resolve`` writes it (:meth:`write`), ``train@ID-SEED`` and the report read it
    (:meth:`read`, through the validating parser, so a hand-edited spec fails as a
    params.yaml typo does), and every checkpoint keeps it (:meth:`to_dict`). The JSON is
    byte-stable: equal specs are equal bytes, which is what DVC's skip decision hashes.
    """

    model_id: str
    generator: str  # a name in models.GENERATORS
    arch_kwargs: dict[str, Any]  # the generator's arguments (its registry defaults for the size + overrides)
    terms: dict[str, float]  # loss term -> its weight λ, global or the model's override
    image_size: int
    train: RunTrainParams  # the shared settings and this run's seed
    perceptual: PerceptualParams | None = None  # when "perceptual" is a term
    adversarial: AdversarialParams | None = None  # when "adversarial" is a term; layers resolved

    def __post_init__(self) -> None:
        for term in ("perceptual", "adversarial"):
            require((term in self.terms) == (getattr(self, term) is not None), term,
                    f"the {term} section goes with the {term} term (terms: {sorted(self.terms)})")
        require(self.adversarial is None or self.adversarial.layers != "auto", "adversarial.layers",
                "a run spec holds the PatchGAN depth actually built, not `auto`")

    @property
    def seed(self) -> int:
        return self.train.seed

    @property
    def run_name(self) -> str:
        """The DVC stage suffix of this run (``train@A-0``): model id and seed."""
        return f"{self.model_id}-{self.seed}"

    def to_json(self) -> str:
        # sorted keys and a fixed layout: equal specs must be equal bytes for DVC's hash
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        plain = {k: dataclasses.asdict(v) if dataclasses.is_dataclass(v) else v
                 for k, v in fields.items() if v is not None}
        return json.dumps(plain, indent=2, sort_keys=True) + "\n"

    def to_dict(self) -> dict[str, Any]:
        """The spec as the JSON file holds it (sorted keys): what a checkpoint stores."""
        return json.loads(self.to_json())

    @classmethod
    def from_dict(cls, raw: Any, where: str = "run spec") -> RunSpec:
        return parse(cls, raw, where)

    @classmethod
    def from_json(cls, text: str, where: str = "run spec") -> RunSpec:
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as e:
            raise ParamsError(f"{where}: not JSON ({e}); rerun the resolve stage") from e
        return cls.from_dict(raw, where)

    def write(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.to_json())

    @classmethod
    def read(cls, path: str | Path) -> RunSpec:
        return cls.from_json(Path(path).read_text(), str(path))


def run_train_params(train: TrainParams, seed: int) -> RunTrainParams:
    """One run's ``train`` section: the shared settings, and ``seed`` in place of the list
    (so adding a seed leaves the other runs' specs, and their trainings, untouched)."""
    shared = {f.name: getattr(train, f.name) for f in dataclasses.fields(train) if f.name != "seeds"}
    return RunTrainParams(**shared, seed=seed)


def spec_path(study_dir: str | Path, model_id: str, seed: int) -> Path:
    """Where ``resolve`` writes the run spec of ``model_id`` trained with ``seed`` (dvc.yaml's layout)."""
    return Path(study_dir) / model_id / f"seed{seed}.json"


def resolve_model(params: Params | Mapping[str, Any], model_id: str, seed: int | None = None) -> RunSpec:
    """The run spec of one study id and seed (default: the first of ``train.seeds``):
    everything its training reads, and nothing else."""
    parsed = validate_params(params)
    if model_id not in parsed.models:
        raise ParamsError(f"models: no study id {model_id!r}; ids: {sorted(parsed.models)}")
    seed = parsed.train.seeds[0] if seed is None else seed
    spec, data, loss, train = parsed.models[model_id], parsed.data, parsed.loss, parsed.train
    adversarial = None
    if "adversarial" in spec.terms:
        adversarial = parsed.adversarial
        if adversarial.layers == "auto":  # the run spec holds the depth actually built
            adversarial = dataclasses.replace(adversarial, layers=patchgan_layers_for(data.image_size))
    return RunSpec(
        model_id=model_id,
        generator=spec.generator,
        arch_kwargs={**default_arch_kwargs(spec.generator, data.image_size, train.width), **spec.arch},
        terms={term: spec.loss_weights.get(term, getattr(loss, term)) for term in spec.terms},
        image_size=data.image_size,
        train=run_train_params(train, seed),
        perceptual=parsed.perceptual if "perceptual" in spec.terms else None,
        adversarial=adversarial,
    )


def resolve_study(params: Params | Mapping[str, Any], model_ids: list[str] | None = None) -> list[RunSpec]:
    """Every run of the study (or of ``model_ids``): each model with each of ``train.seeds``."""
    parsed = validate_params(params)
    return [resolve_model(parsed, model_id, seed)
            for model_id in (model_ids or list(parsed.models)) for seed in parsed.train.seeds]
