"""Stage resolve@ID: write one study model's resolved objective (its run spec).

Usage: python stages/resolve.py MODEL_ID OUT_JSON
  e.g. python stages/resolve.py A data/study/A.json

train@ID depends on this file rather than on params, so a model retrains exactly
when its own objective changes (see colorstudy/study.py).
"""

from __future__ import annotations

import sys

from colorstudy.config import Params, ParamsError
from colorstudy.study import resolve_model


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    model_id, out_path = argv
    try:
        resolve_model(Params.load(), model_id).write(out_path)
    except ParamsError as e:
        print(f"resolve: {e}", file=sys.stderr)  # names the key and the fix
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
