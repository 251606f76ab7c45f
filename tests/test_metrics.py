"""Every metric against its reference implementation, on real photos.

Photos come from the shared datasets (read in place, never copied); "predictions"
are made by changing their ab (shift, desaturation, blur, grayscale). References:
scikit-image (deltaE_ciede2000, deltaE_cie76, structural_similarity,
peak_signal_noise_ratio, rgb2lab), numpy written here, pytorch-fid.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from skimage.color import deltaE_cie76, deltaE_ciede2000, rgb2lab
from skimage.metrics import peak_signal_noise_ratio, structural_similarity

import colorstudy  # noqa: F401  (torchvision shim)
from colorstudy import color_difference, intervals, lab, metric_nets, metrics
from colorstudy.weights import MissingWeightsError

DATASETS = Path(__file__).resolve().parents[1] / "../shared/datasets"
SIZE = 96

needs_photos = pytest.mark.skipif(not (DATASETS / "faces").is_dir(), reason="shared datasets not mounted")


def _center_crop(path: Path, size: int) -> np.ndarray:
    with Image.open(path) as im:
        im = im.convert("RGB")
        left, top = (im.width - size) // 2, (im.height - size) // 2
        return np.asarray(im.crop((left, top, left + size, top + size)))



@pytest.fixture(scope="module")
def photos() -> torch.Tensor:
    """5 real photos (3 flowers, 2 faces), ``[5, 3, SIZE, SIZE]`` in [0, 1]."""
    if not (DATASETS / "faces").is_dir():
        pytest.skip("shared datasets not mounted")
    paths = [DATASETS / "flowers102-subset" / f"image_{i:05d}.jpg" for i in (1, 2, 3)]
    paths += [DATASETS / "faces" / f"image{i:05d}.jpg" for i in (0, 7)]
    arr = np.stack([_center_crop(p, SIZE) for p in paths])
    return torch.from_numpy(arr).permute(0, 3, 1, 2).float() / 255.0


def _with_ab(rgb: torch.Tensor, change) -> torch.Tensor:
    lab_ = lab.rgb_to_lab(rgb)
    return lab.lab_to_rgb(torch.cat((lab_[:, :1], change(lab_[:, 1:])), dim=1))


PERTURBATIONS = {
    "shift": lambda ab: ab + torch.tensor([6.0, -4.0]).view(1, 2, 1, 1),
    "desaturate": lambda ab: 0.6 * ab,
    "blur": lambda ab: F.avg_pool2d(F.pad(ab, (4, 4, 4, 4), mode="replicate"), 9, stride=1),
    "gray": lambda ab: torch.zeros_like(ab),
}


@pytest.fixture(scope="module")
def predictions(photos: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: _with_ab(photos, change) for name, change in PERTURBATIONS.items()}


def _hwc64(rgb: torch.Tensor) -> np.ndarray:
    return rgb.permute(1, 2, 0).double().numpy()


def _u8(rgb: torch.Tensor) -> np.ndarray:
    return lab.to_uint8(rgb.permute(1, 2, 0))


# -- color differences -------------------------------------------------------------------

@pytest.mark.parametrize("kind", list(PERTURBATIONS))
def test_ciede2000_matches_skimage_on_every_pixel(photos, predictions, kind):
    pred = predictions[kind]
    lab_true, lab_pred = lab.rgb_to_lab(photos), lab.rgb_to_lab(pred)
    ours32 = color_difference.delta_e2000(lab_true, lab_pred).numpy()  # float32, as the metric runs
    ours64 = color_difference.delta_e2000(lab.rgb_to_lab(photos.double()), lab.rgb_to_lab(pred.double())).numpy()
    means = metrics.per_image_metrics(pred, photos)["ciede2000"].numpy()
    for i in range(len(photos)):
        # the formula: the same Lab values in, every pixel within 1e-3
        same_lab = deltaE_ciede2000(_hwc64(lab_true[i]), _hwc64(lab_pred[i]))
        assert np.abs(ours32[i] - same_lab).max() <= 1e-3
        # end to end from sRGB against skimage's float64 rgb2lab: exact in float64 ...
        ref = deltaE_ciede2000(rgb2lab(_hwc64(photos[i])), rgb2lab(_hwc64(pred[i])))
        assert np.abs(ours64[i] - ref).max() <= 1e-6
        # ... and in float32 the per-image mean (near-neutral pixels are ill-conditioned,
        # see the metrics module docstring)
        assert abs(means[i] - ref.mean()) <= 1e-3


def test_ciede2000_edge_cases_match_skimage():
    """Neutral colors, one zero chroma, hue wrap-around near 0/360° and 180° apart."""
    rng = np.random.default_rng(0)
    pairs = [
        ((50, 0, 0), (50, 0, 0)), ((50, 0, 0), (60, 0, 0)), ((50, 0, 0), (50, 10, 0)),
        ((50, 0, 0), (50, -3, -7)), ((50, 2, 0.01), (50, 2, -0.01)), ((50, 20, 1), (50, 20, -1)),
        ((50, -20, 1), (50, -20, -1)), ((50, 10, 10), (50, -10, -10.5)), ((0, 0, 0), (100, 0, 0)),
        ((100, 127, 127), (0, -128, -128)), ((50, 2.5, 0), (73, 25, -18)),  # Sharma et al. pair 35
    ]
    lab1 = np.array([p[0] for p in pairs] + list(rng.uniform([0, -128, -128], [100, 127, 127], (500, 3))), float)
    lab2 = np.array([p[1] for p in pairs] + list(rng.uniform([0, -128, -128], [100, 127, 127], (500, 3))), float)
    ref = deltaE_ciede2000(lab1, lab2)
    ours = color_difference.delta_e2000(torch.from_numpy(lab1.T[:, None]), torch.from_numpy(lab2.T[:, None]))[0].numpy()
    np.testing.assert_allclose(ours, ref, atol=1e-9)


def test_ciede2000_sharma_reference_values():
    """Published test pairs (Sharma, Wu, Dalal 2005), independent of skimage."""
    pairs = [((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
             ((50.0, -1.3802, -84.2814), (50.0, 0.0, -82.7485), 1.0000),
             ((50.0, 2.5, 0.0), (50.0, 0.0, -2.5), 4.3065),
             ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
             ((60.2574, -34.0099, 36.2677), (60.4626, -34.1751, 39.4387), 1.2644),
             ((2.0776, 0.0795, -1.1350), (0.9033, -0.0636, -0.5514), 0.9082)]
    lab1 = torch.tensor([p[0] for p in pairs], dtype=torch.float64).T[:, None]
    lab2 = torch.tensor([p[1] for p in pairs], dtype=torch.float64).T[:, None]
    np.testing.assert_allclose(color_difference.delta_e2000(lab1, lab2)[0].numpy(), [p[2] for p in pairs], atol=1e-4)


def test_delta_e76_matches_skimage(photos, predictions):
    pred = predictions["shift"]
    got = metrics.per_image_metrics(pred, photos)["delta_e76"].numpy()
    for i in range(len(photos)):
        ref = deltaE_cie76(rgb2lab(_hwc64(photos[i])), rgb2lab(_hwc64(pred[i])))
        per_pixel = color_difference.delta_e76(lab.rgb_to_lab(photos[i]), lab.rgb_to_lab(pred[i])).numpy()
        assert np.abs(per_pixel - ref).max() <= 1e-3
        assert abs(got[i] - ref.mean()) <= 1e-4


def test_grayscale_scores_worse_than_a_mild_perturbation(photos, predictions):
    gray = metrics.per_image_metrics(predictions["gray"], photos)
    mild = metrics.per_image_metrics(predictions["shift"], photos)
    for name in ("ciede2000", "delta_e76", "mse_ab", "mae_ab"):
        assert (gray[name] > mild[name]).all(), name
    assert (gray["psnr_ab"] < mild["psnr_ab"]).all()


def test_compile_failure_falls_back_to_eager(photos, predictions, monkeypatch):
    """Where torch.compile cannot work (no C++ compiler), metrics still come out, once warned."""
    def broken_compile(fn, **kwargs):
        def run(*args, **kw):
            raise RuntimeError("no C++ compiler")
        return run

    wrapped = metrics._CompiledOnCPU(color_difference.delta_e2000)
    monkeypatch.setattr(torch, "compile", broken_compile)
    monkeypatch.setenv("COLORSTUDY_COMPILE", "always")
    lab_true, lab_pred = lab.rgb_to_lab(photos), lab.rgb_to_lab(predictions["shift"])
    with pytest.warns(RuntimeWarning, match="no C.. compiler"):
        got = wrapped(lab_true, lab_pred)
    torch.testing.assert_close(got, color_difference.delta_e2000(lab_true, lab_pred))
    torch.testing.assert_close(wrapped(lab_true, lab_pred), got)  # stays eager, no second warning
    monkeypatch.setenv("COLORSTUDY_COMPILE", "sometimes")
    with pytest.raises(ValueError, match="COLORSTUDY_COMPILE"):
        metrics._CompiledOnCPU(color_difference.delta_e2000)(lab_true, lab_pred)


@pytest.mark.skipif(os.environ.get("COLORSTUDY_TEST_COMPILE") != "1",
                    reason="compiles kernels (20-40 s on 2 cores); COLORSTUDY_TEST_COMPILE=1 runs it, "
                           "benchmarks/metrics_speed.py always does")
def test_compiled_metrics_equal_eager(photos, predictions, monkeypatch):
    monkeypatch.setenv("COLORSTUDY_COMPILE", "always")
    compiled = metrics.per_image_metrics(predictions["shift"], photos)
    monkeypatch.setenv("COLORSTUDY_COMPILE", "never")
    eager = metrics.per_image_metrics(predictions["shift"], photos)
    for name in eager:
        torch.testing.assert_close(compiled[name], eager[name], rtol=1e-5, atol=1e-5)


def test_compile_auto_follows_the_declared_workload(photos, monkeypatch):
    """``auto`` compiles only for work that repays the compilation: the declared workload
    (evaluate declares its test split) or, undeclared, the batch's own pixels."""
    monkeypatch.setenv("COLORSTUDY_COMPILE", "auto")
    small, wanted = photos[:2], metrics.ssim._wanted
    assert not wanted(small, ())
    with metrics.workload(metrics.COMPILE_MIN_PIXELS):
        assert wanted(small, ())
        with metrics.workload(small[:, 0].numel()):  # innermost declaration wins
            assert not wanted(small, ())
    with metrics.workload(96 * 256 * 256):  # a default-sized test split, even at 256 px: eager
        assert not wanted(small, ())
    assert not wanted(small, ())  # the declaration ends with its block


def test_box_mean_is_avg_pool_bit_for_bit():
    """SSIM's window sums replace ``F.avg_pool2d`` without changing a bit."""
    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for shape in ((6, 1, 64, 64), (2, 1, 31, 70), (1, 1, 7, 7)):
            t = torch.randint(0, 256, shape, generator=gen).to(dtype) - 127.3
            pooled = F.avg_pool2d(F.avg_pool2d(t, (7, 1), stride=1), (1, 7), stride=1)
            assert torch.equal(metrics._box_mean(t), pooled)


# -- PSNR, SSIM, MSE / MAE ------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["shift", "blur", "gray"])
def test_psnr_and_ssim_match_skimage_on_uint8(photos, predictions, kind):
    pred = predictions[kind]
    got = metrics.per_image_metrics(pred, photos)
    for i in range(len(photos)):
        truth8, pred8 = _u8(photos[i]), _u8(pred[i])
        assert got["psnr"][i].item() == pytest.approx(peak_signal_noise_ratio(truth8, pred8), abs=1e-4)
        ssim_ref = structural_similarity(truth8, pred8, channel_axis=2, data_range=255)
        assert got["ssim"][i].item() == pytest.approx(ssim_ref, abs=1e-5)


def test_ssim_of_float_images_matches_skimage(photos, predictions):
    x, y = predictions["blur"][:2], photos[:2]
    got = metrics.ssim(x, y, data_range=1.0)
    for i in range(2):
        ref = structural_similarity(_hwc64(x[i]), _hwc64(y[i]), channel_axis=2, data_range=1.0)
        assert got[i].item() == pytest.approx(ref, abs=1e-5)


def test_identical_images_give_infinite_psnr_and_unit_ssim(photos):
    got = metrics.per_image_metrics(photos, photos)
    assert torch.isinf(got["psnr"]).all() and torch.isinf(got["psnr_ab"]).all()
    assert torch.allclose(got["ssim"], torch.ones(len(photos)))
    for name in ("mse_rgb", "mae_rgb", "mse_ab", "mae_ab", "ciede2000", "delta_e76", "delta_colorfulness"):
        assert torch.all(got[name] == 0), name


def test_mse_mae_on_rgb_and_normalized_ab(photos, predictions):
    pred = predictions["desaturate"]
    got = metrics.per_image_metrics(pred, photos)
    for i in range(len(photos)):
        p, t = _hwc64(pred[i]), _hwc64(photos[i])
        assert got["mse_rgb"][i].item() == pytest.approx(np.mean((p - t) ** 2), rel=1e-4)
        assert got["mae_rgb"][i].item() == pytest.approx(np.mean(np.abs(p - t)), rel=1e-4)
        d_ab = (rgb2lab(p)[..., 1:] - rgb2lab(t)[..., 1:]) / 128.0
        assert got["mse_ab"][i].item() == pytest.approx(np.mean(d_ab**2), rel=1e-4)
        assert got["mae_ab"][i].item() == pytest.approx(np.mean(np.abs(d_ab)), rel=1e-4)
        assert got["psnr_ab"][i].item() == pytest.approx(10 * math.log10(1.0 / np.mean(d_ab**2)), abs=1e-3)


def test_from_lab_uses_the_models_ab(photos):
    L_n = lab.normalize_l(lab.rgb_to_lab(photos)[:, :1])
    ab_true = lab.normalize_ab(lab.rgb_to_lab(photos)[:, 1:])
    ab_pred = (ab_true * 0.5 + 0.05).clamp(-1, 1)
    got = metrics.compute(metrics.MetricBatch.from_lab(L_n, ab_pred, ab_true))
    expected = (ab_pred - ab_true).square().mean(dim=(1, 2, 3))
    torch.testing.assert_close(got["mse_ab"], expected)
    by_rgb = metrics.per_image_metrics(lab.colorize(L_n, ab_pred), lab.colorize(L_n, ab_true))
    torch.testing.assert_close(got["ciede2000"], by_rgb["ciede2000"])


def test_uint8_input_equals_float_input(photos):
    u8 = torch.from_numpy(lab.to_uint8(photos))
    a = metrics.per_image_metrics(u8, u8.flip(0))
    b = metrics.per_image_metrics(u8.float() / 255, u8.flip(0).float() / 255)
    for name in a:
        torch.testing.assert_close(a[name], b[name])


def test_bad_input_shapes_are_rejected(photos):
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        metrics.per_image_metrics(photos[:, :1], photos[:, :1])
    with pytest.raises(ValueError, match="differ in shape or dtype"):
        metrics.per_image_metrics(photos[:2], photos[:3])


# -- colorfulness ------------------------------------------------------------------------------

def numpy_colorfulness(rgb01: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003), absolute-value variant, on 0-255 RGB."""
    R, G, B = (rgb01.astype(np.float64) * 255.0).transpose(2, 0, 1)
    rg = np.abs(R - G)
    yb = np.abs(0.5 * (R + G) - B)
    return float(np.sqrt(np.std(rg) ** 2 + np.std(yb) ** 2) + 0.3 * np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2))


def numpy_colorfulness_signed(rgb01: np.ndarray) -> float:
    """Hasler & Süsstrunk (2003) as the paper defines it: signed opponent channels."""
    R, G, B = (rgb01.astype(np.float64) * 255.0).transpose(2, 0, 1)
    rg, yb = R - G, 0.5 * (R + G) - B
    return float(np.sqrt(np.std(rg) ** 2 + np.std(yb) ** 2) + 0.3 * np.sqrt(np.mean(rg) ** 2 + np.mean(yb) ** 2))


def test_signed_colorfulness_is_the_papers_definition(photos, predictions):
    got = metrics.per_image_metrics(predictions["desaturate"], photos)
    for i in range(len(photos)):
        expected = numpy_colorfulness_signed(_hwc64(predictions["desaturate"][i]))
        assert got["colorfulness_signed"][i].item() == pytest.approx(expected, rel=1e-4)
    # a uniform cast: no spread, so only the 0.3 * level term; |rg| and |yb| agree with it there
    cast = torch.zeros(1, 3, 8, 8)
    cast[:, 0] = 0.6
    assert metrics.colorfulness(cast, signed=True).item() == pytest.approx(0.3 * np.hypot(153, 76.5), rel=1e-5)
    # opposite hues: the signed channels spread, the absolute ones do not
    split = torch.zeros(1, 3, 8, 8)
    split[:, 0, :4], split[:, 1, 4:] = 0.6, 0.6
    assert metrics.colorfulness(split, signed=True) > metrics.colorfulness(split)


def test_colorfulness_matches_numpy(photos, predictions):
    pred = predictions["desaturate"]
    got = metrics.per_image_metrics(pred, photos)
    for i in range(len(photos)):
        cf_pred, cf_true = numpy_colorfulness(_hwc64(pred[i])), numpy_colorfulness(_hwc64(photos[i]))
        assert got["colorfulness"][i].item() == pytest.approx(cf_pred, rel=1e-4)
        assert got["delta_colorfulness"][i].item() == pytest.approx(abs(cf_pred - cf_true), abs=1e-3)
    # desaturating makes a photo less colorful; grayscale (L + ab = 0) is near zero
    assert (got["colorfulness"] < metrics.colorfulness(photos)).all()
    assert (metrics.colorfulness(predictions["gray"]) < 1.0).all()


# -- registry -------------------------------------------------------------------------------

def test_registry_describes_every_column(photos, predictions):
    assert set(metrics.METRICS) >= {"psnr", "ssim", "mse_rgb", "mae_rgb", "mse_ab", "mae_ab", "psnr_ab",
                                    "ciede2000", "delta_e76", "colorfulness", "delta_colorfulness", "lpips", "fid"}
    for name, m in metrics.METRICS.items():
        assert m.direction in ("higher", "lower") and m.label and callable(m.fn), name
        assert m.scope in ("image", "set")
    assert "faces study" in metrics.METRICS["psnr_ab"].label
    assert metrics.METRICS["fid"].scope == "set" and metrics.METRICS["lpips"].backbone == "lpips"
    got = metrics.per_image_metrics(predictions["shift"][:2], photos[:2])
    assert list(got) == [n for n, m in metrics.METRICS.items() if m.scope == "image" and n != "lpips"]
    assert all(v.shape == (2,) and v.dtype == torch.float32 for v in got.values())
    with pytest.raises(ValueError, match="LPIPSMetric"):
        metrics.METRICS["lpips"].fn(metrics.MetricBatch(photos[:1], photos[:1]))


def test_provenance_accessor_labels_random_backbones():
    prov = metric_nets.metric_provenance("random", "random")
    assert prov["lpips"]["weights"] == "random" and prov["fid"]["weights"] == "random"
    assert prov["lpips"]["seed"] == metric_nets.RANDOM_BACKBONE_SEED
    assert "alex.pth" in prov["lpips"]["linear_heads"]
    imagenet = metric_nets.metric_provenance("imagenet", "imagenet")  # describes, never downloads
    assert imagenet["fid"]["file"] == "pt_inception-2015-12-05-6726825d.pth"
    assert imagenet["lpips"]["file"] == "alexnet-owt-7be5be79.pth"
    with pytest.raises(ValueError):
        metric_nets.metric_provenance("pretrained", "random")


# -- backbones: LPIPS, FID ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def lpips_random() -> metric_nets.LPIPSMetric:
    return metric_nets.LPIPSMetric("random")


def test_lpips_random_backbone_is_reproducible(photos, predictions, lpips_random, offline_hub):
    again = metric_nets.LPIPSMetric("random")  # offline, empty cache: builds without any download
    assert not offline_hub.attempts
    a = lpips_random(predictions["shift"], photos)
    b = again(predictions["shift"], photos)
    assert torch.equal(a, b) and a.shape == (len(photos),)
    assert torch.all(lpips_random(photos, photos).abs() < 1e-6)
    assert torch.all(a > 0)
    assert lpips_random.provenance["weights"] == "random"
    got = metrics.per_image_metrics(predictions["shift"], photos, lpips=lpips_random)
    torch.testing.assert_close(got["lpips"], a)
    lpips_random.train()
    assert not lpips_random.training  # a metric never enables dropout


def test_lpips_batch_equals_the_lpips_package_one_image_at_a_time(photos, predictions, lpips_random):
    """The metric (a batch) against the ``lpips`` package called per image pair, same weights."""
    reference = lpips_random.net  # the package's own module, as lpips.LPIPS builds it
    pred = predictions["blur"]
    got = lpips_random(pred, photos)
    with torch.no_grad():
        ref = torch.stack([reference(p[None], t[None], normalize=True).flatten()[0] for p, t in zip(pred, photos)])
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-7)


def test_lpips_imagenet_missing_weights_fail_clearly(offline_hub):
    with pytest.raises(MissingWeightsError, match="alexnet-owt-7be5be79.pth"):
        metric_nets.LPIPSMetric("imagenet")
    assert offline_hub.attempts == ["https://download.pytorch.org/models/alexnet-owt-7be5be79.pth"]


def test_lpips_imagenet_loads_the_cached_file(offline_hub):
    import torchvision

    torch.manual_seed(123)
    state = torchvision.models.alexnet(weights=None).state_dict()
    cache = offline_hub.checkpoints
    cache.mkdir(parents=True)
    torch.save(state, cache / "alexnet-owt-7be5be79.pth")
    net = metric_nets.LPIPSMetric("imagenet")
    trunk = net.net.net
    # lpips keeps torchvision's layer index as the module name inside each slice
    torch.testing.assert_close(getattr(trunk.slice1, "0").weight, state["features.0.weight"])
    torch.testing.assert_close(getattr(trunk.slice5, "10").bias, state["features.10.bias"])
    assert net.provenance["weights"] == "imagenet" and len(net.provenance["sha256"]) == 64
    assert not offline_hub.attempts


@pytest.fixture(scope="module")
def fid_random() -> metric_nets.FIDExtractor:
    return metric_nets.FIDExtractor("random")


def test_fid_of_a_set_with_itself_is_zero(photos, predictions, fid_random):
    feats = fid_random.features(photos, batch_size=3)
    assert feats.shape == (len(photos), metric_nets.FID_DIMS) and feats.dtype == np.float64
    assert np.isfinite(feats).all() and feats.std(axis=0).mean() > 1e-4  # the random net is not dead
    scale = np.trace(np.cov(feats, rowvar=False))
    assert abs(metric_nets.frechet_distance(feats, feats)) <= 1e-9 * scale
    gray = fid_random.features(predictions["gray"])
    assert metric_nets.frechet_distance(gray, feats) > 1e-3 * scale
    # features from an iterable of batches == from one tensor
    np.testing.assert_allclose(fid_random.features(iter(photos.split(2))), feats, rtol=1e-5, atol=1e-7)
    assert metric_nets.fid(predictions["gray"], photos, fid_random) == pytest.approx(
        metric_nets.frechet_distance(gray, feats), rel=1e-6)


def test_fid_features_equal_pytorch_fid_one_image_at_a_time(photos, predictions, fid_random):
    """The batched, channels-last extractor against pytorch-fid's InceptionV3 as it ships
    (NCHW, eager, one image at a time; the same seeded weights): the same pool3 features up
    to float32 summation order."""
    reference = metric_nets._fid_inception(None).eval()
    u8 = torch.from_numpy(np.stack([_u8(p) for p in predictions["shift"][:3]])).permute(0, 3, 1, 2)
    got = fid_random.features(u8)
    with torch.no_grad():
        ref = np.stack([reference(x[None].float() / 255.0)[0].flatten().double().numpy() for x in u8])
    assert np.abs(got - ref).max() <= 1e-5 * np.abs(ref).max()
    assert not np.array_equal(ref[0], ref[1])  # distinct photos, distinct features


def test_fid_random_backbone_is_reproducible(photos, fid_random, offline_hub):
    again = metric_nets.FIDExtractor("random")
    assert not offline_hub.attempts
    np.testing.assert_array_equal(again.features(photos[:2]), fid_random.features(photos[:2]))
    assert again.provenance == {**again.provenance, "weights": "random", "seed": metric_nets.RANDOM_BACKBONE_SEED}


def test_fid_imagenet_missing_weights_fail_clearly(offline_hub):
    with pytest.raises(MissingWeightsError, match="pt_inception-2015-12-05-6726825d.pth"):
        metric_nets.FIDExtractor("imagenet")


def test_frechet_distance_matches_pytorch_fid():
    """The low-rank route (N <= D) and pytorch-fid's sqrtm route agree, and the
    public function takes pytorch-fid's route when N > D."""
    from pytorch_fid.fid_score import calculate_frechet_distance

    rng = np.random.default_rng(1)
    a = rng.normal(size=(40, 8)) @ rng.normal(size=(8, 8))
    b = 0.8 * rng.normal(size=(30, 8)) @ rng.normal(size=(8, 8)) + 0.5
    ref = calculate_frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False))
    assert metric_nets.frechet_distance(a, b) == pytest.approx(ref, rel=1e-9)
    # N <= D: the covariances are singular; compare with pytorch-fid on the same data
    # seen through an exact rotation into a larger space (the distance is invariant).
    q, _ = np.linalg.qr(rng.normal(size=(64, 64)))
    wide_a, wide_b = a @ q[:8], b @ q[:8]
    assert metric_nets.frechet_distance(wide_a, wide_b) == pytest.approx(ref, rel=1e-6)
    with pytest.raises(ValueError, match="at least 2"):
        metric_nets.frechet_distance(a[:1], b)


# -- bootstrap ---------------------------------------------------------------------------------

def test_bootstrap_ci_contains_the_mean_and_is_seeded():
    values = np.random.default_rng(0).gamma(2.0, 3.0, size=200)
    mean, low, high = intervals.bootstrap_ci(values, n_resamples=2000, seed=7)
    assert mean == pytest.approx(values.mean())
    assert low < mean < high
    assert high - low < 4 * values.std() / math.sqrt(len(values)) * 1.96
    assert intervals.bootstrap_ci(values, n_resamples=2000, seed=7) == (mean, low, high)
    assert intervals.bootstrap_ci(values, n_resamples=2000, seed=8) != (mean, low, high)
    wider = intervals.bootstrap_ci(values, n_resamples=2000, seed=7, confidence=0.99)
    assert wider[1] <= low and wider[2] >= high
    assert intervals.bootstrap_ci(torch.tensor(values), n_resamples=2000, seed=7) == (mean, low, high)


def test_bootstrap_by_photo_does_not_narrow_with_crops():
    """48 crops of each of 2 photos (the sample test split) are 2 samples, not 96."""
    rng = np.random.default_rng(0)
    photo_means = np.array([18.9, 14.2])  # A's PSNR on the two sample test photos, in the issue
    crops = np.repeat(photo_means, 48) + rng.normal(0, 0.3, 96)
    groups = np.repeat(["chelsea", "coffee"], 48)
    naive = intervals.bootstrap_ci(crops, n_resamples=2000, seed=1)
    by_photo = intervals.bootstrap_ci(crops, n_resamples=2000, seed=1, groups=groups)
    assert by_photo[0] == pytest.approx(naive[0])
    assert (by_photo[2] - by_photo[1]) > 3 * (naive[2] - naive[1])
    # a draw of the same photo twice is in it: the interval reaches both photos' own means
    assert by_photo[1] == pytest.approx(crops[48:].mean()) and by_photo[2] == pytest.approx(crops[:48].mean())
    # more crops of the same two photos do not make it narrower
    many = np.repeat(photo_means, 100) + rng.normal(0, 0.3, 200)
    wide = intervals.bootstrap_ci(many, n_resamples=2000, seed=1, groups=np.repeat(["chelsea", "coffee"], 100))
    assert (wide[2] - wide[1]) > 0.8 * (by_photo[2] - by_photo[1])
    # one image per group is the plain bootstrap, draw for draw
    values = rng.normal(size=50)
    assert intervals.bootstrap_ci(values, 500, 3, groups=np.arange(50)) == pytest.approx(
        intervals.bootstrap_ci(values, 500, 3), rel=1e-12)
    with pytest.raises(ValueError, match="group labels"):
        intervals.bootstrap_ci(values, 500, 3, groups=np.arange(49))


def test_bootstrap_ci_edge_cases():
    assert intervals.bootstrap_ci([3.0, 3.0, 3.0], n_resamples=100, seed=0) == (3.0, 3.0, 3.0)
    assert intervals.bootstrap_ci([2.5], n_resamples=100, seed=0) == (2.5, 2.5, 2.5)
    mean, low, high = intervals.bootstrap_ci([30.0, 31.0, math.inf, 29.0], n_resamples=500, seed=0)
    assert mean == math.inf and high == math.inf and low <= high
    with pytest.raises(ValueError, match="NaN"):
        intervals.bootstrap_ci([1.0, float("nan")])
    with pytest.raises(ValueError, match=r"\+inf and -inf"):
        intervals.bootstrap_ci([math.inf, -math.inf])
    with pytest.raises(ValueError, match="no values"):
        intervals.bootstrap_ci([])
