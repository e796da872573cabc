"""Start-up stays light: help, version and the data commands never import torch, ONNX, matplotlib or
TensorBoard. Each check runs in a fresh interpreter, so nothing imported by other tests can hide a leak."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

HEAVY = ("torch", "torchvision", "onnx", "onnxruntime", "onnxscript", "matplotlib", "tensorboard", "sklearn",
         "fqtool.api")

# One interpreter runs every command line in turn (in process, like the console script) and records,
# after each, which heavy modules are loaded: the first line that pulls one in is the culprit.
_PROBE = textwrap.dedent(
    """
    import json, sys
    heavy, runs = json.loads(sys.argv[1]), json.loads(sys.argv[2])
    import fqtool
    report = {"import fqtool": sorted(m for m in heavy if m in sys.modules)}
    from fqtool.cli.app import app
    for args in runs:
        try:
            app(args, prog_name="fqtool")
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        failed = [] if code == 0 else [f"exit {code}"]
        report[" ".join(args)] = sorted(m for m in heavy if m in sys.modules) + failed
    print(json.dumps(report))
    """
)


def _probe(runs: list[list[str]], cwd: Path) -> dict[str, list[str]]:
    src = Path(__file__).resolve().parents[1] / "src"
    env = {"PYTHONPATH": str(src), "PATH": "/usr/bin:/bin", "NO_COLOR": "1", "COLUMNS": "120"}
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(HEAVY), json.dumps(runs)],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _command_names() -> list[str]:
    from fqtool.cli.app import COMMANDS

    return [name for name, _ in COMMANDS]


def test_help_and_version_are_torch_free(tmp_path) -> None:
    runs = [["--help"], ["--version"]] + [[name, "--help"] for name in _command_names()]
    report = _probe(runs, tmp_path)
    leaks = {line: mods for line, mods in report.items() if mods}
    assert not leaks, f"heavy imports (or a failing exit) during start-up: {leaks}"
    assert len(report) == len(runs) + 1


@pytest.mark.slow
def test_data_commands_are_torch_free(tmp_path) -> None:
    runs = [
        ["synth", str(tmp_path / "s"), "--identities", "3", "--images-per-identity", "2",
         "--val-identities", "2", "--val-pairs", "2", "--quiet"],
        ["convert-rec", str(tmp_path / "s"), str(tmp_path / "c"), "--quiet"],
        ["make-list", str(tmp_path / "c" / "images"), "--quiet"],
        ["make-pairs", str(tmp_path / "c" / "images"), str(tmp_path / "p.bin"), "--genuine", "2",
         "--impostor", "2"],
    ]
    report = _probe(runs, tmp_path)
    leaks = {line: mods for line, mods in report.items() if mods}
    assert not leaks, f"heavy imports (or a failing exit) in data commands: {leaks}"
    assert any((tmp_path / "c").rglob("*.jpg")), "convert-rec wrote no images"
    assert (tmp_path / "p.bin").is_file(), "make-pairs wrote no set"


def test_lazy_api_names() -> None:
    import fqtool

    assert "load_model" in dir(fqtool)
    with pytest.raises(AttributeError):
        _ = fqtool.no_such_name
