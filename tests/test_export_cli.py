"""``fqtool export``: split graphs through the CLI, and the parity-failure path (exit 2, nothing left)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.errors import BadInputError
from fqtool.export import OnnxFaceModel, Tolerance, parity
from fqtool.fsutil import sha256_file
from fqtool.models import EmbeddingModel, create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.loading import load_model

runner = CliRunner()


@pytest.fixture()
def weights(tmp_path: Path) -> tuple[torch.nn.Module, Path]:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", quality_head=True).eval()
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(model, path)
    return model, path


def test_cli_split_writes_three_checked_graphs(weights, tmp_path: Path) -> None:
    model, path = weights
    out = tmp_path / "out" / "eq.onnx"
    result = runner.invoke(app, ["export", str(path), "--output", str(out), "--split"])
    assert result.exit_code == 0, result.output
    assert "split" in result.output and "FAIL" not in result.output and "wrote" in result.output
    backbone_path, quality_path = out.with_name("eq_backbone.onnx"), out.with_name("eq_quality.onnx")
    assert out.is_file() and backbone_path.is_file() and quality_path.is_file()
    backbone = ort.InferenceSession(str(backbone_path), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(quality_path), providers=["CPUExecutionProvider"])
    assert [o.name for o in backbone.get_outputs()] == ["embedding", "features_map"]
    assert [i.name for i in head.get_inputs()] == ["features_map"]
    pixels = torch.randint(0, 256, (7, 3, 112, 112), dtype=torch.uint8)
    x = model.prepare(pixels)
    emb, flat = backbone.run(None, {"input": x.numpy()})
    (qual,) = head.run(None, {"features_map": flat})
    with torch.no_grad():
        ref_emb, ref_qual = model(x)
    np.testing.assert_allclose(emb, ref_emb.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(qual, ref_qual.numpy(), rtol=1e-4, atol=1e-6)
    assert OnnxFaceModel(out).metadata["source_sha256"] == sha256_file(path)
    half = OnnxFaceModel(backbone_path)
    assert half.quality_method == "norm" and half.features(x).shape == flat.shape
    with pytest.raises(BadInputError, match="quality half"):
        OnnxFaceModel(quality_path)
    loaded = load_model(out, device="cpu")
    assert isinstance(loaded, OnnxFaceModel) and loaded.quality_method == "head"
    assert isinstance(loaded, EmbeddingModel) and not isinstance(loaded, torch.nn.Module)


def test_cli_parity_failure_exits_2_and_leaves_nothing(weights, tmp_path: Path, monkeypatch) -> None:
    _, path = weights
    monkeypatch.setattr(parity, "FP32_TOLERANCE", Tolerance(min_cosine=1.5, max_quality_rel=0.0, name="fp32"))
    out = tmp_path / "bad" / "model.onnx"
    result = runner.invoke(app, ["export", str(path), "-o", str(out)])
    assert result.exit_code == 2
    assert "FAIL" in result.output and "differs from PyTorch" in result.output
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_cli_refuses_onnx_input(tmp_path: Path) -> None:
    fake = tmp_path / "model.onnx"
    fake.write_bytes(b"x")
    result = runner.invoke(app, ["export", str(fake)])
    assert result.exit_code == 2 and "already an ONNX model" in result.output
