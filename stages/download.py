"""Stage `download`: put the photos of `data.dataset` into OUT and list them in OUT/sources.csv.

Usage: python stages/download.py OUT   (e.g. data/raw)
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from colorstudy.config import Params, ParamsError
from colorstudy.data.download import DownloadError
from colorstudy.data.sources import SourceError, materialize


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    try:
        params = Params.load().data
        rows = materialize(Path(argv[0]), params)
    except (ParamsError, DownloadError, SourceError) as e:
        print(f"download: {e}", file=sys.stderr)  # the message names the fix; a traceback would bury it
        return 1
    splits = Counter(r.split or "unassigned" for r in rows)
    print(f"{params.dataset}: {len(rows)} files, {len({r.group for r in rows})} source photos, "
          f"{sum(r.crops for r in rows)} crops -> {argv[0]} (splits: {dict(sorted(splits.items()))})")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
