"""The study table: params validation and exact DVC caching per model."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from colorstudy.config import ParamsError, load_params
from colorstudy.study import resolve_model, validate_params

ROOT = Path(__file__).resolve().parents[1]
PARAMS = load_params(ROOT / "params.yaml")
REFERENCE_IDS = {"A", "B", "C", "D", "E", "F"}  # docs/study.md's A-F comparison
# models whose objective uses the global perceptual weight (the ablations override it)
USES_GLOBAL_PERCEPTUAL = {"C", "D", "E", "F", "C_L1_LOW", "C_L1_HIGH"}


def with_change(dotted: str, value) -> dict:
    params = copy.deepcopy(PARAMS)
    *path, last = dotted.split(".")
    node = params
    for key in path:
        node = node[key]
    node[last] = value
    return params


def test_default_params_cover_the_whole_study():
    """The A-F comparison, and every registered generator in at least one study id: adding a
    generator is its file, its registry line and its entry in params.yaml's `models`."""
    from colorstudy.models import GENERATORS

    validate_params(PARAMS)
    assert REFERENCE_IDS <= set(PARAMS["models"])
    assert {spec["generator"] for spec in PARAMS["models"].values()} == set(GENERATORS)


def test_every_dataclass_default_is_the_committed_params_yaml():
    """A key deleted from params.yaml must not silently become another setting."""
    import dataclasses
    import typing

    from colorstudy.config import Params

    params = load_params(ROOT / "params.yaml")
    sections = {f.name: typing.get_type_hints(Params)[f.name] for f in dataclasses.fields(Params) if f.name != "models"}
    assert set(sections) | {"models"} == set(params)
    for name, cls in sections.items():
        for f in dataclasses.fields(cls):
            assert f.name in params[name], f"{name}.{f.name} is not in params.yaml"
            default = f.default_factory() if f.default is dataclasses.MISSING else f.default
            assert default == params[name][f.name], f"{name}.{f.name}: default {default!r}, params.yaml " \
                                                    f"{params[name][f.name]!r}"


@pytest.mark.parametrize("dotted, value, named", [
    ("train.epoch", 3, "epoch"),  # typo'd key
    ("loss.l1", -1.0, "loss.l1"),  # negative weight
    ("models.A.generator", "transformer", "transformer"),  # unknown architecture
    ("models.A.terms", ["l1", "style"], "style"),  # unknown loss term
    ("models.C_L1_LOW.loss_weights", {"mse": 3.0}, "loss_weights.mse"),  # override of an unused term
    ("models.B.discriminator", "patchgan", "discriminator"),  # unknown model key
    ("train.device", "tpu", "train.device"),
    ("data.image_size", 50, "data.image_size"),
    ("adversarial.mode", "wgan", "adversarial.mode"),
])
def test_bad_params_fail_naming_the_key(dotted, value, named):
    with pytest.raises(ParamsError, match=re.escape(named)):
        validate_params(with_change(dotted, value))


def test_unknown_section_is_rejected():
    params = copy.deepcopy(PARAMS)
    params["trian"] = {"epochs": 3}
    with pytest.raises(ParamsError, match="trian"):
        validate_params(params)


def test_run_spec_holds_only_what_the_objective_uses():
    a = resolve_model(PARAMS, "A")
    assert a.terms == {"l1": PARAMS["loss"]["l1"]}
    assert a.perceptual is None and a.adversarial is None
    assert "perceptual" not in a.to_dict() and "adversarial" not in a.to_dict()
    low = resolve_model(PARAMS, "C_PERCEPTUAL_LOW")
    assert low.terms["perceptual"] == 5.0 and low.terms["l1"] == PARAMS["loss"]["l1"]


@pytest.mark.parametrize("dotted, value, expected", [
    ("loss.perceptual", 20.0, USES_GLOBAL_PERCEPTUAL),
    ("loss.l1", 10.0, {"A", "B", "C", "E", "C_PERCEPTUAL_LOW", "C_PERCEPTUAL_HIGH"}),
    ("adversarial.mode", "lsgan", {"B", "C", "F", "C_L1_LOW", "C_L1_HIGH", "C_PERCEPTUAL_LOW",
                                   "C_PERCEPTUAL_HIGH"}),
    ("models.A.terms", ["l1", "mse"], {"A"}),
    ("train.epochs", 7, set(PARAMS["models"])),
])
def test_a_change_alters_exactly_the_specs_that_use_it(dotted, value, expected):
    changed = with_change(dotted, value)
    differs = {m for m in PARAMS["models"] if resolve_model(PARAMS, m) != resolve_model(changed, m)}
    assert differs == expected


def _dvc(args: list[str], cwd: Path) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    return out.stdout + out.stderr


def _stand_in_study(tmp_path: Path) -> None:
    """The real resolve/train@ID-SEED wiring of dvc.yaml, training replaced by a copy of the spec."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    stages = {name: pipeline["stages"][name] for name in ("resolve", "train")}
    train = stages["train"]
    run = "${item.model}/seed${item.seed}"
    # a stand-in for training that writes every output the real stage declares (outs kept
    # as they are: one `cache: false` among them would turn DVC's run-cache off)
    train["cmd"] = ("python -c \"import shutil, os; [os.makedirs(d, exist_ok=True) for d in "
                    f"('data/models/{run}', 'reports/train/{run}/plots/metrics')]; "
                    f"shutil.copy('data/study/{run}.json', 'data/models/{run}/selected.pt'); "
                    f"shutil.copy('data/study/{run}.json', 'reports/train/{run}/metrics.json'); "
                    f"shutil.copy('data/study/{run}.json', 'reports/train/{run}/plots/metrics/x.tsv')\"")
    train["deps"] = [f"data/study/{run}.json"]
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    shutil.copy(ROOT / "params.yaml", tmp_path)
    for tree in ("stages", "src"):  # resolve's deps
        shutil.copytree(ROOT / tree, tmp_path / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    _dvc(["init", "-q"], tmp_path)
    _dvc(["config", "core.analytics", "false"], tmp_path)
    _dvc(["repro"], tmp_path)
    subprocess.run(["git", "add", "-A"], cwd=tmp_path, check=True)
    subprocess.run([*git, "commit", "-qm", "study"], cwd=tmp_path, check=True)


def _trained(log: str) -> set[str]:
    return set(re.findall(r"Running stage 'train@([^']+)'", log))


def _runs(models: set[str], seeds: list[int]) -> set[str]:
    return {f"{m}-{s}" for m in models for s in seeds}


@pytest.mark.slow
def test_dvc_retrains_exactly_the_runs_whose_objective_changed(tmp_path):
    _stand_in_study(tmp_path)
    seeds = PARAMS["train"]["seeds"]
    assert len(seeds) >= 2

    # every seed of the models whose objective uses the weight, and nothing else
    log = _dvc(["exp", "run", "-S", "loss.perceptual=20"], tmp_path)
    assert _trained(log) == _runs(USES_GLOBAL_PERCEPTUAL, seeds), log

    # back to the committed value: every run comes from the run-cache, none retrains
    log = _dvc(["exp", "run", "-S", "loss.perceptual=10"], tmp_path)
    assert not _trained(log), log
    assert set(re.findall(r"Stage 'train@([^']+)' is cached", log)) == _runs(USES_GLOBAL_PERCEPTUAL, seeds), log

    log = _dvc(["exp", "run", "-S", "models.A.terms=[l1,mse]"], tmp_path)
    assert _trained(log) == _runs({"A"}, seeds), log


@pytest.mark.slow
def test_dvc_trains_only_the_runs_of_a_new_seed(tmp_path):
    _stand_in_study(tmp_path)
    seeds = PARAMS["train"]["seeds"]
    new_seed = max(seeds) + 1
    log = _dvc(["exp", "run", "-S", f"train.seeds=[{','.join(map(str, [*seeds, new_seed]))}]"], tmp_path)
    assert _trained(log) == _runs(set(PARAMS["models"]), [new_seed]), log
    # back to the committed seeds: nothing trains, the other runs' specs never changed
    log = _dvc(["exp", "run", "-S", f"train.seeds=[{','.join(map(str, seeds))}]"], tmp_path)
    assert not _trained(log), log


def test_each_seed_is_its_own_run_and_adding_one_changes_no_other_spec():
    seeds = PARAMS["train"]["seeds"]
    specs = {s: resolve_model(PARAMS, "A", s) for s in seeds}
    assert [spec.seed for spec in specs.values()] == seeds
    assert len({spec.to_json() for spec in specs.values()}) == len(seeds)
    more = with_change("train.seeds", [*seeds, 99])
    assert all(resolve_model(more, "A", s).to_json() == specs[s].to_json() for s in seeds)


@pytest.mark.parametrize("seeds, named", [([], "at least one"), ([1, 1], "repeats"), ([-1], "0..")])
def test_bad_seed_lists_fail_naming_the_problem(seeds, named):
    with pytest.raises(ParamsError, match=re.escape(named)):
        validate_params(with_change("train.seeds", seeds))


def test_the_old_single_seed_key_names_its_replacement():
    params = copy.deepcopy(PARAMS)
    del params["train"]["seeds"]
    params["train"]["seed"] = 42
    with pytest.raises(ParamsError, match=re.escape("seeds: [42]")):
        validate_params(params)
