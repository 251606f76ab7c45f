"""``colorstudy repro -j N`` under real DVC: stages side by side, a failing one, the same bytes as ``dvc repro``.

A toy pipeline (prep -> work@x, work@y, work@z -> join) makes the timing questions exact:
two stages that can only finish if they run at the same moment, one that fails while
another runs. The project's own pipeline on a few faces checks that parallelism changes
no byte, and that machines sharing a remote assemble a study without retraining.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from colorstudy.parallel import ReproError, Slot, make_slots
from test_dvc_pipeline import FACES, ROOT, commit, dvc, git, make_repo, ran

# Each work@ITEM stage: mark itself started, wait for its partner to start (a barrier:
# with one worker it can never pass), then write its output. Partner "-" = no barrier.
WORK = """\
import pathlib, sys, time
me, partner = sys.argv[1:3]
pathlib.Path(f"started-{me}").touch()
if pathlib.Path(f"fail-{me}").exists():
    sys.exit(f"work@{me}: told to fail")
deadline = time.time() + 60
while partner != "-" and not pathlib.Path(f"started-{partner}").exists():
    if time.time() > deadline:
        sys.exit(f"work@{me}: work@{partner} never started beside it")
    time.sleep(0.02)
time.sleep(float(pathlib.Path(f"sleep-{me}").read_text()) if pathlib.Path(f"sleep-{me}").exists() else 0)
pathlib.Path(f"{me}.txt").write_text(pathlib.Path("a.txt").read_text() + me)
"""

TOY = {"stages": {
    "prep": {"cmd": "python -c \"open('a.txt', 'w').write('a')\"", "outs": ["a.txt"]},
    "work": {"foreach": {"x": {"partner": "y"}, "y": {"partner": "x"}, "z": {"partner": "-"}},
             "do": {"cmd": "python work.py ${key} ${item.partner}", "deps": ["a.txt", "work.py"],
                    "outs": ["${key}.txt"]}},
    "join": {"cmd": "cat x.txt y.txt z.txt > all.txt", "deps": ["x.txt", "y.txt", "z.txt"], "outs": ["all.txt"]},
}}


def toy_repo(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "dvc.yaml").write_text(yaml.safe_dump(TOY, sort_keys=False))
    (root / "work.py").write_text(WORK)
    (root / ".gitignore").write_text("/started-*\n/fail-*\n/sleep-*\n/logs/\n")
    git(root, "init", "-q")
    dvc(root, "init", "-q")
    dvc(root, "config", "core.analytics", "false")
    commit(root, "toy")
    return root


def colorstudy_repro(cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "colorstudy", "repro", "--no-progress", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def timings(repo: Path) -> dict[str, dict]:
    doc = json.loads((repo / "logs" / "repro" / "timings.json").read_text())
    return {s["stage"]: s for s in doc["stages"]}


def test_two_workers_run_stages_side_by_side_and_finish_at_the_same_moment(tmp_path):
    repo = toy_repo(tmp_path / "toy")
    out = colorstudy_repro(repo, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert (repo / "all.txt").read_text() == "axayaz"
    took = timings(repo)
    assert {s: took[s]["result"] for s in took} == dict.fromkeys(["prep", "work@x", "work@y", "work@z", "join"],
                                                                  "ran")
    # the barrier let x and y end only together: both entries are in dvc.lock all the same
    assert took["work@x"]["start"] < took["work@y"]["end"] and took["work@y"]["start"] < took["work@x"]["end"]
    assert {took["work@x"]["slot"], took["work@y"]["slot"]} == {0, 1}
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == set(took)
    assert "up to date" in dvc(repo, "status")
    assert ran(dvc(repo, "repro")) == set()
    again = colorstudy_repro(repo, "-j", "2")
    assert again.returncode == 0 and "up to date" in again.stdout


def test_one_worker_cannot_pass_the_barrier(tmp_path):
    # the control: the barrier really needs two stages at once
    repo = toy_repo(tmp_path / "toy")
    (repo / "work.py").write_text(WORK.replace("time.time() + 60", "time.time() + 2"))
    commit(repo, "short barrier")
    out = colorstudy_repro(repo, "-j", "1")
    assert out.returncode == 1
    assert "never started beside it" in (repo / "logs" / "repro" / "work@x.log").read_text()


def test_a_failing_stage_stops_new_starts_and_keeps_what_finished(tmp_path):
    repo = toy_repo(tmp_path / "toy")
    (repo / "work.py").write_text(WORK.replace('partner != "-"', "False"))  # no barrier here
    commit(repo, "no barrier")
    (repo / "fail-y").touch()
    (repo / "sleep-x").write_text("3")  # x still runs when y fails
    out = colorstudy_repro(repo, "-j", "2")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "work@y" in out.stderr and "work@y.log" in out.stderr and "rerun" in out.stderr
    assert "told to fail" in (repo / "logs" / "repro" / "work@y.log").read_text()
    took = timings(repo)
    assert took["work@y"]["result"] == "failed" and took["work@x"]["result"] == "ran"
    assert took["work@x"]["end"] > took["work@y"]["end"]
    assert "work@z" not in took and "join" not in took  # nothing started after the failure
    # x finished beside the failure and is recorded; only what is left runs next time
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == {"prep", "work@x"}
    (repo / "fail-y").unlink()
    out = colorstudy_repro(repo, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    took = timings(repo)
    assert {s for s in took if took[s]["result"] == "ran"} == {"work@y", "work@z", "join"}
    assert "up to date" in dvc(repo, "status")


def test_dvc_lock_has_the_bytes_of_a_sequential_run_whatever_finishes_first(tmp_path):
    sequential, parallel = toy_repo(tmp_path / "seq"), tmp_path / "par"
    (sequential / "work.py").write_text(WORK.replace('partner != "-"', "False"))
    commit(sequential, "no barrier")
    shutil.copytree(sequential, parallel)
    (parallel / "sleep-x").write_text("2")  # in parallel, y and z finish before x; sequentially, after
    dvc(sequential, "repro")
    out = colorstudy_repro(parallel, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    took = timings(parallel)
    assert took["work@y"]["end"] < took["work@x"]["end"]
    assert (parallel / "dvc.lock").read_bytes() == (sequential / "dvc.lock").read_bytes()


def test_slots_share_the_cores_and_give_each_stage_its_own_gpu():
    assert make_slots(None, [], [0, 1]) == [Slot(0, frozenset({0})), Slot(1, frozenset({1}))]
    assert make_slots(2, [], range(8))[1].cores == frozenset({4, 5, 6, 7})
    slots = make_slots(None, [0, 1, 2, 3], range(16))
    assert [s.gpu for s in slots] == [0, 1, 2, 3] and all(len(s.cores) == 4 for s in slots)
    assert slots[2].environment()["CUDA_VISIBLE_DEVICES"] == "2"
    shared = make_slots(3, [], [0, 1])  # more jobs than cores: cores shared, none left without
    assert all(s.cores for s in shared) and frozenset().union(*(s.cores for s in shared)) == {0, 1}
    with pytest.raises(ReproError, match="GPU"):
        make_slots(3, [0, 1], range(4))


# -- the project's pipeline ----------------------------------------------------------

def two_model_study(root: Path) -> Path:
    """The whole dvc.yaml on 12 faces with models A and unet_mse, committed."""
    pipeline = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    repo = make_repo(root, tuple(pipeline["stages"]))
    params = yaml.safe_load((repo / "params.yaml").read_text())
    models = yaml.safe_load((ROOT / "params.yaml").read_text())["models"]
    params["models"] = {"A": models["A"], "unet_mse": models["unet_mse"]}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    commit(repo, "two models")
    return repo


def files(repo: Path) -> dict[str, bytes]:
    paths = [p for top in ("data", "reports") for p in (repo / top).rglob("*") if p.is_file()]
    return {p.relative_to(repo).as_posix(): p.read_bytes() for p in [*paths, repo / "dvc.lock"]}


@pytest.mark.slow
@pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} is missing (shared photo sets)")
def test_the_study_in_parallel_is_byte_identical_to_dvc_repro(tmp_path):
    sequential = two_model_study(tmp_path / "seq")
    parallel = tmp_path / "par"
    shutil.copytree(sequential, parallel)
    dvc(sequential, "repro")
    out = colorstudy_repro(parallel, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    took = timings(parallel)
    trainings = sorted((t["start"], t["end"]) for name, t in took.items() if name.startswith("train@"))
    assert len(trainings) == 4  # two models x two seeds
    assert any(b[0] < a[1] for a, b in zip(trainings, trainings[1:]))  # trainings overlapped
    expected, got = files(sequential), files(parallel)
    assert sorted(got) == sorted(expected)
    assert [p for p in expected if got[p] != expected[p]] == []
    assert "up to date" in dvc(parallel, "status")


@pytest.mark.slow
@pytest.mark.skipif(not FACES.is_dir(), reason=f"{FACES} is missing (shared photo sets)")
def test_machines_split_the_trainings_and_one_assembles_the_study_without_retraining(tmp_path):
    origin = two_model_study(tmp_path / "origin")
    remote = tmp_path / "remote"
    dvc(origin, "remote", "add", "-d", "shared", str(remote))
    commit(origin, "remote")
    machines = {}
    for name, model in (("m1", "A"), ("m2", "unet_mse")):  # each machine trains one model's two seeds
        clone = machines[name] = tmp_path / name
        subprocess.run(["git", "clone", "-q", str(origin), str(clone)], check=True)
        stages = [f"train@{model}-0", f"train@{model}-1"]
        assert set(stages) <= ran(dvc(clone, "repro", *stages))
        dvc(clone, "push", "--run-cache")
    # a third clone assembles the study: `--pull` fetches the run-cache entries AND the outputs
    # they name (`dvc pull --run-cache` fetches only the entries: DVC 3.67 then retrains)
    final = tmp_path / "final"
    subprocess.run(["git", "clone", "-q", str(origin), str(final)], check=True)
    log = dvc(final, "repro", "--pull")
    assert not {s for s in ran(log) if s.startswith("train@")}, log
    assert "Stage 'train@A-0' is cached" in log and "Stage 'train@unet_mse-1' is cached" in log
    for name, run in (("m1", "A/seed0"), ("m2", "unet_mse/seed1")):
        trained = (machines[name] / "data" / "models" / run / "selected.pt").read_bytes()
        assert (final / "data" / "models" / run / "selected.pt").read_bytes() == trained
    assert (final / "reports" / "report.md").is_file()
    assert "up to date" in dvc(final, "status")


def test_an_unknown_target_stops_before_anything_runs(tmp_path):
    repo = toy_repo(tmp_path / "toy")
    out = colorstudy_repro(repo, "-j", "2", "nosuchstage")
    assert out.returncode == 2 and out.stderr.startswith("colorstudy repro: error: ")
    assert "nosuchstage" in out.stderr
    assert not (repo / "a.txt").exists()


def _processes_in(folder: Path) -> list[int]:
    """PIDs whose working directory is ``folder`` (the stages' commands run there)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == folder:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.mark.skipif(not Path("/proc/self/cwd").exists(), reason="reads /proc")
def test_a_terminated_run_stops_its_stages_and_the_next_run_finishes(tmp_path):
    repo = toy_repo(tmp_path / "toy").resolve()
    (repo / "work.py").write_text(WORK.replace('partner != "-"', "False"))
    commit(repo, "no barrier")
    for item in "xy":
        (repo / f"sleep-{item}").write_text("60")
    proc = subprocess.Popen([sys.executable, "-m", "colorstudy", "repro", "--no-progress", "-j", "2"], cwd=repo,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not all((repo / f"started-{i}").exists() for i in "xy") and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=90) != 0  # SIGINT to the stages, escalating after 20 s each
    deadline = time.time() + 15
    while _processes_in(repo) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_in(repo) == []  # no stage left running behind the wrapper's back
    for item in "xy":
        (repo / f"sleep-{item}").unlink()
    out = colorstudy_repro(repo, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "up to date" in dvc(repo, "status")


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
                    reason="needs CPU affinity and 2 cores")
def test_each_stage_runs_on_its_slots_cores(tmp_path):
    repo = toy_repo(tmp_path / "toy")
    work = WORK.replace('pathlib.Path(f"started-{me}").touch()',
                        'import os; pathlib.Path(f"started-{me}").write_text(str(sorted(os.sched_getaffinity(0))))')
    (repo / "work.py").write_text(work)
    commit(repo, "record affinity")
    out = colorstudy_repro(repo, "-j", "2")
    assert out.returncode == 0, out.stdout + out.stderr
    took = timings(repo)
    cores = sorted(os.sched_getaffinity(0))
    for item in "xy":
        slot = make_slots(2, [], cores)[took[f"work@{item}"]["slot"]]
        assert (repo / f"started-{item}").read_text() == str(sorted(slot.cores))
