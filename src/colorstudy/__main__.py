"""The command line: ``python -m colorstudy <command>`` (or the ``colorstudy`` script).

The DVC stages have their own scripts under ``stages/``; ``colorize`` is for people who
use the trained models, ``repro`` runs the pipeline's independent stages side by side.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version

from tqdm import tqdm

EXIT_OK, EXIT_SOME_FAILED, EXIT_ERROR = 0, 1, 2

# argparse prints these as they are, so they are plain text (the docstrings are RST).
DESCRIPTION = ("Use the study's trained colorization models on your own photos (colorize), or reproduce "
               "the study with independent stages side by side (repro). The DVC pipeline stages have their "
               "own scripts under stages/.")
EPILOG = "exit status: 0 no photo failed (skipped ones included), 1 some photos failed, 2 nothing could start"


def _version_text() -> str:
    try:
        return f"colorstudy {version('colorstudy')}"
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "colorstudy unknown"


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def _add_colorize(commands: argparse._SubParsersAction) -> None:
    from colorstudy.cli_defaults import DEFAULT_MODELS_DIR, FORMAT_SUFFIX

    p = commands.add_parser(
        "colorize", help="colorize black-and-white photos with a trained model",
        description="Colorize photos (JPEG, PNG, WebP, TIFF; any size) with a trained study model. "
                    "Each output keeps the input's size, format and full-resolution lightness; "
                    "only the colors come from the model.",
        epilog=EPILOG)
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="photo files, folders (searched recursively) or glob patterns")
    p.add_argument("-o", "--output-dir", required=True, metavar="OUTDIR",
                   help="folder for the colorized photos (same file names; folder layout kept)")
    p.add_argument("--model", metavar="ID|CHECKPOINT",
                   help="study id (one of its trained seeds, MODELS_DIR/ID/seedS/selected.pt; see --seed) "
                        "or a checkpoint file; default: the best model of reports/ranking.json")
    p.add_argument("--seed", type=int, metavar="N",
                   help="serve this trained seed of the study id (default: the seed with the lowest "
                        "validation ab-L1, ties to the smaller seed; the choice is printed on every run)")
    p.add_argument("--models-dir", default=str(DEFAULT_MODELS_DIR),
                   help="where study ids are looked up (default: %(default)s)")
    p.add_argument("--size", type=_positive_int, metavar="N",
                   help="square resolution the model runs at, rounded to its stride "
                        "(default: the size it was trained at)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto",
                   help="auto = cuda when present (default: %(default)s)")
    p.add_argument("--batch-size", type=_positive_int, default=8, metavar="N",
                   help="photos per model batch (default: %(default)s)")
    p.add_argument("--format", choices=sorted(FORMAT_SUFFIX), dest="fmt",
                   help="write this format instead of the input's")
    p.add_argument("--overwrite", action="store_true",
                   help="replace existing outputs (default: skip those photos; an input is never replaced)")
    p.add_argument("--compare", action="store_true",
                   help="also write NAME_compare.EXT: gray | colorized | original (if it was in color)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--version", action="version", version=_version_text())
    p.set_defaults(run=_colorize)


def _colorize(args: argparse.Namespace) -> int:
    from colorstudy.colorize import ColorizeError, load_colorizer
    from colorstudy.colorize_files import colorize_paths

    try:
        colorizer = load_colorizer(args.model, device=args.device, models_dir=args.models_dir, size=args.size,
                                   seed=args.seed)
    except ColorizeError as e:
        print(f"colorstudy colorize: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    if colorizer.served is not None:  # load_colorizer always sets it; a Colorizer built by hand has none
        print(colorizer.served.message, file=sys.stderr)
    print(f"model {colorizer.name} ({colorizer.architecture}) at {colorizer.size}x{colorizer.size} "
          f"on {colorizer.device}", file=sys.stderr)
    summary = colorize_paths(args.inputs, args.output_dir, colorizer, batch_size=args.batch_size,
                             overwrite=args.overwrite, compare=args.compare, fmt=args.fmt,
                             progress=not args.no_progress, log=lambda m: tqdm.write(m, file=sys.stderr))
    print(summary, file=sys.stdout if summary.ok else sys.stderr)
    return EXIT_OK if summary.ok else EXIT_SOME_FAILED


def _add_repro(commands: argparse._SubParsersAction) -> None:
    p = commands.add_parser(
        "repro", help="dvc repro, with independent stages (trainings, evaluations) N at a time",
        description="Reproduce the pipeline as `dvc repro` does, running independent stages side by side, "
                    "each pinned to its own device (a GPU each when there are GPUs, else an equal share of the "
                    "CPU cores). DVC decides what runs and writes dvc.lock, the cache and the run-cache; the "
                    "outputs are the bytes a sequential `dvc repro` writes. Logs: logs/repro/.",
        epilog="exit status: 0 every stage up to date, 1 a stage failed (the others finished and are recorded), "
               "2 nothing could start")
    p.add_argument("targets", nargs="*", metavar="TARGET", help="stages to reproduce (default: the whole dvc.yaml)")
    p.add_argument("-j", "--jobs", type=_positive_int, metavar="N",
                   help="stages at a time (default: one per GPU, else one per CPU core)")
    p.add_argument("--dvc-arg", action="append", default=[], metavar="ARG",
                   help="passed on to every `dvc repro` (e.g. --dvc-arg=--no-run-cache); repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_repro)


def _repro(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dvc.exceptions import DvcException

    from colorstudy.parallel import ReproError, StageFailed, repro

    try:
        repro(Path.cwd(), args.targets, args.jobs, args.dvc_arg, progress=not args.no_progress)
    except StageFailed as e:
        print(f"colorstudy repro: {e}", file=sys.stderr)
        return EXIT_SOME_FAILED
    except (ReproError, DvcException) as e:
        print(f"colorstudy repro: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colorstudy", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=_version_text())
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_colorize(commands)
    _add_repro(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; the exit status: 0 ok, 1 some photos failed, 2 nothing could start."""
    args = build_parser().parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
