"""``benchmarks/gpu_check.py --device cpu --dry-run``: the GPU check's CPU-safe parts run, at tiny sizes,
and write their table as JSON (the full check needs a GPU; see docs/performance.md)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_gpu_check_dry_run_on_the_cpu_writes_its_table(tmp_path) -> None:
    out = tmp_path / "gpu_check.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--device", "cpu", "--dry-run",
               "--out", str(out)]
    proc = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads(out.read_text())
    rows = {row["name"]: row for row in report["rows"]}
    assert report["dry_run"] and report["machine"]["device"] == "cpu"
    assert [row["status"] for row in report["rows"]] == ["pass"] * 5, rows
    tier = next(row for name, row in rows.items() if name.startswith("cuda tier"))
    assert int(tier["detail"].split()[0]) >= 10  # tests/test_cuda.py collected
    trains = [row for name, row in rows.items() if name.startswith("train")]
    for row in trains:
        rates = [row["data"][f"{k}_images_per_s"] for k in ("data", "model", "end_to_end")]
        assert all(rate > 0 for rate in rates) and row["images_per_s"] == rates[2]
        data = row["data"]
        assert data["images"] >= (data["warmup"] + data["steps"]) * data["batch_size"]  # no loader restart
    assert trains[2]["data"]["classes"] == 1000  # the relabelled large-head run
    assert "score" in proc.stdout and "PASS" in proc.stdout  # the table is printed too


def test_the_tier_row_reads_pytests_junit_report(tmp_path, monkeypatch) -> None:
    """The real (GPU) mode of the tier row, with pytest's run replaced by a junit file: a failure or a skip
    fails the row and the failed test is named."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import gpu_check

    reports = {
        "fail": ('<testsuites><testsuite tests="3" failures="1" errors="0" skipped="0"><testcase name="a"/>'
                 '<testcase name="b"><failure message="x"/></testcase><testcase name="c"/></testsuite>'
                 "</testsuites>"),
        "skip": '<testsuite tests="2" failures="0" errors="0" skipped="1"><testcase name="a"/></testsuite>',
        "pass": '<testsuite tests="2" failures="0" errors="0" skipped="0"><testcase name="a"/></testsuite>',
    }
    for expected, xml in reports.items():
        def fake_run(command, xml=xml, **kwargs):
            junit = next(arg.split("=", 1)[1] for arg in command if arg.startswith("--junitxml="))
            Path(junit).write_text(xml)
            return subprocess.CompletedProcess(command, 0, "", "")

        monkeypatch.setattr(gpu_check.subprocess, "run", fake_run)
        row = gpu_check.cuda_tier("cuda", False, tmp_path, 10)
        assert row.status == ("pass" if expected == "pass" else "fail"), (expected, row)
        if expected == "fail":
            assert row.detail == "2 passed, 1 failed, 0 skipped: b"
