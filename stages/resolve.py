"""Stage resolve@ID: write one study model's resolved objective (its run spec).

    python stages/resolve.py MODEL_ID OUT_JSON

train@ID depends on this file rather than on params, so a model retrains exactly
when its own objective changes (see colorstudy/study.py).
"""

import sys

from colorstudy.config import load_params
from colorstudy.study import resolve_model, write_run_spec

model_id, out_path = sys.argv[1:3]
write_run_spec(resolve_model(load_params(), model_id), out_path)
