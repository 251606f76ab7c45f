"""Which checkpoint `colorize` serves: one of a study id's trained seeds, by a documented rule.

The rule (colorstudy.colorize_models): the lowest validation ab-L1 of the seeds' scored
checkpoints, ties to the smaller seed, ``--seed N`` to override; always said on stderr.
Models are tiny random unets saved as real checkpoints, each seed with its own weights
so a test can tell which one was loaded. Next to tests/test_colorize.py (which needs the
shared photo sets) because the choice needs no photos, and that file is at its size limit.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from PIL import Image

from colorstudy import colorize as cz
from colorstudy.__main__ import main
from colorstudy.checkpoint import Checkpoint
from colorstudy.models import build_generator
from conftest import run_spec

TINY = {"width": 4, "depth": 5}


def save_seed(root: Path, model_id: str, seed: int, val_ab_l1: float | None, folder: str | None = None) -> Path:
    """A trained seed as `train@ID-SEED` leaves it: ``root/ID/seedS/selected.pt``, weights drawn from ``seed``."""
    torch.manual_seed(seed)
    model = build_generator("unet", **TINY)
    run = run_spec(model_id, generator="unet", arch_kwargs=TINY, image_size=32)
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, seed=seed))
    selected = {"epoch": 2, "criterion": "val_ab_l1"} | ({} if val_ab_l1 is None else {"ab_l1": val_ab_l1})
    path = root / model_id / (folder or f"seed{seed}") / "selected.pt"
    Checkpoint(model_id=model_id, architecture="unet", arch_kwargs=TINY, run=run, generator=model.state_dict(),
               selected=selected, epoch=2).save(path)
    return path


def same_weights(colorizer: cz.Colorizer, path: Path) -> bool:
    saved = Checkpoint.load(path).generator
    return all(torch.equal(v, saved[k]) for k, v in colorizer.model.state_dict().items())


@pytest.fixture
def models_dir(tmp_path) -> Path:
    """Study id A with seeds 0, 1, 2 (seed 1 lowest on validation) and B with seed 0 only."""
    root = tmp_path / "models"
    for seed, l1 in ((2, 0.0290), (0, 0.0302), (1, 0.0281)):  # made out of order: folder order must not matter
        save_seed(root, "A", seed, l1)
    save_seed(root, "B", 0, 0.0500)
    return root


@pytest.fixture
def photo(tmp_path) -> Path:
    path = tmp_path / "in" / "gray.png"
    path.parent.mkdir()
    Image.linear_gradient("L").resize((40, 30)).save(path)
    return path


def colorize_cli(photo: Path, models_dir: Path, *args: str) -> int:
    return main(["colorize", str(photo), "-o", str(photo.parent.parent / "out"), "--models-dir", str(models_dir),
                 "--no-progress", *args])


def test_rule_serves_the_seed_with_the_lowest_validation_l1_and_says_so(models_dir, photo, capsys):
    colorizer = cz.load_colorizer("A", device="cpu", models_dir=models_dir)
    assert colorizer.served.seed == 1 and colorizer.served.trained_seeds == (0, 1, 2)
    assert colorizer.served.path == models_dir / "A" / "seed1" / "selected.pt"
    assert same_weights(colorizer, models_dir / "A" / "seed1" / "selected.pt")
    assert cz.resolve_checkpoint("A", models_dir) == colorizer.served.path

    assert colorize_cli(photo, models_dir, "--model", "A") == 0
    err = capsys.readouterr().err
    assert ("A: serving seed 1 of trained seeds 0, 1, 2 (lowest validation ab-L1 0.0281; the others: "
            "seed 0 0.0302, seed 2 0.0290; --seed N picks another)") in err
    assert "model A (unet)" in err


def test_seed_option_serves_that_seed(models_dir, photo, capsys):
    colorizer = cz.load_colorizer("A", device="cpu", models_dir=models_dir, seed=2)
    assert colorizer.served.seed == 2
    assert same_weights(colorizer, models_dir / "A" / "seed2" / "selected.pt")

    assert colorize_cli(photo, models_dir, "--model", "A", "--seed", "0") == 0
    err = capsys.readouterr().err
    assert "A: serving seed 0 of trained seeds 0, 1, 2 (asked for with --seed 0; validation ab-L1 0.0302)" in err


def test_unknown_seed_lists_the_trained_seeds(models_dir, photo, capsys):
    assert colorize_cli(photo, models_dir, "--model", "A", "--seed", "7") == 2
    err = capsys.readouterr().err
    assert "A has no trained seed 7; its trained seeds: 0, 1, 2" in err and "train.seeds" in err
    assert not (photo.parent.parent / "out").exists()


def test_ties_go_to_the_smaller_seed_by_number(tmp_path):
    root = tmp_path / "models"
    for seed, l1 in ((10, 0.02), (2, 0.02), (3, 0.03)):  # by name "seed10" < "seed2"; by number 2 < 10
        save_seed(root, "T", seed, l1)
    colorizer = cz.load_colorizer("T", device="cpu", models_dir=root)
    assert colorizer.served.seed == 2
    assert same_weights(colorizer, root / "T" / "seed2" / "selected.pt")
    assert ("T: serving seed 2 of trained seeds 2, 3, 10 (lowest validation ab-L1 0.0200, tied with seed 10: "
            "ties go to the smaller seed; the others: seed 3 0.0300, seed 10 0.0200; --seed N picks another)"
            ) == colorizer.served.message


def test_a_single_trained_seed_is_served_and_named(models_dir):
    served = cz.load_colorizer("B", device="cpu", models_dir=models_dir).served
    assert served.message == "B: serving seed 0 of trained seeds 0 (the only trained seed; validation ab-L1 0.0500)"


def test_a_checkpoint_or_folder_given_directly_says_its_seed(models_dir, photo, capsys):
    path = models_dir / "A" / "seed2" / "selected.pt"
    for given in (path, path.parent):
        colorizer = cz.load_colorizer(given, device="cpu", models_dir=models_dir)
        assert colorizer.served.path == path and colorizer.served.seed == 2
        assert colorizer.served.message == f"{path}: serving this checkpoint file as given (its run spec: A, seed 2)"
    # the model's folder, holding its seed folders, gets the rule like the study id
    assert cz.load_colorizer(models_dir / "A", device="cpu", models_dir=models_dir).served.seed == 1

    bare = models_dir.parent / "bare.pt"
    Checkpoint(architecture="unet", arch_kwargs=TINY, generator=build_generator("unet", **TINY).state_dict()).save(bare)
    served = cz.load_colorizer(bare, device="cpu", models_dir=models_dir, size=32).served
    assert served.seed is None and "carries no run spec, so its seed is unknown" in served.message

    assert colorize_cli(photo, models_dir, "--model", str(path), "--seed", "1") == 2
    assert "--seed 1 picks among the seedS folders of a study id" in capsys.readouterr().err


def test_available_models_lists_ids_with_a_trained_seed(models_dir):
    (models_dir / "C" / "seed0").mkdir(parents=True)  # a training that has not written its checkpoint yet
    save_seed(models_dir, "D", 1, 0.04, folder="seed01")  # not a seed folder: its number is ambiguous
    assert cz.available_models(models_dir) == ["A", "B"]
    assert cz.trained_seeds(models_dir / "A") == {s: models_dir / "A" / f"seed{s}" / "selected.pt" for s in (0, 1, 2)}
    assert cz.trained_models_hint(models_dir) == f"trained models in {models_dir}: A (seeds 0, 1, 2), B (seed 0)"
    with pytest.raises(cz.ColorizeError, match=r"no trained model 'C' .*A \(seeds 0, 1, 2\), B \(seed 0\)"):
        cz.load_colorizer("C", device="cpu", models_dir=models_dir)


def test_pre_seeds_layout_is_a_clear_error_and_its_file_still_serves_by_path(models_dir, photo, capsys):
    old = save_seed(models_dir, "OLD", 0, 0.03, folder=".")  # OLD/selected.pt, as train@OLD wrote it before seeds
    assert colorize_cli(photo, models_dir, "--model", "OLD") == 2
    err = capsys.readouterr().err
    assert "is the pre-seeds layout" in err and "Rerun `dvc repro`" in err and f"--model {old}" in err
    assert "OLD" not in cz.available_models(models_dir)
    assert "pre-seeds layout (ID/selected.pt, no seedS folders; rerun `dvc repro`): OLD" in cz.trained_models_hint(
        models_dir)

    assert colorize_cli(photo, models_dir, "--model", str(old)) == 0
    assert f"{old}: serving this checkpoint file as given (its run spec: OLD, seed 0)" in capsys.readouterr().err


def test_a_pre_seeds_leftover_beside_seed_folders_is_named_not_served(models_dir):
    save_seed(models_dir, "B", 5, 0.01, folder=".")  # lower than seed 0's, and still not served
    served = cz.load_colorizer("B", device="cpu", models_dir=models_dir).served
    assert served.seed == 0
    assert served.message.endswith(f"; {models_dir / 'B' / 'selected.pt'} is a pre-seeds leftover, not served)")


def test_seeds_without_a_validation_number_cannot_be_ranked(models_dir):
    save_seed(models_dir, "A", 3, None)
    with pytest.raises(cz.ColorizeError, match=r"seed3/selected.pt records no finite validation ab-L1.*--seed N"):
        cz.load_colorizer("A", device="cpu", models_dir=models_dir)
    assert cz.load_colorizer("A", device="cpu", models_dir=models_dir, seed=3).served.seed == 3
    save_seed(models_dir, "A", 3, float("nan"))  # compares false with everything: it must not win or lose silently
    with pytest.raises(cz.ColorizeError, match=r"seed3/selected.pt records no finite validation ab-L1"):
        cz.load_colorizer("A", device="cpu", models_dir=models_dir)


def test_a_seed_folder_must_agree_with_its_run_spec(models_dir):
    save_seed(models_dir, "A", 4, 0.001, folder="seed5")
    with pytest.raises(cz.ColorizeError, match="sits in folder seed5 but its run spec says seed 4"):
        cz.load_colorizer("A", device="cpu", models_dir=models_dir)
