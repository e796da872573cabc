"""Training throughput (images/s) of fqtool's engine: data from a .rec on disk, the real train step.

Defaults are the production setting: iresnet50, MagFace head, bf16 autocast, channels_last, batch 512,
on CUDA when available. On a CPU use small settings for a smoke check, e.g.

    python benchmarks/train_throughput.py --arch iresnet_tiny --batch-size 64 --steps 10 --precision fp32
    python benchmarks/train_throughput.py --arch iresnet18 --batch-size 32 --steps 5 --precision fp32

Without ``--data`` a synthetic insightface-layout set is written to a temporary folder first. The
timed loop is the engine's own (``Trainer.train_step`` fed by its DataLoader), after ``--warmup`` steps;
``--data-only`` times the input pipeline alone (decode + flip + collate), to see which side limits.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from fqtool.runtime import resolve_device
from fqtool.train.config import resolve_config
from fqtool.train.data import make_loader
from fqtool.train.distributed import DistEnv
from fqtool.train.engine import Trainer


def _synthetic(folder: Path, images: int) -> Path:
    from fqtool.data.synth import write_synthetic_dataset

    ids = max(8, images // 32)
    write_synthetic_dataset(folder, num_identities=ids, images_per_identity=-(-images // ids), val_pairs=20,
                            val_identities=4)
    return folder


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(args: argparse.Namespace, data: Path, out: Path) -> dict:
    device = resolve_device(args.device)
    cfg = resolve_config(
        "magface", data=str(data), output=str(out), arch=args.arch, batch_size=args.batch_size,
        precision=args.precision, channels_last=args.channels_last, compile=args.compile,
        workers=args.workers, device=str(device), quiet=True, save_every=0, val_every=0,
    )
    trainer = Trainer(cfg, DistEnv(device=device))
    trainer.task.train_mode()
    pin = device.type == "cuda"
    loader = make_loader(trainer.dataset, trainer.sampler, workers=cfg.workers, pin_memory=pin)
    total = args.warmup + args.steps
    done, start, epoch = 0, 0.0, 0
    while done < total:
        trainer.sampler.set_epoch(epoch)
        for images, labels in loader:
            if done == args.warmup:
                _sync(device)
                start = time.perf_counter()
            if done == total:
                break
            if not args.data_only:
                trainer.train_step(images.to(device, non_blocking=True), labels.to(device, non_blocking=True))
            done += 1
        epoch += 1
    _sync(device)
    seconds = time.perf_counter() - start
    trainer.log.close()
    memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        "arch": args.arch, "device": str(device), "precision": trainer.precision,
        "batch_size": args.batch_size, "channels_last": trainer.cfg.channels_last,
        "compile": trainer.cfg.compile,
        "workers": args.workers, "threads": torch.get_num_threads(), "data_only": args.data_only,
        "steps": args.steps, "images_per_s": round(args.steps * args.batch_size / seconds, 1),
        "ms_per_step": round(1000 * seconds / args.steps, 1),
        "max_memory_gb": round(memory, 2) if memory is not None else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="insightface folder / .rec (default: synthetic, temporary)")
    parser.add_argument("--arch", default="iresnet50")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", default="bf16", choices=["bf16", "fp16", "fp32"])
    parser.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    parser.add_argument("--data-only", action="store_true", help="time the input pipeline alone")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="fqtool-bench-") as tmp:
        data = args.data or _synthetic(Path(tmp) / "data", 2 * args.batch_size)
        print(json.dumps(measure(args, data, Path(tmp) / "run")))


if __name__ == "__main__":
    main()
