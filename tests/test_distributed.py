"""Data-parallel training: two gloo processes on the CPU, as torchrun starts them."""

from __future__ import annotations

import filecmp
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from colorstudy.checkpoint import Checkpoint
from colorstudy.distributed import start, torchrun_command
from colorstudy.study import resolve_model

ROOT = Path(__file__).resolve().parents[1]
# Each rank normalizes with the BatchNorm statistics of its half of the batch and draws
# its own dropout masks, so the runs are not equal, only close: measured at most 0.4 %
# apart per epoch-mean loss over 3 epochs of model C at 32 px.
LOSS_RTOL = 0.02


def _stage(spec: Path, shards: Path, out: Path) -> list[str]:
    return [sys.executable, str(ROOT / "stages/train.py"), str(spec), str(shards), str(out / "models"),
            str(out / "logs"), str(out / "resume")]


def _specs(study_params: dict, tmp_path: Path) -> tuple[Path, Path]:
    study_params["train"].update(epochs=3, decay_epochs=1)
    paths = []
    for nproc in (1, 2):
        study_params["train"]["nproc"] = nproc
        paths.append(tmp_path / f"B-nproc{nproc}.json")
        resolve_model(study_params, "B").write(paths[-1])
    return paths[0], paths[1]


@pytest.mark.slow
def test_two_gloo_processes_train_like_one_and_resume(faces_shards, study_params, tmp_path):
    single_spec, ddp_spec = _specs(study_params, tmp_path)
    single = subprocess.run(_stage(single_spec, faces_shards, tmp_path / "single"), capture_output=True, text=True)
    assert single.returncode == 0, single.stderr[-3000:]
    ddp = subprocess.run(_stage(ddp_spec, faces_shards, tmp_path / "ddp"), capture_output=True, text=True)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    # rank 0 alone prints, logs and writes
    assert ddp.stdout.count("B-0 epoch 1/3: val") == 1 and ddp.stdout.count("scored checkpoint") == 1
    trained = Checkpoint.load(tmp_path / "ddp/models/last.pt")
    assert trained.run.train.nproc == 2 and trained.epoch == 3
    # ... a checkpoint any single process loads
    generator = trained.model()
    with torch.no_grad():
        assert generator(torch.zeros(1, 1, 32, 32)).shape == (1, 2, 32, 32)
    # the same global batch of 32, split 16 + 16: the losses track the one-process run
    reference = Checkpoint.load(tmp_path / "single/models/last.pt").history
    for epoch, (one, two) in enumerate(zip(reference, trained.history, strict=True)):
        for key in ("train/l1", "train/adversarial", "train/discriminator", "val/ab_l1"):
            assert two[key] == pytest.approx(one[key], rel=LOSS_RTOL), (epoch, key)
    assert (tmp_path / "ddp/logs/plots/metrics/val/ab_l1.tsv").read_text().count("\n") == 4  # header + 3 epochs

    # stop the run as DVC stops a stage (SIGTERM) after epoch 1 is saved, then start it again
    out = tmp_path / "killed"
    proc = subprocess.Popen(_stage(ddp_spec, faces_shards, out), stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        last = out / "resume" / "last.pt"
        if last.exists() and Checkpoint.load(last).epoch >= 1:
            proc.send_signal(signal.SIGTERM)  # torchrun itself (the stage execs it): it stops the ranks
            break
        time.sleep(0.05)
    proc.wait()
    assert proc.returncode != 0, "the run finished before it could be killed"
    assert Checkpoint.load(out / "resume" / "last.pt").epoch < 3
    resumed = subprocess.run(_stage(ddp_spec, faces_shards, out), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert resumed.stdout.count("resuming after epoch 1") == 1
    # gloo's sum of two ranks is exact to repeat: the resumed run is the uninterrupted one
    assert filecmp.cmp(tmp_path / "ddp/models/last.pt", out / "models/last.pt", shallow=False)


def test_the_process_count_must_match_the_run_spec(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(RuntimeError, match=r"2 process\(es\) were launched but the run spec says train.nproc=1"):
        start(1, "cpu")


def test_the_stage_relaunches_itself_under_torchrun():
    cmd = torchrun_command(4, ["stages/train.py", "spec.json"])
    assert cmd[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=4" in cmd and "--standalone" in cmd and cmd[-2:] == ["stages/train.py", "spec.json"]
