"""The model zoo: every registered generator honours the contract others code against."""

from __future__ import annotations

import inspect
import json
from typing import Any

import pytest
import torch

from colorstudy.checkpoint import Checkpoint
from colorstudy.models import DISCRIMINATORS, GENERATORS, build_discriminator, build_generator
from colorstudy.weights import MissingWeightsError, backbone

TINY_WIDTH = 4
# Depth overrides that keep the stride small enough for fast tests; an architecture
# without an entry is tested at its defaults.
SMALL: dict[str, dict[str, Any]] = {"unet": {"depth": 5}}



def tiny_kwargs(name: str) -> dict[str, Any]:
    return {"width": TINY_WIDTH, **SMALL.get(name, {})}


def tiny(name: str) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator(name, **tiny_kwargs(name), weights="random")


def sizes(stride: int) -> list[tuple[int, int]]:
    """Square, larger square and non-square (non-power-of-two) sizes divisible by ``stride``."""
    m = -(-32 // stride) * stride
    return [(m, m), (2 * m, 2 * m), (m, 3 * m)]


def normalized_l(batch: int, h: int, w: int) -> torch.Tensor:
    return torch.rand(batch, 1, h, w) * 2 - 1


@pytest.fixture(params=sorted(GENERATORS))
def name(request: pytest.FixtureRequest) -> str:
    return request.param


def test_output_shape_and_range(name: str) -> None:
    model = tiny(name).eval()
    for h, w in sizes(model.stride):
        with torch.no_grad():
            out = model(normalized_l(2, h, w))
        assert out.shape == (2, 2, h, w), (h, w)
        assert torch.isfinite(out).all()
        assert out.abs().max() < 1


def test_contract_attributes(name: str) -> None:
    model = tiny(name)
    assert isinstance(model.stride, int) and model.stride >= 1
    assert isinstance(model.provenance, dict)
    json.dumps(model.provenance)


def test_size_not_divisible_by_stride_is_a_clear_error(name: str) -> None:
    model = tiny(name).eval()
    if model.stride == 1:  # every size is valid, odd ones included
        with torch.no_grad():
            assert model(normalized_l(1, 33, 47)).shape == (1, 2, 33, 47)
        return
    m = sizes(model.stride)[0][0]
    with pytest.raises(ValueError, match=f"not divisible by the model's stride {model.stride}"):
        model(normalized_l(1, m + model.stride // 2, m))


def test_wrong_channel_count_is_a_clear_error(name: str) -> None:
    model = tiny(name).eval()
    m = sizes(model.stride)[0][0]
    with pytest.raises(ValueError, match=r"\[B,1,H,W\]"):
        model(torch.zeros(1, 3, m, m))


def test_gradient_reaches_every_parameter(name: str) -> None:
    model = tiny(name).train()
    m = sizes(model.stride)[0][0]
    out = model(normalized_l(2, m, m))
    torch.nn.functional.mse_loss(out, torch.rand_like(out) * 2 - 1).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname


def test_same_seed_same_weights(name: str) -> None:
    a, b = tiny(name).state_dict(), tiny(name).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_checkpoint_round_trip(name: str, tmp_path) -> None:
    kwargs = tiny_kwargs(name)
    assert json.loads(json.dumps(kwargs)) == kwargs
    model = tiny(name)
    m = sizes(model.stride)[0][0]
    x = normalized_l(2, m, m)
    model.train()(x)  # moves the BatchNorm running statistics away from their initial values
    path = tmp_path / "model.pt"
    Checkpoint(architecture=name, arch_kwargs=kwargs, generator=model.state_dict()).save(path)
    torch.manual_seed(123)  # the rebuilt model must get its weights from the file, not the seed
    rebuilt = Checkpoint.load(path).model()
    with torch.no_grad():
        assert torch.equal(model.eval()(x), rebuilt(x))


@pytest.mark.parametrize("name, kwargs, stride", [
    ("autoencoder", {"depth": 2}, 4), ("unet", {"depth": 6}, 64), ("resnet_unet", {"depth": 4}, 16),
    ("resnet_unet", {"depth": 1}, 2), ("densenet", {"blocks": 3, "layers": 2, "growth": 3}, 8),
    ("deep_cnn", {"blocks": 2}, 1)])
def test_depth_knobs_set_the_stride(name: str, kwargs: dict[str, Any], stride: int) -> None:
    torch.manual_seed(0)
    model = build_generator(name, width=TINY_WIDTH, **kwargs).eval()
    assert model.stride == stride
    with torch.no_grad():
        assert model(normalized_l(1, 2 * stride, 2 * stride)).shape == (1, 2, 2 * stride, 2 * stride)


def test_resnet_unet_depth_is_bounded_by_resnet34() -> None:
    with pytest.raises(ValueError, match="at most 5"):
        build_generator("resnet_unet", depth=6)


def test_pix2pix_init_statistics() -> None:
    torch.manual_seed(0)
    model = build_generator("unet", width=64, depth=8)
    convs = torch.cat([m.weight.flatten() for m in model.modules() if isinstance(m, torch.nn.ConvTranspose2d)])
    norms = torch.cat([m.weight for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)])
    assert convs.mean().abs() < 1e-3 and abs(convs.std().item() - 0.02) < 1e-3
    assert abs(norms.mean().item() - 1) < 5e-3 and abs(norms.std().item() - 0.02) < 5e-3


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_unet_has_the_published_size() -> None:
    model = build_generator("unet", width=64)  # default depth 8: pix2pix unet_256
    assert model.stride == 256
    assert abs(n_params(model) - 54.4e6) / 54.4e6 < 0.03
    dropouts = [m for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    assert len(dropouts) == 3 and all(d.p == 0.5 for d in dropouts)


def test_unet_default_depth_runs_at_256() -> None:
    torch.manual_seed(0)
    model = build_generator("unet", width=2).train()  # batch 2 at a 1x1 bottleneck, as pix2pix
    out = model(normalized_l(2, 256, 256))
    assert out.shape == (2, 2, 256, 256)


def test_patchgan_has_the_published_size_and_a_70px_receptive_field() -> None:
    assert abs(n_params(build_discriminator("patchgan", width=64)) - 2.8e6) / 2.8e6 < 0.03
    torch.manual_seed(0)
    model = build_discriminator("patchgan", width=TINY_WIDTH).eval()
    L = normalized_l(1, 256, 256).requires_grad_()
    ab = torch.zeros(1, 2, 256, 256, requires_grad=True)
    logits = model(L, ab)
    assert logits.shape == (1, 1, 30, 30)  # pix2pix's map for 256x256
    logits[0, 0, 15, 15].backward()
    rows, cols = torch.nonzero(L.grad[0, 0] + ab.grad[0].abs().sum(0), as_tuple=True)
    assert rows.max() - rows.min() + 1 == 70 and cols.max() - cols.min() + 1 == 70


def test_patchgan_trains_on_the_pipeline_size() -> None:
    torch.manual_seed(0)
    model = build_discriminator("patchgan", width=TINY_WIDTH, layers=3).train()
    logits = model(normalized_l(2, 64, 64), torch.rand(2, 2, 64, 64) * 2 - 1)
    assert logits.shape == (2, 1, 6, 6)
    logits.mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    with pytest.raises(ValueError, match="ab"):
        model(normalized_l(2, 64, 64), torch.zeros(2, 3, 64, 64))


@pytest.mark.parametrize("build, registry", [(build_generator, GENERATORS),
                                             (build_discriminator, DISCRIMINATORS)])
def test_unknown_name_lists_the_valid_ones(build, registry) -> None:
    with pytest.raises(ValueError) as info:
        build("no_such_model")
    assert all(valid in str(info.value) for valid in registry)


def test_unknown_argument_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['depht'\].*'depth'"):
        build_generator("unet", depht=6)
    with pytest.raises(ValueError, match="layer"):
        build_discriminator("patchgan", layer=3)


@pytest.mark.parametrize("kwargs", [{"width": 0}, {"width": 2.5}, {"weights": "imagenette"}])
def test_bad_argument_values_are_rejected(name: str, kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match="width|weights"):
        build_generator(name, **kwargs)


def test_every_generator_has_width_and_weights_defaults() -> None:
    for name, builder in GENERATORS.items():
        params = inspect.signature(builder).parameters
        assert params["width"].default == 64, name
        assert params["weights"].default == "random", name
        assert all(p.default is not inspect.Parameter.empty for p in params.values()), name


RESNET_GENERATORS = ("resnet_unet", "resnet_encdec")  # the ones with an ImageNet encoder


def _fake_imagenet_resnet34(torch_home, seed: int) -> dict[str, torch.Tensor]:
    """A random resnet34 state dict where the hub cache keeps the ImageNet file."""
    from torchvision.models import resnet34

    torch.manual_seed(seed)
    state = resnet34(weights=None).state_dict()
    cached = torch_home / "hub" / "checkpoints" / backbone("resnet34").file
    cached.parent.mkdir(parents=True)
    torch.save(state, cached)
    return state


@pytest.mark.parametrize("arch", RESNET_GENERATORS)
def test_resnet_imagenet_offline_names_the_file(offline_hub, arch: str) -> None:
    with pytest.raises(MissingWeightsError, match=backbone("resnet34").file):
        build_generator(arch, width=TINY_WIDTH, weights="imagenet")


@pytest.mark.parametrize("arch", RESNET_GENERATORS)
def test_resnet_imagenet_encoder_is_loaded_unchanged(offline_hub, arch: str) -> None:
    pretend = _fake_imagenet_resnet34(offline_hub.home, seed=1)
    model = build_generator(arch, width=TINY_WIDTH, weights="imagenet")
    assert torch.equal(model.encoder[0][0].weight if arch == "resnet_unet" else model.encoder[0].weight,
                       pretend["conv1.weight"])
    assert model.provenance["weights"] == "imagenet" and len(model.provenance["sha256"]) == 64
    assert build_generator(arch, width=TINY_WIDTH).provenance["weights"] == "random"


def test_imagenet_input_is_normalized_srgb_gray() -> None:
    """The encoder sees what ImageNet training showed it: sRGB R = G = B, per-channel mean/std."""
    from colorstudy.models.blocks import imagenet_input
    from colorstudy.weights import IMAGENET_MEAN, IMAGENET_STD

    L_n = torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1, 1)  # L = 0, 50, 100
    x = imagenet_input(L_n).view(3, 3)
    mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
    gray = x * std + mean
    assert torch.allclose(gray[0], torch.zeros(3), atol=1e-5) and torch.allclose(gray[2], torch.ones(3), atol=1e-5)
    # L = 50 is sRGB 119/255 (skimage's lab2rgb of (50, 0, 0))
    assert torch.allclose(gray[1], torch.full((3,), 0.4663), atol=2e-3)


@pytest.mark.parametrize("arch", RESNET_GENERATORS)
def test_an_imagenet_encoder_checkpoint_rebuilds_without_the_weight_file(offline_hub, tmp_path,
                                                                          arch: str) -> None:
    """evaluate and colorize rebuild from the state dict alone: no download, no hub file."""
    _fake_imagenet_resnet34(offline_hub.home, seed=2)  # a fake "ImageNet" file, for training only
    kwargs = {"width": TINY_WIDTH, "weights": "imagenet"}  # as `models.X.arch.weights=imagenet` resolves
    trained = build_generator(arch, **kwargs)
    path = tmp_path / "selected.pt"
    Checkpoint(architecture=arch, arch_kwargs=kwargs, generator=trained.state_dict()).save(path)
    (offline_hub.home / "hub" / "checkpoints" / backbone("resnet34").file).unlink()  # gone where it evaluates

    rebuilt = Checkpoint.load(path).model()
    for key, value in trained.state_dict().items():
        assert torch.equal(rebuilt.state_dict()[key], value), key


def test_patchgan_depth_follows_the_image_size() -> None:
    """auto keeps pix2pix's patch-to-image ratio (70 of 256 px): at 64 px a 70x70 patch would see it all."""
    from colorstudy.models.patchgan import layers_for, receptive_field

    assert [receptive_field(n) for n in (1, 2, 3)] == [16, 34, 70]
    assert {size: layers_for(size) for size in (32, 64, 128, 256, 512)} == {32: 1, 64: 1, 128: 2, 256: 3, 512: 3}
    for size in (64, 128, 256):
        assert receptive_field(layers_for(size)) <= 0.28 * size
