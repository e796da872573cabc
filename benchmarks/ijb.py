"""IJB embedding throughput (images/s) and the cost of the template protocols at scale.

    python benchmarks/ijb.py --arch iresnet_tiny --arch iresnet18 --device cpu --templates-per-id 6
    python benchmarks/ijb.py --device cuda --arch iresnet50 --templates-per-id 60 -b 512 --workers 12

* ``embed``: :func:`fqtool.eval.ijb_embed.embed_ijb` over an IJB-format set of loose crops written from
  ``tests/data/faces`` (the test fixture, scaled by ``--templates-per-id``): JPEG decode, 5-point warp,
  forward of the image and its flip, chunk files written as for a resumable run. Reported as images/s
  (each image = 2 forward passes) and as forward passes/s, the number comparable with ``score``.
* ``model``: random uint8 batches on the device → ``prepare`` + forward, the model-only rate.
* ``protocol``: ``evaluate_ijb`` (insightface and magface pooling, ROC, TAR@FAR) on random features
  of ``--protocol-scale`` × IJB-C's size (469,375 images, 23,124 templates, 15,658,489 pairs).

Random weights: speed does not depend on them.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from _ijb_fixture import write_ijb_release  # noqa: E402
from fqtool.data.ijb import load_ijb  # noqa: E402
from fqtool.eval.ijb import IjbFeatures, Pooling, evaluate_ijb  # noqa: E402
from fqtool.eval.ijb_embed import embed_ijb  # noqa: E402
from fqtool.models import create_model  # noqa: E402
from fqtool.runtime import resolve_device  # noqa: E402

IJBC_SIZE = {"images": 469_375, "templates": 23_124, "pairs": 15_658_489}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_embed(arch: str, root: Path, device: torch.device, batch_size: int, workers: int) -> dict:
    meta = load_ijb(root)
    model = create_model(arch).eval()
    with tempfile.TemporaryDirectory() as parts:
        start = time.perf_counter()
        embed_ijb(
            model, meta, parts=Path(parts), device=device, batch_size=batch_size, workers=workers, flip=True
        )
        seconds = time.perf_counter() - start
    n = len(meta.images)
    return {"arch": arch, "mode": "embed (decode + warp + image and flip)", "images": n,
            "images_per_s": n / seconds, "forward_per_s": 2 * n / seconds}  # fmt: skip


@torch.inference_mode()
def bench_model(arch: str, device: torch.device, batch_size: int, iters: int = 4) -> dict:
    model = create_model(arch).eval().to(device)
    batch = torch.randint(0, 256, (batch_size, 3, 112, 112), dtype=torch.uint8, device=device)
    autocast = (
        torch.autocast("cuda", dtype=torch.bfloat16)
        if device.type == "cuda"
        else torch.autocast("cpu", enabled=False)
    )
    with autocast:
        model(model.prepare(batch))
        _sync(device)
        start = time.perf_counter()
        for _ in range(iters):
            model(model.prepare(batch))
        _sync(device)
    seconds = time.perf_counter() - start
    return {"arch": arch, "mode": "model only", "images": iters * batch_size,
            "forward_per_s": iters * batch_size / seconds}  # fmt: skip


def bench_protocol(scale: float, dim: int = 512) -> list[dict]:
    rng = np.random.default_rng(0)
    n, t, p = (int(IJBC_SIZE[k] * scale) for k in ("images", "templates", "pairs"))
    templates = np.sort(rng.integers(0, t, n))
    medias = templates * 10 + rng.integers(0, 4, n)
    used = np.unique(templates)
    pair_t1, pair_t2 = rng.choice(used, p), rng.choice(used, p)
    emb = rng.normal(size=(n, dim)).astype(np.float32)
    names = np.array([f"{i}.jpg" for i in range(n)])
    quality, detector = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    labels = (rng.random(p) < 0.01).astype(np.int8)
    feats = IjbFeatures("IJBC-like", names, emb, quality, detector, templates, medias, pair_t1, pair_t2,
                        labels)  # fmt: skip
    feats.embeddings_flip = emb
    out = []
    for pooling in (Pooling("insightface", True), Pooling("magface", False)):
        start = time.perf_counter()
        evaluate_ijb(feats, pooling)
        out.append({"protocol": pooling.protocol, "images": n, "templates": len(used), "pairs": p,
                    "seconds": time.perf_counter() - start})  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", action="append", default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", "-b", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--templates-per-id", type=int, default=6)
    parser.add_argument("--protocol-scale", type=float, default=0.1)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    device = resolve_device(args.device)
    results: dict = {
        "machine": platform.platform(),
        "cpus": torch.get_num_threads(),
        "embed": [],
        "protocol": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        root = write_ijb_release(Path(tmp), "IJBC", templates_per_id=args.templates_per_id, impostors=100)
        for arch in args.arch or ["iresnet_tiny"]:
            for row in (bench_embed(arch, root, device, args.batch_size, args.workers),
                        bench_model(arch, device, args.batch_size)):  # fmt: skip
                results["embed"].append(row)
                rate = f"{row['images_per_s']:.1f} img/s, " if "images_per_s" in row else ""
                print(f"{arch:14s} {row['mode']:42s} {rate}{row['forward_per_s']:.1f} forward/s")
    if args.protocol_scale > 0:
        for row in bench_protocol(args.protocol_scale):
            results["protocol"].append(row)
            print(f"protocol {row['protocol']:12s} {row['images']} images, {row['templates']} templates, "
                  f"{row['pairs']} pairs: {row['seconds']:.1f} s")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
