"""The training loop shared by ``train-feature``, ``train-quality`` and ``train-magface``.

Set-up (process group, data, task, optimiser, resume), then a plain ``for epoch / for batch`` loop with
autocast, a non-finite-step guard, logging, validation and atomic checkpoints. Rank 0 writes everything;
collectives (head gathering, RNG states) are called on every rank.
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.fsutil import ensure_dir
from fqtool.models import QualityCalibration
from fqtool.runtime import autocast, resolve_precision
from fqtool.train import memory
from fqtool.train.config import TrainConfig, batch_split, effective_lr, save_config, to_dict
from fqtool.train.data import GlobalBatchSampler, make_loader, open_training_data
from fqtool.train.distributed import (
    DistEnv,
    agree,
    barrier,
    cleanup,
    convert_sync_batchnorm,
    gather_objects,
    setup,
    wrap_ddp,
)
from fqtool.train.logging import TrainLogger, TrainProgress
from fqtool.train.output import check_output, clear_previous_run, remove_stale_temporaries
from fqtool.train.recipes import Task, build_task
from fqtool.train.schedule import lr_factor, set_lr
from fqtool.train.state import (
    agreed_resume,
    collect_rng,
    load_optimizer_state,
    load_state,
    optimizer_state,
    save_state,
    seed_everything,
    set_rng_state,
    sharded_params,
)
from fqtool.train.step import BufferGuard, StepOutcome, backward_and_step, grad_scaler, non_finite_tensors


class NonFiniteLossError(FqtoolError):
    """Training stopped after too many consecutive steps with a NaN/inf loss or gradient."""


class NonFiniteModelError(FqtoolError):
    """The weights (or the quality calibration) became NaN/inf: nothing is saved as a finished model."""


@dataclass
class TrainResult:
    output: Path
    model_path: Path | None
    steps: int
    epochs_done: float
    last: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    skipped_steps: int = 0


class _EvalView:
    """The model as ``embed_images`` sees it, without handing it the module: embed_images would move it
    and convert its weights to channels_last on CUDA, under DDP and the optimiser's feet."""

    def __init__(self, model: torch.nn.Module, device: torch.device) -> None:
        self.model, self.device = model, device
        self.embedding_size = model.embedding_size

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.prepare(images.to(self.device, non_blocking=True))

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model(x)


class Trainer:
    """One training run. ``run()`` returns a :class:`TrainResult`; construct it inside a process group."""

    def __init__(self, cfg: TrainConfig, env: DistEnv, progress: TrainProgress | None = None) -> None:
        cfg, notes = self._cpu_settings(cfg, env)
        self.cfg, self.env = cfg, env
        self.batch = batch_split(cfg, env.world_size)  # before any file is touched: a bad split is one line
        notes.extend(env.notes)
        self.output = Path(cfg.output)
        self._prepare_output()
        self.precision = resolve_precision(cfg.precision, env.device)
        if env.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        seed_everything(cfg.seed)  # identical model initialisation on every rank
        self.dataset = open_training_data(cfg.data, size=(112, 112))
        notes.extend(getattr(self.dataset, "notes", []))  # images / links left out of an image folder
        self.num_classes = int(self.dataset.num_classes)
        self._check_labels()
        self.task: Task = build_task(cfg, self.num_classes, env.device)
        self.dataset = self._reopen_for_model()
        if cfg.sync_bn and env.distributed:
            convert_sync_batchnorm(self.task.trainable, env.device)
        if cfg.channels_last:
            self.task.model.to(memory_format=torch.channels_last)
        self.head_params = sharded_params(self.task.head, self.num_classes)
        self.base_lr = effective_lr(cfg, env.world_size)
        self.optimizer = self._make_optimizer()
        self.scaler = grad_scaler(self.precision)
        self.memory_notes = memory.training_notes(cfg, self.task, self.batch, self.precision, env.device)
        self.sampler = GlobalBatchSampler(len(self.dataset), self.batch.per_gpu, rank=env.rank,
                                          world_size=env.world_size, seed=cfg.seed)
        if hasattr(self.task.head, "batch_per_rank"):  # equal batches by construction: no size exchange
            self.task.head.batch_per_rank = self.sampler.batch_size
        self.steps_per_epoch = self.sampler.batches_per_epoch
        self.total_steps = cfg.epochs * self.steps_per_epoch
        self.stop_step = min(self.total_steps, cfg.max_steps) if cfg.max_steps > 0 else self.total_steps
        self.step, self.epoch, self.bad_steps, self.skipped, self.samples_in_epoch = 0, 0, 0, 0, 0
        self.resumed_from = self._maybe_resume()
        if self.resumed_from is None:
            seed_everything(cfg.seed * 1000 + env.rank + 1)  # per-rank streams from here on
        self.net = wrap_ddp(self.task.trainable, env)
        if cfg.compile:
            self.net = torch.compile(self.net)
        self.guard = BufferGuard(self.task.trainable)
        self.val_sets = self._load_val_sets() if env.is_main else []
        # the first file of the run: a start that failed above leaves the output folder empty
        self.log = TrainLogger(self.output, enabled=env.is_main, total_steps=self.stop_step,
                               progress=progress, quiet=cfg.quiet)
        self.val_results: dict[str, float] = {}
        self._warned_collapse = False
        self._val_step = -1
        for note in notes + self.memory_notes[1:]:
            self.log.warn(note)

    @staticmethod
    def _cpu_settings(cfg: TrainConfig, env: DistEnv) -> tuple[TrainConfig, list[str]]:
        notes = []
        if env.device.type != "cuda":
            # PyTorch's CPU backward of a stride-2 1×1 convolution (iResNet's downsample) in channels_last
            # crashes the process (torch 2.14; inductor picks that layout too): both are CUDA-only here.
            for flag in ("channels_last", "compile"):
                if getattr(cfg, flag):
                    cfg = dataclasses.replace(cfg, **{flag: False})
                    notes.append(f"--{flag.replace('_', '-')} is a CUDA optimisation; ignored on the CPU")
        return cfg, notes

    def _prepare_output(self) -> None:
        """Check the folder on every rank (one answer for all), then let rank 0 tidy it."""
        agree(lambda: check_output(self.output, resume=self.cfg.resume, overwrite=self.cfg.overwrite))
        if self.env.is_main:
            if self.cfg.overwrite:
                clear_previous_run(self.output)
            remove_stale_temporaries(self.output)
            ensure_dir(self.output)  # writable? (state/, logs and config come once the run is set up)
        barrier()

    # ------------------------------------------------------------------ set-up helpers
    def _reopen_for_model(self):
        size = tuple(self.task.model.preprocess.size)
        return self.dataset if size == (112, 112) else open_training_data(self.cfg.data, size=size)

    def _check_labels(self) -> None:
        from fqtool.losses import check_labels

        labels = torch.as_tensor(np.asarray(self.dataset.labels), dtype=torch.int64)
        if self.num_classes < 2:
            raise FqtoolError(f"the training data has {self.num_classes} identities; need at least 2",
                              self.cfg.data)
        check_labels(labels, self.num_classes)

    def _make_optimizer(self) -> torch.optim.Optimizer:
        cfg = self.cfg
        head_wd = cfg.weight_decay if cfg.head_weight_decay is None else cfg.head_weight_decay
        groups = [
            {"params": [p for p in self.task.trainable.parameters() if p.requires_grad],
             "weight_decay": cfg.weight_decay},
            {"params": [p for p in self.task.head.parameters() if p.requires_grad], "weight_decay": head_wd},
        ]
        optimizer = torch.optim.SGD([g for g in groups if g["params"]], lr=self.base_lr,
                                    momentum=cfg.momentum)
        for group in optimizer.param_groups:
            group["initial_lr"] = self.base_lr
        return optimizer

    def _load_val_sets(self) -> list[tuple[str, torch.Tensor, np.ndarray]]:
        from fqtool.data.binfile import decode_pairs, load_bin

        sets = []
        for path in self.cfg.val:
            vset = load_bin(path)
            images = decode_pairs(vset, tuple(self.task.model.preprocess.size))
            sets.append((Path(path).stem, torch.as_tensor(images), np.asarray(vset.issame)))
        return sets

    # ------------------------------------------------------------------ state
    def _state(self) -> dict:
        """The full training state on rank 0 (a collective: every rank calls it; the head and its momentum
        are gathered on rank 0 only, so no other rank ever holds the whole C×E matrix)."""
        head = self.task.head.full_state_dict(rank0_only=True)
        optim = optimizer_state(self.optimizer, self.head_params, self.num_classes)
        rng = collect_rng()
        return {
            "model": {k: v.detach().cpu() for k, v in self.task.trainable.state_dict().items()},
            "head": {"weight": head.get("weight")},
            "optimizer": optim,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "step": self.step, "epoch": self.epoch, "samples_in_epoch": self.samples_in_epoch,
            "bad_steps": self.bad_steps, "skipped": self.skipped, "rng": rng,
            "world_size": self.env.world_size, "config": to_dict(self.cfg),
        }

    def _local_tensors(self, network: torch.nn.Module) -> dict[str, torch.Tensor]:
        """``network``'s tensors and this rank's head shard (no gathering)."""
        head = {f"head.{k}": v for k, v in self.task.head.state_dict().items()}
        return {**network.state_dict(), **head}

    def _broken_anywhere(self, tensors: dict[str, torch.Tensor]) -> list[str]:
        """Names of NaN/inf tensors on any rank (BatchNorm buffers and head shards differ per rank): one
        answer on every rank (a collective)."""
        per_rank = gather_objects(non_finite_tensors(tensors))
        return [f"{name} (rank {rank})" if len(per_rank) > 1 else name
                for rank, names in enumerate(per_rank) for name in names]

    def save(self, *, epoch_end: bool = False) -> None:
        broken = self._broken_anywhere(self._local_tensors(self.task.trainable))
        if broken:  # keep the last good state on disk: it is where the user resumes from
            self.log.warn(f"step {self.step}: {len(broken)} tensors are NaN/inf (e.g. {broken[0]}); "
                          "training state not saved")
            return
        state = self._state()
        if self.env.is_main:
            save_state(self.output / "state" / "last.pt", state)
            if epoch_end:
                save_state(self.output / "state" / f"epoch-{self.epoch:03d}.pt", state)
        barrier()

    def _maybe_resume(self) -> Path | None:
        found = agreed_resume(self.cfg.resume, self.output, is_main=self.env.is_main)
        if found is None:
            return None
        path, state = found
        agree(lambda: self._load_resumed(path, state))
        self.epoch = int(state["epoch"])
        self.samples_in_epoch = int(state["samples_in_epoch"])
        self.step = self.epoch * self.steps_per_epoch + self.samples_in_epoch // self.sampler.global_batch
        self.bad_steps, self.skipped = int(state.get("bad_steps", 0)), int(state.get("skipped", 0))
        rngs = state["rng"]
        if len(rngs) == self.env.world_size:
            set_rng_state(rngs[self.env.rank])
        else:  # another world size: fresh but reproducible per-rank streams
            seed_everything(self.cfg.seed * 1000 + self.env.rank + 1 + self.step)
        return path

    def _load_resumed(self, path: Path, state: dict) -> None:
        if state.get("config", {}).get("recipe") not in (None, self.cfg.recipe):
            raise CheckpointError(f"this state is from train-{state['config']['recipe']}, "
                                  f"not train-{self.cfg.recipe}", path)
        try:
            self.task.trainable.load_state_dict(state["model"])
        except RuntimeError as exc:  # torch's message spans many lines: one line, the cause first
            saved = state.get("config", {}).get("arch")
            why = (f"saved with --arch {saved}, this run has --arch {self.cfg.arch}"
                   if saved and saved != self.cfg.arch else " ".join(str(exc).split())[:200])
            message = (f"the saved network does not fit this run ({why}); resume with the same settings "
                       "or start a new --output")
            raise CheckpointError(message, path) from None
        self.task.head.load_full_state_dict(state["head"])
        load_optimizer_state(self.optimizer, state["optimizer"], self.head_params, self.num_classes)
        for group in self.optimizer.param_groups:
            group["initial_lr"] = self.base_lr
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    # ------------------------------------------------------------------ one step
    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[dict, torch.Tensor]:
        """One optimiser step; returns detached scalars (tensors: no host sync) and the batch's quality."""
        set_lr(self.optimizer, self._lr_factor())
        with autocast(self.env.device, self.precision):
            out, quality = self.task.forward(self.net, images, labels)
        loss = out.loss.float()
        sane = torch.isfinite(loss) & torch.isfinite(out.norms.detach()).all()
        if quality is not None:
            sane = sane & torch.isfinite(quality.detach()).all()
        outcome = backward_and_step(loss, sane, self.optimizer, self.scaler, self.head_params,
                                    self.cfg.clip_grad)
        if outcome is StepOutcome.BAD:
            self._bad_step(float(loss.detach()), float(out.norms.detach().float().mean()))
        else:  # stepped, or an fp16 overflow every rank skipped (normal loss scaling)
            self.bad_steps = 0
        self.optimizer.zero_grad(set_to_none=True)
        values = {"loss/total": loss.detach(), "loss/id": out.loss_id, "train/accuracy": out.accuracy,
                  "train/norm_mean": out.norms.mean()}
        if out.penalty is not None:
            values[f"loss/{out.penalty_name}"] = out.penalty
        values.update({f"{self.cfg.loss}/{name}": v for name, v in out.stats.items()})
        return values, (quality.detach().float() if quality is not None else out.norms)

    def _lr_factor(self) -> float:
        cfg = self.cfg
        return lr_factor(self.step, self.steps_per_epoch, self.total_steps, schedule=cfg.lr_schedule,
                         lr_steps=cfg.lr_steps, gamma=cfg.lr_gamma, warmup_epochs=cfg.warmup_epochs,
                         min_ratio=cfg.min_lr / cfg.lr)

    def _bad_step(self, loss: float, norm: float) -> None:
        self.bad_steps += 1
        self.skipped += 1
        self.guard.restore_if_broken()
        self.log.warn(f"step {self.step + 1}: non-finite loss, feature norm, quality or gradient "
                      f"(loss={loss}, mean norm={norm}); step skipped ({self.bad_steps} in a row, "
                      f"limit {self.cfg.max_bad_steps})")
        if self.bad_steps >= self.cfg.max_bad_steps:
            kept = self.output / "state" / "last.pt"
            where = f"; the last good checkpoint is {kept}" if kept.is_file() else ""
            raise NonFiniteLossError(
                f"training stopped: {self.bad_steps} consecutive steps had a NaN/inf loss or gradient "
                f"(--max-bad-steps {self.cfg.max_bad_steps}) at step {self.step + 1}{where}. "
                "Lower --lr, use --precision fp32/bf16, or check the data"
            )

    # ------------------------------------------------------------------ logging / validation
    def _log(self, values: dict, quality: torch.Tensor, rate: float) -> dict[str, float]:
        for name in [k for k, v in values.items() if v.dim() > 0]:  # per-sample statistics of the loss
            per_sample = values.pop(name).float().cpu().numpy()
            values[name] = float(per_sample.mean())
            self.log.histogram(f"{name}_hist", per_sample, self.step)
        values = {k: float(v) for k, v in values.items()}
        values.update({"train/lr": self.optimizer.param_groups[0]["lr"], "train/images_per_s": rate})
        q = quality.float().cpu().numpy()
        if self.task.quality_is_head and q.size > 1:
            std = float(q.std())
            values.update({"quality/mean": float(q.mean()), "quality/std": std})
            if std < self.cfg.quality_std_warn and not self._warned_collapse:
                self._warned_collapse = True
                self.log.warn(f"quality collapse? the quality std over the batch is {std:.4f} "
                              f"(< {self.cfg.quality_std_warn}); every image gets about the same score")
        self.log.histogram("quality/hist", q, self.step)
        self.log.scalars(self.step, values, epoch=self.step / self.steps_per_epoch)
        return values

    def _eval_view(self) -> _EvalView:
        self.task.model.eval()  # train_mode() restores the training modes afterwards
        return _EvalView(self.task.model, self.env.device)

    def validate(self) -> dict[str, float]:
        if not self.val_sets:
            return {}
        from fqtool.eval.embed import embed_images
        from fqtool.eval.verification import evaluate_verification

        results = {}
        for name, images, issame in self.val_sets:
            emb = embed_images(self._eval_view(), images, device=self.env.device, flip=True,
                               batch_size=min(256, self.batch.per_gpu * 2), precision=self.precision)
            res = evaluate_verification(emb.embeddings, issame, name=name, flip=True)
            results[f"val/{name}/accuracy"] = float(res.accuracy)
            results[f"val/{name}/accuracy_std"] = float(res.accuracy_std)
        self.task.train_mode()
        self.log.scalars(self.step, results, epoch=self.step / self.steps_per_epoch)
        self.log.message("  ".join(f"{k.split('/')[1]} acc {v:.4f}" for k, v in results.items()
                                   if k.endswith("/accuracy")) + f"  (step {self.step})")
        self.val_results, self._val_step = results, self.step
        return results

    # ------------------------------------------------------------------ the loop
    def run(self) -> TrainResult:
        cfg = self.cfg
        if self.env.is_main:
            save_config(cfg, self.output / "config.toml", self.env.world_size)
            self.log.message(self._banner())
        self.task.train_mode()
        self.log.start(self.step)
        values: dict = {}
        shown: dict[str, float] = {}
        tick, tick_step = time.perf_counter(), self.step
        try:
            loader = make_loader(self.dataset, self.sampler, workers=cfg.workers,
                                 pin_memory=self.env.device.type == "cuda")
            while self.step < self.stop_step:
                start_batch = self.samples_in_epoch // self.sampler.global_batch
                self.sampler.set_epoch(self.epoch, start_batch)  # read when the loader is iterated
                for images, labels in loader:
                    if self.step >= self.stop_step:
                        break
                    images = images.to(self.env.device, non_blocking=True)
                    labels = labels.to(self.env.device, non_blocking=True)
                    values, quality = self.train_step(images, labels)
                    self.step += 1
                    self.samples_in_epoch += self.sampler.global_batch
                    if self.step % cfg.log_every == 0 or self.step == self.stop_step:
                        now = time.perf_counter()
                        rate = (self.step - tick_step) * self.sampler.global_batch / max(now - tick, 1e-9)
                        tick, tick_step = now, self.step
                        logged = self._log(values, quality, rate)
                        shown = {short: logged[key] for key, short in _SHOWN.items() if key in logged}
                        shown["img/s"] = rate
                        if self.bad_steps == 0:
                            self.guard.snapshot()
                    self.log.progress(self.step, shown)
                    if cfg.val_every and self.step % cfg.val_every == 0 and self.env.is_main:
                        self.validate()
                        tick = time.perf_counter()
                    if cfg.save_every and self.step % cfg.save_every == 0 and self.bad_steps == 0:
                        self.save()
                        tick = time.perf_counter()
                if self.samples_in_epoch // self.sampler.global_batch >= self.steps_per_epoch:
                    self.epoch, self.samples_in_epoch = self.epoch + 1, 0
                    if self.bad_steps == 0:
                        self.save(epoch_end=True)
                    if self.env.is_main:
                        self.validate()
            if self.env.is_main and self._val_step != self.step:
                self.validate()  # the final model is always evaluated
            if self.bad_steps == 0:
                self.save()
            model_path = self._finish()
        finally:
            self.log.close()
        last = {k: float(v) for k, v in values.items()}
        return TrainResult(self.output, model_path, self.step, self.step / self.steps_per_epoch, last,
                           self.val_results, self.skipped)

    def _banner(self) -> str:
        cfg, env = self.cfg, self.env
        resumed = f", resumed from {self.resumed_from} at step {self.step}" if self.resumed_from else ""
        return (f"train-{cfg.recipe}: {cfg.arch} on {len(self.dataset)} images / {self.num_classes} ids, "
                f"batch {self.batch.describe('GPUs' if env.device.type == 'cuda' else 'processes')} on "
                f"{env.device}, {self.precision}, {self.steps_per_epoch} steps/epoch, {self.stop_step} steps"
                f"{resumed}; {self.memory_notes[0]}")

    # ------------------------------------------------------------------ outputs
    def _finish(self) -> Path | None:
        """Refuse NaN/inf (one decision for all ranks), gather the head on rank 0 and write the model."""
        local = self._local_tensors(self.task.model)
        self._refuse_non_finite(self._broken_anywhere(local), len(local))
        head = self.task.head.full_state_dict(rank0_only=True)
        return agree(lambda: self._write_model(head) if self.env.is_main else None)

    def _write_model(self, head: dict) -> Path:
        from fqtool.models.checkpoint import save_checkpoint, write_safetensors

        model = self.task.model
        calibration = self._calibrate()
        if calibration is not None:  # checked before anything is written
            bounds = {"calibration.low": torch.tensor(calibration.low),
                      "calibration.high": torch.tensor(calibration.high)}
            self._refuse_non_finite(non_finite_tensors(bounds), len(bounds))
        write_safetensors(self.output / "head.safetensors", {"weight": head["weight"].contiguous()},
                          {"kind": str(head["kind"]), "num_classes": str(self.num_classes)})
        model.info.calibration = calibration
        path = save_checkpoint(model, self.output / "model.safetensors", training_config=to_dict(self.cfg),
                               extra={"steps": self.step, "num_classes": self.num_classes,
                                      "world_size": self.env.world_size, "val": self.val_results})
        self.task.train_mode()
        self.log.message(f"saved {path}")
        return path

    def _refuse_non_finite(self, broken: list[str], total: int) -> None:
        """Exit 2 instead of saving NaN/inf as a finished model, saying where the last good state is."""
        if not broken:
            return
        kept = self.output / "state" / "last.pt"
        where = (f"the last good state is {kept} (step {load_state(kept)['step']}); resume from it with "
                 "a lower --lr" if kept.is_file() else "no good training state was saved")
        raise NonFiniteModelError(f"training produced NaN/inf values in {len(broken)} of {total} tensors "
                                  f"(e.g. {broken[0]}) at step {self.step}; no model saved: {where}")

    def _calibrate(self) -> QualityCalibration | None:
        """1st/99th percentile of the model's quality over a fixed sample of training images."""
        n = min(self.cfg.calibration_images, len(self.dataset))
        if n < 2:
            return None
        from fqtool.eval.embed import embed_images
        from fqtool.eval.scoring import fit_calibration

        pick = torch.randperm(len(self.dataset), generator=torch.Generator().manual_seed(self.cfg.seed))[:n]

        def batches():
            for start in range(0, n, 128):
                yield torch.stack([self.dataset[int(i)][0] for i in pick[start : start + 128]])

        out = embed_images(self._eval_view(), batches(), device=self.env.device, precision=self.precision)
        try:
            return fit_calibration(out.quality, 1, 99, source="train-p1-p99")
        except FqtoolError as exc:  # every image got the same quality: no meaningful 0-100 scale
            self.log.warn(f"no quality calibration saved: {exc}")
            return None


_SHOWN = {"loss/total": "loss", "train/accuracy": "acc", "train/lr": "lr"}


def train(cfg: TrainConfig, progress: TrainProgress | None = None) -> TrainResult:
    """Run one training (single process, or one rank of a torchrun job). ``progress`` receives what a
    person watches (see :class:`~fqtool.train.logging.TrainProgress`); the core itself prints nothing."""
    env = setup(cfg.device)
    try:
        return Trainer(cfg, env, progress).run()
    finally:
        cleanup()
