"""`alexnet train`: the paper's recipe (sections 4 and 5) on the CPU, one GPU, the two-GPU
tower split, or many processes under torchrun (DistributedDataParallel).

Read it top to bottom:

    train()            set up, then per epoch: train_one_epoch() and end_epoch()
    set_up()           processes, devices, run folder, data, model, optimizer, resume
    train_one_epoch()  the epoch's steps; last.pt on a signal, a clock or --max-steps
    train_step()       input -> forward -> loss -> backward -> guard -> optimizer step
    end_epoch()        validate -> schedule -> best.pt, last.pt -> metrics.csv, curves.png

Exact resume. No randomness comes from a stream that a restart would lose (randomness.py):
the epoch's order is drawn from (seed, epoch), each image's crop, flip and lighting from
(seed, epoch, index), and dropout from a torch seed set before every step from (seed, epoch,
step, rank). A checkpoint (after any step) therefore holds all the state there is: weights,
momentum, schedule, position, metrics. On the CPU, a run resumed from it ends with the same
weights, bit for bit, as a run never stopped.
"""

from __future__ import annotations

import math
import os
import time
from contextlib import closing
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from alexnet_cli import distributed, finetune, randomness
from alexnet_cli.accuracy import topk_correct
from alexnet_cli.checkpoint import (
    PER_RANK_DROPOUT_SCHEME,
    EpochTotals,
    RunState,
    load_checkpoint,
    load_weights,
    save_checkpoint,
    training_checkpoint,
)
from alexnet_cli.config import (
    DROPOUT_FORMS,
    LEGACY_RECIPE,
    LIGHTING_UNITS,
    MOMENTUM_FORMS,
    TrainConfig,
    switch_problem,
)
from alexnet_cli.data import augment
from alexnet_cli.data.gpu_decode import DECODES
from alexnet_cli.data.inputs import PreparedInputs, SyntheticInputs, training_inputs
from alexnet_cli.data.transforms import network_input
from alexnet_cli.devices import Placement, placement
from alexnet_cli.errors import AlexnetError, InputError, Preempted
from alexnet_cli.memory import keep_freed_memory
from alexnet_cli.model import ARCHES, DropoutMasks, ModelConfig, build_model, set_dropout_masks
from alexnet_cli.optim import make_optimizer, make_scheduler
from alexnet_cli.preemption import StopFlag, stop_signals
from alexnet_cli.progress import TrainProgress
from alexnet_cli.run_folder import TensorBoard, last_good, prepare_run_dir, write_records

SCHEDULES = ("plateau", "step")
# Options that define the optimisation itself: a resumed run must keep them to continue exactly.
RECIPE = (
    "batch_size",
    "lr",
    "momentum",
    "momentum_form",
    "weight_decay",
    "bias_decay",
    "schedule",
    "lr_drops",
    "patience",
    "step_epochs",
    "lighting_std",
    "lighting_units",
    "crop_flip",
    "arch",
    "dropout",
    "dropout_form",
    "bias_init",
    "weight_std",
    "activation",
    "lrn",
    "pool",
    "towers",
    "seed",
    "limit",
    "synthetic",
    "init_from",
    "freeze",
)


class Stopped(str, Enum):
    """Why a run ended without an error (a signal raises Preempted instead)."""

    COMPLETED = "completed"  # every epoch done
    MAX_STEPS = "max_steps"  # --max-steps reached (last.pt written)


@dataclass
class StepReport:
    """What every rank agrees on after a step's backward pass: one all-reduce of four numbers."""

    loss_sum: float  # cross-entropy summed over the global batch
    images: int  # in the global batch
    stop_requested: bool  # some rank got SIGTERM or SIGUSR1
    checkpoint_due: bool  # rank 0's clock: --checkpoint-minutes passed since the last save

    @property
    def loss(self) -> float:
        return self.loss_sum / self.images


@dataclass
class EpochTime:
    images: int = 0  # trained on by all ranks in this process's part of the epoch
    seconds: float = 0.0


class RunningTotals:
    """checkpoint.EpochTotals accumulated on the device, step by step, without a host sync."""

    def __init__(self, start: EpochTotals, device: torch.device):
        self.sums = start.as_tensor().to(device)

    def add(self, loss_sum: torch.Tensor, correct: torch.Tensor, images: int) -> None:
        count = torch.full((1,), float(images), device=self.sums.device)
        self.sums += torch.cat([loss_sum.detach().float().view(1), correct.sum(1).float(), count])

    def over_all_ranks(self) -> EpochTotals:
        return EpochTotals.from_tensor(distributed.all_reduce_sum(self.sums.detach().clone()).cpu())


@dataclass
class Run:
    """Everything set_up() made: what the loop reads and changes."""

    cfg: TrainConfig
    rank: distributed.DistInfo
    place: Placement
    run_dir: Path
    data: PreparedInputs | SyntheticInputs
    model_config: ModelConfig
    model: torch.nn.Module  # the network itself: state_dict, eval
    net: torch.nn.Module  # what the step calls: the model, in DDP and/or compiled
    optimizer: torch.optim.Optimizer
    scheduler: Any
    state: RunState
    progress: TrainProgress
    board: TensorBoard | None
    autocast: torch.autocast
    input_format: torch.memory_format
    stop: StopFlag
    started: float  # perf_counter at set-up
    last_save: float  # perf_counter of the last last.pt
    totals: RunningTotals | None = None  # the current epoch's

    @property
    def device(self) -> torch.device:
        return self.place.device

    @property
    def steps_per_epoch(self) -> int:
        return self.data.steps_per_epoch()

    def max_steps_reached(self) -> bool:
        return self.cfg.max_steps is not None and self.state.step >= self.cfg.max_steps

    def save(self, name: str, with_optimizer: bool = True) -> None:
        """Write run_dir/name (rank 0), atomically; every rank waits for it."""
        if self.rank.is_main:
            ckpt = training_checkpoint(
                self.model,
                self.model_config,
                self.data.classes,
                self.data.preprocess,
                self.data.pca,
                asdict(self.cfg),
                self.state,
                time.perf_counter() - self.started,
                self.optimizer if with_optimizer else None,
                self.scheduler if with_optimizer else None,
            )
            save_checkpoint(self.run_dir / name, ckpt)
        distributed.barrier()
        if name == "last.pt":
            self.last_save = time.perf_counter()


# --------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, progress: TrainProgress | None = None) -> dict[str, Any] | None:
    """Train as `cfg` says; returns the run's summary (None on ranks other than 0). Raises
    Preempted (exit 75) after a SIGTERM/SIGUSR1 once last.pt is written, AlexnetError on a
    non-finite loss."""
    check_options(cfg)
    place = placement(cfg.gpus, cfg.devices, int(os.environ.get("LOCAL_RANK", 0)))
    rank = distributed.init("nccl" if place.device.type == "cuda" else "gloo")
    try:
        with stop_signals() as stop:
            run = set_up(
                cfg, place, rank, stop, progress or TrainProgress(rank.is_main, log_every=cfg.log_every)
            )
            stopped = Stopped.COMPLETED
            for epoch in range(run.state.epoch, cfg.epochs):
                if run.max_steps_reached():  # resumed with nothing left to do
                    stopped = Stopped.MAX_STEPS
                    break
                trained = train_one_epoch(run, epoch)
                if trained is None:  # --max-steps ended the run inside the epoch
                    stopped = Stopped.MAX_STEPS
                    break
                end_epoch(run, epoch, trained)
                if run.max_steps_reached():
                    stopped = Stopped.MAX_STEPS
                    break
            if run.board is not None:
                run.board.close()
            return summary(run, stopped) if rank.is_main else None
    except RuntimeError as e:
        if rank.enabled:
            last = Path(cfg.run_dir) / "last.pt"
            raise distributed.peer_failure(
                e, rank.rank, f"rerun with --resume auto to continue from {last}"
            ) from e
        raise
    finally:
        distributed.shutdown()


def set_up(
    cfg: TrainConfig, place: Placement, rank: distributed.DistInfo, stop: StopFlag, progress: TrainProgress
) -> Run:
    """The run folder, data, model, optimizer and schedule; resumed from last.pt if asked."""
    started = time.perf_counter()
    device = place.device
    if device.type == "cpu":
        keep_freed_memory()
    else:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    # Where the run lives, and where it left off
    run_dir = Path(cfg.run_dir)
    resume_from = prepare_run_dir(run_dir, cfg.resume, cfg.force, rank.is_main)
    ckpt = load_checkpoint(resume_from) if resume_from else None
    if ckpt is not None:
        check_resumable(ckpt, cfg, resume_from)
    distributed.barrier()

    data = training_inputs(cfg, rank, device)
    if ckpt is not None and [tuple(c) for c in ckpt["classes"]] != data.classes:
        raise InputError(
            f"{resume_from}: trained on other classes than {cfg.data}; resume with the same dataset"
        )

    model_config, model, net = build_network(cfg, place, rank, data, ckpt, progress)
    optimizer = make_optimizer(cfg, model)
    scheduler = make_scheduler(cfg, optimizer)

    state = RunState()
    if ckpt is not None:
        load_weights(model, ckpt["model"], resume_from)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = RunState.from_checkpoint(ckpt)
        progress.message(f"resuming {resume_from}: epoch {state.epoch + 1}, step {state.epoch_step} of it")
        if rank.is_main and state.metrics:
            # last.pt is written before metrics.csv: a kill in between, after the last epoch,
            # would otherwise lose that epoch's row for good (nothing is left to run)
            write_records(run_dir, state.metrics, cfg.arch)

    return Run(
        cfg=cfg,
        rank=rank,
        place=place,
        run_dir=run_dir,
        data=data,
        model_config=model_config,
        model=model,
        net=net,
        optimizer=optimizer,
        scheduler=scheduler,
        state=state,
        progress=progress,
        board=TensorBoard(run_dir, progress.message) if cfg.tensorboard and rank.is_main else None,
        autocast=torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp),
        # On the CPU the network computes in NHWC (model._cpu_nhwc): make the batches so there.
        input_format=torch.channels_last
        if cfg.channels_last or device.type == "cpu"
        else torch.contiguous_format,
        stop=stop,
        started=started,
        last_save=started,
    )


def build_network(
    cfg: TrainConfig,
    place: Placement,
    rank: distributed.DistInfo,
    data: PreparedInputs | SyntheticInputs,
    ckpt: dict[str, Any] | None,
    progress: TrainProgress,
) -> tuple[ModelConfig, torch.nn.Module, torch.nn.Module]:
    """The network (the tower split when placed on two devices), initialised alike on every
    rank (section 5), or from --init-from; and what the step calls: it in DDP and/or compiled."""
    model_config = ModelConfig(
        arch=cfg.arch,
        num_classes=len(data.classes),
        dropout=cfg.dropout,
        dropout_form=cfg.dropout_form,
        weight_std=cfg.weight_std,
        bias_init=cfg.bias_init,
        activation=cfg.activation,
        lrn=cfg.lrn,
        pool=cfg.pool,
        towers=cfg.towers,
    )
    torch.manual_seed(randomness.torch_seed(randomness.INIT, cfg.seed))  # the same weights on every rank
    model = (
        build_model(model_config, place.towers)
        if place.towers
        else build_model(model_config).to(place.device)
    )
    if cfg.init_from is not None or cfg.freeze is not None:
        data.preprocess = finetune.prepare(
            model, data.classes, data.preprocess, cfg.init_from, cfg.freeze, ckpt, progress.message
        )
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = model
    if rank.enabled:
        from torch.nn.parallel import DistributedDataParallel

        one_gpu = place.device.type == "cuda" and place.towers is None
        net = DistributedDataParallel(model, device_ids=[place.device] if one_gpu else None)
    if cfg.compile:
        net = torch.compile(net)
    return model_config, model, net


def train_one_epoch(run: Run, epoch: int) -> EpochTime | None:
    """The epoch's steps, from where a resumed run left off. None when --max-steps ended the
    run inside the epoch (last.pt is then written); a signal writes last.pt and raises Preempted."""
    state, cfg = run.state, run.cfg
    run.net.train()
    run.progress.start_epoch(epoch + 1, cfg.epochs, run.steps_per_epoch, state.epoch_step)
    # The epoch's sums so far are global: rank 0 carries them, the others start from zero.
    run.totals = RunningTotals(state.totals if run.rank.is_main else EpochTotals(), run.device)
    timing, started = EpochTime(), time.perf_counter()
    with closing(run.data.train_batches(epoch, state.epoch_step)) as batches:
        for batch in batches:
            report = train_step(run, batch, epoch)
            state.step += 1
            state.epoch_step += 1
            timing.images += report.images
            lr = run.optimizer.param_groups[0]["lr"]
            run.progress.step(state.epoch_step, report.loss, lr, report.images)
            if report.stop_requested:
                state.totals = run.totals.over_all_ranks()
                run.save("last.pt")
                run.progress.close()
                raise Preempted(
                    f"stopped by a signal after step {state.step} (epoch {epoch + 1}); wrote "
                    f"{run.run_dir / 'last.pt'}; rerun the same command with --resume auto to continue"
                )
            if run.max_steps_reached():
                break
            every = cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0
            if state.epoch_step < run.steps_per_epoch and (report.checkpoint_due or every):
                state.totals = run.totals.over_all_ranks()
                run.save("last.pt")
    state.totals = run.totals.over_all_ranks()
    timing.seconds = time.perf_counter() - started
    if state.epoch_step < run.steps_per_epoch:
        run.save("last.pt")
        run.progress.close()
        return None
    return timing


def train_step(run: Run, batch: dict[str, Any], epoch: int) -> StepReport:
    """One optimizer step on this rank's share of a global batch."""
    state, rank = run.state, run.rank
    set_step_dropout(run, epoch, batch["global_size"])
    x = augment.train_input(
        batch,
        run.data.preprocess,
        run.data.pca,
        run.device,
        run.cfg.lighting_units,
        memory_format=run.input_format,
    )
    y = batch["labels"].to(run.device, non_blocking=True)

    with run.autocast:
        logits = run.net(x)
    loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
    # This rank holds a share of the global batch: dividing by the global size and multiplying
    # by the world size makes DDP's average over ranks the mean over the whole batch.
    loss = loss_sum * (rank.world_size / batch["global_size"])
    run.optimizer.zero_grad(set_to_none=True)
    loss.backward()

    report = agree(run, loss_sum, len(y))
    if not math.isfinite(report.loss_sum):
        raise AlexnetError(
            f"the loss became {report.loss} at epoch {epoch + 1}, step {state.epoch_step + 1}: stopped "
            f"without saving; {last_good(run.run_dir)}; lower --lr (or check the data) and rerun"
        )
    run.optimizer.step()

    run.totals.add(loss_sum, topk_correct(logits.detach(), y), len(y))
    return report


def set_step_dropout(run: Run, epoch: int, global_size: int) -> None:
    """This step's dropout masks: drawn from (seed, epoch, step, layer) over the whole global
    batch, this rank keeping its own samples' rows, so that neither a restart nor the number of
    processes changes them. A run started before that scheme keeps its own (masks from torch's
    generator seeded per step and rank), so that it resumes exactly."""
    cfg, state, rank = run.cfg, run.state, run.rank
    if run.state.seed_scheme == PER_RANK_DROPOUT_SCHEME:
        torch.manual_seed(
            randomness.torch_seed(randomness.DROPOUT, cfg.seed, epoch, state.epoch_step, rank.rank)
        )
        set_dropout_masks(run.model, None)
        return
    share = distributed.shard_range(global_size, rank.rank, rank.world_size)  # the loader's split
    set_dropout_masks(run.model, DropoutMasks((cfg.seed, epoch, state.epoch_step), share.start, global_size))


def agree(run: Run, loss_sum: torch.Tensor, images: int) -> StepReport:
    """One small all-reduce per step, so that every rank decides alike whether to stop or save:
    the batch's loss and size, whether any rank was signalled, whether rank 0's clock says a
    checkpoint is due."""
    due = run.rank.is_main and time.perf_counter() - run.last_save > run.cfg.checkpoint_minutes * 60
    flags = torch.tensor([images, run.stop.requested, due], dtype=torch.float32, device=run.device)
    values = distributed.all_reduce_sum(torch.cat([loss_sum.detach().float().view(1), flags])).tolist()
    loss, n, signalled, due = values
    return StepReport(loss, int(n), signalled > 0, due > 0)


def end_epoch(run: Run, epoch: int, trained: EpochTime) -> None:
    """Validate, step the schedule, write best.pt (if val top-1 improved) and last.pt, then the
    records; a signal that came during validation stops the run here."""
    state, cfg = run.state, run.cfg
    val = validate(run)
    totals, n = state.totals, max(state.totals.images, 1)
    row = {
        "epoch": epoch + 1,
        "lr": run.optimizer.param_groups[0]["lr"],
        "train_loss": totals.loss / n,
        "train_top1": 100.0 * totals.top1 / n,
        "train_top5": 100.0 * totals.top5 / n,
        **val,
        "images_per_s": trained.images / trained.seconds if trained.seconds > 0 else 0.0,
        "elapsed_s": state.elapsed_before + time.perf_counter() - run.started,
    }
    state.metrics.append(row)
    state.epoch, state.epoch_step, state.totals = epoch + 1, 0, EpochTotals()
    if cfg.schedule == "plateau":
        if val["val_top1"] is not None:
            run.scheduler.step(val["val_top1"])
    else:
        run.scheduler.step()

    if val["val_top1"] is not None and (state.best_top1 is None or val["val_top1"] > state.best_top1):
        # best.pt before last.pt: a kill in between redoes this epoch, and so this write
        state.best_top1 = val["val_top1"]
        run.save("best.pt", with_optimizer=False)  # for eval/predict; resume uses last.pt
    run.save("last.pt")
    if run.rank.is_main:
        write_records(run.run_dir, state.metrics, cfg.arch)
        if run.board is not None:
            run.board.add_epoch(row)
    run.progress.end_epoch(row, row["elapsed_s"] / row["epoch"] * (cfg.epochs - row["epoch"]))
    if distributed.any_rank(run.stop.requested, run.device):
        raise Preempted(
            f"stopped by a signal after epoch {epoch + 1}; wrote {run.run_dir / 'last.pt'}; "
            "rerun the same command with --resume auto to continue"
        )


@torch.no_grad()
def validate(run: Run) -> dict[str, float | None]:
    """Center-crop loss and top-1/top-5 over the val split, each image counted exactly once
    across ranks (section 4.1's single-crop numbers; 10-crop is `alexnet eval --ten-crop`)."""
    if not run.data.has_val:
        return {"val_loss": None, "val_top1": None, "val_top5": None}
    run.model.eval()
    sums = RunningTotals(EpochTotals(), run.device)
    with closing(run.data.val_batches()) as batches:
        for batch in batches:
            images = batch["images"].to(run.device, non_blocking=True)
            x = network_input(images, run.data.preprocess).contiguous(memory_format=run.input_format)
            y = batch["labels"].to(run.device, non_blocking=True)
            with run.autocast:
                logits = run.model(x)
            sums.add(F.cross_entropy(logits.float(), y, reduction="sum"), topk_correct(logits, y), len(y))
    totals = sums.over_all_ranks()
    n = max(totals.images, 1)
    return {
        "val_loss": totals.loss / n,
        "val_top1": 100.0 * totals.top1 / n,
        "val_top5": 100.0 * totals.top5 / n,
    }


def summary(run: Run, stopped: Stopped) -> dict[str, Any]:
    """The run's --json object."""
    state = run.state
    return {
        "run_dir": str(run.run_dir),
        "stopped": stopped.value,
        "epochs_completed": state.epoch,
        "steps": state.step,
        "device": run.place.describe(),
        "world_size": run.rank.world_size,
        "best_val_top1": state.best_top1,
        "last_checkpoint": str(run.run_dir / "last.pt"),
        "best_checkpoint": str(run.run_dir / "best.pt") if state.best_top1 is not None else None,
        "last_epoch": state.metrics[-1] if state.metrics else None,
        "elapsed_s": state.elapsed_before + time.perf_counter() - run.started,
    }


# --------------------------------------------------------------------------------------------
# The recipe's pieces


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """A run continues exactly only with the recipe it started with."""
    if "optimizer" not in ckpt or "epoch_step" not in ckpt:
        raise InputError(f"{path}: holds no optimizer state (best.pt is for eval); resume from last.pt")
    # A run from before a recipe choice existed was trained with what the code did then.
    before = {**LEGACY_RECIPE, **ckpt.get("train_config", {})}
    changed = [k for k in RECIPE if k in before and before[k] != getattr(cfg, k)]
    if changed:
        detail = ", ".join(
            f"--{k.replace('_', '-')} {before[k]} (now {getattr(cfg, k)})" for k in changed[:3]
        )
        raise InputError(
            f"{path}: was trained with {detail}; "
            "resume with the same options, or start a new run with --force"
        )


def check_options(cfg: TrainConfig) -> None:
    positive = {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "log_every": cfg.log_every}
    for name, value in positive.items():
        if value < 1:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    for name in ("max_steps", "limit", "checkpoint_every"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            raise InputError(f"--{name.replace('_', '-')} {value}: must be at least 1")
    if cfg.schedule not in SCHEDULES:
        raise InputError(f"--schedule {cfg.schedule}: choose one of {', '.join(SCHEDULES)}")
    if cfg.arch not in ARCHES:
        raise InputError(f"--arch {cfg.arch}: choose one of {', '.join(ARCHES)}")
    for option, value, choices in (
        ("dropout-form", cfg.dropout_form, DROPOUT_FORMS),
        ("momentum-form", cfg.momentum_form, MOMENTUM_FORMS),
        ("lighting-units", cfg.lighting_units, LIGHTING_UNITS),
    ):
        if value not in choices:
            raise InputError(f"--{option} {value}: choose one of {', '.join(choices)}")
    if cfg.decode not in DECODES:
        raise InputError(f"--decode {cfg.decode}: choose one of {', '.join(DECODES)}")
    if cfg.resume not in (None, "last", "auto"):
        raise InputError(f"--resume {cfg.resume}: use --resume last (continue --run-dir) or --resume auto")
    if cfg.lr <= 0 or cfg.workers < 0 or not 0 <= cfg.dropout < 1:
        raise InputError("--lr must be positive, --workers at least 0 and --dropout in [0, 1)")
    split = cfg.gpus == 2 or (cfg.devices and len(cfg.devices) == 2)
    if cfg.arch == "torchvision" and split:
        raise InputError("--arch torchvision has no towers to split; use --arch paper for two devices")
    if cfg.towers != "two" and split:
        raise InputError(f"--towers {cfg.towers} is one tower, for one device: drop --gpus 2 / --devices")
    problem = switch_problem(cfg)
    if problem:
        raise InputError(problem)
