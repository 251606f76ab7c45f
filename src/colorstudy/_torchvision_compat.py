"""Make ``import torchvision`` (and so ``lpips`` and ``pytorch_fid``) work when its
compiled ops cannot load.

Why: the pinned torchvision wheel is a CUDA build; on a CPU-only torch its ``_C.so``
fails to load, and ``torchvision._meta_registrations`` then calls
``torch.library.register_fake("torchvision::nms")`` on an operator nobody defined, so
the import dies with "operator torchvision::nms does not exist". Defining the two
schemas it registers fakes for (nms, qnms) is enough for the import; the project never
calls those detection ops. When the compiled library does load (a matching GPU
install), nothing here runs and torchvision defines the real ops itself.

This module must be imported before torchvision; ``colorstudy/__init__.py`` does it.
It imports neither torch nor torchvision itself: it puts a finder first on
``sys.meta_path`` that registers the schemas the moment something imports torchvision.
Importing ``colorstudy`` is then free, which the stages that never touch torchvision
(and ``colorstudy repro``, whose no-op run must be quick) would otherwise pay ~1.5 s for.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

_SCHEMAS = {
    "nms": "nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
    "qnms": "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor",
}
_library: torch.library.Library | None = None  # kept alive: ops vanish with the Library


def _compiled_ops_load() -> bool:
    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or spec.origin is None:
        return True  # torchvision absent: nothing to patch
    candidates = list(Path(spec.origin).parent.glob("_C*.so")) + list(Path(spec.origin).parent.glob("_C*.pyd"))
    for lib in candidates:
        try:
            torch.ops.load_library(str(lib))
            return True
        except (OSError, RuntimeError):
            pass
    return False


def register_missing_torchvision_ops() -> None:
    global _library
    if _library is not None or _compiled_ops_load():
        return
    import torch

    _library = torch.library.Library("torchvision", "DEF")
    for schema in _SCHEMAS.values():
        _library.define(schema)


class _BeforeTorchvision(importlib.abc.MetaPathFinder):
    """Registers the schemas when ``torchvision`` is first looked up, then steps aside."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name == "torchvision":
            sys.meta_path.remove(self)  # first: the registration looks torchvision up itself
            register_missing_torchvision_ops()
        return None  # the normal finders import it


if "torchvision" in sys.modules:  # imported before colorstudy: its import already worked or failed
    register_missing_torchvision_ops()
elif not any(isinstance(f, _BeforeTorchvision) for f in sys.meta_path):
    sys.meta_path.insert(0, _BeforeTorchvision())
