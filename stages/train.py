"""Stage train@ID: train one study model from its run spec.

    python stages/train.py RUN_SPEC_JSON SHARDS_DIR CHECKPOINT_DIR LOG_DIR RESUME_DIR

RESUME_DIR (not a DVC output) holds the per-epoch checkpoints while the run is in
progress, so a killed `dvc repro` resumes; CHECKPOINT_DIR gets selected.pt and last.pt
when training ends. With train.nproc = N > 1 in the run spec the stage starts itself
again as N data-parallel processes (torchrun --standalone); under a torchrun of your own
(several machines) it joins that run instead.
"""

import os
import sys

from colorstudy.distributed import launched_world_size, torchrun_command
from colorstudy.study import read_run_spec
from colorstudy.train import train_model

if len(sys.argv) != 6:
    sys.exit(__doc__.strip().splitlines()[2].strip())
spec_path, shards_dir, checkpoint_dir, log_dir, resume_dir = sys.argv[1:6]
run = read_run_spec(spec_path)
nproc = run["train"].get("nproc", 1)
if nproc > 1 and launched_world_size() == 1:
    # exec, not a child: the pid DVC (or Ctrl-C) signals is torchrun's, which passes
    # SIGINT/SIGTERM on to the ranks; a child torchrun would outlive a killed parent
    command = torchrun_command(nproc, sys.argv)
    os.execv(command[0], command)
summary = train_model(run, shards_dir, checkpoint_dir, log_dir, resume_dir)
if summary:  # rank 0
    print(f"scored checkpoint ({summary['select']}): epoch {summary['selected_epoch']} of {summary['epochs']}, "
          f"val ab-L1 {summary['val_ab_l1']:.4f} vs grayscale {summary['baseline_val_ab_l1']:.4f}; "
          f"train split {summary['train_split']}")
