"""Self-describing checkpoints, loaded with ``weights_only=True``.

A checkpoint holds everything needed to rebuild and judge the model without the
pipeline around it: the generator's registry name and arguments, the resolved
params it was trained with, the epoch, optimizer states (for resuming), and where
any pretrained weights came from. Only tensors, numbers, strings, lists and dicts go
in, so the safe ``weights_only`` unpickler can read it.
"""

from __future__ import annotations

import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

FORMAT = "colorstudy-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file is not a usable colorstudy checkpoint; the message says why."""


def save(path: str | Path, payload: dict[str, Any]) -> None:
    """Write atomically and byte-stably: identical payloads give identical files.

    DVC hashes bytes, so a retraining that reproduces the weights must reproduce the
    file, or every `evaluate@ID` after it reruns. ``torch.save`` to a path names the
    zip archive (and derives ``.data/serialization_id``) from the file name, here a
    random temporary one; to a buffer both are fixed. A run killed mid-save leaves the
    previous checkpoint intact (the bytes go to a temporary file, then ``os.replace``).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buffer = io.BytesIO()
    torch.save(_canonical({"format": FORMAT, **payload}), buffer)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buffer.getbuffer())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _canonical(obj: Any) -> Any:
    # The pickler writes a back-reference for an object it has seen (by identity), so
    # equal payloads whose strings are shared differently (a resumed run's history came
    # from the unpickler, an uninterrupted one's from f-strings) pickle to other bytes.
    # Interning makes every equal string one object, and fresh containers share none.
    if type(obj) is str:  # not a subclass (np.str_): intern takes only str
        return sys.intern(obj)
    if isinstance(obj, dict):
        fresh = type(obj)((_canonical(k), _canonical(v)) for k, v in obj.items())
        if hasattr(obj, "_metadata"):  # a state_dict's module versions
            fresh._metadata = _canonical(obj._metadata)
        return fresh
    if type(obj) in (list, tuple):  # not a namedtuple, whose constructor takes fields
        return type(obj)(_canonical(v) for v in obj)
    return obj


def load(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a {FORMAT} file (was it written by another tool?)")
    return payload


def build_generator(payload: dict[str, Any], device: str | torch.device = "cpu") -> nn.Module:
    """The trained generator of a loaded checkpoint, in eval mode."""
    from colorstudy.models import build_generator as build

    try:
        # random init, whatever the run trained from: the state dict replaces every weight,
        # so an ImageNet encoder needs no weight file here
        model = build(payload["architecture"], **{**payload["arch_kwargs"], "weights": "random"})
        model.load_state_dict(payload["generator"])
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        raise CheckpointError(
            f"checkpoint does not fit architecture {payload.get('architecture')!r} ({e})") from e
    return model.to(device).eval()
