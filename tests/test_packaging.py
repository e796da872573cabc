"""Packaging: what a default install brings, what only the tests need, and life without ONNX Runtime."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli.app import app

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~;\[ ]", r, maxsplit=1)[0].lower() for r in requirements}


def test_dependencies_and_extras() -> None:
    required = _names(PROJECT["dependencies"])
    extras = {name: _names(reqs) for name, reqs in PROJECT["optional-dependencies"].items()}
    assert not required & {"scikit-learn", "scipy", "onnxruntime-gpu"}
    assert {"torch", "tensorboard", "onnx", "onnxscript", "onnxruntime"} <= required  # CPU ORT by default
    assert {"scikit-learn", "scipy", "pytest"} <= extras["dev"]
    assert not any("onnxruntime" in names for names in extras.values())  # never both builds
    torch_req = next(r for r in PROJECT["dependencies"] if r.startswith("torch>"))
    assert torch_req == "torch>=2.5"  # the dynamo ONNX exporter needs 2.5
    assert PROJECT["requires-python"] == ">=3.11,<3.13"


def test_no_test_only_package_is_imported_by_fqtool() -> None:
    test_only = {"sklearn", "scipy", "pytest"}
    offenders = []
    for file in (ROOT / "src" / "fqtool").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{file.name}: {n}" for n in names if n.split(".")[0] in test_only]
    assert not offenders


def test_without_onnxruntime_export_and_onnx_models_say_how_to_get_it(tmp_path, monkeypatch) -> None:
    from fqtool.errors import FqtoolError
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint
    from fqtool.models.loading import load_model

    torch.manual_seed(0)
    weights = save_checkpoint(create_model("iresnet_tiny").eval(), tmp_path / "m.safetensors")
    (tmp_path / "m2.onnx").write_bytes(b"\x08\x07")  # never opened: the check comes first
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    res = CliRunner().invoke(app, ["export", str(weights), "-o", str(tmp_path / "m.onnx")])
    assert res.exit_code == 2 and "pip install onnxruntime" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "m.onnx").exists()
    with pytest.raises(FqtoolError, match=r"m2\.onnx: running an \.onnx model needs ONNX Runtime"):
        load_model(tmp_path / "m2.onnx")
