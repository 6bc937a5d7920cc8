"""`alexnet train`: the paper's recipe (sections 4 and 5) on the CPU, one GPU, the two-GPU
tower split, or many processes under torchrun (DistributedDataParallel).

Read it top to bottom: `TrainConfig` holds every value of the recipe with its section;
`train()` sets up (processes, devices, data, model, optimizer, resume) and runs the loop:
augment -> forward -> loss -> backward -> optimizer step -> checkpoint -> validate.

Exact resume. No randomness comes from a stream that a restart would lose: the epoch's order
is drawn from (seed, epoch), each image's crop, flip and lighting from (seed, epoch, index)
(data/loader.py, data/augment.py), and dropout from a torch seed set before every step from
(seed, epoch, step, rank). A checkpoint (after any step) therefore holds all the state there
is: weights, momentum, schedule, position, metrics. On the CPU, a run resumed from it ends
with the same weights, bit for bit, as a run never stopped.
"""

from __future__ import annotations

import csv
import ctypes
import io
import math
import os
import signal
import time
from contextlib import closing, contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
import torch.nn.functional as F

from alexnet_cli import distributed, finetune
from alexnet_cli.checkpoint import load_checkpoint, load_weights, save_checkpoint
from alexnet_cli.data import augment, loader
from alexnet_cli.errors import AlexnetError, InputError, Preempted
from alexnet_cli.fileio import atomic_write_text
from alexnet_cli.model import ARCHES, ModelConfig, build_model
from alexnet_cli.progress import TrainProgress

SCHEDULES = ("plateau", "step")
RUN_FILES = ("last.pt", "best.pt", "metrics.csv", "curves.png")
METRIC_COLUMNS = (
    "epoch", "lr", "train_loss", "train_top1", "train_top5",
    "val_loss", "val_top1", "val_top5", "images_per_s", "elapsed_s",
)
# Options that define the optimisation itself: a resumed run must keep them to continue exactly.
RECIPE = (
    "batch_size", "lr", "momentum", "weight_decay", "schedule", "lr_drops", "patience", "step_epochs",
    "lighting_std", "arch", "dropout", "bias_init", "weight_std", "seed", "limit", "synthetic",
    "init_from", "freeze",
)
INIT_STREAM, DROPOUT_STREAM = 3, 4  # see augment.AUGMENT_STREAM, loader.ORDER_STREAM


@dataclass
class TrainConfig:
    """Every option of `alexnet train`. Defaults are the paper's (section 5 unless noted)."""

    data: str | None = None  # prep's OUT.h5
    run_dir: str = "runs/alexnet"
    # The recipe
    epochs: int = 90  # "roughly 90 cycles through the training set of 1.2 million images"
    batch_size: int = 128  # "stochastic gradient descent with a batch size of 128 examples"
    lr: float = 0.01  # "The learning rate was initialized at 0.01"
    momentum: float = 0.9  # "momentum of 0.9"
    weight_decay: float = 5e-4  # "weight decay of 0.0005"
    # "divide the learning rate by 10 when the validation error rate stopped improving with the
    # current learning rate"; "step" is pytorch/examples' common alternative.
    schedule: str = "plateau"
    lr_drops: int = 3  # "The learning rate was ... reduced three times prior to termination"
    patience: int = 5  # epochs without a better val top-1 before a drop (the paper does not say)
    step_epochs: int = 30  # schedule "step": divide by 10 every 30 epochs
    lighting_std: float = augment.LIGHTING_STD  # section 4.1: alpha_i ~ N(0, 0.1)
    # The network (sections 3, 4.2, 5; model.ModelConfig)
    arch: str = "paper"
    dropout: float = 0.5
    bias_init: float = 1.0
    weight_std: float = 0.01
    # Hardware
    gpus: int | None = None  # None: 1 if CUDA is available, else 0; 2: the paper's tower split
    devices: tuple[str, ...] | None = None  # explicit placement: ("cpu", "cpu"), ("cuda:0", "cuda:0")
    workers: int = 4
    amp: bool = False  # bfloat16 autocast
    channels_last: bool = False
    compile: bool = False
    # Run control
    seed: int = 0
    resume: str | None = None  # "last": continue --run-dir; "auto": continue it if it has a checkpoint
    force: bool = False  # start over in a --run-dir that holds a run
    max_steps: int | None = None  # stop after this many optimizer steps in all (a checkpoint is written)
    limit: int | None = None  # use at most this many images of each split
    synthetic: bool = False  # generated batches, no data: model throughput
    num_classes: int = 1000  # for --synthetic (a dataset brings its own classes)
    checkpoint_every: int | None = None  # also write last.pt every N steps
    checkpoint_minutes: float = 30.0  # ... and when this much time passed since the last one
    log_every: int = 50
    tensorboard: bool = False
    # Fine-tuning (finetune.py)
    init_from: str | None = None  # start from this checkpoint's weights (a .safetensors, `torchvision`)
    freeze: str | None = None  # finetune.FREEZE: keep the weights up to this layer fixed


# --------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, progress: TrainProgress | None = None) -> dict[str, Any] | None:
    """Train as `cfg` says; returns the run's summary (None on ranks other than 0). Raises Preempted (exit 75) after a
    SIGTERM/SIGUSR1 once the checkpoint is written, AlexnetError on a non-finite loss."""
    _check_options(cfg)
    place = placement(cfg.gpus, cfg.devices, int(os.environ.get("LOCAL_RANK", 0)))
    rank = distributed.init("nccl" if place.device.type == "cuda" else "gloo")
    try:
        with stop_signals() as stop:
            return _train(cfg, place, rank, stop, progress or TrainProgress(rank.is_main, log_every=cfg.log_every))
    except RuntimeError as e:
        if rank.enabled:
            last = Path(cfg.run_dir) / "last.pt"
            raise distributed.peer_failure(e, rank.rank, f"rerun with --resume auto to continue from {last}") from e
        raise
    finally:
        distributed.shutdown()


def _train(cfg: TrainConfig, place: "Placement", rank: distributed.DistInfo, stop: "StopFlag",
           progress: TrainProgress) -> dict[str, Any] | None:
    t_start = time.perf_counter()
    device = place.device
    if device.type == "cpu":
        keep_freed_memory()
    else:
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True

    # --- Where the run lives, and where it left off ---
    run_dir = Path(cfg.run_dir)
    resume_from = prepare_run_dir(run_dir, cfg.resume, cfg.force, rank.is_main)
    ckpt = load_checkpoint(resume_from) if resume_from else None
    if ckpt is not None:
        check_resumable(ckpt, cfg, resume_from)
    distributed.barrier()

    # --- Data ---
    data = SyntheticInputs(cfg, device, rank.world_size) if cfg.synthetic else PreparedInputs(cfg, rank, device)
    if ckpt is not None and [tuple(c) for c in ckpt["classes"]] != data.classes:
        raise InputError(f"{resume_from}: trained on other classes than {cfg.data}; resume with the same dataset")

    # --- Model, optimizer, schedule ---
    model_config = ModelConfig(cfg.arch, len(data.classes), cfg.dropout, cfg.weight_std, cfg.bias_init)
    torch.manual_seed(_seed(INIT_STREAM, cfg.seed))  # the same initial weights on every rank
    model = build_model(model_config, place.towers) if place.towers else build_model(model_config).to(device)
    if cfg.init_from is not None or cfg.freeze is not None:
        data.preprocess = finetune.prepare(model, data.classes, data.preprocess, cfg.init_from, cfg.freeze, ckpt,
                                           progress.message)
    memory_format = torch.channels_last if cfg.channels_last else torch.contiguous_format
    model = model.to(memory_format=memory_format)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scheduler = make_scheduler(cfg, optimizer)
    net = model
    if rank.enabled:
        from torch.nn.parallel import DistributedDataParallel

        single_gpu = device.type == "cuda" and place.towers is None
        net = DistributedDataParallel(model, device_ids=[device] if single_gpu else None)
    if cfg.compile:
        net = torch.compile(net)

    state = RunState()
    if ckpt is not None:
        load_weights(model, ckpt["model"], resume_from)
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        state = RunState.from_checkpoint(ckpt, rank.is_main)
        progress.message(f"resuming {resume_from}: epoch {state.epoch + 1}, step {state.epoch_step} of it")
        if rank.is_main and state.metrics:
            # last.pt is written before metrics.csv: a kill in between, after the last epoch,
            # would otherwise lose that epoch's row for good (nothing is left to run)
            write_records(run_dir, state.metrics, cfg.arch)
    board = open_tensorboard(run_dir, progress) if cfg.tensorboard and rank.is_main else None
    amp = torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp)
    dtype = torch.float32
    steps_per_epoch = data.steps_per_epoch()
    last_save = time.perf_counter()

    def checkpoint(path: Path, with_optimizer: bool = True) -> None:
        if rank.is_main:
            ckpt_out = {
                "model": _to_cpu(model.state_dict()),
                "model_config": asdict(model_config),
                "classes": [list(c) for c in data.classes],
                "preprocess": data.preprocess,
                "pca": data.pca,
                "train_config": _plain_config(cfg),
                **state.to_checkpoint(time.perf_counter() - t_start),
            }
            if with_optimizer:
                ckpt_out["optimizer"] = _to_cpu(optimizer.state_dict())
                ckpt_out["scheduler"] = scheduler.state_dict()
            save_checkpoint(path, ckpt_out)
        distributed.barrier()

    # --- Epochs ---
    stopped = "completed"
    for epoch in range(state.epoch, cfg.epochs):
        if cfg.max_steps is not None and state.step >= cfg.max_steps:  # resumed with nothing left to do
            stopped = "max_steps"
            break
        net.train()
        lr = optimizer.param_groups[0]["lr"]
        progress.start_epoch(epoch + 1, cfg.epochs, steps_per_epoch, state.epoch_step)
        sums = state.epoch_sums.to(device)  # loss, top-1 and top-5 hits, images of this epoch
        t_epoch, images_here = time.perf_counter(), 0
        with closing(data.train_batches(epoch, state.epoch_step)) as batches:
            for batch in batches:
                # Dropout masks from (seed, epoch, step, rank): a restart redraws the same ones.
                torch.manual_seed(_seed(DROPOUT_STREAM, cfg.seed, epoch, state.epoch_step, rank.rank))
                x = augment.train_input(batch, data.preprocess, data.pca, device, dtype, memory_format)
                y = batch["labels"].to(device, non_blocking=True)
                with amp:
                    logits = net(x)
                loss_sum = F.cross_entropy(logits.float(), y, reduction="sum")
                # This rank holds a share of the global batch: dividing by the global size and
                # multiplying by the world size makes DDP's average over ranks the batch mean.
                loss = loss_sum * (rank.world_size / batch["global_size"])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                # One small all-reduce per step: the batch loss, and whether any rank was signalled
                # or rank 0's clock says a checkpoint is due, so every rank decides alike.
                due = rank.is_main and time.perf_counter() - last_save > cfg.checkpoint_minutes * 60
                flags = torch.tensor([len(y), stop.requested, due], dtype=torch.float32, device=device)
                status = torch.cat([loss_sum.detach().float().view(1), flags])
                batch_loss_sum, batch_images, signalled, due = distributed.all_reduce_sum(status).tolist()
                if not math.isfinite(batch_loss_sum):
                    raise AlexnetError(
                        f"the loss became {batch_loss_sum / batch_images} at epoch {epoch + 1}, step "
                        f"{state.epoch_step + 1}: stopped without saving; {_last_good(run_dir)}; "
                        "lower --lr (or check the data) and rerun"
                    )
                optimizer.step()

                sums += torch.cat([loss_sum.detach().float().view(1), topk_hits(logits.detach(), y), _count(y)])
                state.step += 1
                state.epoch_step += 1
                images_here += int(batch_images)
                progress.step(state.epoch_step, batch_loss_sum / batch_images, lr, int(batch_images))
                epoch_ends = state.epoch_step == steps_per_epoch
                if signalled:
                    state.epoch_sums = _global(sums)
                    checkpoint(run_dir / "last.pt")
                    progress.close()
                    raise Preempted(
                        f"stopped by a signal after step {state.step} (epoch {epoch + 1}); wrote {run_dir / 'last.pt'}; "
                        "rerun the same command with --resume auto to continue"
                    )
                if cfg.max_steps is not None and state.step >= cfg.max_steps:
                    stopped = "max_steps"
                    break
                if not epoch_ends and (due or (cfg.checkpoint_every and state.step % cfg.checkpoint_every == 0)):
                    state.epoch_sums = _global(sums)
                    checkpoint(run_dir / "last.pt")
                    last_save = time.perf_counter()

        state.epoch_sums = _global(sums)
        if state.epoch_step < steps_per_epoch:  # --max-steps ended the run inside the epoch
            checkpoint(run_dir / "last.pt")
            progress.close()
            break

        # --- End of epoch: validate, schedule, record, checkpoint ---
        train_time = time.perf_counter() - t_epoch
        val = validate(model, data, device, amp, memory_format)
        total_loss, top1, top5, n = state.epoch_sums.tolist()
        row = {
            "epoch": epoch + 1,
            "lr": lr,
            "train_loss": total_loss / max(n, 1),
            "train_top1": 100.0 * top1 / max(n, 1),
            "train_top5": 100.0 * top5 / max(n, 1),
            **val,
            "images_per_s": images_here / train_time if train_time > 0 else 0.0,
            "elapsed_s": state.elapsed_before + time.perf_counter() - t_start,
        }
        state.metrics.append(row)
        state.epoch, state.epoch_step, state.epoch_sums = epoch + 1, 0, torch.zeros(4)
        if cfg.schedule == "plateau":
            if val["val_top1"] is not None:
                scheduler.step(val["val_top1"])
        else:
            scheduler.step()
        improved = val["val_top1"] is not None and (state.best_top1 is None or val["val_top1"] > state.best_top1)
        if improved:  # best.pt before last.pt: a kill in between redoes this epoch, and so this write
            state.best_top1 = val["val_top1"]
            checkpoint(run_dir / "best.pt", with_optimizer=False)  # for eval/predict; resume uses last.pt
        checkpoint(run_dir / "last.pt")
        last_save = time.perf_counter()
        if rank.is_main:
            write_records(run_dir, state.metrics, cfg.arch)
            if board is not None:
                for key in METRIC_COLUMNS[1:]:
                    if row[key] is not None:
                        board.add_scalar(key, row[key], row["epoch"])
                board.flush()
        mean_epoch_s = row["elapsed_s"] / row["epoch"]
        progress.end_epoch(row, mean_epoch_s * (cfg.epochs - row["epoch"]))
        if _any_rank(stop.requested, device):
            raise Preempted(
                f"stopped by a signal after epoch {epoch + 1}; wrote {run_dir / 'last.pt'}; "
                "rerun the same command with --resume auto to continue"
            )
        if stopped == "max_steps":
            break

    if board is not None:
        board.close()
    if not rank.is_main:
        return None
    return {
        "run_dir": str(run_dir),
        "stopped": stopped,
        "epochs_completed": state.epoch,
        "steps": state.step,
        "device": place.describe(),
        "world_size": rank.world_size,
        "best_val_top1": state.best_top1,
        "last_checkpoint": str(run_dir / "last.pt"),
        "best_checkpoint": str(run_dir / "best.pt") if state.best_top1 is not None else None,
        "last_epoch": state.metrics[-1] if state.metrics else None,
        "elapsed_s": state.elapsed_before + time.perf_counter() - t_start,
    }


@torch.no_grad()
def validate(model: torch.nn.Module, data: "PreparedInputs | SyntheticInputs", device: torch.device,
             amp: Any, memory_format: torch.memory_format) -> dict[str, float | None]:
    """Center-crop loss and top-1/top-5 over the val split, each image counted exactly once
    across ranks (section 4.1's single-crop numbers; 10-crop is `alexnet eval --ten-crop`)."""
    if not data.has_val:
        return {"val_loss": None, "val_top1": None, "val_top5": None}
    model.eval()
    sums = torch.zeros(4, device=device)
    with closing(data.val_batches()) as batches:
        for batch in batches:
            x = augment.val_input(batch, data.preprocess, device, torch.float32, memory_format)
            y = batch["labels"].to(device, non_blocking=True)
            with amp:
                logits = model(x)
            loss_sum = F.cross_entropy(logits.float(), y, reduction="sum").view(1)
            sums += torch.cat([loss_sum, topk_hits(logits, y), _count(y)])
    total_loss, top1, top5, n = _global(sums).tolist()
    n = max(n, 1)
    return {"val_loss": total_loss / n, "val_top1": 100.0 * top1 / n, "val_top5": 100.0 * top5 / n}


def topk_hits(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """How many labels are the top-1 and among the top-5 predictions: float [2]."""
    k = min(5, logits.shape[-1])
    top = logits.topk(k, dim=-1).indices
    hits = top == labels[:, None]
    return torch.stack([hits[:, 0].sum(), hits.any(dim=-1).sum()]).float()


def _count(labels: torch.Tensor) -> torch.Tensor:
    return torch.full((1,), float(len(labels)), device=labels.device)


def _global(sums: torch.Tensor) -> torch.Tensor:
    """A copy of per-rank sums, summed over ranks, on the CPU."""
    return distributed.all_reduce_sum(sums.detach().clone()).cpu()


def _any_rank(flag: bool, device: torch.device) -> bool:
    return distributed.all_reduce_sum(torch.tensor([float(flag)], device=device)).item() > 0


def _seed(stream: int, *keys: int) -> int:
    """A 64-bit seed that is a pure function of (stream, keys)."""
    return int(np.random.SeedSequence((stream, *keys)).generate_state(1, np.uint64)[0])


# --------------------------------------------------------------------------------------------
# Run state and checkpoints


@dataclass
class RunState:
    """Where the run is: what a checkpoint must carry besides the weights and the optimizer."""

    epoch: int = 0  # completed epochs
    epoch_step: int = 0  # optimizer steps done in epoch `epoch` (0-based)
    step: int = 0  # optimizer steps in all
    epoch_sums: torch.Tensor = None  # type: ignore[assignment]  # train loss, top-1, top-5, images so far this epoch
    metrics: list = None  # type: ignore[assignment]
    best_top1: float | None = None
    elapsed_before: float = 0.0  # seconds spent in earlier processes of this run

    def __post_init__(self):
        self.epoch_sums = torch.zeros(4) if self.epoch_sums is None else self.epoch_sums
        self.metrics = [] if self.metrics is None else self.metrics

    def to_checkpoint(self, elapsed_here: float) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epoch_step": self.epoch_step,
            "step": self.step,
            "epoch_sums": self.epoch_sums.clone(),
            "metrics": list(self.metrics),
            "best_top1": self.best_top1,
            "elapsed_s": self.elapsed_before + elapsed_here,
            "rng": {"seed_scheme": "numpy SeedSequence((stream, seed, epoch, step|index[, rank]))"},
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict[str, Any], is_main: bool) -> "RunState":
        # Epoch sums so far are global: rank 0 carries them, the others start from zero.
        sums = ckpt["epoch_sums"].float() if is_main else torch.zeros(4)
        return cls(int(ckpt["epoch"]), int(ckpt["epoch_step"]), int(ckpt["step"]), sums, list(ckpt["metrics"]),
                   ckpt["best_top1"], float(ckpt["elapsed_s"]))


def prepare_run_dir(run_dir: Path, resume: str | None, force: bool, is_main: bool) -> Path | None:
    """The checkpoint to resume from, or None for a fresh run. Never silently overwrites a run:
    a --run-dir that holds one needs --resume (continue) or --force (start over)."""
    last = run_dir / "last.pt"
    if is_main:  # half-written files of a write that kill -9 interrupted (fileio.atomic_path's names)
        for name in RUN_FILES:
            for stale in run_dir.glob(f".{name}.*.tmp"):
                stale.unlink(missing_ok=True)
    if resume == "last" and not last.is_file():
        raise InputError(f"{last}: no checkpoint to resume; drop --resume (or use --resume auto) to start a run")
    if resume in ("last", "auto") and last.is_file():
        return last
    existing = [name for name in RUN_FILES if (run_dir / name).exists()]
    # 'auto' finding only best.pt: a run killed between its first best.pt and last.pt (metrics
    # come after both), which cannot resume and starts over. Anything more is a run to keep.
    first_epoch_leftover = resume == "auto" and existing == ["best.pt"]
    if existing and not force and not first_epoch_leftover:
        raise InputError(
            f"{run_dir} already holds a run ({', '.join(existing)}); continue it with --resume auto, "
            "or start over with --force (deletes its checkpoints and metrics)"
        )
    if is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            for name in existing:
                (run_dir / name).unlink()
        except OSError as e:
            raise InputError(f"{run_dir}: cannot use as the run folder ({e.strerror or e}); choose another --run-dir") from None
    return None


def check_resumable(ckpt: dict[str, Any], cfg: TrainConfig, path: Path) -> None:
    """A run continues exactly only with the recipe it started with."""
    if "optimizer" not in ckpt or "epoch_step" not in ckpt:
        raise InputError(f"{path}: holds no optimizer state (best.pt is for eval); resume from last.pt")
    before = ckpt.get("train_config", {})
    changed = [k for k in RECIPE if k in before and before[k] != getattr(cfg, k)]
    if changed:
        detail = ", ".join(f"--{k.replace('_', '-')} {before[k]} (now {getattr(cfg, k)})" for k in changed[:3])
        raise InputError(
            f"{path}: was trained with {detail}; resume with the same options, or start a new run with --force"
        )


def write_records(run_dir: Path, rows: list[dict[str, Any]], arch: str) -> None:
    """metrics.csv and curves.png from the epochs so far (both follow from last.pt's metrics)."""
    from alexnet_cli.plots import draw_curves

    write_metrics(run_dir / "metrics.csv", rows)
    draw_curves(rows, run_dir / "curves.png", title=f"AlexNet ({arch}) {run_dir.name}")


def write_metrics(path: Path, rows: list[dict[str, Any]]) -> None:
    """metrics.csv, one row per epoch (accuracies in percent), rewritten atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=METRIC_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if row.get(k) is None else _fmt(row[k]) for k in METRIC_COLUMNS})
    atomic_write_text(path, buf.getvalue())


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else str(v)


def _last_good(run_dir: Path) -> str:
    last = run_dir / "last.pt"
    return f"the last good checkpoint is {last}" if last.exists() else "no checkpoint was written yet"


def _to_cpu(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: _to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_to_cpu(v) for v in obj]
    return obj


def _plain_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config as checkpoint-safe data (weights_only loads lists, not tuples)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()}


def make_scheduler(cfg: TrainConfig, optimizer: torch.optim.Optimizer):
    if cfg.schedule == "plateau":
        # min_lr stops the drops after `lr_drops` of them ("reduced three times").
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="max", factor=0.1, patience=cfg.patience, min_lr=cfg.lr * 0.1**cfg.lr_drops * (1 - 1e-6)
        )
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_epochs, gamma=0.1)


# --------------------------------------------------------------------------------------------
# Inputs: the prepared HDF5 dataset, or generated batches


class PreparedInputs:
    """The train and val splits of prep's OUT.h5, with its mean image and PCA."""

    has_val = True

    def __init__(self, cfg: TrainConfig, rank: distributed.DistInfo, device: torch.device):
        from alexnet_cli.data.format import PreparedDataset
        from alexnet_cli.data.transforms import preprocess_from_stats

        if not cfg.data:
            raise InputError("no dataset: pass --data OUT.h5 (written by `alexnet prep`) or set ALEXNET_DATA")
        dataset = PreparedDataset(cfg.data)
        if dataset.stats is None:
            raise InputError(f"{cfg.data}: has no training-set mean and PCA; prep it with its train split")
        self.cfg, self.rank = cfg, rank
        self.classes = [tuple(c) for c in dataset.classes]
        self.preprocess = preprocess_from_stats(dataset.stats.mean_image)
        self.pca = augment.pca_from_stats(dataset.stats.eigenvalues, dataset.stats.eigenvectors)
        train_split, val_split = dataset.split("train"), dataset.split("val")
        for shard in train_split.shard_paths + val_split.shard_paths:
            if not shard.is_file():  # fail now, not in a loader worker an epoch later
                raise InputError(f"{shard}: shard missing; restore it or rerun `alexnet prep`")
        self.train_images = loader.StoredImages(train_split, train=True, seed=cfg.seed, lighting_std=cfg.lighting_std)
        self.val_images = loader.StoredImages(val_split, train=False)
        self.train_indices = loader.subset(len(train_split), cfg.limit)
        if len(self.train_indices) == 0:
            raise InputError(f"{cfg.data}: the train split is empty; prep it with images")
        self.pin = device.type == "cuda"

    def steps_per_epoch(self) -> int:
        return loader.steps_per_epoch(len(self.train_indices), self.cfg.batch_size)

    def train_batches(self, epoch: int, start_step: int) -> Iterable[dict[str, torch.Tensor]]:
        batches = loader.epoch_batches(self.train_indices, self.cfg.batch_size, self.cfg.seed, epoch,
                                       self.rank.rank, self.rank.world_size, start_step)
        return loader.batch_loader(self.train_images, batches, self.cfg.workers, self.pin)

    def val_batches(self) -> Iterable[dict[str, torch.Tensor]]:
        batches = loader.val_batches(len(self.val_images), self.cfg.batch_size, self.cfg.limit,
                                     self.rank.rank, self.rank.world_size)
        return loader.batch_loader(self.val_images, batches, self.cfg.workers, self.pin)


class SyntheticInputs:
    """One batch of random patches made once on the device and reused: measures the model and
    the device-side augmentation, not the input pipeline. No validation."""

    has_val = False

    def __init__(self, cfg: TrainConfig, device: torch.device, world_size: int = 1):
        from alexnet_cli.data.transforms import CROP, preprocess_from_stats

        self.cfg = cfg
        self.classes = [(f"synthetic{c:04d}", f"class {c}") for c in range(cfg.num_classes)]
        self.preprocess = preprocess_from_stats(np.full((256, 256, 3), 127.5, np.float32))
        self.pca = augment.pca_from_stats([1 / 12] * 3, np.eye(3))  # uniform pixels: variance 1/12
        g = torch.Generator().manual_seed(cfg.seed)
        n = cfg.batch_size
        self.batch = {
            "images": torch.randint(0, 256, (n, 3, CROP, CROP), dtype=torch.uint8, generator=g).to(device),
            "labels": torch.randint(0, cfg.num_classes, (n,), generator=g).to(device),
            "top": torch.randint(0, 33, (n,), generator=g),
            "left": torch.randint(0, 33, (n,), generator=g),
            "flip": torch.rand(n, generator=g) < 0.5,
            "alpha": torch.randn(n, 3, generator=g) * cfg.lighting_std,
            "global_size": n * world_size,  # each rank trains on its own copy
        }

    def steps_per_epoch(self) -> int:
        return loader.steps_per_epoch(self.cfg.limit or 20 * self.cfg.batch_size, self.cfg.batch_size)

    def train_batches(self, epoch: int, start_step: int) -> Iterator[dict[str, torch.Tensor]]:
        for _ in range(start_step, self.steps_per_epoch()):
            yield self.batch

    def val_batches(self) -> Iterable[dict[str, torch.Tensor]]:
        return ()


# --------------------------------------------------------------------------------------------
# Devices


@dataclass(frozen=True)
class Placement:
    device: torch.device  # inputs, labels and fc8 (tower 0's device)
    towers: tuple[torch.device, torch.device] | None  # the split, or None for one device

    def describe(self) -> str:
        return ",".join(str(d) for d in self.towers) if self.towers else str(self.device)


def placement(gpus: int | None, devices: tuple[str, ...] | None, local_rank: int = 0) -> Placement:
    """--gpus / --devices -> where the towers go. Under torchrun each process takes the next
    1 (--gpus 1) or 2 (--gpus 2) GPUs of its node, by LOCAL_RANK."""
    available = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if devices:
        try:
            named = tuple(torch.device(d.strip()) for d in devices)
        except (RuntimeError, ValueError):
            raise InputError(f"--devices {','.join(devices)}: not device names; e.g. cpu,cpu or cuda:0,cuda:1") from None
        if len(named) not in (1, 2):
            raise InputError(f"--devices {','.join(devices)}: give one device, or two (tower 0, tower 1)")
    else:
        if gpus is None:
            gpus = 1 if available else 0
        if gpus not in (0, 1, 2):
            raise InputError(f"--gpus {gpus}: a process drives 0, 1 or 2 GPUs; for more, launch one process per GPU pair with torchrun")
        first = gpus * local_rank
        named = (torch.device("cpu"),) if gpus == 0 else tuple(torch.device("cuda", first + i) for i in range(gpus))
    needed = max((d.index or 0) + 1 for d in named if d.type == "cuda") if any(d.type == "cuda" for d in named) else 0
    if needed > available:
        raise InputError(
            f"{'--devices ' + ','.join(devices) if devices else f'--gpus {gpus}'} needs {needed} GPU(s)"
            f"{f' (local rank {local_rank})' if local_rank else ''} but this machine has {available}; "
            "use --gpus 0 for the CPU"
        )
    if len(named) == 2:
        return Placement(named[0], (named[0], named[1]))
    return Placement(named[0], None)


# --------------------------------------------------------------------------------------------
# Signals, TensorBoard, memory


class StopFlag:
    requested: bool = False


@contextmanager
def stop_signals() -> Iterator[StopFlag]:
    """SIGTERM or SIGUSR1 (cluster preemption) asks the loop to stop after the current step."""
    flag = StopFlag()

    def handler(signum, frame):
        flag.requested = True

    previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGUSR1)}
    try:
        yield flag
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def open_tensorboard(run_dir: Path, progress: TrainProgress):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        progress.message("--tensorboard: tensorboard is not installed (pip install tensorboard); continuing without it")
        return None
    return SummaryWriter(str(run_dir / "tensorboard"))


def keep_freed_memory() -> None:
    """Ask glibc to keep large freed blocks instead of returning them to the OS. Otherwise each
    batch's tensors (tens of MB) are fresh mmaps, and on the CPU filling them page-faults:
    measured here, a 77 MB tensor filled in ~80 ms instead of ~11 ms."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc: nothing to tune
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 1 << 30)
    libc.mallopt(m_trim_threshold, 1 << 30)


def _check_options(cfg: TrainConfig) -> None:
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
    if cfg.resume not in (None, "last", "auto"):
        raise InputError(f"--resume {cfg.resume}: use --resume last (continue --run-dir) or --resume auto")
    if cfg.lr <= 0 or cfg.workers < 0 or not 0 <= cfg.dropout < 1:
        raise InputError("--lr must be positive, --workers at least 0 and --dropout in [0, 1)")
    if cfg.arch == "torchvision" and (cfg.gpus == 2 or (cfg.devices and len(cfg.devices) == 2)):
        raise InputError("--arch torchvision has no towers to split; use --arch paper for two devices")

