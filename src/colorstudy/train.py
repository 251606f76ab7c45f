"""The training loop: one study model, read top to bottom.

Every stochastic choice (shuffle, augmentation, dropout) is re-seeded from
``(seed, epoch)`` at the start of each epoch, so a run resumed from its end-of-epoch
checkpoint continues exactly as an uninterrupted run would, and two CPU runs with
the same params write bitwise-identical weights.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from colorstudy import checkpoint
from colorstudy.config import AdversarialParams, PerceptualParams, TrainParams
from colorstudy.data.shards import LabShards
from colorstudy.lab import AB_SCALE
from colorstudy.losses import build_loss, discriminator_loss
from colorstudy.models import build_discriminator, build_generator
from colorstudy.runtime import autocast, inference, make_reproducible, resolve_device

MAX_ROTATION_DEG = 15.0  # the study's training-only augmentation
MAX_SHIFT = 0.2  # translation: ±10 % of the width, the seed study's (affine_grid spans [-1, 1])
SELECTED, LAST = "selected.pt", "last.pt"  # the checkpoint train.select picked; the resume point


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stops rather than save garbage."""


def augment(L: torch.Tensor, ab: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flip, small rotation and translation, the same for L and ab.

    Runs where the data lives (GPU when present) as one batched resampling; no color
    jitter, which would change the ground truth colors.
    """
    x = torch.cat((L, ab), dim=1)
    n = x.shape[0]
    flip = torch.rand(n, generator=gen, device=x.device) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    angle = (torch.rand(n, generator=gen, device=x.device) * 2 - 1) * math.radians(MAX_ROTATION_DEG)
    shift = (torch.rand(n, 2, generator=gen, device=x.device) * 2 - 1) * MAX_SHIFT
    cos, sin = angle.cos(), angle.sin()
    theta = torch.stack((torch.stack((cos, -sin, shift[:, 0]), 1), torch.stack((sin, cos, shift[:, 1]), 1)), 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return x[:, :1], x[:, 1:]


def lr_factor(step: int, total_steps: int, decay_steps: int) -> float:
    """Constant, then linear decay to zero over the last ``decay_steps`` steps."""
    if decay_steps == 0:
        return 1.0
    return min(1.0, (total_steps - step) / decay_steps)


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, L: torch.Tensor, batch_size: int, device: torch.device) -> None:
    """Set every BatchNorm's running statistics to the exact average over ``L`` at the current weights.

    Why: eval mode normalizes with running averages (momentum 0.1) of statistics the
    weights had many steps ago. Early in training, with pix2pix's N(0, 0.02) init, the
    activations are tiny while the running variance starts at 1.0, so eval-mode outputs
    shrink towards gray and validation, selection and evaluation score a model that
    training never saw (seen: mean predicted chroma 3 in eval mode, 17 with batch
    statistics, 19 in the truth). Dropout stays off, as at inference; no RNG is drawn,
    so resumed runs stay exact. Like ``torch.optim.swa_utils.update_bn``.
    """
    norms = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    was_training = model.training
    momenta = [m.momentum for m in norms]
    model.eval()
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the batches below
        m.train()
    with autocast(device):
        for i in range(0, len(L), batch_size):
            model(L[i:i + batch_size])
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def validate(generator: torch.nn.Module, L: torch.Tensor, ab: torch.Tensor, batch_size: int,
             device: torch.device) -> dict[str, float]:
    """Validation ab-L1 (normalized ab) and ab error (mean |Δab| in Lab units).

    Training-time numbers on the raw prediction: not clipped to the valid ab range
    and not the evaluation's ΔE76 (which is on the clipped, sRGB-representable colors
    of the test split), so they are not to be set beside a published test ΔE.
    """
    l1_sum = de_sum = 0.0
    with inference(generator), autocast(device):
        for i in range(0, len(L), batch_size):
            pred = generator(L[i:i + batch_size]).float()
            diff = pred - ab[i:i + batch_size]
            l1_sum += diff.abs().mean(dim=(1, 2, 3)).sum().item()
            de_sum += (diff.square().sum(dim=1).sqrt() * AB_SCALE).mean(dim=(1, 2)).sum().item()
    return {"ab_l1": l1_sum / len(L), "ab_error": de_sum / len(L)}


def grayscale_baseline(ab: torch.Tensor) -> dict[str, float]:
    """The same validation numbers for ab = 0: what a model must beat."""
    return {"ab_l1": ab.abs().mean().item(),
            "ab_error": (ab.square().sum(dim=1).sqrt() * AB_SCALE).mean().item()}


def _check_finite(losses: dict[str, torch.Tensor], model_id: str, epoch: int, step: int) -> None:
    total = sum(losses.values())
    if not torch.isfinite(total):  # one sync per step; per-term values only on failure
        bad = [f"{name}={value.item()}" for name, value in losses.items() if not torch.isfinite(value)]
        raise NonFiniteLossError(
            f"model {model_id}: non-finite loss at epoch {epoch + 1}, step {step}: {', '.join(bad)}. "
            f"Lower train.lr or the offending weight in `loss`, then rerun.")


def train_model(run: dict[str, Any], shards_dir: str | Path, out_dir: str | Path, log_dir: str | Path,
                resume_dir: str | Path | None = None) -> dict[str, Any]:
    """Train study model ``run`` (a resolved run spec); returns its summary metrics.

    Writes ``last.pt`` every epoch (the resume point) and ``selected.pt``, the
    checkpoint ``train.select`` picks (the last epoch, or the best by a validation
    metric), into ``resume_dir``; BatchNorm statistics are re-estimated on the
    training split before every validation and save. When training ends it copies both to
    ``out_dir`` and removes ``resume_dir``. The pipeline keeps ``resume_dir`` outside
    the stage's declared output: DVC deletes a declared output before it reruns the
    stage, and a persisted one (which it would keep) turns off its run-cache, so this
    is how a killed run can resume while `dvc exp run` still restores finished ones
    from the cache. ``resume_dir`` defaults to ``out_dir`` (resume in place). dvclive
    logs go to ``log_dir``.
    """
    from dvclive import Live

    model_id = run["model_id"]
    cfg = TrainParams(**run["train"])
    out_dir, log_dir = Path(out_dir), Path(log_dir)
    device = resolve_device(cfg.device)
    make_reproducible(device, cfg.num_threads)

    shards = LabShards(shards_dir)
    L_train, ab_train = shards.split("train", device=device)
    L_val, ab_val = shards.split("val", device=device)
    if len(L_train) == 0 or len(L_val) == 0:
        raise RuntimeError(f"{shards_dir}: the train and val splits must not be empty "
                           f"(train {len(L_train)}, val {len(L_val)} images)")

    torch.manual_seed(cfg.seed)
    generator = build_generator(run["generator"], **run["arch_kwargs"]).to(device)
    generator = generator.to(memory_format=torch.channels_last) if device.type == "cuda" else generator
    betas = (cfg.beta1, cfg.beta2)
    opt_g = torch.optim.Adam(generator.parameters(), lr=cfg.lr, betas=betas)
    # A fixed order: the sum of the terms (float addition) must not depend on whether
    # the spec came from params or from its sorted JSON file.
    terms = dict(sorted(run["terms"].items()))
    losses: dict[str, torch.nn.Module] = {}
    provenance: dict[str, Any] = {"generator": getattr(generator, "provenance", {})}
    discriminator = opt_d = adv = None
    for name in terms:
        if name == "perceptual":
            p = PerceptualParams(**run["perceptual"])
            losses[name] = build_loss(name, weights=p.weights, layers=p.layers).to(device)
            provenance["perceptual"] = losses[name].provenance
        elif name == "adversarial":
            a = AdversarialParams(**run["adversarial"])
            adv = build_loss(name, mode=a.mode).to(device)
            losses[name] = adv
            discriminator = build_discriminator("patchgan", width=a.width, layers=a.layers).to(device)
            opt_d = torch.optim.Adam(discriminator.parameters(), lr=cfg.lr, betas=betas)
        else:
            losses[name] = build_loss(name).to(device)

    logged = [*terms, *(["discriminator"] if discriminator is not None else [])]  # per-epoch mean losses
    steps_per_epoch = len(L_train) // cfg.batch_size or 1
    total_steps = cfg.epochs * steps_per_epoch
    decay_steps = cfg.decay_epochs * steps_per_epoch
    criterion = cfg.select.removeprefix("val_")  # a validation metric, or "last"
    state = {"epoch": 0, "selected": {"epoch": -1, "criterion": cfg.select}, "history": []}

    work_dir = Path(resume_dir) if resume_dir is not None else out_dir
    last_path, selected_path = work_dir / LAST, work_dir / SELECTED
    data = {"shards_sha256": shards.fingerprint()}
    if last_path.exists():  # resume, but only a run of exactly this spec on exactly these data
        saved = checkpoint.load(last_path, map_location=device)
        if saved.get("run") == run and saved.get("data") == data:
            generator.load_state_dict(saved["generator"])
            opt_g.load_state_dict(saved["opt_g"])
            if discriminator is not None:
                discriminator.load_state_dict(saved["discriminator"])
                opt_d.load_state_dict(saved["opt_d"])
            state = {"epoch": saved["epoch"], "selected": saved["selected"], "history": saved["history"]}
            print(f"{model_id}: resuming after epoch {state['epoch']} from {last_path}")

    baseline = grayscale_baseline(ab_val)
    # dvclive starts clean and replays the resumed history, so the plots never hold an
    # epoch twice when a run was killed between logging and checkpointing.
    live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=None, report=None)
    for record in state["history"]:
        for key, value in record.items():
            live.log_metric(key, value)
        live.next_step()

    for epoch in range(state["epoch"], cfg.epochs):
        torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout; with `gen` below, resume-exact
        gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + epoch)
        order = torch.randperm(len(L_train), generator=gen, device=device)
        sums = {name: torch.zeros((), device=device) for name in logged}
        generator.train()
        bar = tqdm(range(steps_per_epoch), desc=f"{model_id} epoch {epoch + 1}/{cfg.epochs}", leave=False)
        for i in bar:
            step = epoch * steps_per_epoch + i
            for opt in (opt_g, opt_d):
                if opt is not None:
                    for group in opt.param_groups:
                        group["lr"] = cfg.lr * lr_factor(step, total_steps, decay_steps)
            idx = order[i * cfg.batch_size:(i + 1) * cfg.batch_size]
            L, ab = L_train[idx], ab_train[idx]
            if cfg.augment:
                L, ab = augment(L, ab, gen)
            if device.type == "cuda":
                L, ab = L.contiguous(memory_format=torch.channels_last), ab.contiguous(memory_format=torch.channels_last)

            with autocast(device):
                fake = generator(L)

            if discriminator is not None:  # pix2pix: D first, on the detached fake
                discriminator.requires_grad_(True)
                opt_d.zero_grad(set_to_none=True)
                with autocast(device):
                    loss_d = discriminator_loss(adv, discriminator(L, ab), discriminator(L, fake.detach()))
                loss_d.backward()
                opt_d.step()
                sums["discriminator"] += loss_d.detach()
                discriminator.requires_grad_(False)  # G's step must not accumulate into D

            opt_g.zero_grad(set_to_none=True)
            with autocast(device):
                parts = {}
                for name, weight in terms.items():
                    if name == "adversarial":
                        value = losses[name](discriminator(L, fake))
                    else:
                        value = losses[name](L, fake, ab)
                    parts[name] = weight * value.float()
            _check_finite(parts, model_id, epoch, step)
            sum(parts.values()).backward()
            opt_g.step()
            for name, value in parts.items():
                sums[name] += value.detach()

        recalibrate_batchnorm(generator, L_train, cfg.batch_size, device)
        val = validate(generator, L_val, ab_val, cfg.batch_size, device)
        record = {f"train/{name}": (value / steps_per_epoch).item() for name, value in sums.items()}
        record.update({f"val/{k}": v for k, v in val.items()})
        record.update({f"val/baseline_{k}": v for k, v in baseline.items()})
        record["lr"] = cfg.lr * lr_factor((epoch + 1) * steps_per_epoch, total_steps, decay_steps)
        state["history"].append(record)
        state["epoch"] = epoch + 1
        chosen = state["selected"]
        improved = criterion == "last" or val[criterion] < chosen.get(criterion, math.inf)
        if improved:
            state["selected"] = {"epoch": epoch + 1, "criterion": cfg.select, **val}
        payload = {
            "model_id": model_id, "architecture": run["generator"], "arch_kwargs": run["arch_kwargs"],
            "run": run, "data": data, "epoch": state["epoch"], "step": state["epoch"] * steps_per_epoch,
            "generator": generator.state_dict(), "opt_g": opt_g.state_dict(),
            "discriminator": discriminator.state_dict() if discriminator is not None else None,
            "opt_d": opt_d.state_dict() if opt_d is not None else None,
            "selected": state["selected"], "history": state["history"], "provenance": provenance,
            "torch_version": str(torch.__version__),
        }
        if improved:
            checkpoint.save(selected_path, payload)
        checkpoint.save(last_path, payload)  # last: a kill after this line loses nothing
        for key, value in record.items():
            live.log_metric(key, value)
        live.next_step()
        print(f"{model_id} epoch {state['epoch']}/{cfg.epochs}: val ab-L1 {val['ab_l1']:.4f} "
              f"(grayscale {baseline['ab_l1']:.4f}), |Δab| {val['ab_error']:.2f} "
              f"(grayscale {baseline['ab_error']:.2f})")

    summary = {
        "select": cfg.select,
        "selected_epoch": state["selected"]["epoch"],
        "epochs": cfg.epochs,
        "val_ab_l1": state["selected"]["ab_l1"],
        "val_ab_error": state["selected"]["ab_error"],
        "baseline_val_ab_l1": baseline["ab_l1"],
        "baseline_val_ab_error": baseline["ab_error"],
        "beats_baseline": state["selected"]["ab_l1"] < baseline["ab_l1"],
    }
    for key, value in summary.items():
        live.summary[key] = value
    live.end()
    if work_dir.resolve() != out_dir.resolve():
        out_dir.mkdir(parents=True, exist_ok=True)
        for path in (selected_path, last_path):
            shutil.copyfile(path, out_dir / path.name)
        shutil.rmtree(work_dir)
    return summary

