"""Stage resolve: write each study model's resolved objective (its run spec).

Usage: python stages/resolve.py OUT_DIR [MODEL_ID ...]
  e.g. python stages/resolve.py data/study     (every model x every train.seeds: OUT_DIR/ID/seedS.json)

train@ID-S depends on its own OUT_DIR/ID/seedS.json rather than on params, so a run retrains
exactly when its own objective or seed changes (see colorstudy/study.py): a params change rewrites
every file, byte-identical for the models it does not touch. One stage for all models,
not one per model: the work is milliseconds, and each stage costs a process start
(torch's import) and DVC's per-stage bookkeeping, ~3 s a model.
"""

from __future__ import annotations

import sys
from pathlib import Path

from colorstudy.config import Params, ParamsError
from colorstudy.study import resolve_study, spec_path


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    out_dir, wanted = Path(argv[0]), argv[1:]
    try:
        params = Params.load()
        specs = resolve_study(params, wanted or None)
    except ParamsError as e:
        print(f"resolve: {e}", file=sys.stderr)  # names the key and the fix
        return 1
    for spec in specs:  # after every model resolved: a bad entry writes nothing
        spec.write(spec_path(out_dir, spec.model_id, spec.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
