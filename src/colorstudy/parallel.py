"""``colorstudy repro -j N``: ``dvc repro`` with independent stages N at a time, each on its own device.

Why this mechanism. DVC runs one stage at a time (treeverse/dvc#755), and its experiment
queue's ``-j`` is documented as experimental, with open race reports (#10562, #10673).
DVC does support several ``dvc repro`` processes in one workspace on independent stages:
it releases the repository lock while a stage's command runs (``dvc/stage/run.py``,
``unlocked_repo``), guards each stage's dependencies and outputs with read/write locks
(``.dvc/tmp/rwlock``), and ``dvc --wait-for-lock`` makes a process wait for the lock
instead of failing. So this module only schedules: it reads the pipeline graph from DVC
and starts ``dvc --wait-for-lock repro --single-item STAGE`` for each stage whose upstream
stages have finished, at most N at once. DVC still decides whether a stage runs, and it
alone writes ``dvc.lock``, the cache and the run-cache, so ``dvc status`` after this is
what it is after ``dvc repro``. A well-kept scheduler (Ray, Dask) would add a cluster
runtime for what is a 101-stage graph on one machine; across machines the run-cache does the
sharing (README "Scaling out").

Each slot owns a device: slot k gets GPU k (``CUDA_VISIBLE_DEVICES``) when there are GPUs,
and an equal share of the CPU cores (affinity) either way, so two stages never fight over
one core. Training and evaluation threads are fixed by params, so where a stage runs
changes no number (tested: byte-identical to a sequential ``dvc repro``).
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tqdm import tqdm

LOG_DIR = Path("logs") / "repro"  # one log per stage (DVC's own output and the command's), and timings.json
POLL_SECONDS = 0.2
STOP_GRACE_SECONDS = 20  # after an interrupt, before a stage that is still running is terminated


class ReproError(Exception):
    """The run could not start (a wrong -j, no pipeline); the message says what to change."""


class StageFailed(ReproError):
    """A stage failed; the message names it and its log. Stages that finished are recorded."""


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where one stage runs: CPU cores (affinity) and, when there are GPUs, one GPU."""

    index: int
    cores: frozenset[int]
    gpu: int | None = None

    def environment(self) -> dict[str, str]:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        if self.gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = str(self.gpu)
        return env

    def describe(self) -> str:
        cores = ",".join(map(str, sorted(self.cores)))
        return f"GPU {self.gpu}, cores {cores}" if self.gpu is not None else f"cores {cores}"


@dataclasses.dataclass
class Outcome:
    """One stage's run, as ``logs/repro/timings.json`` records it."""

    stage: str
    slot: int
    start: float
    end: float
    result: str  # ran | cached (restored from the run-cache) | unchanged | failed
    log: str


def visible_gpus() -> list[int]:
    """Indices of the GPUs this process may use (none on a CPU machine or with CUDA_VISIBLE_DEVICES="")."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return []
    import torch  # only when there is work: the no-op repro stays fast

    return list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []


def make_slots(jobs: int | None, gpus: Sequence[int], cores: Sequence[int]) -> list[Slot]:
    """``jobs`` slots (default: one per GPU, else one per core), the cores shared out evenly."""
    cores = sorted(cores)
    n = jobs or len(gpus) or len(cores)
    if n < 1:
        raise ReproError(f"-j must be >= 1, got {n}")
    if gpus and n > len(gpus):
        raise ReproError(f"-j {n} with {len(gpus)} GPU(s): each stage gets a GPU of its own; use -j {len(gpus)} "
                         f'or run on the CPU (CUDA_VISIBLE_DEVICES="")')
    share = [cores[k * len(cores) // n:(k + 1) * len(cores) // n] or [cores[k % len(cores)]] for k in range(n)]
    return [Slot(k, frozenset(share[k]), gpus[k] if gpus else None) for k in range(n)]


@dataclasses.dataclass
class Plan:
    """The stages to consider, upstream first, and what each waits for."""

    order: list[str]
    upstream: dict[str, set[str]]
    changed: set[str]  # what `dvc status` reports changed before anything runs
    lock_order: list[str]  # stage entries of dvc.lock as the run found them (read only when work is due)

    def needs_dvc(self, stage: str, rewritten: set[str]) -> bool:
        # A stage neither changed now nor downstream of one whose outputs were rewritten (run,
        # or restored from the run-cache) is up to date: skip its `dvc repro` (~1.5 s of DVC
        # start-up each); otherwise DVC decides.
        return stage in self.changed or bool(self.upstream[stage] & rewritten)


def make_plan(root: Path, targets: Sequence[str]) -> Plan:
    """What ``dvc repro TARGETS`` would consider, from DVC's own graph and status."""
    from dvc.repo import Repo, lock_repo
    from dvc.repo.reproduce import plan_repro

    with Repo(str(root)) as repo, lock_repo(repo):  # one lock: the index is built once, not per call
        graph = repo.index.graph
        # the whole pipeline: the index's stages (collecting dvc.yaml again costs a second parse)
        stages = [s for target in targets for s in repo.stage.collect(target)] if targets else list(graph)
        steps = plan_repro(graph, stages)
        names = {stage: stage.addressing for stage in steps}
        upstream = {names[s]: {names[u] for u in graph.successors(s) if u in names} for s in steps}
        changed = set(repo.status(targets=list(targets) or None, with_deps=True))
    return Plan([names[s] for s in steps], upstream, {c.split(":")[-1] for c in changed}, [])


def lock_entries(root: Path) -> list[str]:
    """The stage entries of ``dvc.lock``, in its order."""
    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return []
    import yaml

    return list((yaml.load(lock_path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
                 or {}).get("stages", {}))


def _result(log: str, returncode: int) -> str:
    if returncode != 0:
        return "failed"
    if re.search(r"Stage '[^']+' is cached - skipping run", log):
        return "cached"
    return "ran" if re.search(r"Running stage '", log) else "unchanged"


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class Runner:
    """Starts each stage's ``dvc repro`` in a free slot once its upstream stages are done."""

    def __init__(self, root: Path, plan: Plan, slots: list[Slot], dvc_args: Sequence[str] = ()) -> None:
        self.root, self.plan, self.dvc_args = root, plan, list(dvc_args)
        self.free = list(slots)
        self.running: dict[str, tuple[subprocess.Popen, Slot, float, Path]] = {}
        self.done: dict[str, Outcome] = {}
        (root / LOG_DIR).mkdir(parents=True, exist_ok=True)

    def _start(self, stage: str, slot: Slot) -> None:
        log = self.root / LOG_DIR / f"{stage}.log"
        cmd = [sys.executable, "-m", "dvc", "--wait-for-lock", "repro", "--single-item", *self.dvc_args, stage]
        # pinned in the child before DVC starts: the stage's command inherits the affinity
        pin = (lambda: os.sched_setaffinity(0, slot.cores)) if hasattr(os, "sched_setaffinity") else None
        with open(log, "w") as out:
            proc = subprocess.Popen(cmd, cwd=self.root, stdout=out, stderr=subprocess.STDOUT,
                                    env=slot.environment(), start_new_session=True, preexec_fn=pin)
        self.running[stage] = (proc, slot, time.time(), log)

    def _reap(self) -> list[Outcome]:
        ended = []
        for stage, (proc, slot, start, log) in list(self.running.items()):
            if proc.poll() is None:
                continue
            del self.running[stage]
            self.free.append(slot)
            outcome = Outcome(stage, slot.index, start, time.time(),
                              _result(log.read_text(errors="replace"), proc.returncode),
                              log.relative_to(self.root).as_posix())
            self.done[stage] = outcome
            ended.append(outcome)
        self.free.sort(key=lambda s: s.index)
        return ended

    def _ready(self, failed: bool) -> list[str]:
        if failed:  # stop starting; what runs finishes and is recorded
            return []
        waiting = [s for s in self.plan.order if s not in self.done and s not in self.running]
        return [s for s in waiting if all(u in self.done for u in self.plan.upstream[s])]

    def run(self, progress: bool = True) -> list[Outcome]:
        bar = tqdm(total=len(self.plan.order), desc="repro", unit="stage", disable=not progress)
        failed = False
        # The stages run in sessions of their own (a terminal's Ctrl-C reaches only this
        # process); a SIGTERM (kill, a batch scheduler's time limit) must stop them too.
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            while True:
                for stage in self._ready(failed):
                    rewritten = {s for s, o in self.done.items() if o.result in ("ran", "cached")}
                    if not self.plan.needs_dvc(stage, rewritten):
                        self.done[stage] = Outcome(stage, -1, time.time(), time.time(), "unchanged", "")
                        bar.update()
                        continue
                    if not self.free:
                        break
                    self._start(stage, self.free.pop(0))
                for outcome in self._reap():
                    failed |= outcome.result == "failed"
                    bar.update()
                    bar.write(f"{outcome.stage}: {outcome.result} in {outcome.end - outcome.start:.1f} s "
                              f"(slot {outcome.slot})")
                if not self.running and not self._ready(failed):
                    return list(self.done.values())
                bar.set_postfix_str(", ".join(sorted(self.running)), refresh=False)
                time.sleep(POLL_SECONDS)
        finally:
            signal.signal(signal.SIGTERM, previous)
            bar.close()
            self._stop_all()

    def _stop_all(self) -> None:
        # Only on an interrupt. SIGINT first: DVC's own handling removes a half-written output
        # cleanly. A stage still running after STOP_GRACE_SECONDS gets SIGTERM, then SIGKILL:
        # none may outlive the wrapper.
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
            alive = [proc for proc, *_ in self.running.values() if proc.poll() is None]
            for proc in alive:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.time() + STOP_GRACE_SECONDS
            while any(proc.poll() is None for proc in alive) and time.time() < deadline:
                time.sleep(POLL_SECONDS)


def keep_sequential_lock_order(root: Path, plan: Plan) -> None:
    """Order new ``dvc.lock`` entries as a sequential ``dvc repro`` writes them (run order).

    Parallel stages finish in any order, and DVC appends a new stage's entry when it
    finishes; this puts entries the run added in plan order, after the ones it found,
    so the file's bytes do not depend on which worker finished first.
    """
    from dvc.utils.serialize import modify_yaml

    lock_path = root / "dvc.lock"
    if not lock_path.is_file():
        return
    with modify_yaml(str(lock_path)) as data:
        stages = data.get("stages", {})
        first = [s for s in plan.lock_order if s in stages]
        added = [s for s in plan.order if s in stages and s not in first]
        rest = [s for s in stages if s not in first and s not in added]
        order = first + added + rest
        if list(stages) != order:
            data["stages"] = {s: stages[s] for s in order}


def write_timings(root: Path, outcomes: list[Outcome], slots: list[Slot], wall: float) -> Path:
    path = root / LOG_DIR / "timings.json"
    doc: dict[str, Any] = {"wall_seconds": round(wall, 2), "slots": [s.describe() for s in slots],
                           "stages": [dataclasses.asdict(o) for o in sorted(outcomes, key=lambda o: o.start)]}
    path.write_text(json.dumps(doc, indent=1) + "\n")
    return path


def repro(root: Path, targets: Sequence[str] = (), jobs: int | None = None, dvc_args: Sequence[str] = (),
          progress: bool = True) -> list[Outcome]:
    """Reproduce ``targets`` (default: the whole pipeline) with ``jobs`` stages at a time."""
    began = time.time()
    plan = make_plan(root, targets)
    if not plan.changed:
        print("Data and pipelines are up to date.")
        return []
    plan.lock_order = lock_entries(root)
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    slots = make_slots(jobs, visible_gpus(), cores)
    print(f"{len(slots)} at a time: " + "; ".join(s.describe() for s in slots), file=sys.stderr)
    runner = Runner(root, plan, slots, dvc_args)
    outcomes = runner.run(progress=progress)
    keep_sequential_lock_order(root, plan)
    write_timings(root, outcomes, slots, time.time() - began)
    failed = [o for o in outcomes if o.result == "failed"]
    if failed:
        names = ", ".join(f"{o.stage} (log: {o.log})" for o in failed)
        raise StageFailed(f"failed: {names}. Stages that finished are recorded in dvc.lock; fix the cause and "
                         f"rerun: only what is left runs.")
    return outcomes


__all__ = ["Outcome", "Plan", "ReproError", "Slot", "keep_sequential_lock_order", "make_plan", "make_slots",
           "StageFailed", "repro", "visible_gpus"]
