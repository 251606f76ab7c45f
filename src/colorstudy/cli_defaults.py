"""Defaults the command line shows in its help, torch-free.

Building the parser must import nothing heavy: ``colorstudy repro`` with nothing to do
should answer in the time DVC's own status check takes, not after torch's import.
``colorize`` and ``colorize_files`` take these from here.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_MODELS_DIR = Path("data/models")  # where `--model ID` is looked up (the train stages' outputs)
FORMAT_SUFFIX = {"jpeg": ".jpg", "png": ".png", "webp": ".webp", "tiff": ".tif"}  # --format -> file suffix
