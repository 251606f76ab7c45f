"""Fail unless the metrics just reproduced match the committed ones.

`dvc metrics diff --json` compares the workspace (this run) with HEAD (committed).
Training and evaluation are bitwise deterministic on CPU (fixed threads, seeded,
deterministic kernels), so every metric must match exactly; the tolerance only
absorbs the 6-significant-digit rounding of the JSON files. Wall-clock fields are
the one thing a rerun may change, and are skipped by name.
"""

import json
import math
import subprocess
import sys

TIMING_KEYS = ("seconds", "images_per_s", "files_per_s")
REL_TOL = 1e-5

out = subprocess.run(["dvc", "metrics", "diff", "--json", "--all"], capture_output=True, text=True, check=True)
diff = json.loads(out.stdout or "{}")
bad, checked = [], 0
for path, metrics in sorted(diff.items()):
    for name, change in sorted(metrics.items()):
        if name.split(".")[-1] in TIMING_KEYS:
            continue
        old, new = change.get("old"), change.get("new")
        checked += 1
        if old is None or new is None:
            bad.append(f"{path}: {name} is {'missing now' if new is None else 'new'} (committed {old}, now {new})")
        elif isinstance(old, (int, float)) and isinstance(new, (int, float)):
            if not math.isclose(old, new, rel_tol=REL_TOL, abs_tol=1e-9):
                bad.append(f"{path}: {name} committed {old}, reproduced {new}")
        elif old != new:
            bad.append(f"{path}: {name} committed {old!r}, reproduced {new!r}")
if checked == 0:
    sys.exit("no metrics to compare: were reports/ committed and did `dvc repro` run?")
if bad:
    print("\n".join(bad))
    sys.exit(f"{len(bad)} of {checked} metrics differ from the committed run")
print(f"all {checked} metrics match the committed run (relative tolerance {REL_TOL})")
