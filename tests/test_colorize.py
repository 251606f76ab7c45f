"""Colorizing users' photos: the library API and `python -m colorstudy colorize`.

Real photos (faces, flowers) come from ../shared/datasets and are made gray here;
odd formats, large and corrupt files are made by the tests. Models are tiny
generators saved as real checkpoints; one is trained briefly on faces so that its
colors can be checked against the truth.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from colorstudy.checkpoint import Checkpoint
from colorstudy import colorize as cz
from colorstudy.__main__ import main
from colorstudy.lab import normalize_ab, normalize_l, rgb_to_lab_np
from colorstudy.models import build_generator
from conftest import run_spec

DATASETS = Path(__file__).resolve().parents[1] / "../shared/datasets"
FACES = sorted((DATASETS / "faces").glob("*.jpg"))
FLOWERS = sorted((DATASETS / "flowers102-subset").glob("*.jpg"))
pytestmark = pytest.mark.skipif(not FACES or not FLOWERS, reason="needs ../shared/datasets (faces, flowers)")

TRAIN_SIZE = 32
TINY = {"width": 4, "depth": 5}  # unet, stride 32



def save_checkpoint(path: Path, model_id: str, arch: str, arch_kwargs: dict, model: torch.nn.Module,
                    seed: int = 0, val_ab_l1: float | None = 0.0) -> Path:
    run = run_spec(model_id, generator=arch, arch_kwargs=arch_kwargs, image_size=TRAIN_SIZE)
    run = dataclasses.replace(run, train=dataclasses.replace(run.train, seed=seed))
    selected = {"epoch": 1, "criterion": "last"} | ({} if val_ab_l1 is None else {"ab_l1": val_ab_l1})
    Checkpoint(model_id=model_id, architecture=arch, arch_kwargs=arch_kwargs, run=run, generator=model.state_dict(),
               selected=selected, epoch=1).save(path)
    return path


def face_batch(paths: list[Path]) -> tuple[torch.Tensor, torch.Tensor]:
    rgb = np.stack([np.asarray(Image.open(p).convert("RGB").resize((TRAIN_SIZE, TRAIN_SIZE), Image.Resampling.BICUBIC))
                    for p in paths])
    lab = torch.from_numpy(rgb_to_lab_np(rgb)).permute(0, 3, 1, 2)
    return normalize_l(lab[:, :1]), normalize_ab(lab[:, 1:])


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """``tiny``: a random unet; ``faces``: the same trained 200 L1 steps on 64 faces."""
    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    save_checkpoint(root / "tiny" / "seed0" / "selected.pt", "tiny", "unet", TINY, build_generator("unet", **TINY))

    torch.manual_seed(0)
    arch_kwargs = {"width": 8, "depth": 5}
    model = build_generator("unet", **arch_kwargs)
    L, ab = face_batch(FACES[:64])
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(200):
        idx = torch.randint(0, len(L), (16,), generator=gen)
        loss = F.l1_loss(model(L[idx]), ab[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    save_checkpoint(root / "faces" / "seed0" / "selected.pt", "faces", "unet", arch_kwargs, model)
    return root


@pytest.fixture(scope="module")
def colorizer(models_dir) -> cz.Colorizer:
    return cz.load_colorizer("faces", device="cpu", models_dir=models_dir)


def lab(image: Image.Image) -> np.ndarray:
    """Lab of an image as the colorizer reads it (gray as R = G = B, 16-bit kept)."""
    arr = np.asarray(image)
    if image.mode in ("LA", "RGBA"):
        arr = arr[..., :-1]
    if arr.ndim == 2 or arr.shape[-1] == 1:
        arr = np.repeat(arr.reshape(*arr.shape[:2], 1), 3, axis=-1)
    return rgb_to_lab_np(arr)


def assert_lightness_kept(source: Image.Image, output: Image.Image, rows: slice = slice(None)) -> None:
    """The output's L equals the input's at full resolution, within 8-bit rounding.

    Colors outside sRGB are clipped per channel (as the study's metrics do), which
    moves their L a little, so the exact check is on pixels with no channel at 0 or 255.
    """
    assert output.size == source.size
    L_in = lab(source)[rows, :, 0]
    rgb = np.asarray(output.convert("RGB"))[rows]
    dL = np.abs(rgb_to_lab_np(rgb)[..., 0] - L_in)
    in_gamut = ((rgb > 0) & (rgb < 255)).all(-1) | (rgb.max(-1) == rgb.min(-1))
    assert dL[in_gamut].max() <= 1.0
    assert np.mean(dL <= 1.0) > 0.9 and dL.max() < 4.0


def gray(path: Path) -> Image.Image:
    return Image.open(path).convert("L")


# -- the colors and the lightness ---------------------------------------------------

def test_gray_face_gets_colors_that_follow_the_truth(colorizer):
    truth = Image.open(FACES[720]).convert("RGB")  # not among the 64 training faces
    out = colorizer.colorize(gray(FACES[720]))
    assert out.mode == "RGB" and out.size == truth.size
    ab_pred, ab_true = lab(out)[..., 1:], lab(truth)[..., 1:]
    assert np.hypot(*np.moveaxis(ab_pred, -1, 0)).mean() > 3.0  # really colored, not gray
    assert np.corrcoef(ab_pred.ravel(), ab_true.ravel())[0, 1] > 0.3
    assert np.abs(ab_pred - ab_true).mean() < np.abs(ab_true).mean()  # beats leaving it gray
    assert_lightness_kept(gray(FACES[720]), out)


def test_large_photo_keeps_its_full_resolution_lightness(colorizer):
    photo = gray(FLOWERS[0]).resize((3000, 2000), Image.Resampling.LANCZOS)
    out = colorizer.colorize(photo)
    assert out.size == (3000, 2000) and out.mode == "RGB"
    rows = slice(3, None, 25)
    # the check can see blur: the photo at model resolution differs a lot from it
    blurred = photo.resize((256, 256), Image.Resampling.BICUBIC).resize(photo.size, Image.Resampling.BILINEAR)
    assert np.abs(lab(blurred)[rows, :, 0] - lab(photo)[rows, :, 0]).max() > 10
    assert_lightness_kept(photo, out, rows)


def test_color_photo_is_colorized_from_its_own_lightness(colorizer):
    photo = Image.open(FLOWERS[1]).convert("RGB")
    assert_lightness_kept(photo, colorizer.colorize(photo))


def test_strips_equal_one_full_size_resize(colorizer, monkeypatch):
    ab = torch.randn(1, 2, 7, 9)
    full = F.interpolate(ab, size=(53, 61), mode="bilinear", align_corners=False)[0]
    parts = torch.cat([cz.upsample_rows(ab, y0, min(53, y0 + 10), 53, 61) for y0 in range(0, 53, 10)], dim=1)
    torch.testing.assert_close(parts, full, atol=1e-5, rtol=0)

    photo = gray(FLOWERS[2])
    whole = np.asarray(colorizer.colorize(photo))
    monkeypatch.setattr(cz, "STRIP_PIXELS", 1000)  # a few rows per strip
    assert np.abs(np.asarray(colorizer.colorize(photo)).astype(int) - whole).max() <= 1


def test_exif_orientation_is_applied(tmp_path, models_dir):
    upright = gray(FLOWERS[3]).resize((90, 60))
    stored = upright.transpose(Image.Transpose.ROTATE_90)  # what a camera writes with orientation 6
    exif = Image.Exif()
    exif[0x0112] = 6
    src = tmp_path / "in" / "rotated.jpg"
    src.parent.mkdir()
    stored.save(src, quality=100, exif=exif)
    assert main(["colorize", str(src), "-o", str(tmp_path / "out"), "--model", "faces",
                 "--models-dir", str(models_dir), "--no-progress"]) == 0
    out = Image.open(tmp_path / "out" / "rotated.jpg")
    assert out.size == (90, 60)
    assert out.getexif().get(0x0112, 1) == 1  # upright now, nothing left to rotate
    expected = ImageOps.exif_transpose(Image.open(src))
    assert np.abs(lab(out)[..., 0] - lab(expected)[..., 0]).mean() < 1.5  # JPEG noise only


# -- file formats and modes ---------------------------------------------------------

def make_formats(folder: Path) -> dict[str, Image.Image]:
    """Every kind of input file, by name; the value is what the file decodes to."""
    face = Image.open(FACES[730]).convert("RGB")
    g = face.convert("L")
    alpha = Image.linear_gradient("L").resize(face.size)
    made = {
        "rgba.png": Image.merge("RGBA", (g, g, g, alpha)),
        "la.png": Image.merge("LA", (g, alpha)),
        "palette.png": g.convert("P", palette=Image.Palette.ADAPTIVE, colors=64),
        "gray16.png": Image.fromarray((np.asarray(g).astype(np.uint16) * 257 + 100).clip(0, 65535)),
        "gray.tif": g,
        "sub/lossless.webp": g.convert("RGB"),
        "UPPER.JPG": g,
        "odd_size.png": gray(FLOWERS[4]).resize((37, 91)),
    }
    for name, image in made.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        image.save(path, **({"lossless": True} if name.endswith(".webp") else {}))
    (folder / "notes.txt").write_text("not a photo")  # ignored in a folder
    return {name: Image.open(folder / name) for name in made}


def test_every_format_and_mode_keeps_size_format_and_alpha(tmp_path, models_dir):
    inputs = make_formats(tmp_path / "in")
    assert inputs["gray16.png"].mode == "I;16"
    assert main(["colorize", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--model", "faces",
                 "--models-dir", str(models_dir), "--no-progress", "--batch-size", "3"]) == 0
    for name, source in inputs.items():
        out = Image.open(tmp_path / "out" / name)
        assert out.format == source.format, name
        assert out.size == source.size, name
        has_alpha = source.mode in ("RGBA", "LA")
        assert out.mode == ("RGBA" if has_alpha else "RGB"), name
        if has_alpha:
            assert np.array_equal(np.asarray(out.getchannel("A")), np.asarray(source.getchannel("A")))
        if source.format in ("PNG", "TIFF"):  # written losslessly (WebP like JPEG at quality 95)
            assert_lightness_kept(cz.prepare(source).pixels, out)
    assert not (tmp_path / "out" / "notes.txt").exists()


def test_library_api_takes_images_in_memory(colorizer):
    palette = gray(FACES[740]).convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE)
    out = colorizer.colorize(palette)
    assert out.mode == "RGB" and out.size == palette.size
    assert colorizer.size == TRAIN_SIZE and colorizer.name == "faces"


# -- safety: inputs, existing outputs, bad files --------------------------------------

def run_cli(*args: str, models_dir: Path) -> int:
    return main(["colorize", *args, "--model", "faces", "--models-dir", str(models_dir), "--no-progress"])


def test_existing_output_is_kept_without_overwrite(tmp_path, models_dir, capsys):
    src = tmp_path / "face.png"
    gray(FACES[741]).save(src)
    out = tmp_path / "out"
    assert run_cli(str(src), "-o", str(out), models_dir=models_dir) == 0
    (out / "face.png").write_bytes(b"keep me")
    assert run_cli(str(src), "-o", str(out), models_dir=models_dir) == 0
    assert (out / "face.png").read_bytes() == b"keep me"
    assert "skipped 1 (already in" in capsys.readouterr().out
    assert run_cli(str(src), "-o", str(out), "--overwrite", models_dir=models_dir) == 0
    assert Image.open(out / "face.png").size == (128, 128)


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_into_the_same_folder_skips_what_is_done(tmp_path, models_dir, capsys):
    folder, out = tmp_path / "in", tmp_path / "out"
    (folder / "sub").mkdir(parents=True)
    names = ["a.jpg", "b.png", "sub/c.png"]
    for i, name in enumerate(names):
        gray(FACES[710 + i]).save(folder / name)
    assert run_cli(str(folder), "-o", str(out), models_dir=models_dir) == 0
    assert "colorized 3, skipped 0, failed 0" in capsys.readouterr().out
    for path in out.rglob("*.*"):  # an old mtime, so any rewrite would show even on a coarse clock
        os.utime(path, ns=(10**18, 10**18))
    before = snapshot(out)
    assert sorted(before) == names

    assert run_cli(str(folder), "-o", str(out), models_dir=models_dir) == 0
    assert f"colorized 0, skipped 3 (already in {out}; --overwrite to redo them), failed 0" in capsys.readouterr().out
    assert snapshot(out) == before

    # an unreadable new input still fails, next to the skipped ones
    (folder / "garbage.jpg").write_bytes(b"not a jpeg" * 10)
    assert run_cli(str(folder), "-o", str(out), models_dir=models_dir) == 1
    assert "colorized 0, skipped 3 (already in" in capsys.readouterr().err
    assert snapshot(out) == before
    (folder / "garbage.jpg").unlink()

    # --compare adds the missing sheets and leaves the existing outputs alone
    assert run_cli(str(folder), "-o", str(out), "--compare", models_dir=models_dir) == 0
    assert "colorized 3, skipped 0, failed 0" in capsys.readouterr().out
    after = snapshot(out)
    assert {name: after[name] for name in names} == before
    assert sorted(set(after) - set(before)) == ["a_compare.jpg", "b_compare.png", "sub/c_compare.png"]

    assert run_cli(str(folder), "-o", str(out), "--overwrite", models_dir=models_dir) == 0
    assert "colorized 3, skipped 0, failed 0" in capsys.readouterr().out
    rewritten = snapshot(out)
    for name in names:
        assert rewritten[name][1] != before[name][1], name
        assert Image.open(out / name).size == (128, 128)


def test_version(capsys):
    expected = f"colorstudy {importlib.metadata.version('colorstudy')}\n"
    for argv in (["--version"], ["colorize", "--version"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        assert capsys.readouterr().out == expected


def test_help_is_plain_text(capsys):
    for argv in (["--help"], ["colorize", "--help"]):
        with pytest.raises(SystemExit) as exit_:
            main(argv)
        assert exit_.value.code == 0
        text = capsys.readouterr().out
        assert "usage: colorstudy" in text
        assert "``" not in text and "`" not in text and "**" not in text and ":data:" not in text


def test_input_is_never_overwritten(tmp_path, models_dir, capsys):
    src = tmp_path / "face.jpg"
    gray(FACES[742]).save(src)
    before = src.read_bytes()
    assert run_cli(str(src), "-o", str(tmp_path), "--overwrite", models_dir=models_dir) == 1
    assert src.read_bytes() == before
    assert "one of the input photos" in capsys.readouterr().err


def test_corrupt_files_are_skipped_and_reported(tmp_path, models_dir, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    gray(FACES[743]).save(folder / "good.jpg")
    (folder / "garbage.jpg").write_bytes(b"this is not a jpeg" * 10)
    gray(FACES[744]).save(folder / "truncated.png")
    data = (folder / "truncated.png").read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    code = run_cli(str(folder), str(tmp_path / "missing.png"), "-o", str(tmp_path / "out"), models_dir=models_dir)
    err = capsys.readouterr().err
    assert code == 1
    assert (tmp_path / "out" / "good.jpg").is_file()
    assert not (tmp_path / "out" / "garbage.jpg").exists() and not (tmp_path / "out" / "truncated.png").exists()
    assert "colorized 1, skipped 0, failed 3" in err
    for name in ("garbage.jpg", "truncated.png", "missing.png"):
        assert name in err


def test_compare_sheet_shows_the_original_only_for_color_inputs(tmp_path, models_dir):
    gray(FACES[745]).save(tmp_path / "gray.png")
    Image.open(FACES[746]).save(tmp_path / "color.jpg")
    assert run_cli(str(tmp_path / "gray.png"), str(tmp_path / "color.jpg"), "-o", str(tmp_path / "out"),
                   "--compare", models_dir=models_dir) == 0
    assert Image.open(tmp_path / "out" / "gray_compare.png").size == (2 * 128, 128)
    assert Image.open(tmp_path / "out" / "color_compare.jpg").size == (3 * 128, 128)
    assert Image.open(tmp_path / "out" / "color.jpg").size == (128, 128)


def test_globs_and_format_option(tmp_path, models_dir):
    for i in range(2):
        gray(FACES[747 + i]).save(tmp_path / f"face{i}.jpg")
    assert run_cli(str(tmp_path / "face*.jpg"), "-o", str(tmp_path / "out"), "--format", "png",
                   models_dir=models_dir) == 0
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["face0.png", "face1.png"]
    assert Image.open(tmp_path / "out" / "face0.png").format == "PNG"


# -- choosing the model ---------------------------------------------------------------

def test_unknown_model_lists_the_trained_ones(tmp_path, models_dir, capsys):
    gray(FACES[0]).save(tmp_path / "a.jpg")
    assert main(["colorize", str(tmp_path / "a.jpg"), "-o", str(tmp_path / "out"), "--model", "Z",
                 "--models-dir", str(models_dir)]) == 2
    err = capsys.readouterr().err
    assert "'Z'" in err and "faces (seed 0), tiny (seed 0)" in err


def test_incompatible_checkpoint_is_a_clear_error(tmp_path, models_dir):
    torch.manual_seed(0)
    wrong = save_checkpoint(tmp_path / "wrong.pt", "wrong", "unet", {"width": 8, "depth": 5},
                            build_generator("unet", **TINY))
    with pytest.raises(cz.ColorizeError, match=r"(?s)does not fit.*trained models in .*: faces \(seed 0\), tiny \(seed 0\)"):
        cz.load_colorizer(wrong, device="cpu", models_dir=models_dir)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(cz.ColorizeError, match="not a readable checkpoint"):
        cz.load_colorizer(tmp_path / "junk.pt", device="cpu", models_dir=models_dir)


def test_default_model_comes_from_the_ranking(tmp_path, models_dir, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    gray(FACES[1]).save("a.jpg")
    assert main(["colorize", "a.jpg", "-o", "out", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "reports/ranking.json" in err and "dvc repro" in err and "--model" in err

    shutil.copytree(models_dir, "data/models")
    Path("reports").mkdir()
    Path("reports/ranking.json").write_text(json.dumps({"best": "tiny", "ranking": ["tiny", "faces"]}))
    assert main(["colorize", "a.jpg", "-o", "out", "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "model tiny" in err
    assert "tiny (the best model in reports/ranking.json): serving seed 0 of trained seeds 0 (the only trained seed" in err
    assert Image.open("out/a.jpg").size == (128, 128)


def test_size_is_rounded_to_the_model_stride(models_dir):
    assert cz.model_size(70, 32) == 64 and cz.model_size(10, 32) == 32 and cz.model_size(256, 1) == 256
    assert cz.load_colorizer("tiny", device="cpu", models_dir=models_dir, size=100).size == 96
