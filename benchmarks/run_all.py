"""Run the benchmark suite and print one table (convert-rec, train, score, verify, ijb, export).

``python benchmarks/run_all.py`` runs small CPU-sized settings (a few minutes on 2 cores);
``--device cuda`` runs the GPU-sized settings the issues ask for (iR50, batch 512/1024, bf16).
Each benchmark is a script of its own in this folder; this runner only calls them and collects their
last output line, so every number in the table can be reproduced by running that one script.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def suite(device: str) -> list[tuple[str, str]]:
    """(name, script + arguments) of each benchmark for this device."""
    if device.startswith("cuda"):
        return [
            ("convert-rec", "convert_rec.py --images 20000"),
            ("train iR50 bf16", f"train_throughput.py --arch iresnet50 --batch-size 512 --precision bf16 "
                                f"--channels-last --device {device} --workers 12"),
            ("score iR50", f"score.py --arch iresnet50 --device {device} -b 1024 --mode both"),
            ("verify iR50 12k", f"verify.py --num-images 12000 --arch iresnet50 --device {device}"),
            ("ijb iR50", f"ijb.py --arch iresnet50 --device {device} -b 512 --workers 12 "
                         "--templates-per-id 60 --protocol-scale 1"),
            ("export iR50 ORT", "export.py --arch iresnet50"),
        ]
    return [
        ("convert-rec", "convert_rec.py --images 20000"),
        ("train tiny", "train_throughput.py --arch iresnet_tiny --batch-size 64 --precision fp32 "
                       "--device cpu --steps 10 --workers 1"),
        ("score iR18", "score.py --arch iresnet18 --device cpu -n 256 --mode model"),
        ("verify iR18 400", "verify.py --num-images 400 --arch iresnet18 --device cpu"),
        ("ijb tiny", "ijb.py --arch iresnet_tiny --device cpu --templates-per-id 2 --protocol-scale 0.02"),
        ("export iR18 ORT", "export.py --arch iresnet18 --iters 3"),
    ]


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu (small settings) or cuda[:N] (GPU-sized)")
    parser.add_argument("--only", nargs="*", help="run only these benchmark names")
    args = parser.parse_args()
    table = Table(title=f"fqtool benchmarks ({args.device})")
    for column in ("benchmark", "wall s", "result (last line of the script)"):
        table.add_column(column)
    failed = 0
    for name, line in suite(args.device):
        cmd = line.split()
        if args.only and name not in args.only:
            continue
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, str(HERE / cmd[0]), *cmd[1:]], capture_output=True, text=True)
        wall = time.perf_counter() - start
        if proc.returncode != 0:
            failed += 1
            table.add_row(name, f"{wall:.0f}", f"FAILED ({proc.returncode}): {last_line(proc.stderr)}")
        else:
            table.add_row(name, f"{wall:.0f}", last_line(proc.stdout))
    Console().print(table)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
