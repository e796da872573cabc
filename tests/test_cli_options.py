"""Shared options mean the same in every command, and every command warns through ``console.warn``."""

from __future__ import annotations

import re
from pathlib import Path

import typer

from fqtool.cli import console as console_module
from fqtool.cli import options
from fqtool.cli.app import app

CLI_DIR = Path(console_module.__file__).parent


def _params(flag: str) -> dict:
    """command name → its parameter spelled ``flag``, for every command that has one."""
    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        for param in command.params:
            if flag in param.opts:
                found[name] = param
    return found


def _help(param) -> str:
    return re.sub(r"\s*\\?\[default: [^]]*\]$", "", param.help or "")


def test_device_has_one_help_text_everywhere() -> None:
    devices = _params("--device")
    assert {"score", "verify", "erc-curve", "train-magface", "train-feature"} <= set(devices)
    assert {_help(p) for p in devices.values()} == {options.DEVICE.help}


def test_seed_and_arch_are_the_same_option_everywhere() -> None:
    seeds = _params("--seed")
    assert {"synth", "make-pairs", "demo", "score", "train-crfiqa"} <= set(seeds)
    assert {p.type_descriptor.annotation for p in seeds.values()} <= {int, int | None}
    assert {_help(seeds[name]) for name in ("synth", "make-pairs", "demo")} == {options.SEED.help}
    arches = _params("--arch")
    assert {"export", "train-quality"} <= set(arches)
    assert all(options.ARCH.help.removesuffix(".") in _help(p) for p in arches.values())


def test_choices_are_the_core_tables() -> None:
    from fqtool.eval.erc import METRICS, MODES
    from fqtool.eval.scoring import METHODS

    assert tuple(options.ErcMode) == MODES and tuple(options.PairMetric) == METRICS
    assert tuple(options.QualityMethod) == METHODS


def test_warnings_go_through_warn_only() -> None:
    """No command writes its own ``warning:`` (there were two styles, yellow and plain)."""
    offenders = [f"{path.name}:{n}" for path in sorted(CLI_DIR.glob("*.py")) if path.name != "console.py"
                 for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
                 if "warning:" in line]
    assert offenders == []


def test_warn_is_one_line_and_not_markup(monkeypatch) -> None:
    from rich.console import Console

    recorder = Console(stderr=True, record=True, width=40, force_terminal=False)
    monkeypatch.setattr(console_module, "err_console", recorder)
    console_module.warn("file [red]odd[/].jpg " + "x" * 80)
    text = recorder.export_text()
    assert text == f"warning: file [red]odd[/].jpg {'x' * 80}\n"
