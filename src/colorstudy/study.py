"""The study table: resolving one model id of ``params.yaml`` into its full objective.

``resolve_model`` turns ``models.<id>`` plus the global sections it draws on into one
self-contained JSON document (the "run spec"). The ``resolve@<id>`` DVC stage writes
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
from typing import Any

from colorstudy.models.patchgan import layers_for as patchgan_layers_for
from colorstudy.config import (
    AdversarialParams,
    DataParams,
    EvaluateParams,
    LossWeights,
    ModelSpec,
    ParamsError,
    PerceptualParams,
    ReportParams,
    TrainParams,
    parse,
    section,
)

SECTIONS: dict[str, type] = {
    "data": DataParams,
    "loss": LossWeights,
    "perceptual": PerceptualParams,
    "adversarial": AdversarialParams,
    "train": TrainParams,
    "evaluate": EvaluateParams,
    "report": ReportParams,
}
# Sections whose values are not read through a dataclass of their own.
_TABLES = {"models"}


def model_specs(params: dict[str, Any]) -> dict[str, ModelSpec]:
    """Every study id, parsed and checked against the model and loss registries."""
    from colorstudy.losses import LOSSES
    from colorstudy.models import GENERATORS

    models = params.get("models")
    if not isinstance(models, dict) or not models:
        raise ParamsError("models: the study table is missing or empty")
    specs = {}
    for model_id, raw in models.items():
        where = f"models.{model_id}"
        spec = parse(ModelSpec, raw, where)
        if spec.generator not in GENERATORS:
            raise ParamsError(f"{where}.generator: unknown architecture {spec.generator!r}; "
                              f"registered: {sorted(GENERATORS)}")
        for term in spec.terms:
            if term not in LOSSES or not hasattr(LossWeights, term):
                raise ParamsError(f"{where}.terms: unknown loss term {term!r}; "
                                  f"known: {sorted(t for t in LOSSES if hasattr(LossWeights, t))}")
        specs[str(model_id)] = spec
    return specs


def validate_params(params: dict[str, Any]) -> None:
    """Check the whole file, so a typo anywhere fails before any stage does work."""
    unknown = sorted(set(params) - set(SECTIONS) - _TABLES)
    if unknown:
        raise ParamsError(f"params.yaml: unknown section(s) {unknown}; "
                          f"valid: {sorted(set(SECTIONS) | _TABLES)}")
    for name, cls in SECTIONS.items():
        section(params, name, cls)
    model_specs(params)


def default_arch_kwargs(generator: str, image_size: int, width: int) -> dict[str, Any]:
    """Generator arguments the study derives from the data and train sections."""
    from colorstudy.models import GENERATORS

    return {"width": width, **GENERATORS[generator].arguments_for(image_size)}


def resolve_model(params: dict[str, Any], model_id: str) -> dict[str, Any]:
    """The run spec of one study id: everything its training reads, and nothing else."""
    validate_params(params)
    specs = model_specs(params)
    if model_id not in specs:
        raise ParamsError(f"models: no study id {model_id!r}; ids: {sorted(specs)}")
    spec = specs[model_id]
    data = section(params, "data", DataParams)
    loss = section(params, "loss", LossWeights)
    train = section(params, "train", TrainParams)
    run: dict[str, Any] = {
        "model_id": model_id,
        "generator": spec.generator,
        "arch_kwargs": {**default_arch_kwargs(spec.generator, data.image_size, train.width), **spec.arch},
        "terms": {term: spec.weights.get(term, getattr(loss, term)) for term in spec.terms},
        "image_size": data.image_size,
        "train": dataclasses.asdict(train),
    }
    if "perceptual" in spec.terms:
        run["perceptual"] = dataclasses.asdict(section(params, "perceptual", PerceptualParams))
    if "adversarial" in spec.terms:
        adversarial = dataclasses.asdict(section(params, "adversarial", AdversarialParams))
        if adversarial["layers"] == "auto":  # the run spec holds the depth actually built
            adversarial["layers"] = patchgan_layers_for(data.image_size)
        run["adversarial"] = adversarial
    return run


def write_run_spec(run: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # sorted keys and a fixed layout: equal specs must be equal bytes for DVC's hash
    path.write_text(json.dumps(run, indent=2, sort_keys=True) + "\n")


def read_run_spec(path: str | Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())
