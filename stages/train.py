"""Stage train@ID-SEED: train one study model with one seed, from its run spec.

Usage: python stages/train.py RUN_SPEC_JSON SHARDS_DIR CHECKPOINT_DIR LOG_DIR RESUME_DIR
  e.g. python stages/train.py data/study/A/seed0.json data/shards data/models/A/seed0 reports/train/A/seed0 \
         data/resume/A/seed0

RESUME_DIR (not a DVC output) holds the per-epoch checkpoints while the run is in
progress, so a killed `dvc repro` resumes; CHECKPOINT_DIR gets selected.pt and last.pt
when training ends. With train.nproc = N > 1 in the run spec the stage starts itself
again as N data-parallel processes (torchrun --standalone); under a torchrun of your own
(several machines) it joins that run instead.
"""

from __future__ import annotations

import os
import sys

from colorstudy.checkpoint import CheckpointError
from colorstudy.config import ParamsError
from colorstudy.distributed import launched_world_size, torchrun_command
from colorstudy.objective import NonFiniteLossError
from colorstudy.runtime import DeviceError
from colorstudy.study import RunSpec
from colorstudy.train import train_model
from colorstudy.weights import MissingWeightsError


def main(argv: list[str]) -> int:
    if len(argv) != 5:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    spec_path, shards_dir, checkpoint_dir, log_dir, resume_dir = argv
    try:
        run = RunSpec.read(spec_path)
        nproc = run.train.nproc
        if nproc > 1 and launched_world_size() == 1:
            # exec, not a child: the pid DVC (or Ctrl-C) signals is torchrun's, which passes
            # SIGINT/SIGTERM on to the ranks; a child torchrun would outlive a killed parent
            command = torchrun_command(nproc, [sys.argv[0], *argv])
            os.execv(command[0], command)
        summary = train_model(run, shards_dir, checkpoint_dir, log_dir, resume_dir)
    except (ParamsError, DeviceError, MissingWeightsError, NonFiniteLossError, CheckpointError,
            FileNotFoundError, ValueError) as e:
        print(f"train: {e}", file=sys.stderr)  # the message names the fix; a traceback would bury it
        return 1
    if summary:  # rank 0
        print(f"scored checkpoint ({summary['select']}): epoch {summary['selected_epoch']} of {summary['epochs']}, "
              f"val ab-L1 {summary['val_ab_l1']:.4f} vs grayscale {summary['baseline_val_ab_l1']:.4f}; "
              f"train split {summary['train_split']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
