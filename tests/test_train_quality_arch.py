"""``train-quality --weights`` records the architecture it trains, not the recipe's default
(issue 26 item 6)."""

from __future__ import annotations

import tomllib

from typer.testing import CliRunner

from fqtool.cli.app import app

FAST = ["--batch-size", "4", "--workers", "0", "--device", "cpu", "--val-every", "0", "--quiet",
        "--epochs", "1", "--max-steps", "1"]


def _ok(*args) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.output


def test_train_quality_records_the_stage1_architecture(tiny_rec, tmp_path) -> None:
    _ok("train-feature", "--data", tiny_rec, "-o", tmp_path / "stage1", "--arch", "iresnet_tiny", *FAST)
    said = _ok("train-quality", "--data", tiny_rec, "-o", tmp_path / "stage2", *FAST,
               "-w", tmp_path / "stage1" / "model.safetensors")  # no --arch: the default is iresnet50
    assert "iresnet_tiny" in said and "iresnet50" not in said
    config = tomllib.loads((tmp_path / "stage2" / "config.toml").read_text(encoding="utf-8"))
    assert config["arch"] == "iresnet_tiny"


def test_resume_into_another_architecture_is_one_line(tiny_rec, tmp_path) -> None:
    _ok("train-magface", "--data", tiny_rec, "-o", tmp_path / "run", "--arch", "iresnet_tiny", *FAST)
    result = CliRunner().invoke(app, ["train-magface", "--data", str(tiny_rec), "-o", str(tmp_path / "run"),
                                      "--arch", "iresnet18", *FAST, "--resume", "auto"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "last.pt" in lines[0], result.stderr
    assert "--arch iresnet_tiny" in lines[0] and "--arch iresnet18" in lines[0]
