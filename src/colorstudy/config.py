"""Typed params: one dataclass per ``params.yaml`` section.

Every stage reads its section through :func:`parse`, which rejects unknown keys
(a typo'd key must fail, not be silently ignored) and values of the wrong type,
naming the key. Range checks live in each dataclass's ``__post_init__``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

T = TypeVar("T")


class ParamsError(ValueError):
    """A params.yaml entry is wrong; the message names the key and the fix."""


def load_params(path: str | Path = "params.yaml") -> dict[str, Any]:
    with open(path) as f:
        return yaml.safe_load(f) or {}


def _check_type(value: Any, annotation: Any, where: str) -> Any:
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ParamsError as e:
                errors.append(str(e))
        raise ParamsError(errors[0])
    if origin is Literal:
        if value not in args:
            raise ParamsError(f"{where}: {value!r} is not one of {list(args)}")
        return value
    if dataclasses.is_dataclass(annotation):
        return parse(annotation, value, where)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ParamsError(f"{where}: expected a list, got {value!r}")
        return [_check_type(v, args[0], f"{where}[{i}]") for i, v in enumerate(value)] if args else list(value)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ParamsError(f"{where}: expected a mapping, got {value!r}")
        return {k: _check_type(v, args[1], f"{where}.{k}") for k, v in value.items()}
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ParamsError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ParamsError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise ParamsError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise ParamsError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def parse(cls: type[T], raw: Mapping[str, Any] | None, where: str) -> T:
    """Build dataclass ``cls`` from ``raw``; unknown keys and bad types fail, naming them."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ParamsError(f"{where}: expected a mapping of keys, got {raw!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ParamsError(f"{where}: unknown key(s) {unknown}; valid keys are {sorted(fields)}")
    hints = typing.get_type_hints(cls)
    values = {name: _check_type(value, hints[name], f"{where}.{name}") for name, value in raw.items()}
    missing = [n for n, f in fields.items() if n not in values
               and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ParamsError(f"{where}: missing required key(s) {missing}")
    try:
        return cls(**values)
    except ParamsError:
        raise
    except (TypeError, ValueError) as e:
        raise ParamsError(f"{where}: {e}") from e


def require(condition: bool, where: str, message: str) -> None:
    if not condition:
        raise ParamsError(f"{where}: {message}")


def section(params: Mapping[str, Any], name: str, cls: type[T]) -> T:
    return parse(cls, params.get(name), name)


# -- sections ---------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class DataParams:
    """``data``: which photos, how they are cleaned, sized and split."""

    dataset: str = "sample"
    path: str | None = None  # root folder for dataset `folder`
    mirror: str | None = None  # local dir or file:// / http:// base URL holding the archives
    image_size: int = 64  # side of the square the photos are resized/cropped to
    split: Literal["random", "official"] = "random"
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    min_chroma: float = 4.0  # mean Lab chroma below which a photo counts as grayscale
    min_side: int = 32  # photos smaller than this (pixels, shorter side) are rejected
    max_pixels: int = 89_478_485  # PIL's decompression-bomb limit
    max_images: int | None = None  # keep only the first N sources (quick trials)
    shard_size: int = 1024  # images per Arrow shard
    seed: int = 42

    def __post_init__(self) -> None:
        require(self.image_size >= 16 and self.image_size % 16 == 0, "data.image_size",
                f"{self.image_size} must be a multiple of 16, at least 16")
        require(0 <= self.val_fraction < 1 and 0 <= self.test_fraction < 1
                and self.val_fraction + self.test_fraction < 1, "data.val_fraction/test_fraction",
                "fractions must be in [0, 1) and leave room for a training split")
        require(self.min_chroma >= 0, "data.min_chroma", "must be >= 0")
        require(self.shard_size > 0, "data.shard_size", "must be > 0")
        require(self.dataset != "folder" or bool(self.path), "data.path",
                "dataset `folder` needs data.path, the folder of photos")
