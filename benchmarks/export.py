"""Benchmark: ONNX Runtime (CPU) vs PyTorch (CPU) throughput of exported face models.

Exports each architecture (random weights, no parity check) to a temporary folder, then times the
same float batch through ``model(x)`` under ``torch.inference_mode`` and through an ORT CPU session.
Not a test: run it by hand, e.g.

    python benchmarks/export.py --arch iresnet18 --batch 32 --iters 5
    python benchmarks/export.py --arch iresnet18 iresnet50 --threads 2
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort
import torch

from fqtool.export import export_onnx
from fqtool.models import create_model


def _time(run: Callable[[], object], warmup: int, iters: int) -> list[float]:
    for _ in range(warmup):
        run()
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return seconds


def bench_arch(arch: str, batch: int, iters: int, warmup: int, threads: int, folder: Path) -> dict:
    torch.manual_seed(0)
    model = create_model(arch).eval()
    start = time.perf_counter()
    path = export_onnx(model, folder / f"{arch}.onnx", check=False).output
    export_s = time.perf_counter() - start
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    x = model.prepare(torch.randint(0, 256, (batch, 3, 112, 112), dtype=torch.uint8))
    feed = {"input": x.numpy()}

    @torch.inference_mode()
    def run_torch() -> object:
        return model(x)

    torch_s = _time(run_torch, warmup, iters)
    ort_s = _time(lambda: session.run(None, feed), warmup, iters)
    return {
        "arch": arch,
        "export_s": export_s,
        "torch_img_s": batch / statistics.median(torch_s),
        "ort_img_s": batch / statistics.median(ort_s),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", nargs="+", default=["iresnet18", "iresnet50"])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--iters", type=int, default=5, help="timed iterations (median is reported)")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads(), help="CPU threads for both")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions = f"torch {torch.__version__}, onnxruntime {ort.__version__}"
    print(f"{versions}, {args.threads} threads, batch {args.batch}")
    print(f"{'arch':<12} {'export s':>9} {'torch img/s':>12} {'ORT img/s':>10} {'ORT/torch':>10}")
    with tempfile.TemporaryDirectory() as tmp:
        for arch in args.arch:
            r = bench_arch(arch, args.batch, args.iters, args.warmup, args.threads, Path(tmp))
            speedup = r["ort_img_s"] / r["torch_img_s"]
            print(
                f"{arch:<12} {r['export_s']:>9.1f} {r['torch_img_s']:>12.1f} {r['ort_img_s']:>10.1f} "
                f"{speedup:>9.2f}x"
            )


if __name__ == "__main__":
    main()
