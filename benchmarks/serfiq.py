"""SER-FIQ cost per image: the shared-trunk batching against plain scoring and against m full passes.

    python benchmarks/serfiq.py --arch iresnet_tiny --arch iresnet18 --arch iresnet50 -n 16 --passes 100
    python benchmarks/serfiq.py --device cuda -n 2048 --batch-size 256

For each architecture (random weights: speed does not depend on them), on random uint8 images already
in memory, after one warm-up batch:

* ``plain``: one ordinary forward pass per image (what ``score --method norm`` costs);
* ``serfiq``: :func:`fqtool.eval.serfiq.serfiq_scores` (trunk once, embedding layer ``m`` times);
* ``full``: the naive alternative, ``m`` whole forward passes per image (timed on a few images only,
  with ``--full-images``; 0 skips it).

Prints ms per image (wall and process CPU time) and, with ``--json FILE``, writes all results.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from fqtool.eval.embed import embed_images
from fqtool.eval.serfiq import serfiq_scores
from fqtool.models import create_model


def _timed(fn, device: torch.device) -> tuple[float, float]:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - wall, time.process_time() - cpu


def _full_passes(model, images: torch.Tensor, passes: int) -> None:
    """``passes`` whole forward passes with dropout active at the embedding layer's input."""
    layer = model.backbone.fc if hasattr(model.backbone, "fc") else model.backbone.features.layers[2]
    hook = layer.register_forward_pre_hook(lambda _m, args: (torch.nn.functional.dropout(args[0], 0.5),))
    try:
        for _ in range(passes):
            embed_images(model, images, device=images.device)
    finally:
        hook.remove()


def bench(arch: str, n: int, passes: int, batch_size: int, device: torch.device, full_images: int) -> dict:
    model = create_model(arch).to(device).eval()
    images = torch.randint(0, 256, (n, 3, 112, 112), dtype=torch.uint8, device=device)
    serfiq_scores(model, images[:batch_size], passes=passes, batch_size=batch_size, device=device)
    plain = _timed(lambda: embed_images(model, images, device=device, batch_size=batch_size), device)
    ser = _timed(lambda: serfiq_scores(model, images, passes=passes, batch_size=batch_size, device=device),
                 device)
    row = {"arch": arch, "images": n, "passes": passes, "batch_size": batch_size, "device": str(device),
           "plain_ms": 1e3 * plain[0] / n, "plain_cpu_ms": 1e3 * plain[1] / n,
           "serfiq_ms": 1e3 * ser[0] / n, "serfiq_cpu_ms": 1e3 * ser[1] / n}
    if full_images:
        few = images[:full_images]
        full = _timed(lambda: _full_passes(model, few, passes), device)
        row.update(full_ms=1e3 * full[0] / len(few), full_cpu_ms=1e3 * full[1] / len(few))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--arch", action="append", help="registered architecture (repeatable)")
    parser.add_argument("-n", type=int, default=16, help="images")
    parser.add_argument("--passes", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--full-images", type=int, default=2, help="images for the m-full-passes timing")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for arch in args.arch or ["iresnet_tiny", "iresnet18", "iresnet50"]:
        row = bench(arch, args.n, args.passes, args.batch_size, device, args.full_images)
        rows.append(row)
        extra = f", {row['full_ms']:.0f} ms m full passes" if "full_ms" in row else ""
        print(f"{arch}: plain {row['plain_ms']:.1f} ms/img (cpu {row['plain_cpu_ms']:.1f}), "
              f"serfiq m={args.passes} {row['serfiq_ms']:.1f} ms/img (cpu {row['serfiq_cpu_ms']:.1f}){extra}",
              flush=True)
    if args.json:
        meta = {"machine": platform.platform(), "processor": platform.processor(), "torch": torch.__version__,
                "threads": torch.get_num_threads()}
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump({"meta": meta, "results": rows}, handle, indent=2)


if __name__ == "__main__":
    main()
