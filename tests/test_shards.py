"""The preprocess stage end to end: cleaning, splitting, Lab shards and the reader."""

from __future__ import annotations

import io
import json
import os
import subprocess
from collections import Counter
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.ipc as ipc
import pytest
import torch
import yaml
from PIL import Image
from skimage.color import rgb2lab

from colorstudy.config import DataParams, ParamsError
from colorstudy.data.images import DecodedImage, decode_image
from test_images import desaturated, toned
from colorstudy.data import preprocess as preprocess_module
from colorstudy.data.preprocess import preprocess
from colorstudy.data.shards import LabShards
from colorstudy.data.splits import SplitAssigner, hash_split, load_sources
from colorstudy.data.sources import Source, write_sources
from colorstudy.lab import denormalize_ab, denormalize_l

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ROOT.parent / "shared" / "datasets"
FLOWERS = DATASETS / "flowers102-subset"
FACES = DATASETS / "faces"
pytestmark = pytest.mark.skipif(not (FLOWERS.is_dir() and FACES.is_dir()), reason="shared photo sets not present")

PARAMS = DataParams(dataset="flowers102", image_size=64, shard_size=8, val_fraction=0.2, test_fraction=0.2)
N_FLOWERS = 40
CROPS = 3


def flower_files(n: int, start: int = 0) -> list[Path]:
    return sorted(FLOWERS.glob("image_*.jpg"))[start:start + n]


def with_comment(jpeg: bytes) -> bytes:
    """The same JPEG with a comment segment: other bytes, identical pixels."""
    comment = b"copied by someone"
    return jpeg[:2] + b"\xff\xfe" + (len(comment) + 2).to_bytes(2, "big") + comment + jpeg[2:]


def make_raw(root: Path, flowers: list[Path], extra: dict[str, tuple[bytes, str]] | None = None,
             official: bool = True) -> Path:
    """A download-stage folder: the flowers plus ``extra`` {name: (bytes, group)}; returns it."""
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, path in enumerate(flowers):
        (root / path.name).symlink_to(path)
        split = ("train", "val", "test")[i % 3] if official else ""
        rows.append(Source(path.name, path.stem, split, str(i % 5)))
    for name, (data, group) in (extra or {}).items():
        (root / name).write_bytes(data)
        rows.append(Source(name, group, "", "", CROPS if name.startswith("crops") else 1))
    write_sources(root, sorted(rows, key=lambda r: r.path))
    return root


def encode(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("shards")
    flowers = flower_files(N_FLOWERS)
    first = Image.open(flowers[0]).convert("RGB")
    gray_photo = Image.open(flower_files(1, 100)[0]).convert("L")
    near_gray = np.clip(np.asarray(gray_photo.convert("RGB")).astype(int) + [2, 0, -1], 0, 255).astype(np.uint8)
    jpeg = flowers[1].read_bytes()
    colored = np.asarray(Image.open(flower_files(1, 300)[0]).convert("RGB"))
    extra = {
        "bad_empty.jpg": (b"", "bad1"),
        "bad_text.jpg": (b"hello\n" * 100, "bad2"),
        "bad_cut.jpg": (jpeg[: len(jpeg) // 2], "bad3"),
        "bad_tiny.png": (encode(first.resize((20, 20)), "PNG"), "bad4"),
        "gray.jpg": (encode(gray_photo, "JPEG"), "gray1"),
        "near_gray.png": (encode(Image.fromarray(near_gray), "PNG"), "gray2"),
        "zz_copy.jpg": (flowers[0].read_bytes(), "zz_copy"),  # byte-identical copy
        "zz_stripped.jpg": (with_comment(flowers[2].read_bytes()), "zz_stripped"),  # pixel-identical copy
        "crops.jpg": (flower_files(1, 200)[0].read_bytes(), "crops"),
        "sepia.png": (encode(Image.fromarray(toned(colored, 70.0)), "PNG"), "toned1"),
        "faded.png": (encode(Image.fromarray(desaturated(colored, 0.1)), "PNG"), "faded1"),
    }
    raw = make_raw(tmp / "raw", flowers, extra, official=True)
    out = tmp / "out"
    metrics = preprocess(raw, out, PARAMS, workers=2, progress=False)
    return out, metrics


# -- cleaning -------------------------------------------------------------------------

def test_metrics_count_every_file(built):
    out, m = built
    assert m["sources"] == N_FLOWERS + 11
    assert m["rejected"] == {"total": 4, "by_reason": {"empty": 1, "unreadable": 1, "truncated": 1, "too_small": 1}}
    assert m["duplicates_removed"] == 2
    assert m["grayscale_excluded"] >= 2
    assert m["kept"]["total"] == sum(m["kept"][s] for s in ("train", "val", "test"))
    # every crop is either kept or named in rejects.csv
    assert m["monochrome_excluded"] == 1
    assert m["kept"]["total"] + m["grayscale_excluded"] + m["monochrome_excluded"] == N_FLOWERS + CROPS + 4
    assert m["timing"]["seconds"] > 0 and m["timing"]["images_per_s"] > 0


def test_rejects_table_names_reasons(built):
    out, _ = built
    rejects = pd.read_csv(out / "rejects.csv", keep_default_na=False)
    reason = dict(zip(rejects["path"], rejects["reason"]))
    assert reason["bad_empty.jpg"] == "empty"
    assert reason["bad_text.jpg"] == "unreadable"
    assert reason["bad_cut.jpg"] == "truncated"
    assert reason["bad_tiny.png"] == "too_small"
    assert reason["sepia.png"] == "monochrome" and reason["faded.png"] == reason["gray.jpg"] == "grayscale"
    assert "hue spread" in dict(zip(rejects["path"], rejects["detail"]))["sepia.png"]
    assert reason["gray.jpg"] == reason["near_gray.png"] == "grayscale"
    detail = dict(zip(rejects["path"], rejects["detail"]))
    assert reason["zz_copy.jpg"] == reason["zz_stripped.jpg"] == "duplicate"
    assert detail["zz_copy.jpg"] == f"of {flower_files(1)[0].name}"


def test_manifest_and_shard_files(built):
    out, m = built
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert list(manifest.columns) == ["id", "path", "group", "split", "shard", "row", "width", "height",
                                      "colorfulness", "label", "crop"]
    assert len(manifest) == m["kept"]["total"] and manifest["id"].is_unique
    first = manifest.set_index("path").loc[flower_files(1)[0].name]
    assert (first["width"], first["height"]) == Image.open(flower_files(1)[0]).size and first["label"] == "0"
    crops = manifest[manifest["path"] == "crops.jpg"]
    assert sorted(crops["id"]) == [f"crops_c{k}" for k in range(CROPS)] and crops["split"].nunique() == 1
    for name, rows in manifest.groupby("shard"):
        split, index = name.removesuffix(".arrow").split("-")
        assert len(index) == 5 and (rows["split"] == split).all()
        assert sorted(rows["row"]) == list(range(len(rows))) and len(rows) <= PARAMS.shard_size
        reader = ipc.open_file(pa.memory_map(str(out / name)))
        assert reader.schema.field("L").type == pa.list_(pa.float16(), 64 * 64)
        assert reader.schema.field("ab").type == pa.list_(pa.float16(), 2 * 64 * 64)
        assert reader.read_all().column("id").to_pylist() == rows.sort_values("row")["id"].tolist()
    assert not (out / ".staging").exists()


def test_groups_never_in_two_splits(built):
    out, _ = built
    manifest = pd.read_parquet(out / "manifest.parquet")
    assert (manifest.groupby("group")["split"].nunique() == 1).all()
    assert "zz_copy.jpg" not in set(manifest["path"]) and "zz_stripped.jpg" not in set(manifest["path"])


def test_random_split_ignores_the_official_column(built):
    out, _ = built
    manifest = pd.read_parquet(out / "manifest.parquet")
    flowers = manifest[manifest["path"].str.startswith("image_")]
    expected = [hash_split(g, PARAMS.seed, PARAMS.val_fraction, PARAMS.test_fraction) for g in flowers["group"]]
    assert flowers["split"].tolist() == expected
    assert set(manifest["split"]) == {"train", "val", "test"}


def test_same_output_with_any_worker_count(built, tmp_path):
    out, _ = built
    again = tmp_path / "again"
    preprocess(out.parent / "raw", again, PARAMS, workers=0, progress=False)
    manifest = pd.read_parquet(out / "manifest.parquet")
    pd.testing.assert_frame_equal(manifest, pd.read_parquet(again / "manifest.parquet"))
    for shard in manifest["shard"].unique():
        assert (out / shard).read_bytes() == (again / shard).read_bytes()


# -- splits ---------------------------------------------------------------------------

def sources(groups: list[str], split: str = "") -> list[Source]:
    return [Source(f"{g}.jpg", g, split) for g in groups]


def test_hash_split_stable_when_photos_are_added():
    some = sources([f"photo{i}" for i in range(200)])
    more = sources([f"photo{i}" for i in range(0, 400)] + [f"other{i}" for i in range(300)])
    a, b = SplitAssigner(some, PARAMS), SplitAssigner(sorted(more, key=lambda s: s.path), PARAMS)
    assert [a.split_of(s.group) for s in some] == [b.split_of(s.group) for s in some]
    counts = pd.Series([b.split_of(s.group) for s in more]).value_counts(normalize=True)
    assert abs(counts["val"] - 0.2) < 0.05 and abs(counts["test"] - 0.2) < 0.05


def test_max_images_and_split_stability_end_to_end(built, tmp_path):
    out, _ = built
    params = DataParams(**{**PARAMS.__dict__, "max_images": 20})
    m = preprocess(out.parent / "raw", tmp_path / "few", params, workers=0, progress=False)
    assert m["sources"] == 20
    few = pd.read_parquet(tmp_path / "few" / "manifest.parquet").set_index("id")["split"]
    full = pd.read_parquet(out / "manifest.parquet").set_index("id")["split"]
    # a copy whose original was not drawn is no duplicate in the subset: kept there only
    duplicates = pd.read_csv(out / "rejects.csv").query("reason == 'duplicate'")["path"]
    only_here = set(few.index) - set(full.index)
    assert {f"{i}.jpg" for i in only_here} <= set(duplicates)
    common = few.index.intersection(full.index)
    assert len(common) >= 15 and (full.loc[common] == few.loc[common]).all()


def test_max_images_spreads_over_a_folder_laid_out_by_class(tmp_path):
    # 3 classes stored one after the other: the first 30 paths would be class a alone
    rows = sources([f"{c}/img{i:03d}" for c in "abc" for i in range(100)])
    raw = tmp_path / "raw"
    raw.mkdir()
    write_sources(raw, rows)
    kept = load_sources(raw, DataParams(**{**PARAMS.__dict__, "max_images": 30}))
    assert len(kept) == 30 and [r.path for r in kept] == sorted(r.path for r in kept)
    per_class = Counter(r.path[0] for r in kept)
    assert set(per_class) == set("abc") and min(per_class.values()) >= 5, per_class
    # seeded, and the same set on every call
    again = load_sources(raw, DataParams(**{**PARAMS.__dict__, "max_images": 30}))
    assert [r.path for r in again] == [r.path for r in kept]


def test_explicit_split_when_official_or_fixed_by_the_dataset():
    rows = sources(["a", "b", "c"], "test")
    official = DataParams(dataset="flowers102", split="official")
    assert {SplitAssigner(rows, official).split_of(g) for g in "abc"} == {"test"}
    sample = DataParams(dataset="sample", split="random")
    assert {SplitAssigner(rows, sample).split_of(g) for g in "abc"} == {"test"}
    random = DataParams(dataset="flowers102", split="random", test_fraction=0.0)
    assert "test" not in {SplitAssigner(rows, random).split_of(g) for g in "abc"}
    with pytest.raises(ParamsError, match="official"):
        SplitAssigner(sources(["a"]), DataParams(dataset="faces", split="official"))


def test_duplicates_merge_groups_into_the_first_groups_split(tmp_path, monkeypatch):
    # Files of group `late` are written first (sorted paths); then a copy in group `early`
    # (lexicographically first) turns up: the whole merged group must move to early's split.
    params = DataParams(dataset="faces", image_size=32, shard_size=4, val_fraction=0.3, test_fraction=0.3)
    split = lambda g: hash_split(g, params.seed, params.val_fraction, params.test_fraction)  # noqa: E731
    late = next(f"late{i}" for i in range(100) if split(f"late{i}") != split("early"))
    f0, f1, f2 = flower_files(3, 300)
    extra = {"a1.jpg": (f0.read_bytes(), late), "a2.jpg": (f1.read_bytes(), late),
             "b_copy.jpg": (f0.read_bytes(), "early"), "c.jpg": (f2.read_bytes(), "zz")}
    raw = make_raw(tmp_path / "raw", [], extra)
    rebuilds = []
    original_rebuild = preprocess_module._rebuild
    monkeypatch.setattr(preprocess_module, "_rebuild", lambda *a: rebuilds.append(1) or original_rebuild(*a))
    m = preprocess(raw, tmp_path / "out", params, workers=0, progress=False)
    assert rebuilds == [1]  # the rare path that rewrites staged shards ran
    assert m["duplicates_removed"] == 1 and m["kept"]["total"] == 3
    manifest = pd.read_parquet(tmp_path / "out" / "manifest.parquet").set_index("path")
    assert manifest.loc["a1.jpg", "split"] == manifest.loc["a2.jpg", "split"] == split("early")
    shards = LabShards(tmp_path / "out")
    for name in ("train", "val", "test"):
        L, ab = shards.split(name)  # raises if the rewritten shards disagree with the manifest
        assert L.shape == (len(shards.rows(name)), 1, 32, 32) and ab.shape == (len(L), 2, 32, 32)  # may be 0


# -- Lab storage and the reader ---------------------------------------------------------

def test_lab_round_trip_against_skimage_float64(tmp_path):
    faces = sorted(FACES.glob("*.jpg"))[:6]
    flowers = flower_files(6, 500)
    raw = tmp_path / "raw"
    raw.mkdir()
    rows = []
    for path in faces + flowers:
        name = f"{path.parent.name}_{path.name}"
        (raw / name).symlink_to(path)
        rows.append(Source(name, name))
    write_sources(raw, sorted(rows, key=lambda r: r.path))
    params = DataParams(dataset="folder", path=str(raw), image_size=128, val_fraction=0.0, test_fraction=0.0)
    preprocess(raw, tmp_path / "out", params, workers=0, progress=False)
    shards = LabShards(tmp_path / "out")
    L, ab = shards.split("train")
    stored = torch.cat([denormalize_l(L), denormalize_ab(ab)], dim=1).permute(0, 2, 3, 1).numpy()
    worst = 0.0
    for i, row in shards.rows("train").iterrows():
        decoded = decode_image(raw / row["path"], image_size=128, min_side=32, max_pixels=10**8)
        assert isinstance(decoded, DecodedImage)
        if row["path"].startswith("faces_"):  # 128x128 files: stored as decoded, no resampling
            assert np.array_equal(decoded.crops[0], np.asarray(Image.open(raw / row["path"]).convert("RGB")))
        reference = rgb2lab(decoded.crops[0].astype(np.float64) / 255.0)
        worst = max(worst, float(np.abs(stored[i] - reference).max()))
    assert len(stored) >= 10
    # float16 storage: at most half a step (0.03125) at |value| < 128, plus float32 arithmetic
    assert worst <= 0.0625, worst


def test_reader_shapes_and_normalization(built):
    out, m = built
    shards = LabShards(out)
    assert shards.image_size == 64 and len(shards) == m["kept"]["total"]
    for split in ("train", "val", "test"):
        L, ab = shards.split(split, device="cpu")
        n = m["kept"][split]
        assert L.shape == (n, 1, 64, 64) and ab.shape == (n, 2, 64, 64)
        assert L.dtype == ab.dtype == torch.float32
        assert L.min() >= -1 and L.max() <= 1 and ab.abs().max() <= 1
        assert L.std() > 0.1 and ab.abs().mean() > 0.02  # real photos, not zeros
        rows = shards.rows(split)
        assert len(rows) == n
        assert list(zip(rows["shard"], rows["row"])) == sorted(zip(rows["shard"], rows["row"]))
    with pytest.raises(ValueError):
        shards.rows("holdout")


# -- the stage script -------------------------------------------------------------------

def test_stage_script(tmp_path):
    raw = make_raw(tmp_path / "raw", flower_files(8, 700), official=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(
        {"data": {"dataset": "flowers102", "image_size": 32, "max_images": 6, "val_fraction": 0.2,
                  "test_fraction": 0.2}}))
    out = tmp_path / "data" / "shards"
    out.mkdir(parents=True)
    (out / "keep.txt").write_text("not ours")
    (out / "train-00099.arrow").write_text("stale")
    result = subprocess.run([sys.executable, str(ROOT / "stages" / "preprocess.py"), str(raw), str(out),
                             "reports/preprocess.json"], cwd=tmp_path, capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "reports" / "preprocess.json").read_text())
    assert metrics["sources"] == 6 and metrics["kept"]["total"] + metrics["grayscale_excluded"] == 6
    assert (out / "keep.txt").exists() and not (out / "train-00099.arrow").exists()
    assert (out / "rejects.csv").exists() and (out / "manifest.parquet").exists()
