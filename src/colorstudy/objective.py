"""What one training step optimizes: the generator, its weighted loss terms, and for an
adversarial objective the PatchGAN, with pix2pix's two updates (D on the detached
fake, then G). Under data parallelism DDP averages G's gradients and
:func:`~colorstudy.distributed.average_gradients` D's.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from colorstudy.distributed import SINGLE, ProcessGroup, average_gradients, sum_over_ranks
from colorstudy.losses import build_loss, discriminator_loss
from colorstudy.models import build_discriminator, build_generator
from colorstudy.runtime import autocast

if TYPE_CHECKING:
    from colorstudy.study import RunSpec


class NonFiniteLossError(RuntimeError):
    """A loss term became NaN or inf; training stops rather than save garbage."""


# Steps between finiteness checks: each check is a host sync (and under DDP an all-reduce),
# which on a GPU stalls the queue of kernels the next steps would already be running.
FINITE_CHECK_STEPS = 25


class FiniteWatch:
    """Non-finite loss terms, noted on the device every step and checked on the host every
    :data:`FINITE_CHECK_STEPS` steps and at the end of the epoch.

    A NaN stops the run at most ``FINITE_CHECK_STEPS - 1`` steps after it appeared, before
    the epoch's checkpoint, naming the term, its first bad step and value, and the steps the
    check covered. Noting draws no RNG and changes no number: training is unchanged.
    """

    def __init__(self, terms: list[str], model_id: str, device: torch.device,
                 group: ProcessGroup = SINGLE, every: int | None = None) -> None:
        self.terms, self.model_id, self.group = terms, model_id, group
        self.every = every or FINITE_CHECK_STEPS
        self.first_step = torch.full((len(terms),), -1, dtype=torch.int64, device=device)
        self.first_value = torch.zeros(len(terms), device=device)
        self.unchecked_from: int | None = None  # the first step not checked yet

    def note(self, losses: dict[str, torch.Tensor], epoch: int, step: int) -> None:
        """Record ``losses`` (every term, 0-d) of global ``step``; checks when a window is full."""
        values = torch.stack([losses[name].detach().float() for name in self.terms])
        new = ~torch.isfinite(values) & (self.first_step < 0)
        self.first_step = torch.where(new, step, self.first_step)
        self.first_value = torch.where(new, values, self.first_value)
        if self.unchecked_from is None:
            self.unchecked_from = step
        if (step + 1) % self.every == 0:
            self.check(epoch, step)

    def check(self, epoch: int, last_step: int) -> None:
        """Raise :class:`NonFiniteLossError` if a term was non-finite on any rank since the last check."""
        if self.unchecked_from is None:
            return
        # over all ranks, so that every rank stops at the same step instead of the others
        # waiting forever in the next all-reduce
        flagged = sum_over_ranks((self.first_step >= 0).float(), self.group).tolist()  # the sync
        steps = f"steps {self.unchecked_from}-{last_step}"
        self.unchecked_from = None
        if not any(flagged):
            return
        where, values = self.first_step.tolist(), self.first_value.tolist()
        bad = [f"{name}={values[i]} first at step {where[i]}" if where[i] >= 0 else f"{name} on another rank"
               for i, name in enumerate(self.terms) if flagged[i]]
        raise NonFiniteLossError(
            f"model {self.model_id}: non-finite loss at epoch {epoch + 1}, {steps} "
            f"(checked every {self.every} steps): {', '.join(bad)}. "
            f"Lower train.lr or the offending weight in `loss`, then rerun.")


@dataclass
class Objective:
    """What one training step optimizes: the generator, its weighted loss terms, and the
    PatchGAN with its optimizer when the objective is adversarial."""

    generator: torch.nn.Module
    opt_g: torch.optim.Optimizer
    terms: dict[str, float]
    losses: dict[str, torch.nn.Module]
    provenance: dict[str, Any]
    discriminator: torch.nn.Module | None = None
    opt_d: torch.optim.Optimizer | None = None

    @property
    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [opt for opt in (self.opt_g, self.opt_d) if opt is not None]

    @property
    def logged(self) -> list[str]:
        """Per-epoch mean losses: every term, and the discriminator's own."""
        return [*self.terms, *(["discriminator"] if self.discriminator is not None else [])]


def build_objective(run: RunSpec, device: torch.device) -> Objective:
    cfg = run.train
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    generator = build_generator(run.generator, **run.arch_kwargs).to(device)
    generator = generator.to(memory_format=torch.channels_last) if device.type == "cuda" else generator
    betas = (cfg.beta1, cfg.beta2)
    # foreach: one multi-tensor kernel per Adam update instead of a loop over ~60 parameter
    # tensors; PyTorch picks it by default only on CUDA. On one CPU thread it made a default
    # U-Net step 6 % faster, same bits as the for-loop (benchmarks/train_throughput.py --adam).
    adam = functools.partial(torch.optim.Adam, lr=cfg.lr, betas=betas, foreach=True)
    # A fixed order: the sum of the terms (float addition) must not depend on whether
    # the spec came from params or from its sorted JSON file.
    objective = Objective(generator, adam(generator.parameters()),
                          terms=dict(sorted(run.terms.items())), losses={},
                          provenance={"generator": getattr(generator, "provenance", {})})
    for name in objective.terms:
        if name == "perceptual":
            p = run.perceptual
            assert p is not None  # RunSpec holds the section whenever the term is used
            objective.losses[name] = build_loss(name, weights=p.weights, layers=p.layers).to(device)
            objective.provenance["perceptual"] = objective.losses[name].provenance
        elif name == "adversarial":
            a = run.adversarial
            assert a is not None and a.layers != "auto"  # RunSpec: present with the term, depth resolved
            objective.losses[name] = build_loss(name, mode=a.mode).to(device)
            objective.discriminator = build_discriminator("patchgan", width=a.width, layers=a.layers).to(device)
            objective.opt_d = adam(objective.discriminator.parameters())
        else:
            objective.losses[name] = build_loss(name).to(device)
    return objective


def discriminator_step(objective: Objective, L: torch.Tensor, ab: torch.Tensor, fake: torch.Tensor,
                       device: torch.device, group: ProcessGroup) -> torch.Tensor:
    """pix2pix: D first, on the detached fake; its gradients averaged over ranks by hand."""
    D, adv = objective.discriminator, objective.losses["adversarial"]
    D.requires_grad_(True)
    objective.opt_d.zero_grad(set_to_none=True)
    with autocast(device):
        loss = discriminator_loss(adv, D(L, ab), D(L, fake.detach()))
    loss.backward()
    average_gradients(D, group)
    objective.opt_d.step()
    D.requires_grad_(False)  # G's step must not accumulate into D
    return loss.detach()


def generator_step(objective: Objective, L: torch.Tensor, ab: torch.Tensor, fake: torch.Tensor,
                   device: torch.device) -> dict[str, torch.Tensor]:
    """The weighted terms on ``fake``, one backward, one Adam step; returns the weighted terms
    (the caller's :class:`FiniteWatch` checks them)."""
    objective.opt_g.zero_grad(set_to_none=True)
    with autocast(device):
        parts = {}
        for name, weight in objective.terms.items():
            if name == "adversarial":
                value = objective.losses[name](objective.discriminator(L, fake))
            else:
                value = objective.losses[name](L, fake, ab)
            parts[name] = weight * value.float()
    sum(parts.values()).backward()  # DDP averages the generator's gradients here
    objective.opt_g.step()
    return {name: value.detach() for name, value in parts.items()}
