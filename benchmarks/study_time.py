"""Wall time of the default study from a fresh clone, and where it goes.

    python benchmarks/study_time.py [--repeats 3] [--jobs N] [--sequential] [--keep DIR]

Each repeat clones HEAD into a temporary folder (no data/, no DVC cache: every stage
runs, as in CI), runs ``colorstudy repro`` on the CPU (``--sequential``: plain
``dvc repro``), then a no-op ``colorstudy repro`` and a no-op ``dvc repro``, and prints:

* wall: the whole run;
* per stage kind (train, evaluate, other): stages, summed stage time (DVC's own work for
  the stage included), the longest;
* start-up: what every stage pays before its work, estimated as the stages run x (DVC's
  per-stage overhead, timed as ``dvc repro --single-item`` of an up-to-date stage, plus
  the stage module's import, timed as ``python -c "import ..."``);
* idle: slot-seconds no stage ran (slots x wall - summed stage time);
* no-op: the second ``colorstudy repro`` and ``dvc repro``.

Run it on a quiet machine: the study trains on every core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = {"train": "colorstudy.train", "evaluate": "colorstudy.evaluate", "other": "colorstudy.config"}


def run(cmd: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                         # the clone's own sources, not wherever the package was installed from
                         env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "DVC_NO_ANALYTICS": "1",
                              "PYTHONPATH": str(cwd / "src")})
    if out.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed in {cwd}:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    return time.perf_counter() - start


def kind(stage: str) -> str:
    return "train" if stage.startswith("train@") else "evaluate" if stage.startswith("evaluate") else "other"


def startup_seconds(clone: Path) -> dict[str, float]:
    """Per-stage fixed cost by kind: DVC's overhead for one stage plus the stage module's import."""
    dvc_overhead = min(run([sys.executable, "-m", "dvc", "repro", "--single-item", "report"], clone)
                       for _ in range(3))
    imports = {k: min(run([sys.executable, "-c", f"import {m}"], clone) for _ in range(3))
               for k, m in IMPORTS.items()}
    return {k: dvc_overhead + t for k, t in imports.items()}


def one_study(clone: Path, jobs: int | None, sequential: bool) -> dict:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], check=True)
    repro = [sys.executable, "-m", "colorstudy", "repro", "--no-progress", *(["-j", str(jobs)] if jobs else [])]
    wall = run([sys.executable, "-m", "dvc", "repro"] if sequential else repro, clone)
    noop = {"colorstudy repro": run(repro, clone), "dvc repro": run([sys.executable, "-m", "dvc", "repro"], clone)}
    result = {"wall": wall, "noop": noop, "startup_per_stage": startup_seconds(clone)}
    timings = clone / "logs" / "repro" / "timings.json"
    if not sequential and timings.is_file():
        doc = json.loads(timings.read_text())
        stages = [s for s in doc["stages"] if s["slot"] >= 0]
        result["slots"] = len(doc["slots"])
        result["stages"] = {s["stage"]: round(s["end"] - s["start"], 2) for s in stages}
    return result


def report(results: list[dict]) -> None:
    for i, r in enumerate(results, 1):
        print(f"run {i}: wall {r['wall'] / 60:.2f} min; no-op colorstudy repro {r['noop']['colorstudy repro']:.1f} s, "
              f"dvc repro {r['noop']['dvc repro']:.1f} s")
        if "stages" not in r:
            continue
        busy = sum(r["stages"].values())
        for k in ("train", "evaluate", "other"):
            times = [t for s, t in r["stages"].items() if kind(s) == k]
            startup = len(times) * r["startup_per_stage"][k]
            print(f"  {k:8s} {len(times):2d} stages, {sum(times):6.0f} s summed, longest {max(times, default=0):5.1f} s; "
                  f"start-up ~{startup:4.0f} s of it ({r['startup_per_stage'][k]:.1f} s a stage)")
        print(f"  idle     {r['slots'] * r['wall'] - busy:6.0f} slot-s of {r['slots']} x {r['wall']:.0f} s")
    walls = [r["wall"] / 60 for r in results]
    print(f"wall: {', '.join(f'{w:.2f}' for w in walls)} min (median {statistics.median(walls):.2f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--jobs", type=int, default=None, help="colorstudy repro -j (default: one per core)")
    parser.add_argument("--sequential", action="store_true", help="plain dvc repro instead")
    parser.add_argument("--keep", type=Path, default=None, help="keep the clones under this folder")
    args = parser.parse_args()
    base = args.keep or Path(tempfile.mkdtemp(prefix="study-time-"))
    results = []
    for i in range(args.repeats):
        clone = base / f"clone{i}"
        if clone.exists():
            shutil.rmtree(clone)
        results.append(one_study(clone, args.jobs, args.sequential))
        report(results[-1:])
        if args.keep is None:
            shutil.rmtree(clone)
    print(f"commit {subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], cwd=ROOT, capture_output=True, text=True).stdout.strip()}")
    report(results)


if __name__ == "__main__":
    main()
