"""Which checkpoint ``colorize`` serves: a study id's trained seeds, and the rule that picks one.

Every study id is trained once per seed of ``train.seeds``, into
``MODELS_DIR/ID/seedS/selected.pt``. ``--model ID`` serves one of them, chosen by this
rule, and says which and why on every run:

* the seed whose scored checkpoint (the one ``train.select`` picked) has the lowest
  **validation** ab-L1. Validation, never the test split: the report judges the models
  on the test split, and a seed picked for its test numbers would look better there than
  it is. The number comes from the checkpoint's own ``selected`` record, which is what
  training also writes to ``reports/train/ID/seedS/metrics.json`` as ``val_ab_l1``: the
  file served is its own evidence, and a models folder pulled without ``reports/`` works;
* equal numbers go to the smaller seed, so the choice never depends on folder order;
* ``--seed N`` serves seed N instead (an error listing the trained seeds if N is not one).

A checkpoint file, or a folder holding ``selected.pt``, given directly is served as it
is; its run spec's seed is reported when it has one. A folder holding ``seedS`` folders
given directly gets the rule, like a study id.

A pre-seeds folder (``MODELS_DIR/ID/selected.pt`` and no ``seedS`` folders) is an
error, not a single-seed model: the pipeline no longer writes that layout, so such a file
is a leftover of an older ``dvc repro`` that nothing now keeps in step with the report
(whose ranking pools the seeds), and it was trained with the old single ``train.seed``
(42 by default), which is none of the runs the report judges. The message names the two ways on: rerun ``dvc repro``,
or pass the file directly, which serves it as a checkpoint file given by path.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

from colorstudy.checkpoint import Checkpoint, CheckpointError
from colorstudy.cli_defaults import DEFAULT_MODELS_DIR

DEFAULT_RANKING = Path("reports/ranking.json")
CHECKPOINT_NAME = "selected.pt"
_SEED_DIR = re.compile(r"seed(0|[1-9][0-9]*)")  # seed0, seed12; not seed01, whose number is ambiguous


class ColorizeError(RuntimeError):
    """The colorizer cannot start (no such model or seed, no ranking, no GPU); the message says what to do."""


@dataclass(frozen=True)
class Served:
    """The checkpoint ``colorize`` serves, and why: ``message`` is printed on every run."""

    path: Path
    label: str  # the study id, or the path as given
    seed: int | None  # None: a file given directly whose run spec names no seed
    trained_seeds: tuple[int, ...]  # the seeds it was chosen among; () for a file given directly
    message: str


# -- what is trained -----------------------------------------------------------------

def trained_seeds(model_dir: str | Path) -> dict[int, Path]:
    """Seed -> checkpoint of every ``seedS/selected.pt`` under one model's folder, by seed."""
    root = Path(model_dir)
    if not root.is_dir():
        return {}
    found = {int(d.name[4:]): d / CHECKPOINT_NAME for d in root.iterdir()
             if _SEED_DIR.fullmatch(d.name) and (d / CHECKPOINT_NAME).is_file()}
    return dict(sorted(found.items()))


def _is_pre_seeds(model_dir: Path) -> bool:
    return (model_dir / CHECKPOINT_NAME).is_file() and not trained_seeds(model_dir)


def available_models(models_dir: str | Path = DEFAULT_MODELS_DIR) -> list[str]:
    """Study ids with at least one trained seed under ``models_dir``."""
    root = Path(models_dir)
    if not root.is_dir():
        return []
    return sorted(d.name for d in root.iterdir() if trained_seeds(d))


def _seed_list(seeds: list[int] | tuple[int, ...]) -> str:
    return ", ".join(str(s) for s in seeds)


def trained_models_hint(models_dir: str | Path) -> str:
    """The trained ids and their seeds, for an error message; pre-seeds folders named apart."""
    root = Path(models_dir)
    ids = available_models(root)
    listed = [f"{i} (seed{'s' if len(seeds) > 1 else ''} {_seed_list(list(seeds))})"
              for i in ids for seeds in [trained_seeds(root / i)]]
    text = (f"trained models in {root}: {', '.join(listed)}" if listed
            else f"there are no trained models in {root} (run `dvc repro` to train the study)")
    old = sorted(d.name for d in root.iterdir() if _is_pre_seeds(d)) if root.is_dir() else []
    if old:
        text += f"; pre-seeds layout (ID/{CHECKPOINT_NAME}, no seedS folders; rerun `dvc repro`): {', '.join(old)}"
    return text


def _first_lines(text: str, keep: int = 3) -> str:
    # a state-dict mismatch lists every tensor; the first few say enough
    lines = text.splitlines()
    return "\n".join(lines[:keep] + ([f"\t... ({len(lines) - keep} more lines)"] if len(lines) > keep else []))


def load_checkpoint(path: Path, models_dir: str | Path) -> Checkpoint:
    """``Checkpoint.load`` (``weights_only=True``: a checkpoint cannot run code), failing as a ColorizeError."""
    try:
        return Checkpoint.load(path)
    except CheckpointError as e:
        raise colorize_error(path, e, models_dir) from e


def colorize_error(path: Path, error: CheckpointError, models_dir: str | Path) -> ColorizeError:
    """A checkpoint's own error, with the file named once and the trained models listed."""
    where = "" if str(path) in str(error) else f"{path}: "
    return ColorizeError(f"{where}{_first_lines(str(error))}; {trained_models_hint(models_dir)}")


# -- choosing ------------------------------------------------------------------------

def choose_checkpoint(model: str | Path | None, models_dir: str | Path = DEFAULT_MODELS_DIR,
                      ranking: str | Path = DEFAULT_RANKING, seed: int | None = None) -> tuple[Served, Checkpoint]:
    """The checkpoint a ``--model`` (and ``--seed``) value names, loaded, and why it is the one.

    ``None`` -> the best model of the last report (``ranking``); a file, or a folder
    holding ``selected.pt`` -> itself; a folder of ``seedS`` folders, or a study id under
    ``models_dir`` -> one of its seeds by the module's rule (``seed``: that one).
    """
    models_dir = Path(models_dir)
    label = None
    if model is None:
        model = _best_of_ranking(Path(ranking), models_dir)
        label = f"{model} (the best model in {ranking})"
    path = Path(model)
    if path.is_file():
        return _given(path, seed, models_dir)
    if path.is_dir() and trained_seeds(path):
        return _pick_seed(str(path), path, seed, models_dir)
    if (path / CHECKPOINT_NAME).is_file():
        return _given(path / CHECKPOINT_NAME, seed, models_dir)
    if path.suffix in (".pt", ".pth") or len(path.parts) > 1:
        raise ColorizeError(f"no checkpoint file {path}; {trained_models_hint(models_dir)}")
    folder = models_dir / str(model)
    if not trained_seeds(folder):
        raise _untrained(str(model), folder, models_dir)
    return _pick_seed(label or str(model), folder, seed, models_dir)


def _best_of_ranking(ranking: Path, models_dir: Path) -> str:
    if not ranking.is_file():
        raise ColorizeError(
            f"no --model given and {ranking} does not exist, so there is no best model to use: "
            f"run `dvc repro` to train and rank the study's models, or pass --model ID|CHECKPOINT "
            f"({trained_models_hint(models_dir)})")
    try:
        report = json.loads(ranking.read_text())
        best = report.get("best") or report["ranking"][0]
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ColorizeError(f"{ranking} names no best model ({type(e).__name__}: {e}); "
                            f"rerun `dvc repro` or pass --model ID|CHECKPOINT") from e
    if not isinstance(best, str):
        raise ColorizeError(f"{ranking}: best model {best!r} is not a study id; rerun `dvc repro` "
                            f"or pass --model ID|CHECKPOINT")
    return best


def _untrained(model_id: str, folder: Path, models_dir: Path) -> ColorizeError:
    if _is_pre_seeds(folder):
        old = folder / CHECKPOINT_NAME
        return ColorizeError(
            f"{folder} is the pre-seeds layout ({old}, no seedS folders): study models are now trained "
            f"once per seed into {folder}/seedS/{CHECKPOINT_NAME}. Rerun `dvc repro` to train {model_id!r} "
            f"per seed, or serve the old file as a checkpoint given by path: --model {old}")
    return ColorizeError(f"no trained model {model_id!r} (no {folder}/seedS/{CHECKPOINT_NAME}); "
                         f"{trained_models_hint(models_dir)}")


def _given(path: Path, seed: int | None, models_dir: Path) -> tuple[Served, Checkpoint]:
    """A checkpoint file named directly: served as it is, its run spec's seed reported."""
    if seed is not None:
        raise ColorizeError(f"--seed {seed} picks among the seedS folders of a study id, but {path} is one "
                            f"checkpoint file: drop --seed, or pass --model ID (or its folder) with --seed")
    checkpoint = load_checkpoint(path, models_dir)
    run = checkpoint.run
    if run is None:
        why = "it carries no run spec, so its seed is unknown"
    else:
        why = f"its run spec: {run.model_id}, seed {run.seed}"
    served = Served(path, str(path), None if run is None else run.seed, (),
                    f"{path}: serving this checkpoint file as given ({why})")
    return served, checkpoint


def _validation_l1(checkpoint: Checkpoint) -> float | None:
    """The scored checkpoint's validation ab-L1; None when absent or not a finite number
    (a NaN would compare false with everything and win or lose by folder order)."""
    value = checkpoint.selected.get("ab_l1")
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else None


def _pick_seed(label: str, folder: Path, seed: int | None, models_dir: Path) -> tuple[Served, Checkpoint]:
    """One of ``folder``'s trained seeds: ``seed``, or the lowest validation ab-L1 (ties: smaller seed)."""
    seeds = trained_seeds(folder)
    listed = _seed_list(list(seeds))
    stale = ""
    if (folder / CHECKPOINT_NAME).is_file():  # an older `dvc repro` left it; the seed folders replace it
        stale = f"; {folder / CHECKPOINT_NAME} is a pre-seeds leftover, not served"
    if seed is not None:
        if seed not in seeds:
            raise ColorizeError(f"{label} has no trained seed {seed}; its trained seeds: {listed} (in {folder}). "
                                f"Pass one of them to --seed, or add {seed} to train.seeds in params.yaml "
                                f"and run `dvc repro`")
        checkpoint = _seed_checkpoint(seeds[seed], seed, models_dir)
        l1 = _validation_l1(checkpoint)
        why = f"asked for with --seed {seed}" + ("" if l1 is None else f"; validation ab-L1 {l1:.4f}")
        return Served(seeds[seed], label, seed, tuple(seeds), _serving(label, seed, seeds, why + stale)), checkpoint
    if len(seeds) == 1:
        (only, path), = seeds.items()
        checkpoint = _seed_checkpoint(path, only, models_dir)
        l1 = _validation_l1(checkpoint)
        why = "the only trained seed" + ("" if l1 is None else f"; validation ab-L1 {l1:.4f}")
        return Served(path, label, only, (only,), _serving(label, only, seeds, why + stale)), checkpoint
    return _lowest_validation(label, seeds, stale, models_dir)


def _lowest_validation(label: str, seeds: dict[int, Path], stale: str,
                       models_dir: Path) -> tuple[Served, Checkpoint]:
    # Seeds come in ascending order, so a later seed must be strictly lower to win: ties go
    # to the smaller seed. Only the best so far stays loaded (full-size checkpoints carry
    # optimizer states).
    scores: dict[int, float] = {}
    chosen, best = -1, None
    for s, path in seeds.items():
        checkpoint = _seed_checkpoint(path, s, models_dir)
        l1 = _validation_l1(checkpoint)
        if l1 is None:
            raise ColorizeError(f"{path} records no finite validation ab-L1 (its `selected` record: "
                                f"{checkpoint.selected}), so the seeds of {label} cannot be compared: retrain it "
                                f"(`dvc repro`) or pick a seed with --seed N (trained: {_seed_list(list(seeds))})")
        scores[s] = l1
        if best is None or l1 < scores[chosen]:
            chosen, best = s, checkpoint
    if best is None:
        raise ValueError(f"{label}: no seeds to choose among")  # callers pass two or more
    tied = [s for s in scores if s != chosen and scores[s] == scores[chosen]]
    why = f"lowest validation ab-L1 {scores[chosen]:.4f}"
    if tied:
        why += f", tied with seed {_seed_list(tied)}: ties go to the smaller seed"
    others = ", ".join(f"seed {s} {v:.4f}" for s, v in scores.items() if s != chosen)
    why += f"; the others: {others}; --seed N picks another"
    return Served(seeds[chosen], label, chosen, tuple(seeds), _serving(label, chosen, seeds, why + stale)), best


def _seed_checkpoint(path: Path, seed: int, models_dir: Path) -> Checkpoint:
    """A seed folder's checkpoint, whose run spec (when it has one) must agree with the folder."""
    checkpoint = load_checkpoint(path, models_dir)
    if checkpoint.run is not None and checkpoint.run.seed != seed:
        raise ColorizeError(f"{path} sits in folder seed{seed} but its run spec says seed {checkpoint.run.seed}: "
                            f"the folders were moved by hand; rerun `dvc repro` (or `dvc checkout`) to restore them")
    return checkpoint


def _serving(label: str, seed: int, seeds: dict[int, Path], why: str) -> str:
    return f"{label}: serving seed {seed} of trained seeds {_seed_list(list(seeds))} ({why})"


__all__ = ["CHECKPOINT_NAME", "DEFAULT_RANKING", "ColorizeError", "Served", "available_models", "choose_checkpoint",
           "colorize_error", "load_checkpoint", "trained_models_hint", "trained_seeds"]
