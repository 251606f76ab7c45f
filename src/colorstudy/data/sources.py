"""The dataset registry: each source puts raw photos in a folder and lists them in ``sources.csv``.

``sources.csv`` columns (one row per image file, sorted by path):

* ``path``  -- the file, relative to the folder holding ``sources.csv`` (POSIX separators)
* ``group`` -- the source photo; rows sharing a group (crops, a stereo pair) stay in one split
* ``split`` -- ``train``/``val``/``test`` where the source fixes it, else empty
* ``label`` -- the class where the source has one, else empty
* ``crops`` -- how many crops the preprocess stage takes from this photo (1 normally)

Every source writes its photos under ``<out>/<dataset name>/``.
"""

from __future__ import annotations

import csv
import dataclasses
import os
import shutil
from collections import Counter
from collections.abc import Callable, Iterable
from importlib.resources import files
from pathlib import Path, PurePosixPath

import numpy as np

from colorstudy.config import DataParams, ParamsError
from colorstudy.data.download import RemoteFile, extract, fetch

SOURCES_CSV = "sources.csv"
COLUMNS = ("path", "group", "split", "label", "crops")
SPLITS = ("train", "val", "test")
IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"})


class SourceError(RuntimeError):
    """A source's photos are missing or not what was published; the message names the fix."""


@dataclasses.dataclass(frozen=True)
class Source:
    """One row of ``sources.csv``."""

    path: str
    group: str
    split: str = ""
    label: str = ""
    crops: int = 1


Builder = Callable[[Path, DataParams], list[Source]]


def write_sources(folder: Path, rows: Iterable[Source]) -> Path:
    path = Path(folder) / SOURCES_CSV
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(dataclasses.asdict(r) for r in rows)
    return path


def read_sources(folder: Path) -> list[Source]:
    """The rows of ``<folder>/sources.csv``, as written by the download stage."""
    with open(Path(folder) / SOURCES_CSV, newline="") as f:
        return [Source(path=r["path"], group=r["group"], split=r["split"], label=r["label"],
                       crops=int(r["crops"])) for r in csv.DictReader(f)]


def _copy_in(out: Path, src: Path, rel: str) -> str:
    dst = out / rel
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)  # content only: DVC hashes content, and mode bits of the source don't matter
    return rel


def _listed(out: Path, folder: str) -> list[Source]:
    """One row per image under ``out/folder``, grouped by file stem (ids are unique in these sets)."""
    return [Source(path=p.relative_to(out).as_posix(), group=p.stem) for p in _images_under(out / folder)]


def _images_under(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".")]  # .git, .DS_Store folders, our temp dirs
        found += [Path(folder, n) for n in names
                  if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS]
    return sorted(found)


# -- sample: the color photos shipped inside installed packages -----------------------

SAMPLE_CROPS = 48  # 8 photos: each gives this many crops so the splits have enough images
# file -> (group, split): the natural color photos that ship inside installed packages
# (scikit-image, matplotlib, scikit-learn), the only ones a fresh offline machine has.
# With 8 photos a hash split would be lumpy (maybe an empty test split), so the split is
# fixed: two unlike photos for test (an animal, a still life), two for val (an outdoor
# scene, a flower close-up: not one low-chroma photo), the rest for train (two portraits,
# the motorcycle stereo pair as ONE group, a temple landscape). Left out: grayscale files
# (camera, brick, ...), synthetic ones (color wheel, phantom, chessboard) and scientific
# imagery (a micrograph, a fundus photo, a deep-field telescope image), which teach
# colors no photo of the world has.
SAMPLE_PHOTOS: tuple[tuple[str, str, str, str], ...] = (  # package, folder, file, (group, split) below
    ("skimage", "data", "astronaut.png", "astronaut:train"),
    ("skimage", "data", "chelsea.png", "chelsea:test"),
    ("skimage", "data", "coffee.png", "coffee:test"),
    ("skimage", "data", "motorcycle_left.png", "motorcycle:train"),
    ("skimage", "data", "motorcycle_right.png", "motorcycle:train"),
    ("skimage", "data", "rocket.jpg", "rocket:val"),
    ("matplotlib", "mpl-data/sample_data", "grace_hopper.jpg", "grace_hopper:train"),
    ("sklearn", "datasets/images", "china.jpg", "china:train"),
    ("sklearn", "datasets/images", "flower.jpg", "flower:val"),
)
PIP_NAMES = {"skimage": "scikit-image", "sklearn": "scikit-learn", "matplotlib": "matplotlib"}


def _sample(out: Path, params: DataParams) -> list[Source]:
    rows = []
    for package, folder, name, where in SAMPLE_PHOTOS:
        group, split = where.split(":")
        src = Path(str(files(package).joinpath(folder, name)))
        if not src.is_file():
            raise SourceError(f"dataset `sample`: {src} is missing from the installed {PIP_NAMES[package]}; "
                              f"reinstall it (pip install --force-reinstall {PIP_NAMES[package]}) "
                              f"from requirements.txt")
        rows.append(Source(_copy_in(out, src, f"sample/{name}"), group, split, crops=SAMPLE_CROPS))
    return rows


# -- folder: any tree of photos --------------------------------------------------------

def _folder(out: Path, params: DataParams) -> list[Source]:
    root = Path(params.path or "").expanduser()
    if not root.is_dir():
        raise ParamsError(f"data.path: {params.path!r} is not a folder; set it to the folder of photos")
    labels: dict[str, str] = {}
    if (root / "labels.csv").is_file():  # optional: first column a relative path, second its label
        with open(root / "labels.csv", newline="") as f:
            labels = {row[0]: row[1] for row in list(csv.reader(f))[1:] if len(row) >= 2}
    rows = []
    for src in _images_under(root):
        rel = src.relative_to(root).as_posix()
        # the relative path is the photo's identity: exact duplicates under other names
        # are found by content in the preprocess stage
        rows.append(Source(_copy_in(out, src, f"folder/{rel}"), str(PurePosixPath(rel).with_suffix("")),
                           label=labels.get(rel, "")))
    if not rows:
        raise SourceError(f"data.path {params.path!r} holds no photos "
                          f"({', '.join(sorted(IMAGE_EXTENSIONS))}); point it at a folder of photos")
    return rows


# -- flowers102: the official Oxford archive -------------------------------------------

# MD5s as published with the data set (and used by torchvision.datasets.Flowers102)
_FLOWERS_BASE = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
FLOWERS102: dict[str, RemoteFile] = {
    "images": RemoteFile(_FLOWERS_BASE + "102flowers.tgz", md5="52808999861908f626f3c1f4e79d11fa"),
    "labels": RemoteFile(_FLOWERS_BASE + "imagelabels.mat", md5="e0620be6f572b9609742df49c70aed4d"),
    "setid": RemoteFile(_FLOWERS_BASE + "setid.mat", md5="a5357ecc9cb78c4bef273ce3793fc85c"),
}
_FLOWERS_SPLITS = {"trnid": "train", "valid": "val", "tstid": "test"}


def _flowers102(out: Path, params: DataParams) -> list[Source]:
    from scipy.io import loadmat  # scipy is slow to import and only this source needs it

    local = {key: fetch(remote, mirror=params.mirror) for key, remote in FLOWERS102.items()}
    extract(local["images"], out / "flowers102")
    labels = np.atleast_1d(loadmat(local["labels"], squeeze_me=True)["labels"]).tolist()
    setid = loadmat(local["setid"], squeeze_me=True)
    split_of = {int(i): split for key, split in _FLOWERS_SPLITS.items() for i in np.atleast_1d(setid[key])}
    rows = []
    for image_id, label in enumerate(labels, start=1):  # image ids are 1-based positions in labels
        rel = f"flowers102/jpg/image_{image_id:05d}.jpg"
        if not (out / rel).is_file():
            raise SourceError(f"{FLOWERS102['images'].filename} lacks {rel.split('/', 1)[1]} listed in "
                              "imagelabels.mat; delete the cached archive and download it again")
        rows.append(Source(rel, f"image_{image_id:05d}", split_of.get(image_id, ""), str(label)))
    return rows


# -- faces: the DeepColorization face set ----------------------------------------------

# The 750 photos live in face_images/ of this repository; GitHub builds the zip on
# request, so its bytes (and any checksum) are not stable and none is published:
# the photo count is verified instead. Unverifiable offline; a mirror needs a file
# named DeepColorization-master.zip (any zip with face_images/*.jpg inside).
FACES = RemoteFile("https://github.com/2014mchidamb/DeepColorization/archive/refs/heads/master.zip",
                   name="DeepColorization-master.zip")
FACES_COUNT = 750


def _faces(out: Path, params: DataParams) -> list[Source]:
    archive = fetch(FACES, mirror=params.mirror)
    unpacked = extract(archive, out / ".faces-archive")
    photos = [p for p in _images_under(unpacked) if p.parent.name == "face_images"]
    if len(photos) != FACES_COUNT:
        archive.unlink()  # unverified by checksum: drop it so the next run fetches a fresh copy
        raise SourceError(f"{FACES.filename}: expected {FACES_COUNT} photos in face_images/, found "
                          f"{len(photos)}; the cached archive was deleted, run again (or fix the mirror's copy)")
    (out / "faces").mkdir()
    for p in photos:
        os.replace(p, out / "faces" / p.name)
    shutil.rmtree(unpacked)
    return _listed(out, "faces")


# -- coco2017-val: the COCO 2017 validation images -------------------------------------

COCO2017_VAL = RemoteFile("http://images.cocodataset.org/zips/val2017.zip", md5="442b8da7639aecaf257c1dceb8ba8c80")


def _coco2017_val(out: Path, params: DataParams) -> list[Source]:
    extract(fetch(COCO2017_VAL, mirror=params.mirror), out / "coco2017-val")
    return _listed(out, "coco2017-val")


SOURCES: dict[str, Builder] = {
    "sample": _sample,
    "folder": _folder,
    "flowers102": _flowers102,
    "faces": _faces,
    "coco2017-val": _coco2017_val,
}


def get_source(name: str) -> Builder:
    try:
        return SOURCES[name]
    except KeyError:
        raise ParamsError(f"data.dataset: unknown dataset {name!r}; valid names are {sorted(SOURCES)}") from None


def _check(out: Path, rows: list[Source], name: str) -> None:
    paths = [r.path for r in rows]
    dupes = sorted(p for p, n in Counter(paths).items() if n > 1)
    bad = [r for r in rows if r.split not in ("", *SPLITS) or r.crops < 1 or not (out / r.path).is_file()]
    if not rows or dupes or bad:
        raise SourceError(f"dataset {name!r} produced a bad listing (rows={len(rows)}, duplicate paths "
                          f"{dupes[:3]}, bad rows {bad[:3]}); this is a bug in colorstudy.data.sources")


def materialize(out: Path, params: DataParams) -> list[Source]:
    """Recreate ``out`` with the photos of ``params.dataset`` and ``out/sources.csv``.

    Built in a hidden sibling folder and renamed into place, so a failed run leaves
    the previous ``out`` (or none), never a half-filled one.
    """
    builder = get_source(params.dataset)
    out = Path(out)
    if params.dataset == "folder" and params.path:
        a, b = out.resolve(), Path(params.path).expanduser().resolve()
        if a.is_relative_to(b) or b.is_relative_to(a):
            raise ParamsError(f"data.path {params.path!r} overlaps the output folder {str(out)!r}; "
                              "keep the photos outside it")
    tmp, old = out.with_name(f".{out.name}.partial"), out.with_name(f".{out.name}.old")
    for leftover in (tmp, old):
        shutil.rmtree(leftover, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        rows = sorted(builder(tmp, params), key=lambda r: r.path)
        _check(tmp, rows, params.dataset)
        write_sources(tmp, rows)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return rows
