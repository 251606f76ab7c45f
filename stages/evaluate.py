"""Stage evaluate@ID-SEED / evaluate_baseline: score one run (or the grayscale baseline) on the test split.

Usage: python stages/evaluate.py (CHECKPOINT | baseline) SHARDS_DIR OUT_REPORT_DIR OUT_PRED_FILE [--fid-reference NPZ]
  e.g. python stages/evaluate.py data/models/A/seed0/selected.pt data/shards reports/eval/A/seed0 data/eval/A/seed0.npz \\
         --fid-reference data/eval/baseline.npz

OUT_REPORT_DIR gets metrics.json (mean + bootstrap 95% CI of every metric, FID, backbone
provenance) and per_image.parquet; OUT_PRED_FILE the colorized test images (uint8 npz; the
baseline's also holds the ground truth's FID features, which --fid-reference reuses).
With evaluate.fid_weights=none no FID is computed: metrics.json has no `fid`, its
provenance says so, and --fid-reference (still on the command line) must exist but is not read.
"""

from __future__ import annotations

import argparse
import sys


from colorstudy.checkpoint import CheckpointError
from colorstudy.config import Params, ParamsError
from colorstudy.evaluate import evaluate, write_outputs
from colorstudy.runtime import DeviceError, make_reproducible, resolve_device
from colorstudy.weights import MissingWeightsError


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="stages/evaluate.py", add_help=False, exit_on_error=False)
    for name in ("model", "shards_dir", "report_dir", "pred_file"):
        parser.add_argument(name)
    parser.add_argument("--fid-reference", default=None)
    try:
        args, extra = parser.parse_known_args(argv) if len(argv) >= 4 else (None, argv)
    except argparse.ArgumentError:  # e.g. --fid-reference without its file
        args, extra = None, argv
    if args is None or extra:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    try:
        params = Params.load().evaluate
        # deterministic kernels, no TF32 on a GPU: the same bytes for the same inputs
        make_reproducible(resolve_device(params.device), params.num_threads, purpose="evaluate")
        result = evaluate(args.model, args.shards_dir, params, fid_reference=args.fid_reference, progress=True)
    except (ParamsError, DeviceError, CheckpointError, MissingWeightsError, FileNotFoundError, ValueError) as e:
        print(f"evaluate: {e}", file=sys.stderr)  # the message names the fix
        return 1
    write_outputs(result, args.report_dir, args.pred_file)
    s = result.summary
    # without FID the label alone says so and names the param that turns it on
    fid = f"FID {s['fid']:.2f} ({s['provenance']['fid']})" if "fid" in s else f"FID {s['provenance']['fid']}"
    print(f"{result.model_id}: {s['n_images']} test images, PSNR {s['psnr']['mean']:.2f} dB, "
          f"SSIM {s['ssim']['mean']:.4f}, CIEDE2000 {s['ciede2000']['mean']:.2f}, {fid} -> {args.report_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
