"""Weights fqtool writes or trusts (issue 25 item 8): NaN weights never saved, damaged metadata refused on
load; ``--weights`` on export and convert-weights (issue 24)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.errors import CheckpointError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.loading import load_model

runner = CliRunner()


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    return save_checkpoint(
        create_model("iresnet_tiny").eval(), tmp_path_factory.mktemp("w") / "tiny.safetensors"
    )


@pytest.fixture(scope="module")
def nan_weights(tmp_path_factory) -> dict[str, Path]:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny").eval()
    with torch.no_grad():
        model.backbone.fc.weight[0, 0] = float("nan")
    folder = tmp_path_factory.mktemp("nan")
    pth = folder / "backbone.pth"
    torch.save(model.backbone.state_dict(), pth)
    return {"safetensors": save_checkpoint(model, folder / "nan.safetensors"), "pth": pth}


def _one_line_exit_2(result, *expected: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for text in expected:
        assert text in lines[0]


@pytest.mark.parametrize("kind", ["safetensors", "pth"])
def test_convert_weights_refuses_nan_weights(nan_weights, tmp_path: Path, kind: str) -> None:
    out = tmp_path / "out.safetensors"
    result = runner.invoke(app, ["convert-weights", str(nan_weights[kind]), str(out)])
    _one_line_exit_2(result, "NaN or infinite", "nothing written")
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_export_no_check_refuses_nan_weights(nan_weights, tmp_path: Path) -> None:
    out = tmp_path / "nan.onnx"
    result = runner.invoke(app, ["export", str(nan_weights["safetensors"]), "-o", str(out), "--no-check"])
    _one_line_exit_2(result, "NaN or infinite")
    assert list(tmp_path.iterdir()) == []


def _with_metadata(source: Path, out: Path, change) -> Path:
    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
    meta = json.loads(metadata["fqtool"])
    change(meta)
    save_file(tensors, str(out), metadata={**metadata, "fqtool": json.dumps(meta)})
    return out


DAMAGE = {
    "calibration low > high": (lambda m: m.update(calibration={"low": 50, "high": 10}), "is not below high"),
    "bogus quality_method": (lambda m: m.update(quality_method="magic"), "quality_method 'magic'"),
    "head claimed, none there": (lambda m: m.update(has_quality_head=True), "has_quality_head is true"),
    "wrong embedding_size": (lambda m: m.update(embedding_size=999), "embedding_size 999"),
}


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_metadata_is_refused_on_load(weights: Path, tmp_path: Path, case: str) -> None:
    change, expected = DAMAGE[case]
    damaged = _with_metadata(weights, tmp_path / "damaged.safetensors", change)
    with pytest.raises(CheckpointError, match=expected):
        load_model(damaged)
    result = runner.invoke(app, ["score", str(tmp_path), "-w", str(damaged), "--device", "cpu"])
    _one_line_exit_2(result, str(damaged), expected)


def test_weights_option_on_convert_weights_and_export(weights: Path, tmp_path: Path) -> None:
    out = tmp_path / "copy.safetensors"
    result = runner.invoke(app, ["convert-weights", "--weights", str(weights), str(out)])
    assert result.exit_code == 0, result.output
    assert load_model(out).embedding_size == load_model(weights).embedding_size
    result = runner.invoke(app, ["convert-weights", "-w", str(weights), str(out), str(tmp_path / "x")])
    _one_line_exit_2(result, "at most one argument")
    result = runner.invoke(
        app, ["export", str(weights), "--weights", str(out), "-o", str(tmp_path / "m.onnx")]
    )
    _one_line_exit_2(result, "two inputs given")
    result = runner.invoke(app, ["export", "-o", str(tmp_path / "m.onnx")])
    _one_line_exit_2(result, "--weights")


def test_preprocess_on_convert_weights_and_export_is_recorded(weights: Path, tmp_path: Path) -> None:
    import onnxruntime as ort

    from fqtool.models.preprocess import MAGFACE

    out = tmp_path / "bgr.safetensors"
    result = runner.invoke(app, ["convert-weights", "-w", str(weights), str(out), "--preprocess", "magface"])
    assert result.exit_code == 0, result.output
    assert load_model(out).preprocess == MAGFACE
    onnx_path = tmp_path / "bgr.onnx"
    result = runner.invoke(
        app, ["export", "-w", str(weights), "--preprocess", "magface", "-o", str(onnx_path), "--no-check"]
    )
    assert result.exit_code == 0, result.output
    props = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"]).get_modelmeta()
    assert json.loads(props.custom_metadata_map["preprocessing"])["color"] == "BGR"
