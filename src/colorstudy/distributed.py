"""Data-parallel training over processes started by torchrun: who this process is, and
the few collectives the training loop needs.

One process is the common case and costs nothing: :data:`SINGLE` has no process group
and every helper here is then a no-op. With ``train.nproc = N`` the train stage starts
itself under ``torch.distributed.run`` (:func:`torchrun_command`), each rank trains on
its share of every global batch, NCCL (GPUs) or gloo (CPU) averages the gradients,
and rank 0 alone writes checkpoints, logs and prints.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from colorstudy.runtime import DeviceError, resolve_device

# Rank 0 validates and saves while the others wait at a barrier: allow for a slow disk.
TIMEOUT = timedelta(minutes=60)


@dataclass(frozen=True)
class ProcessGroup:
    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.world > 1


SINGLE = ProcessGroup()


def launched_world_size() -> int:
    """Processes torchrun started for this run (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """This script again, as ``nproc`` processes on this machine."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *argv]


def start(nproc: int, device_choice: str) -> tuple[ProcessGroup, torch.device]:
    """Join the run's process group (when there is one) and pick this rank's device.

    The run spec's ``train.nproc`` must equal the number of processes launched: the
    weights depend on how each batch was split, and the spec is what the checkpoint
    and the report say was run.
    """
    world = launched_world_size()
    if world != nproc:
        raise DeviceError(f"{world} process(es) were launched but the run spec says train.nproc={nproc}; "
                           f"set train.nproc={world} (or launch {nproc} processes)")
    device = resolve_device(device_choice)
    if world == 1:
        return SINGLE, device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"local rank {local_rank} has no GPU: torch sees {torch.cuda.device_count()}; "
                               f"lower --nproc_per_node or train.nproc")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=TIMEOUT)
    return ProcessGroup(dist.get_rank(), dist.get_world_size()), device


def stop(group: ProcessGroup) -> None:
    if group.parallel and dist.is_initialized():
        dist.destroy_process_group()


def barrier(group: ProcessGroup) -> None:
    if group.parallel:
        dist.barrier()


def sum_over_ranks(value: torch.Tensor, group: ProcessGroup) -> torch.Tensor:
    """``value`` summed over ranks (a new tensor; ``value`` itself is left alone)."""
    if not group.parallel:
        return value
    total = value.detach().clone()
    dist.all_reduce(total)
    return total


def average_gradients(module: torch.nn.Module, group: ProcessGroup) -> None:
    """Average ``module``'s gradients over ranks in one flat all-reduce.

    For the discriminator, which DDP cannot wrap: pix2pix runs it twice (real, fake)
    before one backward, and again inside the generator's step, where its gradients
    must not be reduced at all.
    """
    if not group.parallel:
        return
    grads = [p.grad for p in module.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= group.world
    at = 0
    for g in grads:
        g.copy_(flat[at:at + g.numel()].view_as(g))
        at += g.numel()


def wrap_generator(generator: torch.nn.Module, group: ProcessGroup, device: torch.device) -> torch.nn.Module:
    """DistributedDataParallel over the generator (overlaps its all-reduce with backward)."""
    if not group.parallel:
        return generator
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(generator, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    return getattr(model, "module", model)
