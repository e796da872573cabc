"""Activation bytes per image (saved-tensor hooks, CPU) and the batch × arch × precision memory table.

    python benchmarks/memory_table.py                      # iresnet18/50/100, fp32 and bf16, 112×112
    python benchmarks/memory_table.py --arch iresnet_tiny --batches 512

Prints one JSON line per (arch, precision) with the measured bytes per image, then a Markdown table of
the estimated per-GPU memory (activations + head + weights, fqtool.train.memory) for each batch with a
93k-class head (MS1MV2-sized, one GPU). The numbers in fqtool.train.memory.ACTIVATION_BYTES and in
docs/distributed.md come from this script.
"""

from __future__ import annotations

import argparse
import json

import torch

from fqtool.models import create_model
from fqtool.train.memory import GIB, estimate_memory, measure_activation_bytes, measure_head_bytes_per_logit


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", action="append", help="default: iresnet18, iresnet50, iresnet100")
    parser.add_argument("--precision", action="append", help="default: fp32 and bf16")
    parser.add_argument("--batches", type=int, nargs="*", default=[128, 256, 512])
    parser.add_argument("--classes", type=int, default=93431)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for kind in ("arcface", "magface"):
        print(json.dumps({"head": kind, "bytes_per_logit_kept": measure_head_bytes_per_logit(kind)}))
    rows = []
    for arch in args.arch or ["iresnet18", "iresnet50", "iresnet100"]:
        model = create_model(arch).backbone.train()
        params = sum(p.numel() for p in model.parameters())
        for precision in args.precision or ["fp32", "bf16"]:
            per_image = measure_activation_bytes(model, precision)
            print(json.dumps({"arch": arch, "precision": precision, "activation_bytes": per_image,
                              "params": params}), flush=True)
            rows.append((arch, precision, per_image, params))
    print("\n| arch | precision | MB/image | " + " | ".join(f"batch {b}" for b in args.batches) + " |")
    print("|---|---|---|" + "---|" * len(args.batches))
    for arch, precision, per_image, params in rows:
        cells = [estimate_memory(per_gpu=b, world_size=1, activation_per_image=per_image, trunk_params=params,
                                 local_classes=args.classes, embedding_size=512).total / GIB
                 for b in args.batches]
        print(f"| {arch} | {precision} | {per_image / 1e6:.1f} | "
              + " | ".join(f"{c:.1f} GiB" for c in cells) + " |")


if __name__ == "__main__":
    main()
