"""The training loop on real photos: it learns, it is exact, it resumes, it fails loudly."""

from __future__ import annotations

import dataclasses
import filecmp
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

from colorstudy.checkpoint import Checkpoint, CheckpointError
from colorstudy.losses import L1Loss
from colorstudy.study import RunSpec, resolve_model
from colorstudy import objective as objective_module
from colorstudy.objective import NonFiniteLossError, build_objective
from colorstudy.runtime import machine_kind
from conftest import run_spec
from colorstudy.train import train_model, try_resume
from colorstudy.weights import MissingWeightsError

ROOT = Path(__file__).resolve().parents[1]


def _train(run: RunSpec, shards: Path, out: Path) -> dict:
    return train_model(run, shards, out / "models", out / "logs")


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return Checkpoint.load(path).generator


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key  # bitwise, not approximately


@pytest.mark.slow
def test_unet_beats_the_grayscale_baseline_on_real_faces(faces_shards, study_params, tmp_path):
    study_params["train"].update(epochs=12, decay_epochs=4, width=8, augment=False)
    summary = _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
    assert summary["beats_baseline"]
    assert summary["val_ab_l1"] < 0.9 * summary["baseline_val_ab_l1"]
    assert summary["val_ab_error"] < summary["baseline_val_ab_error"]
    trained = Checkpoint.load(tmp_path / "models" / "selected.pt")
    # the checkpoint describes itself
    assert trained.architecture == "unet" and trained.arch_kwargs == {"depth": 5, "width": 8}
    assert trained.run.terms == {"l1": 100.0} and trained.epoch == summary["selected_epoch"]
    assert trained.opt_g["state"] and trained.provenance == {"generator": {}}
    assert trained.trained_on == machine_kind(torch.device("cpu"))  # what a comparison of runs keys on
    assert (tmp_path / "logs" / "plots" / "metrics" / "val" / "ab_l1.tsv").exists()


@pytest.mark.slow
def test_gan_training_is_bitwise_deterministic_and_resumes_exactly(faces_shards, study_params, tmp_path):
    # generator, discriminator, perceptual VGG: every moving part; the spec as train@ID reads it
    spec = tmp_path / "run.json"
    resolve_model(study_params, "C").write(spec)
    run = RunSpec.read(spec)
    _train(run, faces_shards, tmp_path / "first")
    _train(run, faces_shards, tmp_path / "second")
    _assert_same_weights(tmp_path / "first/models/last.pt", tmp_path / "second/models/last.pt")
    assert filecmp.cmp(tmp_path / "first/models/last.pt", tmp_path / "second/models/last.pt", shallow=False)
    first, second = (Checkpoint.load(tmp_path / d / "models/last.pt") for d in ("first", "second"))
    for key in first.discriminator:
        assert torch.equal(first.discriminator[key], second.discriminator[key]), key

    # kill a real training process after its first epoch's checkpoint, then start it again
    out = tmp_path / "killed"
    cmd = [sys.executable, str(ROOT / "stages/train.py"), str(spec), str(faces_shards), str(out / "models"),
           str(out / "logs"), str(out / "resume")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        last = out / "resume" / "last.pt"
        if last.exists() and Checkpoint.load(last).epoch >= 1:
            proc.kill()
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert Checkpoint.load(out / "resume" / "last.pt").epoch < run.train.epochs
    assert not (out / "models").exists()  # the declared output appears only when training ends

    resumed = subprocess.run(cmd, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming after epoch" in resumed.stdout
    assert not (out / "resume").exists()
    # byte-identical files, not just equal weights: DVC hashes bytes (`cmp`, shallow=False)
    for name in ("last.pt", "selected.pt"):
        assert filecmp.cmp(tmp_path / "first/models" / name, out / "models" / name, shallow=False), name
    # the dvclive curves hold each epoch once, as an uninterrupted run's do
    curve = (out / "logs/plots/metrics/val/ab_l1.tsv").read_text()
    assert curve == (tmp_path / "first/logs/plots/metrics/val/ab_l1.tsv").read_text()


def test_a_changed_spec_does_not_resume_a_stale_checkpoint(faces_shards, study_params, tmp_path):
    study_params["train"].update(epochs=1, decay_epochs=0)
    _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
    study_params["loss"]["l1"] = 50.0
    study_params["train"]["epochs"] = 2
    _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
    assert Checkpoint.load(tmp_path / "models/last.pt").run.terms == {"l1": 50.0}


def test_a_nan_loss_stops_naming_model_step_range_and_term(faces_shards, study_params, tmp_path, monkeypatch):
    # checked every 4 steps (a host sync each): a NaN at step 5 stops the run at the check of steps 4-7
    monkeypatch.setattr(objective_module, "FINITE_CHECK_STEPS", 4)
    calls = []

    def l1_nan_at_step_5(self, L, pred, true):
        calls.append(None)
        value = (pred - true).abs().mean()
        return value * float("nan") if len(calls) == 6 else value

    monkeypatch.setattr(L1Loss, "forward", l1_nan_at_step_5)
    with pytest.raises(NonFiniteLossError, match=r"model E-0: non-finite loss at epoch 1, steps 4-7 "
                                                 r"\(checked every 4 steps\): l1=nan first at step 5"):
        _train(resolve_model(study_params, "E"), faces_shards, tmp_path)
    assert len(calls) == 8  # it ran on to the end of the checked window, no further
    assert not (tmp_path / "models" / "last.pt").exists()


def test_a_nan_in_the_last_steps_of_an_epoch_stops_before_its_checkpoint(faces_shards, study_params, tmp_path,
                                                                         monkeypatch):
    monkeypatch.setattr(objective_module, "FINITE_CHECK_STEPS", 1000)  # only the end-of-epoch check
    monkeypatch.setattr(L1Loss, "forward", lambda self, L, pred, true: (pred - true).abs().mean() * float("inf"))
    with pytest.raises(NonFiniteLossError, match=r"model A-0: non-finite loss at epoch 1, steps 0-\d+ .*l1=inf first "
                                                 r"at step 0"):
        _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
    assert not (tmp_path / "models" / "last.pt").exists()


def test_a_resume_leaves_adams_step_counters_on_the_cpu(faces_shards, study_params, tmp_path):
    # The meta device stands in for a GPU: the checkpoint is read onto the CPU, the weights'
    # moments go to their parameters' device, Adam's step counters stay on the CPU (on a GPU
    # each would cost the multi-tensor Adam a host sync per step).
    study_params["train"].update(epochs=1, decay_epochs=0)
    run = resolve_model(study_params, "B")  # the discriminator's optimizer too
    _train(run, faces_shards, tmp_path)
    saved = Checkpoint.load(tmp_path / "models" / "last.pt")
    objective = build_objective(run, torch.device("meta"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # copying weights into meta parameters is a no-op
        progress = try_resume(tmp_path / "models" / "last.pt", run, saved.data, saved.trained_on, objective)
    assert progress is not None and progress.epoch == 1
    for opt in objective.optimizers:
        assert opt.state
        for param, state in opt.state.items():
            assert state["step"].device.type == "cpu"
            assert state["exp_avg"].device == param.device and state["exp_avg_sq"].device == param.device


def test_missing_imagenet_weights_stop_before_training(faces_shards, study_params, tmp_path, offline_hub):
    study_params["perceptual"]["weights"] = "imagenet"
    with pytest.raises(MissingWeightsError, match=r"vgg16-397923af\.pth") as err:
        _train(resolve_model(study_params, "E"), faces_shards, tmp_path)
    assert "download.pytorch.org/models/vgg16-397923af.pth" in str(err.value)
    assert str(offline_hub.home) in str(err.value)
    assert not (tmp_path / "models").exists()


def test_identical_payloads_give_identical_checkpoint_files(tmp_path):
    def payload() -> Checkpoint:  # fresh objects each call, strings built at run time, as a training loop makes them
        names = [f"val/{name}" for name in ("ab_l1", "ab_error")]
        return Checkpoint(architecture="unet", arch_kwargs={"width": 4}, generator={"w": torch.arange(6.0).view(2, 3)},
                          epoch=3, run=run_spec("A"),
                          history=[{names[0]: 0.1, names[1]: 20.0}, {f"val/{'ab_l1'}": 0.09, f"val/{'ab_error'}": 19.0}])

    payload().save(tmp_path / "a" / "last.pt")
    payload().save(tmp_path / "b" / "selected.pt")  # another name, another folder: same bytes
    assert filecmp.cmp(tmp_path / "a" / "last.pt", tmp_path / "b" / "selected.pt", shallow=False)
    # what a resumed run saves: the history as the unpickler rebuilt it
    Checkpoint.load(tmp_path / "a" / "last.pt").save(tmp_path / "resumed.pt")
    assert filecmp.cmp(tmp_path / "a" / "last.pt", tmp_path / "resumed.pt", shallow=False)
    dataclasses.replace(payload(), epoch=4).save(tmp_path / "c.pt")
    assert not filecmp.cmp(tmp_path / "a" / "last.pt", tmp_path / "c.pt", shallow=False)
    assert list(tmp_path.rglob("*.tmp")) == []


def test_other_data_does_not_resume_a_stale_checkpoint(faces_shards, study_params, tmp_path, monkeypatch, capsys):
    from colorstudy.data.shards import LabShards

    study_params["train"].update(epochs=2, decay_epochs=0)
    run = resolve_model(study_params, "A")
    _train(dataclasses.replace(run, train=dataclasses.replace(run.train, epochs=1)), faces_shards,
           tmp_path)  # a run cut short
    assert Checkpoint.load(tmp_path / "models/last.pt").data["shards_sha256"] == LabShards(faces_shards).fingerprint()
    partial = dataclasses.replace(Checkpoint.load(tmp_path / "models/last.pt"), run=run)
    partial.save(tmp_path / "models/last.pt")  # now it is resumable for `run` ...
    monkeypatch.setattr(LabShards, "fingerprint", lambda self: "other photos")  # ... but not on other data
    capsys.readouterr()
    _train(run, faces_shards, tmp_path)
    assert "resuming" not in capsys.readouterr().out
    assert Checkpoint.load(tmp_path / "models/last.pt").data == {"shards_sha256": "other photos"}


def _chroma(ab_n: torch.Tensor) -> float:
    return float(ab_n.square().sum(dim=1).sqrt().mean() * 128)


def test_batchnorm_recalibration_matches_eval_mode_to_batch_statistics(faces_shards):
    """Stale running statistics shrink eval-mode outputs; recalibrated ones reproduce training's."""
    from colorstudy.data.shards import LabShards
    from colorstudy.models import build_generator
    from colorstudy.train import recalibrate_batchnorm

    L, _ = LabShards(faces_shards).split("train")
    L = L[:256]
    torch.manual_seed(0)
    model = build_generator("unet", width=8, depth=5)

    def batch_statistics_output() -> torch.Tensor:  # what a training step sees, dropout off as at inference
        model.eval()
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.train()
        with torch.no_grad():
            out = model(L)
        return out

    def eval_output() -> torch.Tensor:
        model.eval()
        with torch.no_grad():
            return model(L)

    init = {k: v.clone() for k, v in model.state_dict().items()}
    target = batch_statistics_output()
    model.load_state_dict(init)  # undo the running-average update that pass made
    stale = eval_output()
    recalibrate_batchnorm(model, [L], device=torch.device("cpu"))
    fresh = eval_output()
    stale_gap = (stale - target).abs().mean() / target.abs().mean()
    fresh_gap = (fresh - target).abs().mean() / target.abs().mean()
    assert stale_gap > 0.5  # the init's tiny activations against a running variance of 1
    assert fresh_gap < 0.01, fresh_gap
    assert abs(_chroma(fresh) - _chroma(target)) < 0.01 * _chroma(target)
    # the pass changes the statistics only: momentum and mode are as they were
    assert all(m.momentum == 0.1 for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d))


@pytest.mark.parametrize("select", ["last", "val_ab_l1"])
def test_train_select_picks_the_checkpoint(faces_shards, study_params, tmp_path, select):
    study_params["train"].update(epochs=3, decay_epochs=1, select=select)
    summary = _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
    chosen = Checkpoint.load(tmp_path / "models" / "selected.pt")
    history = [record["val/ab_l1"] for record in chosen.history]
    expected = 3 if select == "last" else 1 + history.index(min(history))
    assert summary["selected_epoch"] == chosen.epoch == chosen.selected["epoch"] == expected
    assert chosen.selected["criterion"] == select and summary["epochs"] == 3
    if select == "last":
        _assert_same_weights(tmp_path / "models" / "selected.pt", tmp_path / "models" / "last.pt")


def test_a_split_over_the_memory_budget_streams_and_trains_the_same_weights(faces_shards, study_params, tmp_path):
    """The fallback for splits larger than GPU memory, forced with a tiny budget on CPU."""
    study_params["train"].update(epochs=2, decay_epochs=1)
    run = resolve_model(study_params, "B")  # both optimizers, augmentation on
    resident = _train(run, faces_shards, tmp_path / "resident")
    streamed = train_model(run, faces_shards, tmp_path / "streamed/models", tmp_path / "streamed/logs",
                           memory_budget=1024)
    assert (resident["train_split"], streamed["train_split"]) == ("resident", "streamed")
    a, b = (Checkpoint.load(tmp_path / d / "models/last.pt") for d in ("resident", "streamed"))
    for part in ("generator", "discriminator"):
        for key in getattr(a, part):
            assert torch.equal(getattr(a, part)[key], getattr(b, part)[key]), (part, key)  # bitwise: the same batches
    for one, other in zip(a.history, b.history, strict=True):
        for key, value in one.items():
            # the streamed val baseline is summed per batch in float64, the resident one in one go
            assert other[key] == (pytest.approx(value, rel=1e-6) if "baseline" in key else value), key


def test_a_train_split_smaller_than_one_batch_is_refused(faces_shards, study_params, tmp_path):
    study_params["train"]["batch_size"] = 4096
    with pytest.raises(ValueError, match=r"at least train.batch_size=4096 images"):
        _train(resolve_model(study_params, "A"), faces_shards, tmp_path)


def test_a_run_begun_on_another_machine_kind_is_not_resumed(faces_shards, study_params, tmp_path, capsys):
    """A checkpoint's trained_on must stay true: a run is not continued on another kind of machine."""
    study_params["train"].update(epochs=2, decay_epochs=0)
    run = resolve_model(study_params, "A")
    _train(dataclasses.replace(run, train=dataclasses.replace(run.train, epochs=1)), faces_shards, tmp_path)
    elsewhere = dataclasses.replace(Checkpoint.load(tmp_path / "models/last.pt"), run=run, trained_on="another CPU")
    elsewhere.save(tmp_path / "models/last.pt")  # resumable for `run`, but begun elsewhere
    capsys.readouterr()
    _train(run, faces_shards, tmp_path)
    assert "resuming" not in capsys.readouterr().out
    assert Checkpoint.load(tmp_path / "models/last.pt").trained_on == machine_kind(torch.device("cpu"))


def test_an_unreadable_resume_point_names_the_file_to_delete(faces_shards, study_params, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models/last.pt").write_bytes(b"half a file")
    with pytest.raises(CheckpointError, match=r"delete .*last.pt to train A from the start"):
        _train(resolve_model(study_params, "A"), faces_shards, tmp_path)
