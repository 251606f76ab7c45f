"""What a stage pays at start-up to import its module, beyond ``import torch`` alone.

Each stage is a fresh process, so about 50 stage processes of a default run pay this
each. Fresh interpreters, ``import torch`` and each stage's library module alternated in
one run (so a busy machine slows both alike); the median of ``--repeats``.

    python benchmarks/import_cost.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

MODULES = ("torch", "colorstudy.data.preprocess", "colorstudy.study", "colorstudy.train", "colorstudy.evaluate",
           "colorstudy.report")
SNIPPET = "import time, sys; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"


def seconds(module: str) -> float:
    done = subprocess.run([sys.executable, "-c", SNIPPET.format(module=module)], capture_output=True, text=True,
                          check=True)
    return float(done.stdout)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    times: dict[str, list[float]] = {m: [] for m in MODULES}
    for _ in range(args.repeats):
        for module in MODULES:
            times[module].append(seconds(module))
    torch_s = statistics.median(times["torch"])
    result = {m: {"median_s": round(statistics.median(t), 3),
                  "beyond_torch_s": round(statistics.median(t) - torch_s, 3)} for m, t in times.items()}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
