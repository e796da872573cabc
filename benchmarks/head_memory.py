"""Memory the classification head keeps for backward, for a large class count (CPU, one process).

    python benchmarks/head_memory.py                      # arcface, 93,431 classes (MS1MV2), batch 128
    python benchmarks/head_memory.py --kind magface --batch-size 256

Two numbers per head kind, both for one forward (+ backward for the peak):

* ``saved``: bytes of the tensors autograd keeps for backward, counted once per storage (via
  ``torch.autograd.graph.saved_tensors_hooks``), and how many of them are (B, C) matrices;
* ``peak``: how far the peak resident memory of a fresh process grows during forward + backward.

A (B, C) fp32 matrix is ``B·C·4`` bytes (47.8 MB for 128 × 93,431). arcface_torch keeps one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import torch


def saved_tensor_bytes(fn) -> tuple[int, list[tuple[int, ...]], object]:
    """Run ``fn()``: (bytes saved for backward, once per storage; their shapes; fn's result)."""
    seen: dict[int, tuple[int, tuple[int, ...]]] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        shape = tuple(t.shape) if t.is_contiguous() else ("view", *t.shape)  # e.g. Wᵀ of the matmul
        seen.setdefault(storage.data_ptr(), (storage.nbytes(), shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return sum(n for n, _ in seen.values()), [shape for _, shape in seen.values()], out


def peak_rss_growth(fn) -> int:
    """How far the process's peak resident memory grows while ``fn()`` runs (bytes; Linux ru_maxrss).

    Large CPU blocks are mmap'ed and returned on free, so the peak RSS follows the live tensors; run each
    measurement in a fresh process (``main`` does) so that an earlier peak does not hide this one.
    """
    import resource

    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024


def measure(kind: str, num_classes: int, batch: int, embedding: int = 512) -> dict:
    from fqtool.losses import build_head

    torch.manual_seed(0)
    head = build_head(kind, num_classes=num_classes, embedding_size=embedding)
    emb = (torch.randn(batch, embedding) * 20).requires_grad_()
    labels = torch.randint(0, num_classes, (batch,))
    quality = torch.rand(batch, requires_grad=True) if head.margin.takes_quality else None

    def forward():
        return head(emb, labels, quality).loss

    def step():
        forward().backward()

    peak = peak_rss_growth(step)  # first: an earlier forward would already have raised the peak
    head.zero_grad(set_to_none=True)
    emb.grad = None
    saved, shapes, _ = saved_tensor_bytes(forward)
    matrices = sum(1 for s in shapes if s == (batch, num_classes))
    bc = batch * num_classes * 4
    return {"kind": kind, "classes": num_classes, "batch": batch, "BxC_MB": round(bc / 1e6, 1),
            "saved_MB": round(saved / 1e6, 1), "saved_BxC": matrices, "peak_MB": round(peak / 1e6, 1),
            "peak_in_BxC": round(peak / bc, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", action="append", help="head kind(s) (default: arcface, magface)")
    parser.add_argument("--classes", type=int, default=93_431)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--json", action="store_true", help="one JSON object per kind")
    parser.add_argument("--one", help=argparse.SUPPRESS)  # measure one kind in this process
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.one:
        print(json.dumps(measure(args.one, args.classes, args.batch_size)))
        return
    for kind in args.kind or ["arcface", "magface"]:  # one fresh process each: ru_maxrss only grows
        cmd = [sys.executable, __file__, "--one", kind, "--classes", str(args.classes),
               "--batch-size", str(args.batch_size)]
        row = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
        print(json.dumps(row) if args.json else "  ".join(f"{k} {v}" for k, v in row.items()))


if __name__ == "__main__":
    main()
