"""Stage train@ID: train one study model from its run spec.

    python stages/train.py RUN_SPEC_JSON SHARDS_DIR CHECKPOINT_DIR LOG_DIR RESUME_DIR

RESUME_DIR (not a DVC output) holds the per-epoch checkpoints while the run is in
progress, so a killed `dvc repro` resumes; CHECKPOINT_DIR gets selected.pt and last.pt
when training ends.
"""

import sys

from colorstudy.study import read_run_spec
from colorstudy.train import train_model

if len(sys.argv) != 6:
    sys.exit(__doc__.strip().splitlines()[2].strip())
spec_path, shards_dir, checkpoint_dir, log_dir, resume_dir = sys.argv[1:6]
summary = train_model(read_run_spec(spec_path), shards_dir, checkpoint_dir, log_dir, resume_dir)
print(f"scored checkpoint ({summary['select']}): epoch {summary['selected_epoch']} of {summary['epochs']}, val ab-L1 {summary['val_ab_l1']:.4f} "
      f"vs grayscale {summary['baseline_val_ab_l1']:.4f}")
