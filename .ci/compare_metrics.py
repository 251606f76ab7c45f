"""Fail unless the run just reproduced (work tree) matches the committed one (HEAD).

Training in float32 is deterministic on one machine but not across CPUs: another SIMD
width takes other rounding paths, so trained models' metrics move, at worst to another
training trajectory. The policy (src/colorstudy/compare.py, where each constant is justified):
* data outputs of download/preprocess in dvc.lock must be byte-identical (equal md5);
* deterministic metrics (preprocess counts, the grayscale baseline) must match to
  relative 1e-4 (the gray image's own near-zero colorfulness: absolute 1e-5);
* every trained model, on any machine kind: per test error metric, the mean over the
  rerun's seeds (reports/eval/ID/seedS/metrics.json) must stay within a two-sample t
  bound of the committed seeds' mean, from that model's own seed variance, Bonferroni
  over all models x metrics for a 1 % false-alarm rate of the whole comparison
  (src/colorstudy/seed_rule.py); the summary prints, per metric, the smallest seed-mean
  shift this detects with 80 % power. It needs >= 2 seeds on both sides: a model trained
  on another kind with one seed fails, saying CI needs >= 2 seeds;
* and a seed trained on the same kind of machine (checkpoint.trained_on) as its
  committed seed must keep each test metric within one committed 95%-CI half-width;
  trained on another kind, its values are shown and judged through the seed-mean;
* other trained-model values (fid, colorfulness, selected epoch, rank) are shown when they moved,
  never failing; a missing or new value, file, seed or model always fails, and so does a
  metric computed in one run only (FID with evaluate.fid_weights=none says "not computed").
Every git-tracked numbers file is compared (compare.COMPARED_FILES: the per-seed
evaluations, the baseline's, the summaries, ranking and preprocess counts), not only the
headline metrics that `dvc metrics diff` shows.
"""

import subprocess
import sys
from pathlib import Path

import yaml

from colorstudy.compare import compare_runs, is_compared, load_metrics


def git(*args: str) -> str:
    return subprocess.run(["git", *args], capture_output=True, text=True, check=True).stdout


def committed_texts() -> dict[str, str]:
    paths = [p for p in git("ls-tree", "-r", "--name-only", "HEAD", "--", "reports").splitlines() if is_compared(p)]
    return {p: git("show", f"HEAD:{p}") for p in paths}


def reproduced_texts() -> dict[str, str]:
    paths = [p.as_posix() for p in Path("reports").rglob("*.json")]
    return {p: Path(p).read_text() for p in paths if is_compared(p)}


def committed_lock() -> dict:
    # no dvc.lock at HEAD reads as empty: the comparison then fails naming the data stages
    shown = subprocess.run(["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True)
    return (yaml.safe_load(shown.stdout) or {}) if shown.returncode == 0 else {}


def main() -> int:
    with open("dvc.lock") as f:
        reproduced_lock = yaml.safe_load(f) or {}
    result = compare_runs(load_metrics(committed_texts()), load_metrics(reproduced_texts()),
                          committed_lock(), reproduced_lock)
    print(result.table() or "no metric changed")
    if result.failed:
        print("\n" + "\n".join(result.reasons()))
    print("\n" + result.summary())
    return 0 if result.passed else 1


if __name__ == "__main__":
    sys.exit(main())
