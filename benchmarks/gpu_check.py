"""One command for a GPU machine: the CUDA test tier and the throughput benchmarks, one table.

    python benchmarks/gpu_check.py --out gpu_check.json           # one H100/H200: about 6-8 minutes
    python benchmarks/gpu_check.py --device cpu --dry-run --out x.json   # the CPU-safe parts, tiny sizes

Rows (each with images/s, peak GPU memory and pass/fail):

1. the CUDA tier: ``pytest -m cuda tests`` (tests/test_cuda.py and every other ``cuda`` test); passes when
   nothing fails and nothing was skipped. ``--dry-run`` only collects tests/test_cuda.py.
2. training, ``benchmarks/train_throughput.py`` on one ``.rec`` of ≥ 8k synthetic faces (fqtool's synth,
   repeated records; (warm-up + steps) × batch images, so no phase restarts the loader), 8 workers:
   iResNet50 bf16 channels_last without and with ``--compile`` (target: ≥ 6,500 img/s end to end with
   compile on one H100, docs/performance.md), and iResNet100 with a 93,431-class head;
3. scoring end to end, ``benchmarks/score.py`` (iResNet50, JPEG folder → quality; target ≥ 12,000 img/s).

Each benchmark runs in its own process (its peak memory is its own; a crash is a failed row, not the
end of the check); no row runs past ``--budget`` seconds (default 480: a row still running then is
stopped and fails, rows that would start in the last 30 s are reported as not run). The table
is printed and written as JSON to ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import platform
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

#: Targets from docs/performance.md (one H100).
TRAIN_TARGET = 6500.0
SCORE_TARGET = 12000.0


@dataclass
class Row:
    name: str
    images_per_s: float | None = None
    peak_memory_gb: float | None = None
    target: float | None = None
    status: str = "pass"  # pass | fail | not run
    detail: str = ""
    seconds: float = 0.0
    data: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Sizes:
    batch: int
    steps: int
    warmup: int
    workers: int
    classes: int
    score_images: int
    score_batch: int


FULL = Sizes(batch=512, steps=20, warmup=5, workers=8, classes=93431, score_images=20000, score_batch=1024)
TINY = Sizes(batch=16, steps=2, warmup=1, workers=0, classes=1000, score_images=32, score_batch=16)


def _last_json(text: str) -> dict:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise ValueError("no JSON line in the output")


def _run_script(script: str, argv: list[str], in_process: bool, timeout: float) -> dict:
    """A benchmark's result: ``main(argv)`` in this process (dry run), else its last JSON output line."""
    if in_process:
        module = __import__(Path(script).stem)
        with contextlib.redirect_stdout(io.StringIO()):
            return module.main(argv)
    proc = subprocess.run([sys.executable, str(HERE / script), *argv], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)
    if proc.returncode != 0:
        tail = [line for line in proc.stderr.strip().splitlines() if line.strip()][-1:] or ["no output"]
        raise RuntimeError(f"exit {proc.returncode}: {tail[0][:300]}")
    return _last_json(proc.stdout)


# ------------------------------------------------------------------------------------------ the rows
def cuda_tier(device: str, dry_run: bool, tmp: Path, timeout: float) -> Row:
    row = Row("cuda tier: pytest -m cuda" + (" (collect only)" if dry_run else ""))
    if dry_run:
        import pytest

        class Count:
            items = 0

            def pytest_collection_finish(self, session) -> None:
                Count.items = len(session.items)

        with contextlib.redirect_stdout(io.StringIO()):
            code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", "--rootdir", str(ROOT),
                                str(ROOT / "tests" / "test_cuda.py")], plugins=[Count()])
        row.status = "pass" if code == 0 and Count.items > 0 else "fail"
        row.detail = f"{Count.items} tests collected (exit {code})"
        return row
    junit = tmp / "junit.xml"
    command = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-rfEs", "-p", "no:cacheprovider",
               "--continue-on-collection-errors", f"--junitxml={junit}", "tests"]  # an import error: a row
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=timeout)
    if not junit.is_file():
        row.status, row.detail = "fail", f"pytest exit {proc.returncode}: {proc.stdout[-300:]}"
        return row
    suite = ET.parse(junit).getroot()
    suite = suite.find("testsuite") if suite.tag == "testsuites" else suite
    counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
    failed = [case.get("name") for case in suite.iter("testcase")
              if case.find("failure") is not None or case.find("error") is not None]
    passed = counts["tests"] - counts["failures"] - counts["errors"] - counts["skipped"]
    row.detail = f"{passed} passed, {len(failed)} failed, {counts['skipped']} skipped"
    if failed:
        row.detail += ": " + ", ".join(failed)[:400]
    row.status = "pass" if not failed and counts["skipped"] == 0 and passed > 0 else "fail"
    row.data = {"failed": failed, **counts}
    return row


def train_row(name: str, argv: list[str], *, target: float | None, in_process: bool, timeout: float) -> Row:
    row = Row(name, target=target)
    result = _run_script("train_throughput.py", argv, in_process, timeout)
    row.images_per_s = result.get("end_to_end_images_per_s")
    row.peak_memory_gb = result.get("max_memory_gb")
    row.detail = (f"data {result['data_images_per_s']:,.0f} / model {result['model_images_per_s']:,.0f} / "
                  f"end-to-end {row.images_per_s:,.0f} img/s; estimated {result['estimated_memory_gb']} GiB")
    row.data = result
    return row


def score_row(name: str, argv: list[str], *, target: float | None, in_process: bool, timeout: float) -> Row:
    row = Row(name, target=target)
    if in_process:
        out = _run_script("score.py", argv, True, timeout)
    else:
        with tempfile.TemporaryDirectory(prefix="fqtool-gpu-check-") as tmp:
            _run_script("score.py", [*argv, "--json", str(Path(tmp) / "s.json")], False, timeout)
            out = json.loads((Path(tmp) / "s.json").read_text())
    rates = {r["mode"]: r["images_per_s"] for r in out["results"]}
    row.images_per_s = rates.get("e2e")
    row.peak_memory_gb = out["env"].get("max_memory_gb")
    row.detail = f"model only {rates.get('model', 0):,.0f} img/s, end to end {row.images_per_s:,.0f} img/s"
    row.data = out
    return row


def plan(device: str, dry_run: bool, data: Path, sizes: Sizes, deadline: float) -> list[tuple[str, object]]:
    """(name, zero-argument callable → Row) in the order they run; each row may run until ``deadline``
    (a ``time.perf_counter()`` value), at most its own cap."""
    common = ["--data", str(data), "--device", device, "--batch-size", str(sizes.batch), "--steps",
              str(sizes.steps), "--warmup", str(sizes.warmup), "--workers", str(sizes.workers)]
    arch50, arch100 = ("iresnet_tiny", "iresnet_tiny") if dry_run else ("iresnet50", "iresnet100")
    precision = ["--precision", "fp32" if dry_run else "bf16"]
    in_process = dry_run

    def left(cap: float) -> float:
        return max(10.0, min(cap, deadline - time.perf_counter()))
    return [
        ("tests", lambda: cuda_tier(device, dry_run, data.parent, left(330.0))),
        ("train", lambda: train_row(f"train {arch50} {precision[1]} channels_last", [
            *common, "--arch", arch50, *precision, "--channels-last"], target=None, in_process=in_process,
            timeout=left(300.0))),
        ("train-compile", lambda: train_row(f"train {arch50} {precision[1]} channels_last + compile", [
            *common, "--arch", arch50, *precision, "--channels-last", "--compile"],
            target=None if dry_run else TRAIN_TARGET, in_process=in_process, timeout=left(300.0))),
        ("train-93k", lambda: train_row(f"train {arch100} {precision[1]} {sizes.classes:,} classes", [
            *common, "--arch", arch100, *precision, "--channels-last", "--classes", str(sizes.classes)],
            target=None, in_process=in_process, timeout=left(300.0))),
        ("score", lambda: score_row(f"score {arch50} end to end", [
            "--arch", arch50, "--device", device, "-b", str(sizes.score_batch), "-n", str(sizes.score_images),
            "--workers", str(sizes.workers if not dry_run else 0), "--mode", "both"],
            target=None if dry_run else SCORE_TARGET, in_process=in_process, timeout=left(300.0))),
    ]


# ------------------------------------------------------------------------------------------ output
def _judge(row: Row) -> None:
    if row.status == "pass" and row.target is not None and (row.images_per_s or 0) < row.target:
        row.status = "fail"
        row.detail += f" (below the target {row.target:,.0f})"


def _machine(device: str) -> dict:
    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "cpus": len(getattr(__import__("os"), "sched_getaffinity", lambda _: [])(0)) or None}
    if device.startswith("cuda") and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(gpu=props.name, gpu_memory_gb=round(props.total_memory / 2**30, 1),
                    capability=f"{props.major}.{props.minor}", cuda=torch.version.cuda)
    return info


def render(rows: list[Row], machine: dict) -> str:
    from rich.console import Console
    from rich.table import Table

    where = machine.get("gpu", machine["device"])
    table = Table(title=f"fqtool gpu_check — {where}, torch {machine['torch']}")
    for column in ("check", "img/s", "peak GiB", "target", "result", "s", "details"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.name, f"{row.images_per_s:,.0f}" if row.images_per_s else "—",
                      f"{row.peak_memory_gb:.1f}" if row.peak_memory_gb is not None else "—",
                      f"≥ {row.target:,.0f}" if row.target else "—", row.status.upper(), f"{row.seconds:.0f}",
                      row.detail)
    out = io.StringIO()
    Console(file=out, width=200).print(table)
    return out.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu (cpu needs --dry-run)")
    parser.add_argument("--dry-run", action="store_true",
                        help="tiny sizes, in this process, tests collected only")
    parser.add_argument("--out", type=Path, required=True, help="write the table as JSON here")
    parser.add_argument("--budget", type=float, default=480.0,
                        help="seconds for the whole check: a row runs at most until then")
    parser.add_argument("--only", nargs="*", help="rows to run: tests train train-compile train-93k score")
    args = parser.parse_args(argv)
    if args.device == "cpu" and not args.dry_run:
        parser.error("--device cpu runs only the CPU-safe parts: add --dry-run")
    sizes = TINY if args.dry_run else FULL
    start = time.perf_counter()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="fqtool-gpu-check-") as tmp:
        from _data import synthetic_rec

        data = synthetic_rec(Path(tmp) / "rec", (sizes.warmup + sizes.steps) * sizes.batch)
        for key, make in plan(args.device, args.dry_run, data, sizes, start + args.budget):
            if args.only and key not in args.only:
                continue
            if time.perf_counter() - start > args.budget - 30:
                rows.append(Row(key, status="not run", detail=f"too close to the {args.budget:.0f} s budget"))
                continue
            began = time.perf_counter()
            try:
                row = make()
            except Exception as exc:  # a failed benchmark is a row of the table, not the end of the check
                row = Row(key, status="fail", detail=f"{type(exc).__name__}: {str(exc)[:300]}")
            row.seconds = time.perf_counter() - began
            _judge(row)
            rows.append(row)
            print(f"{row.status:8s} {row.name} ({row.seconds:.0f} s) {row.detail}", flush=True)
    machine = _machine(args.device)
    report = {"machine": machine, "dry_run": args.dry_run, "seconds": round(time.perf_counter() - start, 1),
              "rows": [asdict(r) for r in rows]}
    args.out.write_text(json.dumps(report, indent=2))
    print(render(rows, machine))
    return 0 if all(r.status == "pass" for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
