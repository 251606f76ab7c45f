"""Self-describing checkpoints, loaded with ``weights_only=True``.

A :class:`Checkpoint` holds everything needed to rebuild and judge the model without
the pipeline around it: the generator's registry name and arguments, the run spec it
was trained from, the epoch, optimizer states (for resuming), where any pretrained
weights came from and which machine trained it. On disk only tensors, numbers,
strings, lists and dicts go in, so the safe ``weights_only`` unpickler can read it;
:meth:`Checkpoint.save` is the one writer and :meth:`Checkpoint.load` the one reader.
"""

from __future__ import annotations

import dataclasses
import io
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from colorstudy.config import ParamsError
from colorstudy.study import RunSpec

FORMAT = "colorstudy-checkpoint/1"


class CheckpointError(RuntimeError):
    """A file is not a usable colorstudy checkpoint; the message says why."""


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A generator's weights and what they came from: the one checkpoint format.

    ``architecture``/``arch_kwargs``/``generator`` (the state dict) rebuild the model;
    the rest says how it was trained and lets an interrupted run resume exactly. A
    bare exported generator (``run`` None) is a checkpoint too: ``colorize`` and
    ``evaluate`` need only the first four fields.
    """

    architecture: str  # a name in models.GENERATORS
    arch_kwargs: dict[str, Any]
    generator: dict[str, torch.Tensor]
    model_id: str | None = None
    run: RunSpec | None = None  # the resolved spec it was trained from
    data: dict[str, str] = dataclasses.field(default_factory=dict)  # {"shards_sha256": ...}: resume on the same data only
    epoch: int = 0  # epochs done
    step: int = 0
    opt_g: dict[str, Any] | None = None
    discriminator: dict[str, torch.Tensor] | None = None
    opt_d: dict[str, Any] | None = None
    selected: dict[str, Any] = dataclasses.field(default_factory=dict)  # train.select's pick: epoch, criterion, val
    history: list[dict[str, float]] = dataclasses.field(default_factory=list)  # one record per epoch
    provenance: dict[str, Any] = dataclasses.field(default_factory=dict)  # pretrained parts and their weights
    torch_version: str = ""
    trained_on: str = "not recorded"  # runtime.machine_kind: whose rounding the weights carry

    def save(self, path: str | Path) -> None:
        """Write atomically and byte-stably: identical checkpoints give identical files.

        DVC hashes bytes, so a retraining that reproduces the weights must reproduce the
        file, or every `evaluate@ID` after it reruns. ``torch.save`` to a path names the
        zip archive (and derives ``.data/serialization_id``) from the file name, here a
        random temporary one; to a buffer both are fixed. A run killed mid-save leaves the
        previous checkpoint intact (the bytes go to a temporary file, then ``os.replace``).
        """
        payload = {"format": FORMAT, "model_id": self.model_id, "architecture": self.architecture,
                   # as the run spec's JSON holds it (sorted), whichever way the spec was made
                   "arch_kwargs": dict(sorted(self.arch_kwargs.items())),
                   "run": None if self.run is None else self.run.to_dict(), "data": self.data,
                   "epoch": self.epoch, "step": self.step, "generator": self.generator, "opt_g": self.opt_g,
                   "discriminator": self.discriminator, "opt_d": self.opt_d, "selected": self.selected,
                   "history": self.history, "provenance": self.provenance, "torch_version": self.torch_version,
                   "trained_on": self.trained_on}
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        buffer = io.BytesIO()
        torch.save(_canonical(payload), buffer)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(buffer.getbuffer())
            os.replace(tmp, path)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> Checkpoint:
        """Read with ``weights_only=True``: a checkpoint file cannot run code."""
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"no checkpoint at {path}")
        try:
            payload = torch.load(path, map_location=map_location, weights_only=True)
        except Exception as e:
            raise CheckpointError(f"{path} is not a readable checkpoint ({type(e).__name__}: {e})") from e
        if not isinstance(payload, dict) or payload.pop("format", None) != FORMAT:
            raise CheckpointError(f"{path} is not a {FORMAT} file (was it written by another tool?)")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(payload) - fields)
        if unknown:
            raise CheckpointError(f"{path}: unknown entries {unknown}; written by another colorstudy version?")
        try:
            if payload.get("run") is not None:
                payload["run"] = RunSpec.from_dict(payload["run"], f"{path}: run")
            return cls(**{k: v for k, v in payload.items() if v is not None or k in _OPTIONAL})
        except (ParamsError, TypeError) as e:
            raise CheckpointError(f"{path} is not a complete checkpoint ({e}); retrain it with this "
                                  f"version (`dvc repro`)") from e

    def model(self, device: str | torch.device = "cpu") -> nn.Module:
        """The trained generator, in eval mode."""
        from colorstudy.models import build_generator

        try:
            # random init, whatever the run trained from: the state dict replaces every weight,
            # so an ImageNet encoder needs no weight file here
            model = build_generator(self.architecture, **{**self.arch_kwargs, "weights": "random"})
            model.load_state_dict(self.generator)
        except (KeyError, RuntimeError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint does not fit architecture {self.architecture!r} ({e})") from e
        return model.to(device).eval()


# Fields that may be stored as None (the others' None means "absent": the default applies).
_OPTIONAL = {"model_id", "run", "opt_g", "discriminator", "opt_d"}


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
