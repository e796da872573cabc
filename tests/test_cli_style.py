"""Terminal fit and one-line messages: help at 80 columns, usage errors, Python warnings, completion
(issue 26 item 5, issue 25 item 12)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app

runner = CliRunner()
SRC = str(Path(__file__).resolve().parents[1] / "src")


def _run(*args: str, columns: int = 80, **env: str) -> subprocess.CompletedProcess:
    """The CLI in a child process at a given terminal width (Rich reads COLUMNS)."""
    full_env = {**os.environ, "COLUMNS": str(columns), "PYTHONPATH": SRC, **env}
    return subprocess.run([sys.executable, "-m", "fqtool", *args], capture_output=True, text=True,
                          env=full_env, timeout=120)


@pytest.mark.parametrize("args", [
    ["export", "x.safetensors", "--opset", "17"],
    ["align", "a", "b", "--threshold", "nan"],
    ["convert-rec", "a", "b", "-j", "0"],
    ["align", "a", "b", "--faces", "none"],
    ["make-pairs", "a", "b", "--genuine", "-1"],
    ["train-feature", "--focal-gamma", "nan"],
], ids=["opset", "threshold-nan", "workers-0", "faces-none", "genuine-neg", "focal-gamma-nan"])
def test_option_range_errors_are_one_line(args) -> None:
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


def test_python_warnings_become_one_fqtool_line(monkeypatch, tmp_path) -> None:
    """A library warning raised inside a command (PIL's Corrupt EXIF here) is one 'warning:' line, not
    Python's two lines with a source path."""
    import fqtool.data.pairs as pairs

    def noisy(*args, **kwargs):
        warnings.warn("Corrupt EXIF data.  Expecting to read 12 bytes but only got 2.", UserWarning,
                      stacklevel=1)
        warnings.warn("invalid value encountered in divide", RuntimeWarning, stacklevel=1)
        raise pairs.FqtoolError("stop here")

    monkeypatch.setattr(pairs, "make_pairs", noisy)
    result = runner.invoke(app, ["make-pairs", str(tmp_path), str(tmp_path / "p.bin")])
    lines = result.stderr.strip().splitlines()
    assert lines == [
        "warning: Corrupt EXIF data. Expecting to read 12 bytes but only got 2.",
        "warning: invalid value encountered in divide (RuntimeWarning)",
        "error: stop here",
    ], result.stderr


@pytest.mark.parametrize("command", ["erc-curve", "align", "train-crfiqa", "score"])
def test_help_fits_80_columns(command) -> None:
    done = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    text = done.stdout
    assert "<bool>" not in text and "[default: ]" not in text
    assert all(len(line) <= 80 for line in text.splitlines())
    # the help column is wide enough to read: some wrapped description line carries ≥ 28 characters
    widths = [len(m.group(1).strip()) for m in re.finditer(r"│ {10,}(\S.*?)\s*│$", text, flags=re.M)]
    assert widths and max(widths) >= 28, widths


def test_models_table_wraps_instead_of_clipping() -> None:
    done = runner.invoke(app, ["models"], env={"COLUMNS": "80"})
    assert done.exit_code == 0, done.output
    assert "…" not in done.stdout and "127" in done.stdout and "(x-127.5)/12…" not in done.stdout
    assert all(len(line) <= 80 for line in done.stdout.splitlines())


def test_install_completion(tmp_path) -> None:
    # Typer's own switch for tests: the shell comes from the option's value, not from the parent process
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path), "PYTHONPATH": SRC,
           "_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"}
    done = subprocess.run([sys.executable, "-m", "fqtool", "--install-completion", "bash"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "completion installed" in done.stdout
    assert "complete" in "".join(p.read_text() for p in (tmp_path / ".bash_completions").iterdir())


def test_docs_erc_curve_examples_with_features_name_no_target() -> None:
    """erc-curve refuses a TARGET together with --features (the file names its set): no doc shows one."""
    docs = Path(__file__).resolve().parents[1] / "docs"
    bad = []
    for page in [*docs.glob("*.md"), docs.parent / "README.md"]:
        for line in page.read_text(encoding="utf-8").splitlines():
            words = line.strip().strip("`").split()
            command = words[:2] == ["fqtool", "erc-curve"]
            if command and "--features" in words and not words[2].startswith("-"):
                bad.append(f"{page.name}: {line.strip()}")
    assert not bad, bad


def test_csv_and_list_with_a_bom_read_as_without(tmp_path) -> None:
    """Spreadsheets and Windows editors write a UTF-8 BOM; it is not part of the first column's name."""
    from fqtool.data.lists import read_list
    from fqtool.eval.erc import load_quality_csv

    scores = tmp_path / "bom.csv"
    scores.write_bytes(b"\xef\xbb\xbfpath,quality\nimages/000000.jpg,1.0\nimages/000001.jpg,2.0\n")
    assert list(load_quality_csv(scores, 2)) == [1.0, 2.0]
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.jpg").write_bytes(b"")
    listing = tmp_path / "list.txt"
    listing.write_bytes(b"\xef\xbb\xbfa/x.jpg 0\n")
    assert read_list(listing).paths[0] == "a/x.jpg"


def test_no_weights_error_names_the_demo_and_its_time(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("FQTOOL_WEIGHTS", raising=False)
    (tmp_path / "a.jpg").write_bytes(b"")
    result = runner.invoke(app, ["score", str(tmp_path / "a.jpg")], env={"FQTOOL_WEIGHTS": ""})
    assert result.exit_code == 2
    assert "fqtool demo --quick" in result.stderr and "about 30 s" in result.stderr
    assert "in a minute" not in result.stderr


@pytest.mark.parametrize("command", ["verify", "train-magface", "erc-curve"])
def test_repeatable_options_show_one_value_type_not_a_python_list(command) -> None:
    """``<list[Path]>`` is Python's spelling; the help shows what one value is (``<path>...``)."""
    done = _run(command, "--help", columns=160)
    assert done.returncode == 0, done.stderr
    assert "list[" not in done.stdout
    assert "<path>..." in done.stdout or "<str>..." in done.stdout


def test_unreadable_counts_are_plural_aware(tmp_path) -> None:
    """One unreadable file is "1 file", not "1 files" (issue 26 item 5)."""
    from PIL import Image

    (tmp_path / "person").mkdir()
    for i in range(2):
        Image.new("RGB", (112, 112), (90 + i, 80, 70)).save(tmp_path / "person" / f"{i}.jpg")
    (tmp_path / "person" / "broken.jpg").write_bytes(b"not a jpeg")
    args = ["make-list", str(tmp_path), "--check", "--output", str(tmp_path / "list.txt")]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "1 unreadable image:" in result.stderr.replace("\n", " ")
    assert "1 unreadable images" not in result.stderr
