"""Stage `report`: the study report from every evaluation, the test split and the training logs.

Usage: python stages/report.py EVAL_DIR PRED_DIR SHARDS_DIR TRAIN_LOG_DIR OUT_DIR [PREPROCESS_JSON]
  e.g. python stages/report.py reports/eval data/eval data/shards reports/train reports

Writes OUT_DIR/report.md, report.html (self-contained), figures/*.png, ranking.json,
comparison.csv and comparison/<metric>.csv. PREPROCESS_JSON defaults to OUT_DIR/preprocess.json.
"""

from __future__ import annotations

import sys

from colorstudy.config import ParamsError, load_params
from colorstudy.report import ReportError, build_report


def main(argv: list[str]) -> int:
    if len(argv) not in (5, 6):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    eval_dir, pred_dir, shards_dir, train_dir, out_dir = argv[:5]
    try:
        files = build_report(eval_dir, pred_dir, shards_dir, train_dir, out_dir, load_params(),
                             preprocess_json=argv[5] if len(argv) == 6 else None)
    except (ParamsError, ReportError, FileNotFoundError) as e:
        print(f"report: {e}", file=sys.stderr)  # the message names what to rerun
        return 1
    ranking = files.ranking
    print(f"best model: {ranking['best']} (ranking: {', '.join(ranking['ranking']) or 'no models'}) -> "
          f"{files.markdown}, {files.html}, {len(files.figures)} figures")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
