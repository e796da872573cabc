"""Start-up cost of the CLI and convert-rec's wall time including it, each beside its reference.

    python benchmarks/startup.py [--repeat 5] [--images 20000] [--dir D]
        [--rec2image path/to/rec2image.py --mxnet-python path/to/python-with-mxnet]

1. ``fqtool --help`` and ``fqtool --version`` wall time (fresh interpreter each) beside
   ``python -c "import torch"``, in the same run: the CLI must not pay for torch before a command needs it.
2. ``fqtool convert-rec`` on a 20,000-image insightface ``.rec`` as a user runs it (a new process, so
   start-up included), and insightface's ``rec2image.py`` (``recognition/arcface_mxnet/common/``) on the
   same file, run by ``--mxnet-python`` (an interpreter with mxnet, opencv and scikit-learn; MXNet 1.9
   needs numpy < 1.24, so usually a venv of its own), also a new process; otherwise the line says it was
   not measured.

Medians of ``--repeat`` runs; the last line is the summary that ``run_all.py`` collects.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from convert_rec import build_rec


def wall(cmd: list[str], repeat: int, cwd: Path | None = None, before=None) -> float:
    """Median wall time of ``cmd`` (``before()`` runs untimed ahead of each run)."""
    times = []
    for _ in range(repeat):
        if before is not None:
            before()
        t0 = time.perf_counter()
        subprocess.run(cmd, cwd=cwd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--images", type=int, default=20000)
    parser.add_argument("--rec2image", type=Path, default=None, help="insightface's rec2image.py")
    parser.add_argument("--mxnet-python", default=None, help="Python with mxnet for --rec2image")
    parser.add_argument("--dir", default=None, help="where to make the temporary folders")
    args = parser.parse_args()
    py = sys.executable
    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, "
          f"Python {platform.python_version()}")
    torch_s = wall([py, "-c", "import torch"], args.repeat)
    help_s = wall([py, "-m", "fqtool", "--help"], args.repeat)
    version_s = wall([py, "-m", "fqtool", "--version"], args.repeat)
    print(f"import torch {torch_s:.2f} s; fqtool --help {help_s:.2f} s ({help_s / torch_s:.2f}× of it); "
          f"fqtool --version {version_s:.2f} s")
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        src, out = Path(tmp) / "src", Path(tmp) / "out"
        src.mkdir()
        build_rec(src, args.images, per_class=20)

        def fresh() -> None:
            shutil.rmtree(out, ignore_errors=True)

        convert_s = wall([py, "-m", "fqtool", "convert-rec", str(src), str(out), "-q"],
                         max(1, args.repeat // 2), before=fresh)
        print(f"fqtool convert-rec, {args.images} images, start-up included: {convert_s:.2f} s "
              f"({args.images / convert_s:,.0f} images/s)")
        reference = "rec2image.py: not measured (give --rec2image and --mxnet-python)"
        if args.rec2image is not None and args.mxnet_python is not None:
            ref_out = Path(tmp) / "ref"
            ref_s = wall([args.mxnet_python, str(args.rec2image), "--include", str(src), "--output",
                          str(ref_out)], 1, before=lambda: shutil.rmtree(ref_out, ignore_errors=True))
            written = sum(1 for _ in ref_out.rglob("*.jpg"))
            reference = (f"rec2image.py {ref_s:.1f} s ({written} images), fqtool convert-rec "
                         f"{ref_s / convert_s:.1f}× faster, both with start-up")
        print(reference)
    print(f"startup: --help {help_s:.2f} s vs import torch {torch_s:.2f} s ({help_s / torch_s:.2f}×); "
          f"convert-rec {args.images} images {convert_s:.1f} s with start-up; {reference}")


if __name__ == "__main__":
    main()
