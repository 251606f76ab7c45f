"""The real dvc.yaml under real DVC, on a few real photos: what reruns, what is cached, what travels.

Each test builds a small git + DVC repository from the project's own dvc.yaml (a subset
of its stages), stage scripts and sources, with params shrunk to a handful of 32 px
faces and one tiny model, and drives it with the `dvc` commands a user types.
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from colorstudy.checkpoint import Checkpoint
from colorstudy.config import load_params

ROOT = Path(__file__).resolve().parents[1]
FACES = ROOT.parent / "shared" / "datasets" / "faces"
GIT = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} is missing (shared photo sets)")]


def dvc(cwd: Path, *args: str, check: bool = True) -> str:
    out = subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "DVC_NO_ANALYTICS": "1"})
    if check:
        assert out.returncode == 0, f"dvc {' '.join(args)}:\n{out.stdout}{out.stderr}"
    return out.stdout + out.stderr


def git(cwd: Path, *args: str) -> None:
    subprocess.run([*GIT, *args], cwd=cwd, check=True, capture_output=True)


def ran(log: str) -> set[str]:
    return set(re.findall(r"Running stage '([^']+)'", log))


def faces(n: int) -> list[Path]:
    return sorted(p for p in FACES.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:n]


def make_repo(root: Path, stages: tuple[str, ...], n_photos: int = 12) -> Path:
    """A git + DVC repo at ``root`` running ``stages`` of dvc.yaml on ``n_photos`` faces in photos/."""
    root.mkdir(parents=True)
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {s: pipeline["stages"][s] for s in stages}},
                                                  sort_keys=False))
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"].update(dataset="folder", path="photos", image_size=32, val_fraction=0.25, test_fraction=0.25)
    # two seeds: the fewest the report's seed-aware statistics take, and half the trainings of three
    params["train"].update(epochs=1, decay_epochs=0, batch_size=4, width=4, device="cpu", seeds=[0, 1])
    params["models"] = {"A": params["models"]["A"]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for tree in ("stages", "src"):
        shutil.copytree(ROOT / tree, root / tree, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(ROOT / ".dvcignore", root / ".dvcignore")
    (root / ".gitignore").write_text("/data/\n/logs/\n")
    (root / "photos").mkdir()
    for photo in faces(n_photos):
        shutil.copy(photo, root / "photos" / photo.name)
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    commit(root, "setup")  # dvclive (training) wants a commit to log against
    return root


def commit(root: Path, message: str) -> None:
    git(root, "add", "-A")
    git(root, "commit", "-qm", message)


def test_a_folder_dataset_reruns_download_exactly_when_its_photos_change(tmp_path):
    repo = make_repo(tmp_path / "repo", ("download", "preprocess"))
    assert ran(dvc(repo, "repro")) == {"download", "preprocess"}
    commit(repo, "run")

    # a second repro: nothing reruns, and the counts (no timings in them) keep their bytes
    counts = (repo / "reports" / "preprocess.json").read_bytes()
    assert ran(dvc(repo, "repro")) == set()
    assert dvc(repo, "metrics", "diff").strip() == ""
    assert (repo / "reports" / "preprocess.json").read_bytes() == counts
    assert (repo / "logs" / "preprocess.json").is_file()  # the timings, outside the metrics

    photos = sorted((repo / "photos").iterdir())
    os.utime(photos[0], (time.time() + 60, time.time() + 60))  # touched, same bytes: nothing to do
    assert ran(dvc(repo, "repro")) == set()

    shutil.copy(faces(13)[-1], repo / "photos" / "added.jpg")
    assert ran(dvc(repo, "repro")) == {"download", "preprocess"}
    assert ran(dvc(repo, "repro")) == set()

    shutil.copy(photos[2], photos[1])  # one photo's content changed
    assert ran(dvc(repo, "repro")) == {"download", "preprocess"}

    photos[3].unlink()
    log = dvc(repo, "repro")
    assert ran(log) == {"download", "preprocess"}
    kept = load_params(repo / "reports" / "preprocess.json")  # (yaml reads the JSON)
    assert kept["sources"] == 12 and "seconds" not in kept


def test_queued_experiments_run_side_by_side_and_results_travel_through_a_remote(tmp_path):
    repo = make_repo(tmp_path / "repo", ("download", "preprocess", "resolve", "train"))
    remote = tmp_path / "remote"
    dvc(repo, "remote", "add", "-d", "shared", str(remote))
    dvc(repo, "repro")
    commit(repo, "run")

    # two queued experiments, two workers
    dvc(repo, "exp", "run", "--queue", "-S", "train.seeds=[1,2]", "--name", "seed1")
    dvc(repo, "exp", "run", "--queue", "-S", "train.seeds=[2,3]", "--name", "seed2")
    dvc(repo, "queue", "start", "-j", "2")
    deadline = time.time() + 300
    while time.time() < deadline:
        status = dvc(repo, "queue", "status")
        if not re.search(r"\b(Queued|Running)\b", status):
            break
        time.sleep(2)
    assert status.count("Success") == 2, status + dvc(repo, "queue", "logs", "seed1", check=False)
    shown = dvc(repo, "exp", "show", "--csv")
    assert "seed1" in shown and "seed2" in shown

    # push the committed run, pull it into a fresh clone: clean status, nothing reruns, the model works
    dvc(repo, "push", "--run-cache")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(repo), str(clone)], check=True)
    dvc(clone, "pull", "--run-cache")
    assert "up to date" in dvc(clone, "status")
    assert ran(dvc(clone, "repro")) == set()
    out = subprocess.run([sys.executable, "-m", "colorstudy", "colorize", str(sorted((clone / "photos").iterdir())[0]),
                          "-o", str(tmp_path / "colorized"), "--model", "A", "--no-progress"],
                         cwd=clone, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    assert len(list((tmp_path / "colorized").iterdir())) == 1


def _interrupt_when(proc: subprocess.Popen, ready, timeout: float = 300) -> None:
    """Ctrl-C the whole `dvc exp run` (its process group, as a terminal does) once ``ready()``."""
    deadline = time.time() + timeout
    while not ready() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    os.killpg(proc.pid, signal.SIGINT)
    assert proc.wait(timeout=120) != 0


def test_an_interrupted_exp_run_resumes_unfinished_runs_and_keeps_finished_ones(tmp_path):
    """The resume story: Ctrl-C during `dvc exp run` while seed 1 trains, after seed 0 finished.
    The same `dvc exp run` again continues seed 1 from its last finished epoch (its resume
    point is outside DVC's outputs) and restores seed 0 from the run-cache, even from a
    workspace that lost seed 0's output and lock entry."""
    repo = make_repo(tmp_path / "repo", ("download", "preprocess", "resolve", "train"))
    params = load_params(repo / "params.yaml")
    # an epoch of these 6 photos takes tens of ms: 30 leave the interrupt seconds to land
    # after the first resume point appears
    params["train"].update(epochs=30, decay_epochs=1)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    dvc(repo, "repro", "preprocess", "resolve")
    commit(repo, "30 epochs, data prepared")
    resume_point = repo / "data" / "resume" / "A" / "seed1" / "last.pt"
    # SIGINT back to its default: a shell without job control starts background jobs with
    # it ignored (and their children inherit that), where a terminal's Ctrl-C would not be
    proc = subprocess.Popen([sys.executable, "-m", "dvc", "exp", "run"], cwd=repo, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    _interrupt_when(proc, resume_point.is_file)
    first = proc.stdout.read()
    assert ran(first) >= {"train@A-0", "train@A-1"}, first
    assert (repo / "data" / "models" / "A" / "seed0" / "selected.pt").is_file()
    assert not (repo / "data" / "models" / "A" / "seed1").exists()
    saved_epoch = Checkpoint.load(resume_point).epoch
    assert 1 <= saved_epoch < params["train"]["epochs"]

    # the workspace as a reset leaves it: the finished run's output and lock entry gone
    shutil.rmtree(repo / "data" / "models" / "A" / "seed0")
    git(repo, "checkout", "--", "dvc.lock")
    log = dvc(repo, "exp", "run")
    assert "Stage 'train@A-0' is cached - skipping run" in log, log
    assert f"A-1: resuming after epoch {saved_epoch} from" in log, log
    assert ran(log) == {"train@A-1"}, log
    assert not resume_point.parent.exists()  # a finished run leaves no resume point behind
    assert "up to date" in dvc(repo, "status")
