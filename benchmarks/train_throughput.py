"""Training throughput (images/s) of fqtool's engine: data-only, model-only and end-to-end, side by side.

Defaults are the production setting: iresnet50, MagFace head, bf16 autocast, channels_last, batch 512,
on CUDA when available. On a CPU use small settings for a smoke check, e.g.

    python benchmarks/train_throughput.py --arch iresnet_tiny --batch-size 64 --steps 10 --precision fp32
    python benchmarks/train_throughput.py --arch iresnet50 --compile          # the documented GPU target
    python benchmarks/train_throughput.py --arch iresnet100 --classes 93431   # an MS1MV2-sized head

Without ``--data`` a synthetic insightface-layout ``.rec`` of at least (warm-up + steps) × batch images
is written to a temporary folder first, so no phase ever restarts the loader mid-measurement. Three
rates come from one run, each after ``--warmup`` steps:

* ``data``: the input pipeline alone (read + decode + flip + collate + pinned copy to the device);
* ``model``: ``Trainer.train_step`` on one batch already on the device (the GPU's side; compiles here);
* ``end_to_end``: the engine's loop, DataLoader feeding ``train_step``.

``--classes N`` relabels the images over N identities (the head then has N class centres): the cost
of a large classifier without a data set that large.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _data import synthetic_rec  # noqa: E402

from fqtool.runtime import resolve_device  # noqa: E402
from fqtool.train import engine  # noqa: E402
from fqtool.train.config import resolve_config  # noqa: E402
from fqtool.train.data import make_loader  # noqa: E402
from fqtool.train.distributed import DistEnv  # noqa: E402


class _Relabelled:
    """A training data set whose labels are spread over ``classes`` identities (for head-size runs)."""

    def __init__(self, base, classes: int) -> None:
        self.base, self.num_classes = base, classes
        self.labels = (np.arange(len(base), dtype=np.int64) * 2654435761) % classes
        self.notes = list(getattr(base, "notes", []))

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int):
        return self.base[index][0], int(self.labels[index])


def _open_with_classes(classes: int):
    original = engine.open_training_data

    def open_data(path, size):
        base = original(path, size=size)
        return _Relabelled(base, classes) if classes else base

    return open_data


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rate(images: int, seconds: float) -> float:
    return round(images / max(seconds, 1e-9), 1)


def _time_loader(trainer, loader, device, warmup: int, steps: int, *, epoch: int, step=None) -> float:
    """Images/s over ``steps`` batches after ``warmup``, from one pass of the loader (one epoch)."""
    trainer.sampler.set_epoch(epoch)
    done, start = 0, time.perf_counter()
    for images, labels in loader:
        if done == warmup:
            _sync(device)
            start = time.perf_counter()
        if done == warmup + steps:
            break
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        if step is not None:
            step(images, labels)
        done += 1
    _sync(device)
    if done < warmup + steps:
        raise SystemExit(f"the data set holds {done} batches, fewer than warm-up + steps")
    return _rate(steps * trainer.batch.per_gpu, time.perf_counter() - start)


def _time_model(trainer, images, labels, device, warmup: int, steps: int) -> float:
    for _ in range(warmup):
        trainer.train_step(images, labels)
    _sync(device)
    start = time.perf_counter()
    for _ in range(steps):
        trainer.train_step(images, labels)
    _sync(device)
    return _rate(steps * images.shape[0], time.perf_counter() - start)


def _estimate(trainer):
    from fqtool.train.memory import training_estimate

    return training_estimate(arch=trainer.cfg.arch, precision=trainer.precision,
                             per_gpu=trainer.batch.per_gpu, world_size=1, trainable=trainer.task.trainable,
                             head=trainer.task.head, size=tuple(trainer.task.model.preprocess.size))


def measure(args: argparse.Namespace, data: Path, out: Path) -> dict:
    device = resolve_device(args.device)
    cfg = resolve_config(
        "magface", data=str(data), output=str(out), arch=args.arch, batch_size=args.batch_size,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        workers=args.workers, device=str(device), quiet=True, save_every=0, val_every=0,
    )
    engine.open_training_data, restore = _open_with_classes(args.classes), engine.open_training_data
    try:
        trainer = engine.Trainer(cfg, DistEnv(device=device))
    finally:
        engine.open_training_data = restore
    trainer.task.train_mode()
    pin = device.type == "cuda"
    loader = make_loader(trainer.dataset, trainer.sampler, workers=cfg.workers, pin_memory=pin)
    rates = {"data": _time_loader(trainer, loader, device, args.warmup, args.steps, epoch=0)}
    if not args.data_only:
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        images, labels = next(iter(loader))
        images, labels = images.to(device), labels.to(device)
        rates["model"] = _time_model(trainer, images, labels, device, args.warmup, args.steps)
        rates["end_to_end"] = _time_loader(trainer, loader, device, args.warmup, args.steps, epoch=1,
                                           step=trainer.train_step)
    trainer.log.close()
    memory = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {
        "arch": args.arch, "device": str(device), "precision": trainer.precision,
        "batch_size": args.batch_size, "classes": trainer.num_classes, "images": len(trainer.dataset),
        "channels_last": trainer.cfg.channels_last, "compile": trainer.cfg.compile, "workers": args.workers,
        "threads": torch.get_num_threads(), "steps": args.steps, "warmup": args.warmup,
        **{f"{name}_images_per_s": rate for name, rate in rates.items()},
        "max_memory_gb": round(memory, 2) if memory is not None else None,
        "estimated_memory_gb": round(_estimate(trainer).total / 2**30, 2),
    }


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, help="insightface folder / .rec (default: synthetic, temporary)")
    p.add_argument("--arch", default="iresnet50")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--classes", type=int, default=0, help="relabel the images over N identities (0 = as is)")
    p.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action="store_true")
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    p.add_argument("--data-only", action="store_true", help="time the input pipeline alone")
    return p


def main(argv: list[str] | None = None) -> dict:
    args = parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fqtool-bench-") as tmp:
        data = args.data or synthetic_rec(Path(tmp) / "data", (args.warmup + args.steps) * args.batch_size)
        result = measure(args, data, Path(tmp) / "run")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
