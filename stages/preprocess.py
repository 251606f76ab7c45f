"""Stage `preprocess`: decode, clean, split and store the raw photos as Lab shards.

Usage: python stages/preprocess.py RAW_DIR SHARDS_DIR METRICS_JSON   (data/raw data/shards reports/preprocess.json)

SHARDS_DIR gets the Arrow shards, manifest.parquet and rejects.csv (every dropped file
or crop with its reason); METRICS_JSON the counts. Throughput is machine-dependent, not
a metric: it is printed and written to logs/preprocess.json (not tracked).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from colorstudy.config import Params, ParamsError
from colorstudy.data.preprocess import preprocess

TIMING_LOG = Path("logs/preprocess.json")


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    raw_dir, shards_dir, metrics_path = (Path(a) for a in argv)
    try:
        params = Params.load().data
        metrics = preprocess(raw_dir, shards_dir, params)
    except (ParamsError, FileNotFoundError) as e:
        print(f"preprocess: {e}", file=sys.stderr)  # the message names the fix; a traceback would bury it
        return 1
    timing = metrics.pop("timing")
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    TIMING_LOG.parent.mkdir(parents=True, exist_ok=True)
    TIMING_LOG.write_text(json.dumps(timing, indent=2) + "\n")
    kept = metrics["kept"]
    print(f"{kept['total']} images (train {kept['train']}, val {kept['val']}, test {kept['test']}) -> {shards_dir}; "
          f"rejected {metrics['rejected']['total']}, grayscale {metrics['grayscale_excluded']}, "
          f"duplicates {metrics['duplicates_removed']} (see {shards_dir / 'rejects.csv'}); "
          f"{timing['images_per_s']} images/s on {timing['workers']} workers")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
