"""Stage train@ID: train one study model from its run spec.

    python stages/train.py RUN_SPEC_JSON SHARDS_DIR CHECKPOINT_DIR LOG_DIR
"""

import sys

from colorstudy.study import read_run_spec
from colorstudy.train import train_model

spec_path, shards_dir, checkpoint_dir, log_dir = sys.argv[1:5]
summary = train_model(read_run_spec(spec_path), shards_dir, checkpoint_dir, log_dir)
print(f"best epoch {summary['best_epoch']}: val ab-L1 {summary['val_ab_l1']:.4f} "
      f"vs grayscale {summary['baseline_val_ab_l1']:.4f}")
