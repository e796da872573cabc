"""Scoring throughput (images/s): model only, and end to end from a folder of JPEGs.

    python benchmarks/score.py --arch iresnet18 --arch iresnet50 --device cpu -n 256 --batch-size 64
    python benchmarks/score.py --device cuda --batch-size 1024 -n 20000 --workers 12 [--compile]

* ``model``: random uint8 batches already on the device → ``prepare`` + forward (bf16 autocast and
  channels_last on CUDA, as ``fqtool score`` runs), after warm-up; synchronised timing.
* ``e2e``: ``fqtool.eval.scoring.score_dataset`` over a JPEG folder (decode in DataLoader workers,
  pinned memory, host→device copy, forward, quality). ``--folder`` uses yours; otherwise N synthetic
  112×112 faces are written to a temporary folder first (not timed).

Prints one line per (arch, mode) and, with ``--json FILE``, writes all results. Random weights:
speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import torch

from fqtool.eval.scoring import score_dataset
from fqtool.models import create_model
from fqtool.runtime import resolve_device


def _write_faces(folder: Path, n: int, distinct: int = 64) -> None:
    """``n`` JPEG files (q95) cycling through ``distinct`` synthetic faces."""
    import numpy as np

    try:
        from fqtool.data.synth import encode_jpeg, generate_face, identity_params

        faces = [encode_jpeg(generate_face(identity_params(0, i), np.random.default_rng(i)))
                 for i in range(distinct)]
    except ImportError:  # data layer without the synthetic generator: smooth random images instead
        from io import BytesIO

        from PIL import Image

        rng = np.random.default_rng(0)
        faces = []
        for _ in range(distinct):
            small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
            buf = BytesIO()
            Image.fromarray(small).resize((112, 112), Image.BILINEAR).save(buf, format="JPEG", quality=95)
            faces.append(buf.getvalue())
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"{i:07d}.jpg").write_bytes(faces[i % distinct])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _model(arch: str, device: torch.device, compile_model: bool):
    model = create_model(arch).eval().to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    if compile_model:
        model.backbone = torch.compile(model.backbone)
    return model


@torch.inference_mode()
def bench_model(model, device: torch.device, batch_size: int, n: int, warmup: int) -> float:
    """Images/s of prepare + forward on device-resident uint8 batches."""
    images = torch.randint(0, 256, (batch_size, 3, 112, 112), dtype=torch.uint8, device=device)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")

    def step() -> None:
        x = model.prepare(images)
        if device.type == "cuda":
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast:
            model(x)

    for _ in range(warmup):
        step()
    _sync(device)
    steps = max(1, n // batch_size)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    return steps * batch_size / (time.perf_counter() - start)


def bench_e2e(model, folder: Path, device: torch.device, batch_size: int, workers: int) -> tuple[float, int]:
    from fqtool.data.datasets import open_dataset

    dataset = open_dataset(folder, size=(112, 112))
    bench_model(model, device, batch_size, batch_size, warmup=1)  # cuDNN autotune / compile, not timed
    result = score_dataset(model, dataset, batch_size=batch_size, workers=workers, device=device)
    return result.images_per_second, len(result)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", action="append", help="architecture(s); default iresnet18 and iresnet50")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--batch-size", "-b", type=int, default=None, help="default 64 (CPU) / 1024 (CUDA)")
    parser.add_argument("-n", type=int, default=512, help="images per measurement")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up batches (model mode)")
    parser.add_argument("--workers", "-j", type=int, default=2, help="DataLoader workers (e2e mode)")
    parser.add_argument("--mode", choices=("model", "e2e", "both"), default="both")
    parser.add_argument("--folder", type=Path, help="JPEG folder for e2e (default: synthetic, temporary)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the backbone")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch default)")
    parser.add_argument("--json", type=Path, help="write results here")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    batch_size = args.batch_size or (1024 if device.type == "cuda" else 64)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    env = {
        "device": name,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "batch_size": batch_size,
        "dtype": "bf16 autocast" if device.type == "cuda" else "fp32", "compile": args.compile,
    }
    print(json.dumps(env))
    results = []
    with tempfile.TemporaryDirectory(prefix="fqtool-bench-") as tmp:
        folder = args.folder
        if args.mode != "model" and folder is None:
            folder = Path(tmp) / "faces"
            _write_faces(folder, args.n)
        for arch in args.arch or ["iresnet18", "iresnet50"]:
            model = _model(arch, device, args.compile)
            if args.mode in ("model", "both"):
                rate = bench_model(model, device, batch_size, args.n, args.warmup)
                results.append({"arch": arch, "mode": "model", "images_per_s": rate})
                print(f"{arch:14s} model  {rate:10,.1f} img/s")
            if args.mode in ("e2e", "both"):
                rate, count = bench_e2e(model, folder, device, batch_size, args.workers)
                results.append({"arch": arch, "mode": "e2e", "images_per_s": rate, "images": count,
                                "workers": args.workers})
                print(f"{arch:14s} e2e    {rate:10,.1f} img/s ({count} JPEGs, {args.workers} workers)")
    if device.type == "cuda":
        env["max_memory_gb"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "results": results}, indent=2))
    return {"env": env, "results": results}


if __name__ == "__main__":
    main()
