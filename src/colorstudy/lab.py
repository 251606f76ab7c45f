"""CIE Lab: the constants, the normalization and the sRGB <-> Lab conversions.

This is the only color-space code in the project: data preprocessing, losses,
metrics and inference all call it, so a model is trained, scored and used with the
same numbers. Conventions follow scikit-image (sRGB, D65 white, 2° observer), so
``rgb_to_lab`` agrees with ``skimage.color.rgb2lab`` to float32 precision.

Tensors are channel-first (``[..., 3, H, W]``); the numpy helpers take and return
channel-last images (``[..., H, W, 3]``) as image libraries do.
"""

from __future__ import annotations

import numpy as np
import torch

# Normalization of the reference study: L in [0, 100] -> [-1, 1], ab / 128.
L_MAX = 100.0
L_CENTER = 50.0
AB_SCALE = 128.0
# The Lab ab range is not a box; clipping predictions to the int8-like range used by
# every colorization paper keeps them inside what the study's tanh output can express.
AB_MIN, AB_MAX = -128.0, 127.0

D65_WHITE = (0.95047, 1.0, 1.08883)
_XYZ_FROM_RGB = torch.tensor(
    [[0.412453, 0.357580, 0.180423],
     [0.212671, 0.715160, 0.072169],
     [0.019334, 0.119193, 0.950227]],
    dtype=torch.float64,
)
_RGB_FROM_XYZ = torch.linalg.inv(_XYZ_FROM_RGB)
_EPSILON = 0.008856  # (6/29)^3: where the cube root turns linear
_KAPPA = 7.787  # slope of the linear part, (29/6)^2 / 3


def normalize_l(L: torch.Tensor) -> torch.Tensor:
    return L / L_CENTER - 1.0


def denormalize_l(L_n: torch.Tensor) -> torch.Tensor:
    return (L_n + 1.0) * L_CENTER


def normalize_ab(ab: torch.Tensor) -> torch.Tensor:
    return ab / AB_SCALE


def denormalize_ab(ab_n: torch.Tensor) -> torch.Tensor:
    return ab_n * AB_SCALE


def clip_ab(ab: torch.Tensor) -> torch.Tensor:
    """Clip ab (in Lab units) to the valid range before it is turned into colors."""
    return ab.clamp(AB_MIN, AB_MAX)


def _mix(rows: list[list[float]], x: torch.Tensor) -> torch.Tensor:
    # ((m0*c0 + m1*c1) + m2*c2) per output channel, one rounding per operation: the order
    # and rounding of the BLAS 3-term dot products the einsum this replaced ran on the
    # CPU, so CPU results kept their bits. A matmul or einsum would run in TF32 on a GPU
    # with allow_tf32 (10 mantissa bits: a gray photo's colorfulness 0.0025 -> 0.059) and
    # in bf16 under autocast; elementwise multiply-adds are touched by neither.
    # Stacked channel-major, then viewed as [..., 3, H, W]: the einsum's memory layout, which
    # later reductions (the metrics' per-image means) sum in the order of.
    c = x.unbind(dim=-3)
    return torch.stack([c[0] * row[0] + c[1] * row[1] + c[2] * row[2] for row in rows]).movedim(0, -3)


class _ApplyMatrix(torch.autograd.Function):
    """``m @ x`` over the channel axis with exact float32 multiply-adds, backward too
    (autograd's own backward of :func:`_mix` would sum the three terms in another order)."""

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        matrix = m.to(dtype=x.dtype)  # the einsum's rounding of the float64 constants
        ctx.rows_t = matrix.T.tolist()  # type: ignore[attr-defined]
        return _mix(matrix.tolist(), x)

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad: torch.Tensor) -> tuple[None, torch.Tensor]:
        return None, _mix(ctx.rows_t, grad)  # type: ignore[attr-defined]


def _apply_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    # x: [..., 3, H, W]; mixes the channel axis. m is a CPU constant: its nine numbers go
    # to the kernels as scalars, so no device copy and no host sync.
    return _ApplyMatrix.apply(m, x)


def _white(like: torch.Tensor) -> torch.Tensor:
    return torch.tensor(D65_WHITE, device=like.device, dtype=like.dtype).view(3, 1, 1)


def _srgb_to_linear(rgb: torch.Tensor) -> torch.Tensor:
    return torch.where(rgb > 0.04045, ((rgb.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4, rgb / 12.92)


def rgb_to_lab(rgb: torch.Tensor) -> torch.Tensor:
    """sRGB in [0, 1], ``[..., 3, H, W]`` -> Lab (L in [0, 100]); differentiable."""
    return _linear_to_lab(_srgb_to_linear(rgb))


def _linear_to_lab(linear: torch.Tensor) -> torch.Tensor:
    xyz = _apply_matrix(_XYZ_FROM_RGB, linear) / _white(linear)
    # clamp inside the cube root: its gradient is infinite at 0 and the other branch is taken there
    f = torch.where(xyz > _EPSILON, xyz.clamp(min=_EPSILON) ** (1.0 / 3.0), _KAPPA * xyz + 16.0 / 116.0)
    fx, fy, fz = f.unbind(dim=-3)
    return torch.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), dim=-3)


def lab_to_rgb(lab: torch.Tensor) -> torch.Tensor:
    """Lab ``[..., 3, H, W]`` -> sRGB clipped to [0, 1]; differentiable.

    Out-of-gamut colors are clipped per channel, as skimage's ``lab2rgb`` does.
    """
    L, a, b = lab.unbind(dim=-3)
    fy = (L + 16.0) / 116.0
    fx = fy + a / 500.0
    fz = (fy - b / 200.0).clamp(min=0.0)  # skimage: negative Z is invalid, set to 0
    f = torch.stack((fx, fy, fz), dim=-3)
    cube = torch.where(f > 0.2068966, f**3, (f - 16.0 / 116.0) / _KAPPA)
    linear = _apply_matrix(_RGB_FROM_XYZ, cube * _white(lab))
    srgb = torch.where(
        linear > 0.0031308, 1.055 * linear.clamp(min=0.0031308) ** (1.0 / 2.4) - 0.055, 12.92 * linear
    )
    return srgb.clamp(0.0, 1.0)


def lab_from_l_ab(L: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    """Join L ``[..., 1, H, W]`` and ab ``[..., 2, H, W]`` (Lab units), ab clipped."""
    return torch.cat((L, clip_ab(ab)), dim=-3)


def colorize(L_n: torch.Tensor, ab_n: torch.Tensor) -> torch.Tensor:
    """Normalized L and predicted normalized ab -> sRGB in [0, 1]; differentiable."""
    return lab_to_rgb(lab_from_l_ab(denormalize_l(L_n), denormalize_ab(ab_n)))


# -- numpy, channel-last, for image files ------------------------------------------

# The preprocess stage's shards must be byte-identical on every x86-64 machine: DVC keys
# every downstream stage on their hash. Vectorized pow/cbrt (torch's Sleef, numpy's SVML)
# and BLAS matmuls round differently with the CPU's SIMD width (AVX2 vs AVX-512), and a
# 1-ulp float32 difference flips the float16 rounding of about one value in 8,000. So this
# path uses IEEE-exact operations only (+ - * /, comparisons, integer bit arithmetic),
# which round the same on every machine, one numpy ufunc at a time (no FMA contraction,
# no BLAS); its roots are Newton/Halley iterations from a bit-level start.
# tests/test_portable.py runs it with the SIMD dispatch of numpy and torch turned down.

def _bit_start(x: np.ndarray, n: int) -> np.ndarray:
    # x ** (1/n) to within 6%: divide the biased exponent (and mantissa) in the bit pattern
    ints = np.int64 if x.dtype == np.float64 else np.int32
    one = np.array(1.0, dtype=x.dtype).view(ints)
    return ((x.view(ints) - one) // n + one).view(x.dtype)


def _fifth_root(x: np.ndarray) -> np.ndarray:
    y = _bit_start(x, 5)
    for _ in range(6):  # Newton: 6% -> 7e-3 -> 1e-4 -> 2e-8 -> below float64's epsilon
        y4 = y * y
        y4 *= y4
        y = (4.0 * y + x / y4) / 5.0
    return y


def _cube_root(x: np.ndarray) -> np.ndarray:
    y = _bit_start(x, 3)
    for _ in range(3 if x.dtype == np.float64 else 2):  # Halley: 6% -> 2e-4 -> 1e-11 -> exact
        y3 = y * y * y
        y = y * (y3 + 2.0 * x) / (2.0 * y3 + x)
    return y


def _srgb_to_linear_np(v: np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> linear, portable: ``t ** 2.4 = t**2 * (t**2) ** (1/5)``."""
    t = (np.maximum(v, 0.04045) + 0.055) / 1.055
    t2 = t * t
    return np.where(v > 0.04045, t2 * _fifth_root(t2), v / 12.92)


def _linear_table(levels: int) -> np.ndarray:
    return _srgb_to_linear_np(np.arange(levels, dtype=np.float64) / (levels - 1)).astype(np.float32)


# integer sRGB -> linear by table (float64 arithmetic, stored as float32)
_LINEAR_FROM_UINT8 = _linear_table(256)
_LINEAR_FROM_UINT16: np.ndarray | None = None  # built on first use (65,536 entries)


def _to_linear_planes(rgb: np.ndarray) -> np.ndarray:
    # channel planes first: the arithmetic below then runs on contiguous memory
    planes = np.ascontiguousarray(np.moveaxis(rgb, -1, 0))
    global _LINEAR_FROM_UINT16
    if planes.dtype == np.uint8:
        return _LINEAR_FROM_UINT8[planes]
    if planes.dtype == np.uint16:
        if _LINEAR_FROM_UINT16 is None:
            _LINEAR_FROM_UINT16 = _linear_table(65536)
        return _LINEAR_FROM_UINT16[planes]
    return _srgb_to_linear_np(np.clip(planes.astype(np.float32), 0.0, None))


def rgb_to_lab_np(rgb: np.ndarray, channel_axis: int = -1) -> np.ndarray:
    """sRGB ``[..., H, W, 3]`` (uint8, uint16 or float in [0, 1]) -> float32 Lab.

    Bit-identical on every machine (see above); within 2e-4 Lab units of
    ``skimage.color.rgb2lab``. The output's channels are on ``channel_axis``.
    """
    r, g, b = _to_linear_planes(rgb)
    f = []
    for row, white in zip(_XYZ_FROM_RGB.tolist(), D65_WHITE):
        t = (np.float32(row[0]) * r + np.float32(row[1]) * g + np.float32(row[2]) * b) / np.float32(white)
        f.append(np.where(t > _EPSILON, _cube_root(np.maximum(t, np.float32(_EPSILON))),
                          np.float32(_KAPPA) * t + np.float32(16.0 / 116.0)))
    fx, fy, fz = f
    return np.stack((116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)), axis=channel_axis).astype(
        np.float32, copy=False)


def lab_to_rgb_np(lab: np.ndarray) -> np.ndarray:
    """Lab ``[..., H, W, 3]`` -> float32 sRGB in [0, 1]."""
    x = torch.from_numpy(np.ascontiguousarray(lab, dtype=np.float32)).movedim(-1, -3)
    return lab_to_rgb(x).movedim(-3, -1).numpy()


def to_uint8(rgb: torch.Tensor | np.ndarray) -> np.ndarray:
    """sRGB in [0, 1] -> uint8 with rounding (what a saved image file holds)."""
    arr = rgb.detach().cpu().numpy() if isinstance(rgb, torch.Tensor) else rgb
    return np.clip(np.round(arr * 255.0), 0, 255).astype(np.uint8)


def as_unit_rgb(images: torch.Tensor) -> torch.Tensor:
    """Check ``[B, 3, H, W]`` and return float sRGB in [0, 1]: uint8 is divided by
    255, half precision becomes float32, float32 and float64 are kept."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"expected sRGB images [B, 3, H, W], got shape {tuple(images.shape)}")
    if images.dtype == torch.uint8:
        return images.float() / 255.0
    if not images.is_floating_point():
        raise TypeError(f"expected float sRGB in [0, 1] or uint8, got {images.dtype}")
    return images if images.dtype in (torch.float32, torch.float64) else images.float()
