"""Throughput and peak memory of `colorstudy colorize` on 12-megapixel photos.

    python benchmarks/colorize_speed.py [--photos 3] [--size 256] [--width 64 --depth 8]
                                        [--device cpu] [--threads N] [--batch-size 8]

Makes a few 4000x3000 JPEGs from a real flower photo scaled up (so decoding and the
conversions see photo-like content), as grayscale files and as RGB files holding a
gray photo (how many scanned black-and-white photos are stored), and a randomly
initialized generator (default: the published pix2pix U-Net, 64 wide, 8 levels;
speed does not depend on the weights). Each kind is colorized end to end as the CLI
does, in a child process of its own, so the peak RSS reported is the colorizer's: the
peak during the run (the kernel's high-water mark, restarted just before it) minus
the resident size then (model loaded, warmed up, freed heap returned to the OS), set against the photo's own size (width x height x 3
bytes = 36 MB for 12 MP).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SAMPLE = Path(__file__).resolve().parents[1] / "../shared/datasets/flowers102-subset/image_00001.jpg"
WIDTH, HEIGHT = 4000, 3000
KINDS = ("L", "RGB")  # grayscale JPEGs, RGB JPEGs of a gray photo


def release_free_memory() -> None:
    """Give freed heap back to the OS (glibc), so memory the colorizer reuses counts as its own."""
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _status_kb(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def reset_peak_rss() -> bool:
    """Restart the peak-RSS count at the current size (Linux >= 4.0); False where impossible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def current_rss() -> int:
    kb = _status_kb("VmRSS")
    return kb * 1024 if kb is not None else peak_rss()


def peak_rss() -> int:
    kb = _status_kb("VmHWM")  # the one reset_peak_rss restarts; ru_maxrss cannot be restarted
    return (kb if kb is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def make_photos(folder: Path, count: int) -> None:
    from PIL import Image

    if SAMPLE.is_file():
        base = Image.open(SAMPLE).convert("L").resize((WIDTH, HEIGHT), Image.Resampling.BICUBIC)
    else:  # no shared datasets: a smooth gradient still exercises every step
        base = Image.linear_gradient("L").resize((WIDTH, HEIGHT))
    for kind in KINDS:
        (folder / kind).mkdir()
        for i in range(count):
            base.rotate(180 * (i % 2)).convert(kind).save(folder / kind / f"photo{i}.jpg", quality=95)


def measure(args: argparse.Namespace) -> dict[str, float]:
    import torch
    from PIL import Image

    from colorstudy.checkpoint import Checkpoint
    from colorstudy.colorize import load_colorizer, open_photo
    from colorstudy.colorize_files import colorize_paths, save_image
    from colorstudy.models import build_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    folder, kind = Path(args.folder), args.kind
    torch.manual_seed(0)
    ckpt = folder / f"unet-{kind}.pt"
    Checkpoint(model_id="bench", architecture="unet", arch_kwargs={"width": args.width, "depth": args.depth},
               generator=build_generator("unet", width=args.width, depth=args.depth).state_dict()).save(ckpt)
    colorizer = load_colorizer(ckpt, size=args.size, device=args.device)
    photos = sorted((folder / kind).glob("photo*.jpg"))
    warm = folder / f"warm-{kind}" / "warm.jpg"
    warm.parent.mkdir()
    Image.open(photos[0]).resize((400, 300)).save(warm)
    colorize_paths([warm], folder / f"out-warm-{kind}", colorizer, progress=False)

    # one photo step by step: where the time and the memory go
    steps: dict[str, float] = {}
    release_free_memory()
    exact = reset_peak_rss()
    rss_before = current_rss()

    def step(name: str, start: float) -> None:
        steps[f"{name}_s"] = time.perf_counter() - start
        steps[f"{name}_peak_mb"] = (peak_rss() - rss_before) / 1e6
        release_free_memory()  # what the step freed is not the next step's peak
        reset_peak_rss()

    t = time.perf_counter()
    photo = open_photo(photos[0])
    step("decode", t)
    t = time.perf_counter()
    L_n = colorizer.model_input(photo)
    step("model_input", t)
    t = time.perf_counter()
    ab_n = colorizer.predict(L_n[None])[0]
    step("predict", t)
    t = time.perf_counter()
    rendered = colorizer.render(photo, ab_n)
    step("render", t)
    t = time.perf_counter()
    save_image(rendered.image, folder / f"single-{kind}.jpg")
    step("save", t)
    del photo, rendered

    release_free_memory()
    reset_peak_rss()
    rss_before = current_rss()
    t = time.perf_counter()
    summary = colorize_paths(photos, folder / f"out-{kind}", colorizer, batch_size=args.batch_size, progress=False)
    elapsed = time.perf_counter() - t
    if not summary.ok:
        raise RuntimeError(str(summary))
    megapixels = len(photos) * WIDTH * HEIGHT / 1e6
    return {"photos": len(photos), "megapixels": megapixels, "seconds": elapsed,
            "megapixels_per_s": megapixels / elapsed, "seconds_per_photo": elapsed / len(photos),
            "peak_rss_delta_mb": (peak_rss() - rss_before) / 1e6,
            # without a peak reset the delta also holds whatever peak came before the run
            "upper_bound": not exact,
            "photo_mb": WIDTH * HEIGHT * 3 / 1e6, "model_size": colorizer.size,
            "threads": torch.get_num_threads(), **steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=3)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--width", type=int, default=64)
    parser.add_argument("--depth", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--folder", help=argparse.SUPPRESS)  # set in the child process
    parser.add_argument("--kind", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.folder:
        print(json.dumps(measure(args)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        make_photos(Path(tmp), args.photos)
        results = {}
        for kind in KINDS:
            child = subprocess.run([sys.executable, __file__, *sys.argv[1:], "--folder", tmp, "--kind", kind],
                                   check=True, capture_output=True, text=True)
            results[kind] = json.loads(child.stdout.strip().splitlines()[-1])
    first = results[KINDS[0]]
    print(f"colorize: {first['photos']} photos of {WIDTH}x{HEIGHT} per kind, model at "
          f"{first['model_size']}x{first['model_size']} (unet width {args.width}, depth {args.depth}), "
          f"{args.device}, {first['threads']} threads, batch {args.batch_size}")
    for kind, r in results.items():
        bound = " (upper bounds: no peak reset on this OS)" if r["upper_bound"] else ""
        mb = r["photo_mb"]
        print(f"{kind} JPEG: {r['megapixels_per_s']:.2f} MP/s end to end ({r['seconds_per_photo']:.2f} s per photo), "
              f"peak {r['peak_rss_delta_mb']:.0f} MB above the loaded model{bound}")
        print("  one photo, step by step (time; peak memory during the step above the resident size "
              f"before the photo was decoded = x the photo's {mb:.0f} MB):")
        for name in ("decode", "model_input", "predict", "render", "save"):
            print(f"    {name:<12}{r[name + '_s']:6.2f} s {r[name + '_peak_mb']:6.0f} MB = "
                  f"{r[name + '_peak_mb'] / mb:.1f}x")

if __name__ == "__main__":
    main()
