"""Train and evaluate study runs (model x seed) in one process, as train@ID-SEED and
evaluate@ID-SEED would, for the rerun tests (one process: torch's import is paid once).

Usage:
  python tests/seed_reruns.py train PARAMS_JSON SHARDS OUT MODEL...
      -> OUT/reports/eval/MODEL/seedS/metrics.json, OUT/models/MODEL/seedS/selected.pt
  python tests/seed_reruns.py evaluate PARAMS_JSON SHARDS CHECKPOINT REPORT_DIR

The machine kind is the process's: run it under ``ATEN_CPU_CAPABILITY=default`` for a
rerun on "another kind" (torch's scalar kernels) on this machine.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

from colorstudy.config import EvaluateParams, parse
from colorstudy.evaluate import evaluate, write_outputs
from colorstudy.runtime import make_reproducible
from colorstudy.study import resolve_model
from colorstudy.train import train_model


def evaluate_one(params: dict, shards: str, checkpoint: Path, report_dir: Path) -> None:
    settings = parse(EvaluateParams, params["evaluate"], "evaluate")
    make_reproducible(torch.device("cpu"), settings.num_threads, purpose="evaluate")  # as stages/evaluate.py
    write_outputs(evaluate(checkpoint, shards, settings), report_dir, checkpoint.with_suffix(".npz"))


def train(params: dict, shards: str, out: Path, models: list[str]) -> None:
    for model in models:
        for seed in params["train"]["seeds"]:
            run, where = resolve_model(params, model, seed), Path(model) / f"seed{seed}"
            train_model(run, shards, out / "models" / where, out / "logs" / where, out / "resume" / where)
            evaluate_one(params, shards, out / "models" / where / "selected.pt", out / "reports" / "eval" / where)


def main(argv: list[str]) -> int:
    if len(argv) >= 5 and argv[0] == "train":
        train(json.loads(Path(argv[1]).read_text()), argv[2], Path(argv[3]), argv[4:])
    elif len(argv) == 5 and argv[0] == "evaluate":
        evaluate_one(json.loads(Path(argv[1]).read_text()), argv[2], Path(argv[3]), Path(argv[4]))
    else:
        print("Usage: python tests/seed_reruns.py (train PARAMS_JSON SHARDS OUT MODEL... | evaluate PARAMS_JSON SHARDS "
              "CHECKPOINT REPORT_DIR)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
