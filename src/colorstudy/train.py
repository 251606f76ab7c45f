"""The training loop: one study model, read top to bottom.

Every stochastic choice (shuffle, augmentation, dropout) is re-seeded from
``(seed, epoch)`` at the start of each epoch, so a run resumed from its end-of-epoch
checkpoint continues exactly as an uninterrupted run would, and two CPU runs with
the same params write bitwise-identical weights.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm import tqdm

from colorstudy.checkpoint import Checkpoint, CheckpointError
from colorstudy.config import RunTrainParams
from colorstudy.data.loader import EpochBatches, ResidentSplit, SplitData, load_split
from colorstudy.data.shards import LabShards
from colorstudy.distributed import ProcessGroup, barrier, start, stop, sum_over_ranks, unwrap, wrap_generator
from colorstudy.lab import AB_SCALE
from colorstudy.objective import FiniteWatch, Objective, build_objective, discriminator_step, generator_step
from colorstudy.runtime import autocast, inference, machine_kind, make_reproducible
from colorstudy.study import RunSpec

MAX_ROTATION_DEG = 15.0  # the study's training-only augmentation
MAX_SHIFT = 0.2  # translation: ±10 % of the width, the seed study's (affine_grid spans [-1, 1])
SELECTED, LAST = "selected.pt", "last.pt"  # the checkpoint train.select picked; the resume point


def augment(L: torch.Tensor, ab: torch.Tensor, gen: torch.Generator, global_batch: int | None = None,
            offset: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Horizontal flip, small rotation and translation, the same for L and ab.

    Runs where the data lives (GPU when present) as one batched resampling; no color
    jitter, which would change the ground truth colors. Under data parallelism the
    draws are made for the whole ``global_batch`` and this rank's images are those from
    ``offset`` on, so every image is transformed as in a single-process run.
    """
    x = torch.cat((L, ab), dim=1)
    n = x.shape[0]
    drawn, share = global_batch or n, slice(offset, offset + n)
    flip = (torch.rand(drawn, generator=gen, device=x.device) < 0.5)[share]
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    angle = ((torch.rand(drawn, generator=gen, device=x.device) * 2 - 1) * math.radians(MAX_ROTATION_DEG))[share]
    shift = ((torch.rand(drawn, 2, generator=gen, device=x.device) * 2 - 1) * MAX_SHIFT)[share]
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


def epoch_inputs(data: SplitData, order: torch.Tensor, batch_size: int, steps: int) -> Iterator[torch.Tensor]:
    """The L of the epoch's ``steps`` global batches of ``order``, unaugmented: what
    :func:`recalibrate_batchnorm` must average over.

    Why these batches and not the split in stored order: a BatchNorm's running variance
    is the mean of per-batch variances, and batches of consecutive stored images (one
    class of a folder laid out by class, or crops of one photo) vary less than the
    shuffled batches the weights were trained on, so eval mode would normalize with a
    variance training never saw (seen: a class-sorted folder's C scored worse than gray).
    Reusing the epoch's own permutation draws no RNG, so resumed runs stay exact; rank 0
    takes whole global batches, so under DDP the statistics are a single process's.
    """
    return (L for L, _ in EpochBatches(data, order, batch_size, steps))


@torch.no_grad()
def recalibrate_batchnorm(model: torch.nn.Module, batches: Iterable[torch.Tensor], device: torch.device) -> None:
    """Set every BatchNorm's running statistics to the exact average over the L ``batches``
    at the current weights (in training, :func:`epoch_inputs`: batches as training draws them).

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
        for L in batches:
            model(L)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    model.train(was_training)


@torch.no_grad()
def validate(generator: torch.nn.Module, batches: Iterable[tuple[torch.Tensor, torch.Tensor]],
             device: torch.device) -> dict[str, float]:
    """Validation ab-L1 (normalized ab) and ab error (mean |Δab| in Lab units).

    Training-time numbers on the raw prediction: not clipped to the valid ab range
    and not the evaluation's ΔE76 (which is on the clipped, sRGB-representable colors
    of the test split), so they are not to be set beside a published test ΔE.
    """
    l1_sum = de_sum = 0.0
    n = 0
    with inference(generator), autocast(device):
        for L, ab in batches:
            diff = generator(L).float() - ab
            l1_sum += diff.abs().mean(dim=(1, 2, 3)).sum().item()
            de_sum += (diff.square().sum(dim=1).sqrt() * AB_SCALE).mean(dim=(1, 2)).sum().item()
            n += len(L)
    return {"ab_l1": l1_sum / n, "ab_error": de_sum / n}


def grayscale_baseline(data: SplitData, batch_size: int) -> dict[str, float]:
    """The same validation numbers for ab = 0: what a model must beat."""
    if isinstance(data, ResidentSplit):
        return {"ab_l1": data.ab.abs().mean().item(),
                "ab_error": (data.ab.square().sum(dim=1).sqrt() * AB_SCALE).mean().item()}
    l1 = error = 0.0
    for _, ab in data.chunks(batch_size):  # a streamed split: whole-split means, in float64
        l1 += ab.double().abs().mean(dim=(1, 2, 3)).sum().item()
        error += (ab.double().square().sum(dim=1).sqrt() * AB_SCALE).mean(dim=(1, 2)).sum().item()
    return {"ab_l1": l1 / len(data), "ab_error": error / len(data)}


@dataclass
class Progress:
    """Where a run is: epochs done, the checkpoint ``train.select`` picked, per-epoch records."""

    epoch: int = 0
    selected: dict[str, Any] = field(default_factory=dict)
    history: list[dict[str, float]] = field(default_factory=list)


def try_resume(path: Path, run: RunSpec, data: dict[str, str], trained_on: str,
               objective: Objective) -> Progress | None:
    """Restore a run of exactly this spec on exactly these data from ``path``, if there is
    one, begun on this kind of machine: the checkpoint's ``trained_on`` must stay true.

    Read onto the CPU: ``load_state_dict`` copies weights to their parameters' device and
    moves the optimizer state there, but for Adam's ``step`` counters, which stay on the
    CPU. Read onto a GPU, those counters would stay there, and the multi-tensor Adam
    would call ``.item()`` on each of them: a host sync per parameter tensor per step."""
    if not path.exists():
        return None
    try:
        saved = Checkpoint.load(path, map_location="cpu")
    except CheckpointError as e:
        raise CheckpointError(f"{e}; it is an unfinished run's resume point: delete {path} to train "
                              f"{run.model_id} from the start") from e
    if saved.run != run or saved.data != data or saved.opt_g is None or saved.trained_on != trained_on:
        return None
    objective.generator.load_state_dict(saved.generator)
    objective.opt_g.load_state_dict(saved.opt_g)
    if objective.discriminator is not None and objective.opt_d is not None:
        objective.discriminator.load_state_dict(saved.discriminator)
        objective.opt_d.load_state_dict(saved.opt_d)
    return Progress(saved.epoch, saved.selected, saved.history)


def train_epoch(objective: Objective, cfg: RunTrainParams, batches: EpochBatches, gen: torch.Generator,
                epoch: int, model_id: str, device: torch.device, group: ProcessGroup) -> dict[str, float]:
    """One pass over the training split; returns each logged loss's mean over steps and ranks."""
    steps = batches.steps
    total_steps, decay_steps = cfg.epochs * steps, cfg.decay_epochs * steps
    sums = {name: torch.zeros((), device=device) for name in objective.logged}
    generator = objective.generator
    generator.train()
    watch = FiniteWatch(objective.logged, model_id, device, group)
    bar = tqdm(batches, total=steps, desc=f"{model_id} epoch {epoch + 1}/{cfg.epochs}", leave=False,
               disable=not group.is_main)
    for i, (L, ab) in enumerate(bar):
        step = epoch * steps + i
        for opt in objective.optimizers:
            for param_group in opt.param_groups:
                param_group["lr"] = cfg.lr * lr_factor(step, total_steps, decay_steps)
        if cfg.augment:
            L, ab = augment(L, ab, gen, cfg.batch_size, group.rank * len(L))
        if device.type == "cuda":
            L, ab = L.contiguous(memory_format=torch.channels_last), ab.contiguous(memory_format=torch.channels_last)
        with autocast(device):
            fake = generator(L)
        losses = {}
        if objective.discriminator is not None:
            losses["discriminator"] = discriminator_step(objective, L, ab, fake, device, group)
        losses.update(generator_step(objective, L, ab, fake, device))
        for name, value in losses.items():
            sums[name] += value
        watch.note(losses, epoch, step)
    watch.check(epoch, epoch * steps + steps - 1)
    return {name: (sum_over_ranks(value, group) / (steps * group.world)).item() for name, value in sums.items()}


def train_model(run: RunSpec, shards_dir: str | Path, out_dir: str | Path, log_dir: str | Path,
                resume_dir: str | Path | None = None, memory_budget: int | None = None) -> dict[str, Any]:
    """Train study model ``run`` (a resolved run spec); returns its summary metrics.

    Writes ``last.pt`` every epoch (the resume point) and ``selected.pt``, the
    checkpoint ``train.select`` picks (the last epoch, or the best by a validation
    metric), into ``resume_dir``; BatchNorm statistics are re-estimated on the epoch's
    training batches before every validation and save. When training ends it copies both to
    ``out_dir`` and removes ``resume_dir``. The pipeline keeps ``resume_dir`` outside
    the stage's declared output: DVC deletes a declared output before it reruns the
    stage, and a persisted one (which it would keep) turns off its run-cache, so this
    is how a killed run can resume while `dvc exp run` still restores finished ones
    from the cache. ``resume_dir`` defaults to ``out_dir`` (resume in place). dvclive
    logs go to ``log_dir``. Under torchrun (``train.nproc`` > 1) every rank runs this;
    rank 0 alone validates and writes. ``memory_budget``: bytes a resident split may
    take (default: a share of free memory); over it the split is streamed.
    """
    model_id, cfg = run.run_name, run.train  # "A-0": the model and its seed, in every message
    group, device = start(cfg.nproc, cfg.device)
    try:
        make_reproducible(device, cfg.num_threads)
        shards = LabShards(shards_dir)
        per_device = group.world if device.type == "cpu" else 1
        train_data = load_split(shards, "train", device, memory_budget, per_device)
        val_data = load_split(shards, "val", device, memory_budget, per_device)
        if len(train_data) < cfg.batch_size or len(val_data) == 0:
            raise ValueError(f"{shards_dir}: the train split needs at least train.batch_size={cfg.batch_size} "
                               f"images and val at least one (train {len(train_data)}, val {len(val_data)})")
        objective = build_objective(run, device)
        work_dir = Path(resume_dir) if resume_dir is not None else Path(out_dir)
        data = {"shards_sha256": shards.fingerprint()}
        trained_on = machine_kind(device)
        progress = try_resume(work_dir / LAST, run, data, trained_on, objective) or Progress(
            selected={"epoch": -1, "criterion": cfg.select})
        if progress.epoch and group.is_main:
            print(f"{model_id}: resuming after epoch {progress.epoch} from {work_dir / LAST}")
        objective.generator = wrap_generator(objective.generator, group, device)
        writer = (RunWriter(run, cfg, data, work_dir, Path(log_dir), progress, trained_on)
                  if group.is_main else None)
        baseline = grayscale_baseline(val_data, cfg.batch_size)
        steps = len(train_data) // cfg.batch_size
        for epoch in range(progress.epoch, cfg.epochs):
            torch.manual_seed(cfg.seed * 1000 + epoch)  # dropout; with `gen` below, resume-exact
            gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + epoch)
            order = torch.randperm(len(train_data), generator=gen, device=device)
            batches = EpochBatches(train_data, order, cfg.batch_size, steps, group.rank, group.world,
                                   reuse_buffers=device.type == "cpu")  # each batch lives one step
            losses = train_epoch(objective, cfg, batches, gen, epoch, model_id, device, group)
            if writer is not None:  # rank 0; the others wait at the barrier
                generator = unwrap(objective.generator)
                recalibrate_batchnorm(generator, epoch_inputs(train_data, order, cfg.batch_size, steps), device)
                val = validate(generator, val_data.chunks(cfg.batch_size), device)
                writer.end_epoch(objective, epoch, steps, losses, val, baseline)
            barrier(group)
        if writer is None:
            return {}
        return writer.finish(Path(out_dir), baseline, streamed=train_data.streamed)
    finally:
        stop(group)


class RunWriter:
    """Rank 0's side of a run: the per-epoch record, the checkpoints, dvclive's files."""

    def __init__(self, run: RunSpec, cfg: RunTrainParams, data: dict[str, str], work_dir: Path,
                 log_dir: Path, progress: Progress, trained_on: str) -> None:
        from dvclive import Live

        self.run, self.cfg, self.data, self.work_dir, self.progress = run, cfg, data, work_dir, progress
        self.trained_on = trained_on
        self.criterion = cfg.select.removeprefix("val_")  # a validation metric, or "last"
        # dvclive starts clean and replays the resumed history, so the plots never hold an
        # epoch twice when a run was killed between logging and checkpointing.
        self.live = Live(dir=str(log_dir), save_dvc_exp=False, dvcyaml=None, report=None)
        for record in progress.history:
            self._log(record)

    def _log(self, record: dict[str, float]) -> None:
        for key, value in record.items():
            self.live.log_metric(key, value)
        self.live.next_step()

    def end_epoch(self, objective: Objective, epoch: int, steps: int, losses: dict[str, float],
                  val: dict[str, float], baseline: dict[str, float]) -> None:
        cfg, progress, model_id = self.cfg, self.progress, self.run.run_name
        record = {f"train/{name}": value for name, value in losses.items()}
        record.update({f"val/{k}": v for k, v in val.items()})
        record.update({f"val/baseline_{k}": v for k, v in baseline.items()})
        record["lr"] = cfg.lr * lr_factor((epoch + 1) * steps, cfg.epochs * steps, cfg.decay_epochs * steps)
        progress.history.append(record)
        progress.epoch = epoch + 1
        improved = self.criterion == "last" or val[self.criterion] < progress.selected.get(self.criterion, math.inf)
        if improved:
            progress.selected = {"epoch": epoch + 1, "criterion": cfg.select, **val}
        saved = to_checkpoint(self.run, self.data, objective, progress, steps, self.trained_on)
        if improved:
            saved.save(self.work_dir / SELECTED)
        saved.save(self.work_dir / LAST)  # last: a kill after this line loses nothing
        self._log(record)
        print(f"{model_id} epoch {progress.epoch}/{cfg.epochs}: val ab-L1 {val['ab_l1']:.4f} "
              f"(grayscale {baseline['ab_l1']:.4f}), |Δab| {val['ab_error']:.2f} "
              f"(grayscale {baseline['ab_error']:.2f})")

    def finish(self, out_dir: Path, baseline: dict[str, float], streamed: bool) -> dict[str, Any]:
        selected = self.progress.selected
        summary = {
            "seed": self.cfg.seed,
            "select": self.cfg.select,
            "selected_epoch": selected["epoch"],
            "epochs": self.cfg.epochs,
            "val_ab_l1": selected["ab_l1"],
            "val_ab_error": selected["ab_error"],
            "baseline_val_ab_l1": baseline["ab_l1"],
            "baseline_val_ab_error": baseline["ab_error"],
            "beats_baseline": selected["ab_l1"] < baseline["ab_l1"],
        }
        for key, value in summary.items():
            self.live.summary[key] = value
        self.live.end()
        if self.work_dir.resolve() != out_dir.resolve():
            out_dir.mkdir(parents=True, exist_ok=True)
            for name in (SELECTED, LAST):
                shutil.copyfile(self.work_dir / name, out_dir / name)
            shutil.rmtree(self.work_dir)
        return {**summary, "train_split": "streamed" if streamed else "resident"}


def to_checkpoint(run: RunSpec, data: dict[str, str], objective: Objective, progress: Progress,
                  steps: int, trained_on: str) -> Checkpoint:
    """The run as it stands after ``progress.epoch`` epochs."""
    D, opt_d = objective.discriminator, objective.opt_d
    return Checkpoint(
        model_id=run.model_id, architecture=run.generator, arch_kwargs=run.arch_kwargs, run=run, data=data,
        epoch=progress.epoch, step=progress.epoch * steps, generator=unwrap(objective.generator).state_dict(),
        opt_g=objective.opt_g.state_dict(), discriminator=D.state_dict() if D is not None else None,
        opt_d=opt_d.state_dict() if opt_d is not None else None, selected=progress.selected,
        history=progress.history, provenance=objective.provenance, torch_version=str(torch.__version__),
        trained_on=trained_on)
