"""The one training engine: any distiller, any task, one process or many (``torchrun``).

The engine knows nothing about methods: it asks the distiller for named losses,
sums them, steps the optimiser, validates the student, writes checkpoints and logs.
"""

from __future__ import annotations

import csv
import math
import os
import random
import time
import warnings
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from torch.utils.data import DataLoader, DistributedSampler

from .builders import build_configured_network, build_teacher
from .checkpoint import load_state, load_training_state, load_weights, save_model, save_training_state
from .config import ExperimentConfig, OptimizerConfig, ScheduleConfig, config_to_dict, save_config
from .distill import METHODS, build_distiller
from .errors import MeddistillError
from .run_lock import hold_run_folder
from .tasks import build_task

console = Console(stderr=True)


@dataclass
class TrainResult:
    run_dir: Path
    best_metrics: dict[str, float]
    best_epoch: int
    history: list[dict[str, float]] = field(default_factory=list)


def seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        # ENet's max-unpooling is flagged as non-deterministic because of CUDA atomics; its
        # CPU kernel writes each output once, so the warning is noise on every CPU step.
        warnings.filterwarnings("ignore", message="max_unpooling2d_forward_out does not have a deterministic")
        torch.backends.cudnn.benchmark = False


def build_optimizer(params, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    if not cfg.lr > 0:
        raise MeddistillError(f"train.optimizer.lr must be positive, got {cfg.lr}")
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise MeddistillError(f"unknown optimizer '{cfg.name}'; choose from adam, adamw, sgd")


def build_schedule(optimizer, cfg: ScheduleConfig, epochs: int) -> torch.optim.lr_scheduler.LRScheduler:
    """Per-epoch learning-rate multiplier with optional linear warm-up."""

    def decay(epoch: int) -> float:
        if cfg.name == "constant":
            return 1.0
        if cfg.name == "poly":
            return (1 - epoch / epochs) ** cfg.power
        if cfg.name == "cosine":
            return 0.5 * (1 + math.cos(math.pi * epoch / epochs))
        if cfg.name == "step":
            return cfg.gamma ** (epoch // cfg.step_size)
        raise MeddistillError(f"unknown schedule '{cfg.name}'; choose from constant, poly, cosine, step")

    decay(0)  # reject an unknown name now rather than after the first epoch

    def factor(epoch: int) -> float:
        warm = min(1.0, (epoch + 1) / cfg.warmup_epochs) if cfg.warmup_epochs else 1.0
        return warm * decay(epoch)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def check_device_name(name: str) -> None:
    """Raise a one-line error unless ``name`` is ``auto``, ``cpu``, ``cuda`` or ``cuda:N``."""
    kind, colon, index = name.partition(":")
    if name != "auto" and (kind not in ("cpu", "cuda") or (colon and (kind == "cpu" or not index.isdigit()))):
        raise MeddistillError(f"unknown device '{name}': use auto, cpu, cuda or cuda:N")


def resolve_device(name: str) -> torch.device:
    """The torch device for ``name``: ``auto`` (CUDA if present, else CPU), ``cpu``, ``cuda`` or ``cuda:N``."""
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise MeddistillError(f"the device is '{name}' but no CUDA device is available")
    return torch.device(name)


class _Distributed:
    """Process-group facts, from the environment ``torchrun`` sets."""

    def __init__(self, device: torch.device) -> None:
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.enabled = self.world_size > 1
        if self.enabled and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating buffers (BatchNorm running statistics) over ranks.

        DDP syncs gradients, but each rank updates its running statistics from its own
        batches; averaging them keeps every rank's model identical and uses all the data.
        """
        if not self.enabled:
            return
        for buffer in module.buffers():
            if buffer.is_floating_point():
                dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
                buffer.div_(self.world_size)


def _to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


class Trainer:
    """Train ``config.student`` with ``config.method``; checkpoints go to ``config.run_dir``.

    Run files: ``config.yaml``, ``last.*`` (every epoch, resumable), ``best.*`` (best
    validation ``train.monitor``), ``metrics.csv`` and TensorBoard events in ``tb/``. With
    ``train.ema_decay`` the validated and saved student is the moving average of its weights.
    """

    def __init__(self, config: ExperimentConfig, *, progress: bool = True) -> None:
        self.config = config
        self.progress = progress
        self.device = resolve_device(config.train.device)
        if config.train.threads and self.device.type == "cpu":
            torch.set_num_threads(config.train.threads)
        self.dist = _Distributed(self.device)
        self.run_dir = config.run_dir
        seed_everything(config.seed, config.train.deterministic)

        self.task = build_task(config)
        data = self.task.build_data(config.data, config.seed)
        self.dataset, self.val_samples, self.task_meta = data.dataset, data.validation, data.meta
        self.sampler = (
            DistributedSampler(self.dataset, shuffle=True, seed=config.seed, drop_last=True)
            if self.dist.enabled
            else None
        )
        # Re-seeded every epoch so the order of epoch e depends only on (seed, e): a resumed
        # run then sees exactly the batches the uninterrupted run would have seen.
        self.shuffle_generator = torch.Generator()
        self.loader = DataLoader(
            self.dataset,
            batch_size=config.train.batch_size,
            shuffle=self.sampler is None,
            sampler=self.sampler,
            num_workers=config.data.num_workers,
            generator=self.shuffle_generator,
            drop_last=len(self.dataset) // self.dist.world_size > config.train.batch_size,
        )

        method = METHODS.get(config.method.name)  # an unknown method fails before heavy work
        if method.needs_teacher and config.teacher is None:
            raise MeddistillError(f"method '{config.method.name}' needs a 'teacher' section in the config")
        if method.needs_trained_student and config.student.weights is None:
            raise MeddistillError(
                f"method '{config.method.name}' starts from a task-trained student: set student.weights "
                "to a checkpoint of the student trained with method 'none'"
            )
        self.student = build_configured_network(config.student)
        decay = config.train.ema_decay
        if not 0 <= decay < 1:
            raise MeddistillError(f"train.ema_decay must be at least 0 and below 1, not {decay}")
        # Polyak averaging: weights averaged over the last ~1 / (1 - decay) steps sit nearer a
        # wide minimum than the last step's, and vary less from one epoch to the next.
        self.averaged = (
            AveragedModel(self.student, multi_avg_fn=get_ema_multi_avg_fn(decay), use_buffers=True).to(self.device)
            if decay
            else None
        )
        self.kept_student = self.averaged.module if self.averaged else self.student  # validated and saved
        teacher = build_teacher(config, self.task_meta) if method.needs_teacher else None
        example = self.dataset[0]["image"].unsqueeze(0)
        self.distiller = build_distiller(
            config.method.name,
            self.student,
            teacher,
            self.task,
            example,
            config.method.args,
        ).to(self.device)
        self.model: nn.Module = self.distiller
        if self.dist.enabled:
            # Pre-stages train one part at a time, so the rest gets no gradient.
            unused = bool(self.distiller.pre_stages())
            self.model = nn.parallel.DistributedDataParallel(self.distiller, find_unused_parameters=unused)

        self.optimizer = build_optimizer(self.distiller.trainable_parameters(), config.train.optimizer)
        self.schedule = build_schedule(self.optimizer, config.train.schedule, config.train.epochs)
        self.autocast_dtype = self._autocast_dtype()
        self.scaler = torch.amp.GradScaler(enabled=self.autocast_dtype == torch.float16)
        self.start_epoch = 0
        self.best_score = -math.inf
        self.best_epoch = -1
        self.best_metrics: dict[str, float] = {}

    def _autocast_dtype(self) -> torch.dtype | None:
        amp = self.config.train.amp
        if isinstance(amp, bool):  # YAML reads a bare on / off as true / false
            amp = "on" if amp else "off"
        if amp == "off" or (amp == "auto" and self.device.type != "cuda"):
            return None
        if amp not in ("on", "auto"):
            raise MeddistillError(f"train.amp must be auto, on or off, not '{amp}'")
        if self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            return torch.float16
        return torch.bfloat16

    # ---- checkpoints ------------------------------------------------------------------
    def _model_meta(self, epoch: int, metrics: dict[str, float]) -> dict[str, Any]:
        return {
            "model": self.config.student.name,
            "args": self.config.student.args,
            "task": self.task.name,
            "method": self.config.method.name,
            **self.task_meta,
            "epoch": epoch,
            "metrics": metrics,
            "config": config_to_dict(self.config),
        }

    def _save(self, epoch: int, metrics: dict[str, float], is_best: bool) -> None:
        save_model(self.run_dir / "last", self.kept_student, self._model_meta(epoch, metrics))
        save_training_state(
            self.run_dir / "last.state.pt",
            {
                "epoch": epoch,
                "distiller": {k: v.cpu() for k, v in self.distiller.state_dict().items()},
                "optimizer": self.optimizer.state_dict(),
                "schedule": self.schedule.state_dict(),
                "scaler": self.scaler.state_dict(),
                "best_score": self.best_score,
                "best_epoch": self.best_epoch,
                "best_metrics": self.best_metrics,
                "torch_rng": torch.get_rng_state(),
                **({"averaged": {k: v.cpu() for k, v in self.averaged.state_dict().items()}} if self.averaged else {}),
            },
        )
        if is_best:
            save_model(self.run_dir / "best", self.kept_student, self._model_meta(epoch, metrics))

    def _stage_stem(self, name: str) -> Path:
        return self.run_dir / f"stage-{name}"

    def resume(self) -> None:
        state_path = self.run_dir / "last.state.pt"
        if not state_path.is_file():
            if any(self._stage_stem(s.name).with_suffix(".json").is_file() for s in self.distiller.pre_stages()):
                return  # killed during the pre-stages: finished ones are reloaded, the rest retrained
            raise MeddistillError(f"nothing to resume: {state_path} does not exist")
        state = load_training_state(state_path)
        load_state(self.distiller, state["distiller"], str(state_path))
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        if state["scaler"]:  # empty when saved without float16 (a CPU or bfloat16 run): the scale starts afresh
            self.scaler.load_state_dict(state["scaler"])
        self.best_score = float(state["best_score"])
        self.best_epoch = int(state["best_epoch"])
        self.best_metrics = dict(state["best_metrics"])
        torch.set_rng_state(state["torch_rng"])
        if self.averaged and "averaged" in state:  # else averaging starts from the resumed weights
            load_state(self.averaged, state["averaged"], str(state_path))
        self.start_epoch = int(state["epoch"]) + 1

    # ---- loop -----------------------------------------------------------------------
    def fit(self, resume: bool = False) -> TrainResult:
        # only the main rank writes the folder, so only it holds it
        with hold_run_folder(self.run_dir) if self.dist.is_main else nullcontext():
            return self._fit(resume)

    def _fit(self, resume: bool) -> TrainResult:
        if resume:
            self.resume()
        elif self.dist.is_main and (self.run_dir / "last.json").exists():
            raise MeddistillError(
                f"{self.run_dir} already holds a run: pass --resume to continue it, "
                "or choose another name/output"
            )
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            save_config(self.config, self.run_dir / "config.yaml")
        self.dist.barrier()
        writer = self._tensorboard() if self.dist.is_main else None
        history: list[dict[str, float]] = []
        epochs = self.config.train.epochs
        with self._progress() as bar:
            self._run_pre_stages(bar, writer)
            self.distiller.set_stage("distill")
            task = bar.add_task(self.config.name, total=(epochs - self.start_epoch) * len(self.loader))
            for epoch in range(self.start_epoch, epochs):
                row = self._train_epoch(epoch, bar, task, self.optimizer, self.config.name, self.averaged)
                self.schedule.step()
                metrics = self._validate(epoch)
                row.update({f"val_{k}": v for k, v in metrics.items()})
                history.append(row)
                if self.dist.is_main:
                    is_best = self._update_best(epoch, metrics)
                    self._save(epoch, metrics, is_best)
                    self._log(row, writer)
                self.dist.barrier()
        if writer is not None:
            writer.close()
        return TrainResult(self.run_dir, self.best_metrics, self.best_epoch, history)

    def _run_pre_stages(self, bar: Progress, writer) -> None:
        """Train each of the method's pre-stages, or reload it when a previous run finished it.

        A stage uses the configured optimizer at a constant learning rate; its losses go to
        ``stage-<name>.csv`` and TensorBoard, its weights to ``stage-<name>.safetensors``.
        """
        for stage in self.distiller.pre_stages():
            stem = self._stage_stem(stage.name)
            if stem.with_suffix(".json").is_file():
                load_weights(stage.module, stem)
                continue
            self.distiller.set_stage(stage.name)
            optimizer = build_optimizer(list(stage.module.parameters()), self.config.train.optimizer)
            label = f"{self.config.name}:{stage.name}"
            task = bar.add_task(label, total=stage.epochs * len(self.loader))
            for epoch in range(stage.epochs):
                row = self._train_epoch(epoch, bar, task, optimizer, label)
                if self.dist.is_main:
                    self._log(row, writer, f"stage-{stage.name}.csv", f"{stage.name}_")
            if self.dist.is_main:
                save_model(stem, stage.module, {"stage": stage.name, "method": self.config.method.name,
                                                "config": config_to_dict(self.config)})
            self.dist.barrier()

    def _train_epoch(
        self,
        epoch: int,
        bar: Progress,
        task,
        optimizer: torch.optim.Optimizer,
        label: str,
        averaged: AveragedModel | None = None,
    ) -> dict[str, float]:
        self.model.train()
        self.dataset.set_epoch(epoch)
        self.shuffle_generator.manual_seed(self.config.seed * 100_003 + epoch)
        if self.sampler is not None:
            self.sampler.set_epoch(epoch)
        sums: dict[str, float] = {}
        steps = 0
        started = time.perf_counter()
        for step, batch in enumerate(self.loader):
            losses = self.train_step(batch, optimizer, averaged, where=f"epoch {epoch} step {step}")
            total = sum(losses.values())
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            sums["loss"] = sums.get("loss", 0.0) + total.item()
            steps += 1
            bar.update(task, advance=1, description=f"{label} e{epoch} loss {total.item():.4f}")
        self.dist.average_buffers(self.distiller)
        if averaged is not None:  # it averaged each rank's own running statistics
            self.dist.average_buffers(averaged)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "seconds": time.perf_counter() - started}
        row.update({f"train_{k}": v / max(steps, 1) for k, v in sums.items()})
        return row

    def train_step(
        self, batch: dict[str, Tensor], optimizer: torch.optim.Optimizer, averaged: AveragedModel | None = None, where: str = ""
    ) -> dict[str, Tensor]:
        """One optimiser step on ``batch`` (moved to the trainer's device first); returns the named losses.

        Raises:
            MeddistillError: the loss is not finite (no optimiser step is taken).
        """
        batch = _to_device(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype or torch.float32, enabled=self.autocast_dtype is not None):
            losses = self.model(batch)
        total = sum(losses.values())
        if not torch.isfinite(total):
            raise MeddistillError(
                f"training diverged: loss is {total.item()} at {where or 'a step'} "
                f"({', '.join(f'{k}={v.item():.4g}' for k, v in losses.items())}); "
                f"the last good checkpoint is kept in {self.run_dir} — lower the learning rate"
            )
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(total).backward()
        if self.config.train.grad_clip:
            self.scaler.unscale_(optimizer)
            params = [p for group in optimizer.param_groups for p in group["params"]]
            nn.utils.clip_grad_norm_(params, self.config.train.grad_clip)
        self.scaler.step(optimizer)
        self.scaler.update()
        if averaged is not None:
            averaged.update_parameters(self.student)
        return losses

    def _validate(self, epoch: int) -> dict[str, float]:
        last = epoch == self.config.train.epochs - 1
        if not self.dist.is_main or not self.val_samples:
            return {}
        if epoch % self.config.train.val_every and not last:
            return {}
        return self.task.validate(self.kept_student, self.val_samples, self.device)

    def _update_best(self, epoch: int, metrics: dict[str, float]) -> bool:
        if not metrics:  # no validation this epoch (or no validation set): the latest is best
            if self.val_samples:
                return False
            score = float(epoch)
        else:
            monitor = self.config.train.monitor
            if monitor not in metrics:
                raise MeddistillError(f"train.monitor '{monitor}' is not a metric; choose from {', '.join(metrics)}")
            score = metrics[monitor]
            if math.isnan(score):
                score = -math.inf
        if score > self.best_score or self.best_epoch < 0:
            self.best_score, self.best_epoch, self.best_metrics = score, epoch, metrics
            return True
        return False

    def _log(self, row: dict[str, float], writer, file_name: str = "metrics.csv", tag_prefix: str = "") -> None:
        path = self.run_dir / file_name
        new_file = not path.exists()
        fields = list(row)
        if not new_file:
            with path.open() as f:
                fields = next(csv.reader(f), fields)
            fields += [k for k in row if k not in fields]
        with path.open("a", newline="") as f:
            out = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
            if new_file:
                out.writeheader()
            out.writerow(row)
        for key, value in row.items():
            if key != "epoch" and isinstance(value, float) and not math.isnan(value):
                writer.add_scalar(tag_prefix + key.replace("_", "/", 1), value, int(row["epoch"]))
        writer.flush()

    def _tensorboard(self):
        from torch.utils.tensorboard import SummaryWriter

        return SummaryWriter(str(self.run_dir / "tb"))

    def _progress(self) -> Progress:
        return Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=console,
            disable=not (self.progress and self.dist.is_main),
            transient=False,
        )


def train(config: ExperimentConfig, *, resume: bool = False, progress: bool = True) -> TrainResult:
    """Train (or distill) as ``config`` says; returns the best validation metrics."""
    return Trainer(config, progress=progress).fit(resume=resume)
