"""Metrics of colorized photos (docs/study.md, "Metrics"), batched in torch.

Per-image metrics take a batch of colorized photos and their ground truth, sRGB in
[0, 1] as ``[B, 3, H, W]`` tensors (on the GPU when there is one), and return one
value per image; a model's number is the mean over its test images with a
bootstrap confidence interval (``bootstrap_ci``), never a sum. FID is one number per
model (colorized set vs ground-truth set). ``METRICS`` lists every column with its
direction, label and unit, in report order.

Conventions, where the study leaves a choice:

* PSNR and SSIM are computed on the photos quantized to uint8 (``lab.to_uint8``:
  what a saved file holds), with peak / data range 255, as
  ``skimage.metrics.peak_signal_noise_ratio`` / ``structural_similarity(...,
  channel_axis=2, data_range=255)`` on uint8 arrays. PSNR of identical images is
  ``+inf`` (as in skimage); ``bootstrap_ci`` then reports ``inf`` rather than
  hiding it.
* SSIM: skimage's defaults: 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample
  covariance, per-channel SSIM averaged over the valid (unpadded) window positions,
  then over channels.
* MSE / MAE: sRGB in [0, 1]; ab on the normalized scale (ab / 128). The ab of a
  photo is that of its Lab conversion unless the model's own ab output is given
  (``per_image_metrics(..., ab_pred=, ab_true=)``), as evaluating from L + ab does.
* ab-PSNR: ``10·log10(1 / MSE(ab/128))`` (peak 1.0): the faces study's convention,
  labelled as such; it is not comparable to RGB PSNR.
* CIEDE2000 / ΔE76: mean over **all** pixels of the photo as displayed (after
  gamut clipping), reference = ground truth; ``delta_e2000`` is a torch port of
  ``skimage.color.deltaE_ciede2000`` (same formula, same hue conventions; on the
  same Lab values it agrees to ~1e-5 per pixel in float32). Metrics follow the
  input dtype (float32 by default, float64 if given). In float32 the sRGB -> Lab
  conversion leaves ~5e-5 of rounding in a and b; where a predicted pixel is
  (near) neutral, as in the grayscale baseline, its hue is then noise and
  CIEDE2000, ill-conditioned at zero chroma, can differ from a float64 reference
  by up to ~0.05 on such a pixel; per-image means stay within ~3e-4.
* Colorfulness: Hasler & Süsstrunk (2003) on 0-255 RGB with ``rg = |R - G|``,
  ``yb = |(R + G)/2 - B|`` (the absolute-value variant of published colorization
  tables), population standard deviations; ``delta_colorfulness`` =
  ``|CF(pred) - CF(truth)|``. ``colorfulness_signed`` is the paper's original with the
  signed opponent channels, beside it for comparison with the 2003 paper.
* SSIM: skimage's defaults, a 7x7 *uniform* window (not Wang et al.'s 11x11 Gaussian,
  sigma 1.5); the label says so.
* LPIPS: ``lpips`` 0.1.4, AlexNet trunk, v0.1 linear heads (shipped in the package).
* FID: pytorch-fid's InceptionV3 pool3 (2048-d) features. On a few hundred images
  FID is biased upwards and noisy (its bias shrinks like 1/N); compare models only
  on the same test set, never with FIDs published on 5,000 or 50,000 images.

Backbone numbers (LPIPS, FID) depend on the backbone's weights: ``imagenet`` loads
the torch hub file through ``colorstudy.weights`` (``MissingWeightsError`` naming
it when absent and offline; nothing else touches the network); ``random`` is a
fixed-seed initialization, reproducible but not comparable to published numbers.
``metric_provenance`` says which, for the report. FID also takes ``none`` (the default
``evaluate.fid_weights``): not computed at all, see ``colorstudy.evaluate``.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import os
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Literal

import torch

from colorstudy import lab
from colorstudy.color_difference import delta_e76, delta_e2000
from colorstudy.lab import as_unit_rgb
from colorstudy.metric_nets import LPIPSMetric, frechet_distance

SSIM_WINDOW = 7
SSIM_K1, SSIM_K2 = 0.01, 0.03
UINT8_PEAK = 255.0


# -- inputs -----------------------------------------------------------------------

def quantize(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1] -> float tensor of its uint8 levels (0..255), same device."""
    return torch.from_numpy(lab.to_uint8(rgb)).to(device=rgb.device, dtype=torch.float32)


# -- CPU speed: one fused loop instead of one pass over memory per op ----------------
# torch.compile's start-up is paid once per process (evaluation stage): 20-80 s on a busy
# 2-core machine; it then saves ~0.5 µs per pixel of the metric set (256x256, 1 thread:
# eager ~60 ms vs ~25 ms per photo; benchmarks/metrics_speed.py). It pays off only
# beyond ~10^8 pixels of work (~1,500 photos at 256 px): the declared workload (see
# ``workload``; evaluate declares its test split) or, undeclared, the call's own batch.
# No study of this repository compiles (96 test photos at 64 px; faces: 117).
COMPILE_MIN_PIXELS = 1 << 27
_WORKLOAD: contextvars.ContextVar[int | None] = contextvars.ContextVar("colorstudy_metric_workload", default=None)


@contextlib.contextmanager
def workload(pixels: int) -> Iterator[None]:
    """Declare how many pixels (images x H x W) the metric calls inside will see in all,
    e.g. an evaluation's test split: ``COLORSTUDY_COMPILE=auto`` compiles only when that
    work is large enough to repay the compilation."""
    token = _WORKLOAD.set(int(pixels))
    try:
        yield
    finally:
        _WORKLOAD.reset(token)


class _CompiledOnCPU:
    """``fn`` through ``torch.compile`` for large CPU batches.

    Why: a color difference is ~60 elementwise ops; eager torch makes one pass over
    memory per op and is no faster than numpy, while the fused loop is several times
    faster. GPU tensors run eagerly (fast already, no compile wait). If compiling is
    impossible (no C++ compiler) it warns once and stays eager. ``COLORSTUDY_COMPILE``:
    ``auto`` (default: CPU work of at least ``COMPILE_MIN_PIXELS``, the declared
    ``workload`` or else the batch's own pixels), ``always``, ``never``.
    """

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
        self._compiled: Callable[..., Any] | None = None
        self._failed = False
        functools.update_wrapper(self, fn)

    def _wanted(self, images: torch.Tensor, args: tuple[Any, ...]) -> bool:
        mode = os.environ.get("COLORSTUDY_COMPILE", "auto").lower()
        if mode not in ("auto", "always", "never"):
            raise ValueError(f"COLORSTUDY_COMPILE must be auto, always or never, got {mode!r}")
        if (mode == "never" or self._failed or images.device.type != "cpu"
                or any(isinstance(a, torch.Tensor) and a.requires_grad for a in args)):
            return False
        declared = _WORKLOAD.get()
        pixels = declared if declared is not None else images[..., 0, :, :].numel()
        return mode == "always" or pixels >= COMPILE_MIN_PIXELS

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self._wanted(args[0], (*args, *kwargs.values())):
            return self.fn(*args, **kwargs)
        if self._compiled is None:
            self._compiled = torch.compile(self.fn, dynamic=True)
        try:
            return self._compiled(*args, **kwargs)
        except Exception as e:  # noqa: BLE001  (any compiler failure; eager re-raises real errors)
            self._failed = True
            first_line = str(e).splitlines()[0] if str(e) else ""
            warnings.warn(f"torch.compile failed for {self.fn.__name__} ({type(e).__name__}: {first_line}); "
                          f"computing metrics eagerly (slower)", RuntimeWarning, stacklevel=2)
            return self.fn(*args, **kwargs)


# -- the batch of photos a metric sees ------------------------------------------------

class MetricBatch:
    """Colorized photos and their ground truth, with what the metrics share
    (uint8 levels, the fused per-pixel means) computed once.

    ``ab_pred`` / ``ab_true`` (normalized ``[B, 2, H, W]``) replace the ab derived
    from the sRGB photos: pass the model's own output when evaluating from L + ab.
    ``lpips`` is the LPIPS network, needed only by the ``lpips`` metric.
    """

    def __init__(self, pred: torch.Tensor, target: torch.Tensor, *, ab_pred: torch.Tensor | None = None,
                 ab_true: torch.Tensor | None = None, lpips: LPIPSMetric | None = None) -> None:
        self.pred, self.target = as_unit_rgb(pred), as_unit_rgb(target)
        if self.pred.shape != self.target.shape or self.pred.dtype != self.target.dtype:
            raise ValueError(f"pred {tuple(self.pred.shape)} {self.pred.dtype} and target "
                             f"{tuple(self.target.shape)} {self.target.dtype} differ in shape or dtype")
        self.ab_pred = None if ab_pred is None else ab_pred.to(self.pred.dtype)
        self.ab_true = None if ab_true is None else ab_true.to(self.pred.dtype)
        self.lpips = lpips

    @classmethod
    def from_lab(cls, L_n: torch.Tensor, ab_pred: torch.Tensor, ab_true: torch.Tensor, *,
                 lpips: LPIPSMetric | None = None) -> MetricBatch:
        """From normalized L ``[B,1,H,W]`` and normalized ab ``[B,2,H,W]``: both photos
        are built with ``lab.colorize``; ab metrics use the given ab."""
        L_n, ab_pred, ab_true = (t if t.dtype in (torch.float32, torch.float64) else t.float()
                                 for t in (L_n, ab_pred, ab_true))  # bf16 from autocast: too coarse
        return cls(lab.colorize(L_n, ab_pred), lab.colorize(L_n, ab_true), ab_pred=ab_pred, ab_true=ab_true,
                   lpips=lpips)

    @functools.cached_property
    def u8_pred(self) -> torch.Tensor:
        return quantize(self.pred)

    @functools.cached_property
    def u8_true(self) -> torch.Tensor:
        return quantize(self.target)

    @functools.cached_property
    def pixel_means(self) -> dict[str, torch.Tensor]:
        return _pixel_means(self.pred, self.target, self.u8_pred, self.u8_true, self.ab_pred, self.ab_true)


# -- per-image metric functions -------------------------------------------------------

_IMAGE_DIMS = (-3, -2, -1)


def psnr_from_mse(mse: torch.Tensor, peak: float) -> torch.Tensor:
    """``10·log10(peak² / mse)``; ``+inf`` where ``mse`` is 0."""
    return 10.0 * torch.log10(peak**2 / mse)


def _window_mean(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Mean of every ``SSIM_WINDOW`` consecutive values along ``dim`` (valid positions only).

    Bit for bit ``F.avg_pool2d`` with that kernel along ``dim`` (its CPU loop adds the
    window's values in order, in float32, then divides by the count), at a fraction of
    its cost on one-channel planes: ``SSIM_WINDOW`` vectorized adds instead of a scalar loop.
    """
    n = t.shape[dim] - SSIM_WINDOW + 1
    total = t.narrow(dim, 0, n)
    for k in range(1, SSIM_WINDOW):
        total = total + t.narrow(dim, k, n)
    return total / SSIM_WINDOW


def _box_mean(t: torch.Tensor) -> torch.Tensor:
    """7x7 mean over valid positions, separably: rows, then columns."""
    return _window_mean(_window_mean(t, -2), -1)


@_CompiledOnCPU
def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float) -> torch.Tensor:
    """Mean SSIM per image of ``[B, C, H, W]`` float images (skimage defaults).

    Equals ``structural_similarity(x, y, channel_axis=..., data_range=data_range)``
    (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over window
    positions that need no padding, then over channels).
    """
    if min(x.shape[-2:]) < SSIM_WINDOW:
        raise ValueError(f"SSIM needs images of at least {SSIM_WINDOW}x{SSIM_WINDOW}, got {tuple(x.shape[-2:])}")
    # Variances are E[x²] - E[x]²: in float32 that cancels badly around large means,
    # so filter values relative to each channel's mean and add it back where needed.
    batch, channels = x.shape[:2]
    shift = y.mean(dim=(-2, -1), keepdim=True)
    x, y = (x - shift).flatten(0, 1).unsqueeze(1), (y - shift).flatten(0, 1).unsqueeze(1)

    box = _box_mean

    mx, my = box(x), box(y)
    n = SSIM_WINDOW**2
    cov_norm = n / (n - 1)
    vx = cov_norm * (box(x * x) - mx * mx)
    vy = cov_norm * (box(y * y) - my * my)
    vxy = cov_norm * (box(x * y) - mx * my)
    shift = shift.flatten(0, 1).unsqueeze(1)
    mx, my = mx + shift, my + shift
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    s = ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s.mean(dim=(-3, -2, -1)).view(batch, channels).mean(dim=1)


def colorfulness(rgb: torch.Tensor, signed: bool = False) -> torch.Tensor:
    """Hasler & Süsstrunk colorfulness per image, 0-255 RGB: by default the variant with
    |rg| and |yb| that published colorization tables use; ``signed`` is the 2003 paper's
    own definition (opponent channels with their signs: a uniform cast has no spread)."""
    R, G, B = (as_unit_rgb(rgb) * 255.0).unbind(dim=1)
    rg, yb = (R - G).flatten(1), (0.5 * (R + G) - B).flatten(1)
    if not signed:
        rg, yb = rg.abs(), yb.abs()
    spread = torch.sqrt(rg.var(dim=1, correction=0) + yb.var(dim=1, correction=0))
    level = torch.sqrt(rg.mean(dim=1).square() + yb.mean(dim=1).square())
    return spread + 0.3 * level


@_CompiledOnCPU
def _pixel_means(pred: torch.Tensor, target: torch.Tensor, u8_pred: torch.Tensor, u8_true: torch.Tensor,
                 ab_pred: torch.Tensor | None, ab_true: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Every metric that is a per-image mean of a per-pixel quantity, together: on
    CPU they compile into a few loops that read each photo once."""
    lab_pred, lab_true = lab.rgb_to_lab(pred), lab.rgb_to_lab(target)
    ab_pred = lab.normalize_ab(lab_pred[:, 1:]) if ab_pred is None else ab_pred
    ab_true = lab.normalize_ab(lab_true[:, 1:]) if ab_true is None else ab_true
    d_rgb, d_ab = pred - target, ab_pred - ab_true
    return {
        # float64: PSNR is read to 1e-4 dB, and this sums up to 255² x 3HW integers
        "mse_u8": (u8_pred.double() - u8_true.double()).square().mean(dim=_IMAGE_DIMS),
        "mse_rgb": d_rgb.square().mean(dim=_IMAGE_DIMS),
        "mae_rgb": d_rgb.abs().mean(dim=_IMAGE_DIMS),
        "mse_ab": d_ab.square().mean(dim=_IMAGE_DIMS),
        "mae_ab": d_ab.abs().mean(dim=_IMAGE_DIMS),
        "ciede2000": delta_e2000(lab_true, lab_pred).mean(dim=(-2, -1)),
        "delta_e76": delta_e76(lab_true, lab_pred).mean(dim=(-2, -1)),
        "colorfulness_pred": colorfulness(pred),
        "colorfulness_true": colorfulness(target),
        "colorfulness_signed_pred": colorfulness(pred, signed=True),
    }


def _psnr(b: MetricBatch) -> torch.Tensor:
    return psnr_from_mse(b.pixel_means["mse_u8"], UINT8_PEAK)


def _ssim(b: MetricBatch) -> torch.Tensor:
    return ssim(b.u8_pred, b.u8_true, data_range=UINT8_PEAK)


def _psnr_ab(b: MetricBatch) -> torch.Tensor:
    return psnr_from_mse(b.pixel_means["mse_ab"], 1.0)


def _delta_colorfulness(b: MetricBatch) -> torch.Tensor:
    return (b.pixel_means["colorfulness_pred"] - b.pixel_means["colorfulness_true"]).abs()


def _pixel_mean(key: str) -> Callable[[MetricBatch], torch.Tensor]:
    def fn(b: MetricBatch) -> torch.Tensor:
        return b.pixel_means[key]

    fn.__name__ = f"_{key}"
    return fn


def _lpips(b: MetricBatch) -> torch.Tensor:
    if b.lpips is None:
        raise ValueError("the lpips metric needs the network: per_image_metrics(..., lpips=LPIPSMetric(weights))")
    return b.lpips(b.pred, b.target)


# -- the registry -----------------------------------------------------------------------

@dataclass(frozen=True)
class Metric:
    """A report column. ``scope="image"``: ``fn(MetricBatch) -> [B]``, reported as the
    mean over images with a bootstrap CI; ``scope="set"``: ``fn(pred_feats,
    true_feats) -> float``, one number per model. ``backbone`` names the
    ``metric_provenance`` entry the number depends on."""

    fn: Callable[..., Any]
    direction: Literal["higher", "lower"]
    label: str
    unit: str = ""
    scope: Literal["image", "set"] = "image"
    backbone: str | None = None


METRICS: dict[str, Metric] = {
    "psnr": Metric(_psnr, "higher", "PSNR (sRGB uint8)", "dB"),
    "ssim": Metric(_ssim, "higher", "SSIM (sRGB uint8, 7×7 uniform window)"),
    "mse_rgb": Metric(_pixel_mean("mse_rgb"), "lower", "MSE (sRGB [0,1])"),
    "mae_rgb": Metric(_pixel_mean("mae_rgb"), "lower", "MAE (sRGB [0,1])"),
    "mse_ab": Metric(_pixel_mean("mse_ab"), "lower", "MSE (ab/128)"),
    "mae_ab": Metric(_pixel_mean("mae_ab"), "lower", "MAE (ab/128)"),
    "psnr_ab": Metric(_psnr_ab, "higher", "ab-PSNR (faces study convention)", "dB"),
    "ciede2000": Metric(_pixel_mean("ciede2000"), "lower", "CIEDE2000", "ΔE00"),
    "delta_e76": Metric(_pixel_mean("delta_e76"), "lower", "ΔE76", "ΔE"),
    "colorfulness": Metric(_pixel_mean("colorfulness_pred"), "higher", "Colorfulness (H&S, |rg|, |yb|)"),
    "colorfulness_signed": Metric(_pixel_mean("colorfulness_signed_pred"), "higher",
                                  "Colorfulness (H&S 2003 original, signed rg, yb)"),
    "delta_colorfulness": Metric(_delta_colorfulness, "lower", "ΔColorfulness |CF - CF(truth)|"),
    "lpips": Metric(_lpips, "lower", "LPIPS (AlexNet, v0.1)", backbone="lpips"),
    "fid": Metric(frechet_distance, "lower", "FID (Inception pool3)", scope="set", backbone="fid"),
}


def per_image_metrics(pred: torch.Tensor, target: torch.Tensor, *, ab_pred: torch.Tensor | None = None,
                      ab_true: torch.Tensor | None = None, lpips: LPIPSMetric | None = None) -> dict[str, torch.Tensor]:
    """Every per-image metric of a batch: name -> ``[B]`` float tensor (on the input's
    device), in ``METRICS`` order; ``lpips`` only when its network is given."""
    return compute(MetricBatch(pred, target, ab_pred=ab_pred, ab_true=ab_true, lpips=lpips))


def compute(batch: MetricBatch) -> dict[str, torch.Tensor]:
    """``per_image_metrics`` for a prepared batch (e.g. ``MetricBatch.from_lab``)."""
    return {name: m.fn(batch).float() for name, m in METRICS.items()
            if m.scope == "image" and (name != "lpips" or batch.lpips is not None)}
