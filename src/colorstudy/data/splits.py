"""Which split each photo goes to: the policy of the preprocess stage.

**Splits** are decided per source *group* (all crops, stereo pairs and copies of one
photo share a group), so nothing of one photo lands in two splits. A group's split is
the ``split`` column of ``sources.csv`` when ``data.split`` is ``official`` or the
dataset fixes its split (``sample``), for the rows that fill it; otherwise a hash of
(seed, group) mapped to [0, 1) against the test and val fractions, so adding photos
never moves existing ones. Exact duplicates (same file bytes, or same decoded pixels:
a copy that differs only in metadata) keep only their first copy (sorted by path) and
merge their groups; a merged group takes the split of its lexicographically first
member. Pixels are hashed at decode scale, so a JPEG and a lossless re-encoding of it
match only when no reduced-scale JPEG decode was needed.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from colorstudy.config import DataParams, ParamsError
from colorstudy.data.sources import SOURCES_CSV, SPLITS, Source, read_sources

FIXED_SPLIT_DATASETS = frozenset({"sample"})  # sources whose sources.csv split is part of the data


def load_sources(raw_dir: str | Path, params: DataParams) -> list[Source]:
    """``sources.csv`` of ``raw_dir`` sorted by path; ``params.max_images`` keeps that many,
    chosen by a seeded hash of the path, not the first by path.

    Why: a folder laid out by class sorts class by class, so the first N paths were the
    first classes only, and a quick trial trained and tested on another distribution than
    the full run. A hash order is a spread over the whole folder, the same on every machine.
    """
    rows = sorted(read_sources(Path(raw_dir)), key=lambda r: r.path)
    bad = [r.path for r in rows if r.split not in ("", *SPLITS) or r.crops < 1]
    if bad:
        raise ValueError(f"{Path(raw_dir) / SOURCES_CSV}: bad split or crops for {bad[:3]}")
    if params.max_images is None:
        return rows
    rank = lambda r: hashlib.sha256(f"{params.seed}\0{r.path}".encode()).digest()  # noqa: E731
    kept = set(id(r) for r in sorted(rows, key=rank)[:params.max_images])
    return [r for r in rows if id(r) in kept]


def _image_ids(paths: Sequence[str]) -> list[str]:
    # File-name-safe ids (evaluation writes `<id>.png`); the extension is kept only
    # where dropping it would make two ids equal.
    bases = [str(PurePosixPath(p).with_suffix("")).replace("/", "__") for p in paths]
    counts = Counter(bases)
    return [b if counts[b] == 1 else p.replace("/", "__") for b, p in zip(bases, paths)]


def hash_split(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    """Split of a group by the hash of (seed, group): stable under additions of other photos."""
    digest = hashlib.sha256(f"{seed}\0{group}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    if u < test_fraction:
        return "test"
    if u < test_fraction + val_fraction:
        return "val"
    return "train"


class SplitAssigner:
    """Split per group, with duplicate-merged groups (union-find; a root is its component's minimum)."""

    def __init__(self, sources: Sequence[Source], params: DataParams) -> None:
        honor = params.split == "official" or params.dataset in FIXED_SPLIT_DATASETS
        if params.split == "official" and not any(s.split for s in sources):
            raise ParamsError(f"data.split: `official` needs a dataset whose {SOURCES_CSV} fills the "
                              f"split column (flowers102, sample); {params.dataset!r} has none, use `random`")
        self._own: dict[str, str] = {}
        for s in sources:  # sorted by path: a group's first explicit split wins
            if honor and s.split and s.group not in self._own:
                self._own[s.group] = s.split
        for s in sources:
            if s.group not in self._own:
                self._own[s.group] = hash_split(s.group, params.seed, params.val_fraction, params.test_fraction)
        self._parent: dict[str, str] = {}

    def _root(self, group: str) -> str:
        while (parent := self._parent.get(group, group)) != group:
            self._parent[group] = self._parent.get(parent, parent)  # path halving
            group = parent
        return group

    def merge(self, a: str, b: str) -> None:
        ra, rb = self._root(a), self._root(b)
        if ra != rb:
            lo, hi = sorted((ra, rb))
            self._parent[hi] = lo

    def split_of(self, group: str) -> str:
        return self._own[self._root(group)]
