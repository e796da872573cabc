"""Benchmark ``fqtool verify``: wall time of the full path (load .bin, decode, embed with flip, protocol).

    python benchmarks/verify.py [--num-images 12000] [--arch iresnet18] [--device cpu|cuda] [--batch-size 64]

Writes a ``.bin`` of ``--num-images`` random-ish 112×112 JPEGs (pairs alternate genuine / impostor) and
an fqtool checkpoint of ``--arch`` with random weights to a temporary folder, then times each stage:
``load_bin``, ``decode_pairs``, embedding (plain + flipped images, i.e. 2 × N forward passes) and the
10-fold protocol. A 12,000-image set is the size of lfw / agedb_30 (cfp_fp has 14,000).
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from fqtool.data.binfile import decode_pairs, load_bin, save_bin
from fqtool.eval.features import extract_features
from fqtool.eval.verification import evaluate_verification
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.loading import load_model
from fqtool.runtime import resolve_device


def _jpeg_pool(n: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:112, 0:112]
    pool = []
    for _ in range(n):
        grad = (np.sin(xx / rng.uniform(5, 30)) + np.cos(yy / rng.uniform(5, 30))) * 40
        img = rng.integers(0, 256, size=3)[None, None, :] + grad[..., None] + rng.normal(0, 12, (112, 112, 3))
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, "JPEG", quality=95)
        pool.append(buf.getvalue())
    return pool


def build(folder: Path, num_images: int, arch: str) -> tuple[Path, Path]:
    pool = _jpeg_pool(min(512, num_images))
    images = [pool[i % len(pool)] for i in range(num_images)]
    bin_path = folder / "bench.bin"
    save_bin(bin_path, images, [i % 2 == 0 for i in range(num_images // 2)])
    torch.manual_seed(0)
    weights = save_checkpoint(create_model(arch), folder / f"{arch}.safetensors")
    return bin_path, weights


def run(num_images: int, arch: str, device: str, batch_size: int) -> dict[str, float]:
    times: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bin_path, weights = build(Path(tmp), num_images, arch)
        dev = resolve_device(device)
        model = load_model(weights, device=dev)
        start = time.perf_counter()
        vset = load_bin(bin_path)
        times["load_bin"] = time.perf_counter() - start
        t = time.perf_counter()
        images = decode_pairs(vset, tuple(model.preprocess.size))
        times["decode"] = time.perf_counter() - t
        t = time.perf_counter()
        fs = extract_features(
            model, images, vset.issame, name="bench", flip=True, device=dev, batch_size=batch_size
        )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times["embed (2 × N images)"] = time.perf_counter() - t
        t = time.perf_counter()
        emb, norms = fs.verification_inputs(True)
        evaluate_verification(emb, fs.issame, xnorm_norms=norms, name="bench")
        times["protocol"] = time.perf_counter() - t
        times["total"] = time.perf_counter() - start
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=12000, help="Images in the .bin (even).")
    parser.add_argument("--arch", default="iresnet18")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto.")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default).")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    num_images = args.num_images - args.num_images % 2
    times = run(num_images, args.arch, args.device, args.batch_size)
    print(
        f"verify benchmark: {num_images} images, {args.arch}, device {args.device}, "
        f"batch {args.batch_size}, torch threads {torch.get_num_threads()}"
    )
    for stage, seconds in times.items():
        rate = f"  ({2 * num_images / seconds:,.0f} img/s)" if stage.startswith("embed") else ""
        print(f"  {stage:<22} {seconds:8.2f} s{rate}")


if __name__ == "__main__":
    main()
