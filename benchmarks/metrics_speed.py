"""Speed and agreement of the batched torch metrics against per-image scikit-image loops.

    python benchmarks/metrics_speed.py [--images 64] [--size 256] [--repeats 3] [--threads 2]
        [--only {all,kernels,eval}] [--eval-sizes 64,256] [--eval-images 64] [--eval-threads N]
        [--fid-weights {none,random,imagenet}]

Real photos (the shared Oxford Flowers subset, center crops), "predictions" made by
shrinking and shifting their ab (what a washed-out colorizer does). Compares:

* CIEDE2000 from Lab: ``metrics`` kernel on the whole batch vs a loop of
  ``skimage.color.deltaE_ciede2000`` per image (the requirement: >= 10x, |diff| <= 1e-3);
* CIEDE2000 from sRGB (Lab conversion included) vs ``rgb2lab`` + ``deltaE_ciede2000``;
* the whole per-image metric set vs a per-image loop of every metric with a reference
  (skimage rgb2lab, deltaE_ciede2000, deltaE_cie76, structural_similarity,
  peak_signal_noise_ratio; numpy MSE/MAE/colorfulness), LPIPS timed on its own.

* the whole evaluation set, per image, as the evaluate stage computes it (``--eval-sizes``,
  default 64 px, the default study's size, and 256 px): ``colorstudy.evaluate.score_batch``
  in batches of ``evaluate.batch_size`` (PSNR, SSIM, MSE/MAE, CIEDE2000, ΔE76,
  colorfulness, LPIPS, FID features of the predictions) vs a reference loop, one image at a
  time: skimage metrics, the ``lpips`` package's LPIPS and pytorch-fid's ``InceptionV3``
  (the same random weights, built offline), both at ``evaluate.num_threads`` (params.yaml).
  FID features are of the predictions only on both sides: the ground truth's are computed
  once per study (evaluate_baseline) and reused by every model; a second reference line
  adds them, as one pytorch-fid run per model would. ``--fid-weights`` (default: params.yaml
  ``evaluate.fid_weights``) ``none`` leaves FID out on both sides, as the evaluate stage
  does then. Below each size: the time of LPIPS and of the FID features alone, and their
  share of ``score_batch``'s.

Times are the best of ``--repeats`` runs (the machine may be shared); torch.compile's
one-time compilation is timed separately as warm-up.

    python benchmarks/metrics_speed.py --only eval        # the whole-evaluation comparison alone
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

FLOWERS = Path(__file__).resolve().parents[1] / "../shared/datasets/flowers102-subset"


def load_photos(count: int, size: int) -> np.ndarray:
    from PIL import Image

    paths = sorted(FLOWERS.glob("*.jpg"))[:count]
    if len(paths) < count:
        raise SystemExit(f"need {count} photos in {FLOWERS}, found {len(paths)}")
    out = []
    for path in paths:
        with Image.open(path) as im:
            im = im.convert("RGB")
            scale = size / min(im.size)
            im = im.resize((max(size, round(im.width * scale)), max(size, round(im.height * scale))),
                           Image.Resampling.BICUBIC)
            left, top = (im.width - size) // 2, (im.height - size) // 2
            out.append(np.asarray(im.crop((left, top, left + size, top + size))))
    return np.stack(out)


def best_of(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return min(times), result


def numpy_colorfulness(rgb01: np.ndarray) -> float:
    x = rgb01.astype(np.float64) * 255.0
    rg = np.abs(x[..., 0] - x[..., 1])
    yb = np.abs(0.5 * (x[..., 0] + x[..., 1]) - x[..., 2])
    return float(np.sqrt(rg.var() + yb.var()) + 0.3 * np.sqrt(rg.mean() ** 2 + yb.mean() ** 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", choices=("all", "kernels", "eval"), default="all")
    parser.add_argument("--eval-sizes", default="64,256", help="photo sizes of the whole-evaluation comparison")
    parser.add_argument("--eval-images", type=int, default=64)
    parser.add_argument("--eval-threads", type=int, default=None,
                        help="threads of the whole-evaluation comparison (default: params.yaml evaluate.num_threads)")
    parser.add_argument("--fid-weights", choices=("none", "random", "imagenet"), default=None,
                        help="FID Inception of the whole-evaluation comparison (default: params.yaml "
                             "evaluate.fid_weights; none: no FID)")
    args = parser.parse_args()
    if args.only in ("all", "kernels"):
        kernels(args)
    if args.only in ("all", "eval"):
        whole_evaluation(args)


def kernels(args: argparse.Namespace) -> None:
    import torch

    import colorstudy  # noqa: F401  (torchvision shim before lpips)
    from colorstudy import color_difference, lab, metric_nets, metrics
    from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    torch.set_num_threads(args.threads)
    photos = load_photos(args.images, args.size)
    target = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255.0
    lab_true = lab.rgb_to_lab(target)
    shift = torch.tensor([4.0, -3.0]).view(1, 2, 1, 1)
    pred = lab.lab_to_rgb(torch.cat((lab_true[:, :1], 0.7 * lab_true[:, 1:] + shift), dim=1))
    lab_pred = lab.rgb_to_lab(pred)
    pred_np = pred.permute(0, 2, 3, 1).double().numpy()
    target_np = photos.astype(np.float64) / 255.0
    pred_u8 = lab.to_uint8(pred.permute(0, 2, 3, 1))
    n, pixels = args.images, args.images * args.size**2
    print(f"{n} flower photos at {args.size}x{args.size} ({pixels / 1e6:.1f} Mpixel), "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeats}")

    # The library's CIEDE2000, alone: compiled on CPU the way metrics compiles it.
    mean_de2000 = metrics._CompiledOnCPU(lambda lab1, lab2: color_difference.delta_e2000(lab1, lab2).mean(dim=(-2, -1)))
    mean_de2000_rgb = metrics._CompiledOnCPU(
        lambda p, t: color_difference.delta_e2000(lab.rgb_to_lab(t), lab.rgb_to_lab(p)).mean(dim=(-2, -1)))

    # -- warm-up: torch.compile builds its kernels once per process ------------------
    start = time.perf_counter()
    mean_de2000(lab_true, lab_pred)
    mean_de2000_rgb(pred, target)
    metrics.per_image_metrics(pred, target)
    print(f"warm-up (torch.compile, once per process): {time.perf_counter() - start:.1f} s")

    # -- CIEDE2000 from Lab ------------------------------------------------------------
    sk_lab_true = [rgb2lab(t) for t in target_np]
    sk_lab_pred = [rgb2lab(p) for p in pred_np]
    t_sk, sk_de = best_of(lambda: [deltaE_ciede2000(t, p) for t, p in zip(sk_lab_true, sk_lab_pred)], args.repeats)
    t_ours, ours_mean = best_of(lambda: mean_de2000(lab_true, lab_pred), args.repeats)
    per_pixel = color_difference.delta_e2000(lab_true, lab_pred).numpy()
    sk_de = np.stack(sk_de)
    print("\nCIEDE2000 from Lab (all pixels)")
    print(f"  skimage deltaE_ciede2000, loop over images: {t_sk:7.3f} s")
    print(f"  colorstudy.metrics, one batch:              {t_ours:7.3f} s   speedup {t_sk / t_ours:5.1f}x")
    same_lab = np.stack([deltaE_ciede2000(t.permute(1, 2, 0).double().numpy(), p.permute(1, 2, 0).double().numpy())
                         for t, p in zip(lab_true, lab_pred)])
    print(f"  max |diff| per pixel, same Lab in (float32 vs float64): {np.abs(per_pixel - same_lab).max():.2e}")
    print(f"  max |diff| per pixel vs skimage's own float64 rgb2lab:  {np.abs(per_pixel - sk_de).max():.2e}")
    print(f"  max |diff| per-image mean vs skimage rgb2lab:           "
          f"{np.abs(ours_mean.numpy() - sk_de.mean(axis=(1, 2))).max():.2e}")

    # -- CIEDE2000 from sRGB -----------------------------------------------------------
    t_sk_rgb, _ = best_of(lambda: [deltaE_ciede2000(rgb2lab(t), rgb2lab(p)) for t, p in zip(target_np, pred_np)],
                          args.repeats)
    t_ours_rgb, _ = best_of(lambda: mean_de2000_rgb(pred, target), args.repeats)
    print("\nCIEDE2000 from sRGB (Lab conversion included)")
    print(f"  skimage rgb2lab + deltaE_ciede2000, loop: {t_sk_rgb:7.3f} s")
    print(f"  colorstudy.metrics, one batch:            {t_ours_rgb:7.3f} s   speedup {t_sk_rgb / t_ours_rgb:5.1f}x")

    # -- the whole per-image set -----------------------------------------------------
    def skimage_set() -> dict[str, np.ndarray]:
        rows: dict[str, list[float]] = {k: [] for k in ("psnr", "ssim", "mse_rgb", "mae_rgb", "ciede2000",
                                                        "delta_e76", "colorfulness", "delta_colorfulness")}
        for t, p, t8, p8 in zip(target_np, pred_np, photos, pred_u8):
            lt, lp = rgb2lab(t), rgb2lab(p)
            rows["psnr"].append(peak_signal_noise_ratio(t8, p8))
            rows["ssim"].append(structural_similarity(t8, p8, channel_axis=2, data_range=255))
            rows["mse_rgb"].append(np.mean((p - t) ** 2))
            rows["mae_rgb"].append(np.mean(np.abs(p - t)))
            rows["ciede2000"].append(deltaE_ciede2000(lt, lp).mean())
            rows["delta_e76"].append(deltaE_cie76(lt, lp).mean())
            cf = numpy_colorfulness(p)
            rows["colorfulness"].append(cf)
            rows["delta_colorfulness"].append(abs(cf - numpy_colorfulness(t)))
        return {k: np.asarray(v) for k, v in rows.items()}

    t_sk_set, ref = best_of(skimage_set, args.repeats)
    t_set, ours = best_of(lambda: metrics.per_image_metrics(pred, target), args.repeats)
    os.environ["COLORSTUDY_COMPILE"] = "never"
    t_eager, _ = best_of(lambda: metrics.per_image_metrics(pred, target), args.repeats)
    os.environ.pop("COLORSTUDY_COMPILE")
    print(f"\nwhole per-image set ({len(ours)} metrics, LPIPS apart; the reference loop covers {len(ref)})")
    print(f"  skimage/numpy loop over images:          {t_sk_set:7.3f} s")
    print(f"  colorstudy.metrics, one batch, compiled: {t_set:7.3f} s   speedup {t_sk_set / t_set:5.1f}x")
    print(f"  colorstudy.metrics, one batch, eager:    {t_eager:7.3f} s   speedup {t_sk_set / t_eager:5.1f}x")
    for name, values in ref.items():
        print(f"    {name:<20} max |diff| per image {np.abs(ours[name].double().numpy() - values).max():.2e}")

    lpips_net = metric_nets.LPIPSMetric("random")
    t_lpips, _ = best_of(lambda: torch.cat([lpips_net(p, t) for p, t in zip(pred.split(16), target.split(16))]),
                         args.repeats)
    print(f"\nLPIPS (random AlexNet trunk, no reference to compare): {t_lpips:.3f} s for {n} images")



# -- the whole evaluation set: the evaluate stage's per-batch work vs a per-image loop -------------

def eval_params() -> dict[str, Any]:
    import yaml

    with open(Path(__file__).resolve().parents[1] / "params.yaml", encoding="utf-8") as f:
        return yaml.safe_load(f)["evaluate"]


def eval_inputs(photos: np.ndarray) -> dict[str, Any]:
    """What evaluate gets (normalized L, predicted and true ab) and, built from the same
    values, the photos the reference loop reads (float64 HWC in [0, 1] and uint8)."""
    import torch

    from colorstudy import lab

    target = torch.from_numpy(photos).permute(0, 3, 1, 2).float() / 255.0
    lab_true = lab.rgb_to_lab(target)
    shift = torch.tensor([4.0, -3.0]).view(1, 2, 1, 1)
    L = lab.normalize_l(lab_true[:, :1])
    ab_true = lab.normalize_ab(lab_true[:, 1:])
    ab_pred = lab.normalize_ab(lab.clip_ab(0.7 * lab_true[:, 1:] + shift))  # a washed-out colorizer
    pred_rgb, true_rgb = lab.colorize(L, ab_pred), lab.colorize(L, ab_true)
    return {"L": L, "ab_pred": ab_pred, "ab_true": ab_true,
            "pred": pred_rgb.permute(0, 2, 3, 1).double().numpy(), "true": true_rgb.permute(0, 2, 3, 1).double().numpy(),
            "pred_u8": lab.to_uint8(pred_rgb.permute(0, 2, 3, 1)), "true_u8": lab.to_uint8(true_rgb.permute(0, 2, 3, 1))}


def reference_nets() -> tuple[Any, Any]:
    """The ``lpips`` package's LPIPS (AlexNet, v0.1, random trunk) and pytorch-fid's
    InceptionV3 (pool3, random He init), as they ship: no download (see
    ``colorstudy.metrics``), the same seeded weights as the library's, NCHW, eager."""
    import warnings

    import lpips

    from colorstudy import metric_nets

    with metric_nets._seeded(metric_nets.RANDOM_BACKBONE_SEED), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        lpips_net = lpips.LPIPS(net="alex", version="0.1", pnet_rand=True, verbose=False).eval()
    return lpips_net, metric_nets._fid_inception(None).eval()


def reference_loop(x: dict[str, Any], lpips_net: Any, inception: Any | None,
                   truth_features: bool) -> dict[str, np.ndarray]:
    """Every metric of the set, one image at a time, with the reference implementations
    (``inception=None``: no FID features, as with ``evaluate.fid_weights=none``)."""
    import torch
    from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab
    from skimage.metrics import peak_signal_noise_ratio, structural_similarity

    def chw(a: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()

    rows: dict[str, list[Any]] = {k: [] for k in ("psnr", "ssim", "ciede2000", "delta_e76", "colorfulness",
                                                  "delta_colorfulness", "lpips",
                                                  *(("fid_features",) if inception is not None else ()))}
    with torch.no_grad():
        for p, t, p8, t8 in zip(x["pred"], x["true"], x["pred_u8"], x["true_u8"]):
            lt, lp = rgb2lab(t), rgb2lab(p)
            rows["psnr"].append(peak_signal_noise_ratio(t8, p8))
            rows["ssim"].append(structural_similarity(t8, p8, channel_axis=2, data_range=255))
            rows["ciede2000"].append(deltaE_ciede2000(lt, lp).mean())
            rows["delta_e76"].append(deltaE_cie76(lt, lp).mean())
            cf = numpy_colorfulness(p)
            rows["colorfulness"].append(cf)
            rows["delta_colorfulness"].append(abs(cf - numpy_colorfulness(t)))
            rows["lpips"].append(lpips_net(chw(p), chw(t), normalize=True).item())
            if inception is None:
                continue
            rows["fid_features"].append(inception(chw(p8) / 255.0)[0].flatten().double().numpy())
            if truth_features:
                inception(chw(t8) / 255.0)
    return {k: np.asarray(v) for k, v in rows.items()}


def ours(x: dict[str, Any], nets: tuple[Any, Any], batch_size: int) -> dict[str, np.ndarray]:
    """``colorstudy.evaluate.score_batch``, batch by batch, exactly as the evaluate stage calls it
    (with an FID reference: the predictions' features only)."""
    from colorstudy.evaluate import score_batch
    from colorstudy.metrics import workload

    parts: dict[str, list[np.ndarray]] = {}
    with workload(x["L"][:, 0].numel()):  # evaluate declares its test split: compile only if that pays off
        for start in range(0, len(x["L"]), batch_size):
            window = slice(start, start + batch_size)
            s = score_batch(x["L"][window], x["ab_pred"][window], x["ab_true"][window], *nets, truth_features=False)
            fid = {"fid_features": s.feats_pred} if s.feats_pred is not None else {}
            for name, v in {**s.values, **fid}.items():
                parts.setdefault(name, []).append(v)
    return {k: np.concatenate(v) for k, v in parts.items()}


def backbone_times(x: dict[str, Any], nets: tuple[Any, Any], batch_size: int, repeats: int) -> dict[str, float]:
    """Seconds of LPIPS and of the predictions' FID features alone, batched as in ``score_batch``:
    what share of the evaluation each backbone takes."""
    import torch

    pred = torch.from_numpy(x["pred"]).permute(0, 3, 1, 2).float()
    true = torch.from_numpy(x["true"]).permute(0, 3, 1, 2).float()
    u8 = torch.from_numpy(x["pred_u8"]).permute(0, 3, 1, 2)
    lpips_net, fid_net = nets
    times = {"LPIPS": best_of(lambda: [lpips_net(p, t) for p, t in zip(pred.split(batch_size),
                                                                       true.split(batch_size))], repeats)[0]}
    if fid_net is not None:
        times["FID features"] = best_of(lambda: [fid_net(b) for b in u8.split(batch_size)], repeats)[0]
    return times


def whole_evaluation(args: argparse.Namespace) -> None:
    import torch

    import colorstudy  # noqa: F401  (torchvision shim before lpips)
    from colorstudy import metric_nets
    from colorstudy.runtime import make_reproducible

    params = eval_params()
    threads = args.eval_threads or int(params.get("num_threads", 1))
    make_reproducible(torch.device("cpu"), threads)  # as stages/evaluate.py runs
    fid_weights = args.fid_weights or params["fid_weights"]
    fid_net = None if fid_weights == "none" else metric_nets.FIDExtractor(fid_weights)
    nets = (metric_nets.LPIPSMetric(params["lpips_weights"]), fid_net)
    ref_lpips, ref_inception = reference_nets()
    ref_nets = (ref_lpips, ref_inception if fid_net is not None else None)
    n, batch_size = args.eval_images, int(params["batch_size"])
    print(f"\nwhole evaluation set per image, {n} flower photos, {threads} thread(s) "
          f"(params.yaml evaluate.num_threads), evaluate batches of {batch_size}, best of {args.repeats}")
    if fid_net is None:
        print("  FID: not computed on either side (evaluate.fid_weights=none)")
    else:
        print(f"  FID features ({fid_weights} Inception): of the predictions only on both sides (the truth's "
              f"come once per study from evaluate_baseline)")
    for size in (int(s) for s in args.eval_sizes.split(",")):
        x = eval_inputs(load_photos(n, size))
        start = time.perf_counter()
        ours(x, nets, batch_size)  # first call: one-time costs (torch.compile, if it runs, lazy init)
        cold = time.perf_counter() - start
        t_ours, got = best_of(lambda: ours(x, nets, batch_size), args.repeats)
        t_ref, ref = best_of(lambda: reference_loop(x, *ref_nets, truth_features=False), args.repeats)
        print(f"\n  {size}x{size}:")
        packages = "skimage, lpips, pytorch-fid" if fid_net is not None else "skimage, lpips"
        print(f"    reference loop ({packages}; 1 image at a time): {n / t_ref:7.2f} images/s")
        print(f"    colorstudy evaluate.score_batch (batches of {batch_size}):              {n / t_ours:7.2f} images/s"
              f"   speedup {t_ref / t_ours:4.2f}x   (first call {n / cold:.2f} images/s)")
        if fid_net is not None:
            t_ref2, _ = best_of(lambda: reference_loop(x, *ref_nets, truth_features=True), 1)
            print(f"    reference loop + the truth's FID features (1 pytorch-fid run per model): {n / t_ref2:7.2f} "
                  f"images/s   speedup {t_ref2 / t_ours:4.2f}x")
        for name, seconds in backbone_times(x, nets, batch_size, args.repeats).items():
            print(f"    of score_batch's {t_ours:.3f} s, {name} alone: {seconds:.3f} s "
                  f"({100 * seconds / t_ours:.0f} %)")
        for name, values in ref.items():
            diff = np.abs(got[name] - values).max()
            scale = np.abs(values).max()
            print(f"      {name:<20} max |diff| {diff:.2e}   (relative to max |value| {diff / scale:.1e})")


if __name__ == "__main__":
    main()
