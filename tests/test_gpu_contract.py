"""The GPU path's contract, checked on the CPU: bf16 autocast (as ``runtime.autocast`` uses it on
CUDA) touches the networks only, and TF32 touches no colour conversion.

CPU bf16 autocast stands in for the CUDA one (``runtime.cpu_autocast_as_on_cuda``); a
dispatch mode that drops float32 matmul and convolution inputs to TF32's 10 mantissa bits
stands in for ``allow_tf32``. Every generator of the registry is covered, with every loss
configuration, so a new model is checked the day it is registered.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_map

from colorstudy import lab
from colorstudy.config import load_params
from colorstudy.data.loader import EpochBatches, ResidentSplit
from colorstudy.data.shards import LabShards
from colorstudy.distributed import SINGLE
from colorstudy.evaluate import load_predictor, score_batch
from colorstudy.metric_nets import LPIPSMetric
from colorstudy.metrics import colorfulness
from colorstudy.models import GENERATORS
from colorstudy.models.blocks import imagenet_input
from colorstudy.objective import FiniteWatch, build_objective
from colorstudy.runtime import cpu_autocast_as_on_cuda
from colorstudy.study import resolve_model
from colorstudy.train import Progress, to_checkpoint, train_epoch

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
SIZE, BATCH = 32, 4
# loss configuration -> (terms, adversarial.mode)
LOSS_CONFIGS = {"l1": (["l1"], "bce"), "mse": (["mse"], "bce"), "perceptual": (["perceptual"], "bce"),
                "adversarial-bce": (["l1", "adversarial"], "bce"),
                "adversarial-lsgan": (["l1", "adversarial"], "lsgan")}
# float32 vs bf16-autocast evaluation of the same one-step weights: bf16 keeps 8 bits of
# each activation. Seen on the faces (batch 4, 32 px): at most 2e-4 dB PSNR, 1.4e-4 CIEDE2000,
# 8e-4 colorfulness; the bounds leave 10x room and stay far below a model-to-model difference.
METRIC_BOUNDS = {"psnr": 0.01, "ssim": 1e-4, "ciede2000": 0.01, "mae_ab": 1e-4, "colorfulness": 0.01,
                 "lpips": 1e-4}
GRAY_RGB_SPREAD = 1e-4  # max |R-G|, |G-B| of a float32 neutral colour: the conversion's own rounding


# -- TF32, simulated ---------------------------------------------------------------------

_TF32_OPS = {torch.ops.aten.mm, torch.ops.aten.bmm, torch.ops.aten.addmm, torch.ops.aten.baddbmm,
             torch.ops.aten.mv, torch.ops.aten.dot, torch.ops.aten.convolution}


def _tf32(t: object) -> object:
    # keep 10 of float32's 23 mantissa bits, as a TF32 tensor core reads its inputs
    if isinstance(t, torch.Tensor) and t.dtype == torch.float32:
        return (t.view(torch.int32) & ~0x1FFF).view(torch.float32)
    return t


class SimulatedTF32(TorchDispatchMode):
    """Float32 matmuls and convolutions with TF32 inputs, whichever Python API led to them."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.overloadpacket in _TF32_OPS:
            args, kwargs = tree_map(_tf32, args), tree_map(_tf32, kwargs or {})
        return func(*args, **(kwargs or {}))


def _gray(n: int = 2) -> torch.Tensor:
    L_n = torch.linspace(-1.0, 1.0, n * SIZE * SIZE).view(n, 1, SIZE, SIZE)
    return L_n


def test_the_tf32_simulation_changes_a_matmul():
    # the mode must bite, or the tests below would pass for nothing
    m, x = torch.rand(3, 3), torch.rand(2, 3, 8, 8)
    exact = torch.einsum("ij,...jhw->...ihw", m, x)
    with SimulatedTF32():
        tf32 = torch.einsum("ij,...jhw->...ihw", m, x)
    assert not torch.equal(exact, tf32)


def test_colour_conversions_are_exact_under_tf32():
    L_n = _gray()
    ab_n = torch.rand(2, 2, SIZE, SIZE) * 0.6 - 0.3
    rgb = torch.rand(2, 3, SIZE, SIZE, requires_grad=True)
    exact = (lab.rgb_to_lab(rgb), lab.colorize(L_n, ab_n), colorfulness(lab.colorize(L_n, torch.zeros_like(ab_n))))
    (grad,) = torch.autograd.grad(exact[0].sum(), rgb)
    with SimulatedTF32():
        tf32 = (lab.rgb_to_lab(rgb), lab.colorize(L_n, ab_n), colorfulness(lab.colorize(L_n, torch.zeros_like(ab_n))))
        (grad_tf32,) = torch.autograd.grad(tf32[0].sum(), rgb)
    for a, b in zip(exact, tf32):
        assert torch.equal(a, b)  # bitwise: no matmul left in the conversions
    assert torch.equal(grad, grad_tf32)
    assert exact[2].max() < 0.01  # the gray photo is (nearly) colourless, as in float32


# -- bf16 autocast, as on CUDA -------------------------------------------------------------

def _spread(rgb: torch.Tensor) -> float:
    return max((rgb[:, 0] - rgb[:, 1]).abs().max().item(), (rgb[:, 1] - rgb[:, 2]).abs().max().item())


def _einsum_matrix(m: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.einsum("ij,...jhw->...ihw", m.to(x.dtype), x)  # the conversion before issue 20


@pytest.mark.parametrize("conversion", ["as it is", "through an autocast op"])
def test_the_imagenet_encoders_see_a_gray_photo_under_bf16_autocast(conversion, monkeypatch):
    if conversion != "as it is":  # even a conversion autocast would lower stays float32 here
        monkeypatch.setattr(lab, "_apply_matrix", _einsum_matrix)
    L_n = _gray()
    fp32 = imagenet_input(L_n)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        bf16 = imagenet_input(L_n)
    assert bf16.dtype == torch.float32 and torch.equal(bf16, fp32)
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)))
    assert _spread(bf16 * std + mean) < GRAY_RGB_SPREAD


# -- one training step and one evaluation batch of every model --------------------------------

@pytest.fixture(scope="module")
def train_split(faces_shards) -> ResidentSplit:
    return ResidentSplit(LabShards(faces_shards), "train", CPU)


def _run_spec(generator: str, terms: list[str], mode: str):
    params = copy.deepcopy(load_params(ROOT / "params.yaml"))
    params["data"]["image_size"] = SIZE
    params["train"].update(epochs=1, decay_epochs=0, batch_size=BATCH, width=4, device="cpu", augment=True)
    params["adversarial"].update(width=4, mode=mode)
    params["models"]["contract"] = {"generator": generator, "terms": terms}
    return resolve_model(params, "contract")


def _train_one_step(run, data: ResidentSplit) -> tuple[object, dict[str, torch.Tensor]]:
    objective = build_objective(run, CPU)
    seen: dict[str, torch.Tensor] = {}
    note = FiniteWatch.note

    def spy(self, losses, epoch, step):
        seen.update(losses)
        note(self, losses, epoch, step)

    batches = EpochBatches(data, torch.arange(BATCH), BATCH, 1)  # one step, as train_model draws it
    gen = torch.Generator().manual_seed(0)
    with pytest.MonkeyPatch.context() as mp, cpu_autocast_as_on_cuda():
        mp.setattr(FiniteWatch, "note", spy)
        train_epoch(objective, run.train, batches, gen, 0, "contract", CPU, SINGLE)
    return objective, seen


def _evaluate_batch(path: Path, L: torch.Tensor, ab: torch.Tensor, lpips: LPIPSMetric) -> dict[str, float]:
    _, predict, _ = load_predictor(path, CPU)
    ab_pred = predict(L)
    assert ab_pred.dtype == torch.float32
    scores = score_batch(L, ab_pred, ab, lpips, None, truth_features=False)
    return {name: float(v.mean()) for name, v in scores.values.items()}


@pytest.mark.parametrize("generator", sorted(GENERATORS))
def test_the_gpu_path_keeps_float32_where_it_matters(generator, train_split, tmp_path):
    L, ab = train_split.fetch(torch.arange(BATCH))
    lpips = LPIPSMetric("random", device=CPU)
    for config, (terms, mode) in LOSS_CONFIGS.items():
        run = _run_spec(generator, terms, mode)
        objective, losses = _train_one_step(run, train_split)
        assert set(losses) == set(objective.logged), config
        for name, value in losses.items():
            assert value.dtype == torch.float32 and torch.isfinite(value), (config, name)
        for net in (objective.generator, objective.discriminator):
            for p in (net.parameters() if net is not None else ()):
                assert p.dtype == torch.float32 and p.grad.dtype == torch.float32, config
        for opt in objective.optimizers:
            for state in opt.state.values():
                assert state["exp_avg"].dtype == torch.float32, config

    # the last model, scored on one batch in float32 and under the stand-in autocast
    path = tmp_path / "contract.pt"
    to_checkpoint(run, {}, objective, Progress(epoch=1), 1, "cpu").save(path)
    fp32 = _evaluate_batch(path, L, ab, lpips)
    with cpu_autocast_as_on_cuda():
        bf16 = _evaluate_batch(path, L, ab, lpips)
        gray = lab.colorize(L, torch.zeros_like(ab))
    assert gray.dtype == torch.float32 and _spread(gray) < GRAY_RGB_SPREAD
    assert fp32.keys() == bf16.keys()
    for name, bound in METRIC_BOUNDS.items():
        assert abs(fp32[name] - bf16[name]) <= bound, (name, fp32[name], bf16[name])
