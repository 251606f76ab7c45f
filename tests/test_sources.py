"""The dataset registry: every source, the sources.csv contract, atomic output."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import shutil
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import scipy.io
from PIL import Image

from colorstudy.config import DataParams, ParamsError
from colorstudy.data import sources
from colorstudy.data.download import DownloadError, RemoteFile
from colorstudy.data.sources import (COLUMNS, SOURCES, Source, SourceError, materialize,
                                     read_sources)

ROOT = Path(__file__).resolve().parents[1]
FACES_DIR = ROOT.parent / "shared" / "datasets" / "faces"


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COLORSTUDY_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("COLORSTUDY_MIRROR", raising=False)


def jpeg(color: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), color).save(buf, "JPEG")
    return buf.getvalue()


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def csv_rows(out: Path) -> list[dict[str, str]]:
    with open(out / "sources.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_registry_names_and_unknown_name():
    assert set(SOURCES) == {"sample", "folder", "flowers102", "faces", "coco2017-val"}
    with pytest.raises(ParamsError, match=r"unknown dataset 'nope'.*'coco2017-val'.*'sample'"):
        materialize(Path("unused"), DataParams(dataset="nope"))


def test_sample_is_offline_fixed_split_and_idempotent(tmp_path):
    out = tmp_path / "data" / "raw"
    rows = materialize(out, DataParams())
    assert read_sources(out) == rows
    assert [r.path for r in rows] == sorted(r.path for r in rows)
    assert {r.group for r in rows} >= {"astronaut", "chelsea", "coffee", "grace_hopper", "motorcycle"}
    assert {r.path for r in rows if r.group == "motorcycle"} == {"sample/motorcycle_left.png",
                                                                 "sample/motorcycle_right.png"}
    by_split = {s: sorted({r.group for r in rows if r.split == s}) for s in ("train", "val", "test")}
    assert by_split == {"train": ["astronaut", "china", "grace_hopper", "motorcycle"], "val": ["flower", "rocket"],
                        "test": ["chelsea", "coffee"]}
    assert all(r.crops > 1 and r.label == "" for r in rows)
    for r in rows:  # every sample photo is a real color photo
        with Image.open(out / r.path) as im:
            a = np.asarray(im.convert("RGB"), dtype=np.int16)
        assert np.abs(a[..., 0] - a[..., 1]).mean() > 2, r.path
    before = (out / "sources.csv").read_bytes()
    (out / "stray.txt").write_text("left by hand")
    materialize(out, DataParams())
    assert (out / "sources.csv").read_bytes() == before and not (out / "stray.txt").exists()
    assert sorted(p.name for p in out.parent.iterdir()) == ["raw"]  # no temp siblings left


def test_stage_script_writes_the_output(tmp_path):
    shutil.copy(ROOT / "params.yaml", tmp_path / "params.yaml")
    done = subprocess.run([sys.executable, str(ROOT / "stages" / "download.py"), "data/raw"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "sample: 9 files" in done.stdout
    assert len(csv_rows(tmp_path / "data" / "raw")) == 9


def test_folder_copies_tree_with_labels(tmp_path):
    root = tmp_path / "photos"
    (root / "sub").mkdir(parents=True)
    (root / "a.jpg").write_bytes(jpeg())
    (root / "sub" / "b.JPEG").write_bytes(jpeg((10, 200, 30)))
    (root / "sub" / "c.png").write_bytes(jpeg())
    (root / "notes.txt").write_text("not a photo")
    (root / ".hidden.jpg").write_bytes(jpeg())
    (root / "labels.csv").write_text("file,class_id\na.jpg,3\nsub/b.JPEG,7\n")
    out = tmp_path / "raw"
    rows = materialize(out, DataParams(dataset="folder", path=str(root)))
    assert rows == [Source("folder/a.jpg", "a", label="3"), Source("folder/sub/b.JPEG", "sub/b", label="7"),
                    Source("folder/sub/c.png", "sub/c")]
    assert (out / "folder/sub/b.JPEG").read_bytes() == (root / "sub/b.JPEG").read_bytes()
    assert csv_rows(out)[1] == {"path": "folder/sub/b.JPEG", "group": "sub/b", "split": "",
                                "label": "7", "crops": "1"}


@pytest.mark.skipif(not FACES_DIR.is_dir(), reason="shared face photos not present")
def test_folder_on_the_shared_faces(tmp_path):
    rows = materialize(tmp_path / "raw", DataParams(dataset="folder", path=str(FACES_DIR)))
    assert len(rows) == 750 and len({r.group for r in rows}) == 750
    assert rows[0] == Source("folder/image00000.jpg", "image00000")


def test_folder_errors(tmp_path):
    with pytest.raises(ParamsError, match="not a folder"):
        materialize(tmp_path / "raw", DataParams(dataset="folder", path=str(tmp_path / "nope")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no photos"):
        materialize(tmp_path / "raw", DataParams(dataset="folder", path=str(tmp_path / "empty")))
    with pytest.raises(ParamsError, match="overlaps the output folder"):
        materialize(tmp_path / "empty" / "raw", DataParams(dataset="folder", path=str(tmp_path / "empty")))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["empty"]


def make_flowers_mirror(mirror: Path, monkeypatch) -> None:
    """A 6-photo stand-in for the Oxford archive, its .mat files, and their MD5s patched in."""
    mirror.mkdir()
    with tarfile.open(mirror / "102flowers.tgz", "w:gz") as tar:
        for i in range(1, 7):
            data = jpeg((40 * i, 100, 20))
            info = tarfile.TarInfo(f"jpg/image_{i:05d}.jpg")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    scipy.io.savemat(mirror / "imagelabels.mat", {"labels": np.array([[77, 77, 5, 5, 102, 1]])})
    scipy.io.savemat(mirror / "setid.mat", {"trnid": np.array([[1, 3]]), "valid": np.array([[2, 4]]),
                                             "tstid": np.array([[5, 6]])})
    for key, remote in sources.FLOWERS102.items():
        monkeypatch.setitem(sources.FLOWERS102, key,
                            dataclasses.replace(remote, md5=md5(mirror / remote.filename)))


def test_flowers102_from_a_mirror(tmp_path, monkeypatch):
    make_flowers_mirror(tmp_path / "mirror", monkeypatch)
    rows = materialize(tmp_path / "raw", DataParams(dataset="flowers102", mirror=str(tmp_path / "mirror")))
    assert [(r.path, r.group, r.split, r.label) for r in rows[:2]] == [
        ("flowers102/jpg/image_00001.jpg", "image_00001", "train", "77"),
        ("flowers102/jpg/image_00002.jpg", "image_00002", "val", "77")]
    assert [r.split for r in rows] == ["train", "val", "train", "val", "test", "test"]
    assert [r.label for r in rows] == ["77", "77", "5", "5", "102", "1"]
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["102flowers.tgz", "imagelabels.mat",
                                                                      "setid.mat"]


def test_failed_download_keeps_the_previous_output(tmp_path, monkeypatch):
    out = tmp_path / "raw"
    materialize(out, DataParams())
    make_flowers_mirror(tmp_path / "mirror", monkeypatch)
    monkeypatch.setitem(sources.FLOWERS102, "images", dataclasses.replace(sources.FLOWERS102["images"],
                                                                          md5="f" * 32))
    with pytest.raises(DownloadError, match=r"checksum mismatch for 102flowers\.tgz.*expected f{32}"):
        materialize(out, DataParams(dataset="flowers102", mirror=(tmp_path / "mirror").as_uri()))
    assert len(csv_rows(out)) == 9  # still the sample set
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache", "mirror", "raw"]
    assert not (tmp_path / "cache" / "102flowers.tgz").exists()


def make_faces_zip(path: Path, n: int) -> None:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("DeepColorization-master/deep_colorization.py", "print('hi')\n")
        for i in range(n):
            z.writestr(f"DeepColorization-master/face_images/image{i:05d}.jpg", jpeg((i * 40, 90, 90)))


def test_faces_from_a_mirror_checks_the_count(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "FACES_COUNT", 5)
    (tmp_path / "mirror").mkdir()
    make_faces_zip(tmp_path / "mirror" / sources.FACES.filename, 5)
    monkeypatch.setenv("COLORSTUDY_MIRROR", str(tmp_path / "mirror"))
    rows = materialize(tmp_path / "raw", DataParams(dataset="faces"))
    assert [r.path for r in rows] == [f"faces/image{i:05d}.jpg" for i in range(5)]
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["faces", "sources.csv"]
    make_faces_zip(tmp_path / "mirror" / sources.FACES.filename, 4)
    (tmp_path / "cache" / sources.FACES.filename).unlink()
    with pytest.raises(SourceError, match="expected 5 photos in face_images/, found 4"):
        materialize(tmp_path / "raw2", DataParams(dataset="faces"))
    assert not (tmp_path / "cache" / sources.FACES.filename).exists() and not (tmp_path / "raw2").exists()


def test_coco2017_val_from_a_file_url_mirror(tmp_path, monkeypatch):
    (tmp_path / "mirror").mkdir()
    with zipfile.ZipFile(tmp_path / "mirror" / "val2017.zip", "w") as z:
        for name in ("000000000139.jpg", "000000000285.jpg"):
            z.writestr(f"val2017/{name}", jpeg())
    monkeypatch.setattr(sources, "COCO2017_VAL",
                        RemoteFile(sources.COCO2017_VAL.url, md5=md5(tmp_path / "mirror" / "val2017.zip")))
    rows = materialize(tmp_path / "raw", DataParams(dataset="coco2017-val", mirror=(tmp_path / "mirror").as_uri()))
    assert rows == [Source("coco2017-val/val2017/000000000139.jpg", "000000000139"),
                    Source("coco2017-val/val2017/000000000285.jpg", "000000000285")]
