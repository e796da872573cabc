"""Quality methods a model computes itself: ``norm``, ``head`` (EQFace) and ``crfiqa`` (CR-FIQA's regressor).

A CR-FIQA checkpoint says ``crfiqa`` everywhere (FaceModel, checkpoint metadata and calibration, ONNX
metadata, ``score``), ``--method head`` means "the model's own head", and asking for a head the model
does not have is one line, exit 2.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.errors import FqtoolError
from fqtool.models import FaceModel, QualityCalibration, create_model
from fqtool.models.checkpoint import read_checkpoint_metadata, save_checkpoint
from fqtool.models.face_model import resolve_quality_method
from fqtool.models.loading import load_model
from fqtool.models.quality_head import QualityHead, RegressionHead

FACES = Path(__file__).parent / "data" / "faces"
runner = CliRunner()


def crfiqa_model(calibration: QualityCalibration | None = None) -> FaceModel:
    torch.manual_seed(1)
    model = create_model("iresnet_tiny").eval()
    model.quality_head = RegressionHead(model.backbone, model.embedding_size)
    model.info.family, model.info.calibration = "crfiqa", calibration
    model.set_quality_method("crfiqa")
    return model


def eqface_model() -> FaceModel:
    torch.manual_seed(2)
    model = create_model("iresnet_tiny").eval()
    model.quality_head = QualityHead(model.backbone.feature_dim).eval()
    model.set_quality_method("head")
    return model


@pytest.mark.parametrize(
    ("requested", "head", "expected"),
    [("norm", None, "norm"), ("norm", "crfiqa", "norm"), ("head", "head", "head"),
     ("head", "crfiqa", "crfiqa"), ("crfiqa", "crfiqa", "crfiqa")],
)
def test_resolve_quality_method(requested: str, head: str | None, expected: str) -> None:
    assert resolve_quality_method(requested, head) == expected


@pytest.mark.parametrize(
    ("requested", "head", "message"),
    [("crfiqa", "head", "has an EQFace quality head"), ("crfiqa", None, "has no quality head"),
     ("head", None, "has no quality head")],
)
def test_a_missing_head_is_one_error(requested: str, head: str | None, message: str) -> None:
    with pytest.raises(FqtoolError, match=message):
        resolve_quality_method(requested, head)
    with pytest.raises(ValueError, match="must be one of norm, head, crfiqa"):
        resolve_quality_method("serfiq", head)


def test_crfiqa_model_reads_its_regressor_and_switches_to_norm() -> None:
    model = crfiqa_model()
    assert model.head_method == "crfiqa" and model.quality_method == "crfiqa"
    x = torch.randn(3, 3, 112, 112)
    with torch.no_grad():
        embedding, quality = model(x)
        torch.testing.assert_close(quality, model.quality_head.qs(embedding)[:, 0])
        model.set_quality_method("head")  # the model's own head: still CR-FIQA's
        assert model.quality_method == "crfiqa"
        model.set_quality_method("norm")
        torch.testing.assert_close(model(x)[1], embedding.norm(dim=1))
    assert eqface_model().head_method == "head"
    with pytest.raises(FqtoolError, match="needs a CR-FIQA regressor"):
        eqface_model().set_quality_method("crfiqa")


def test_checkpoint_says_crfiqa_and_older_head_checkpoints_load_as_crfiqa(tmp_path: Path) -> None:
    model = crfiqa_model(QualityCalibration(1.2, 2.8, "test"))
    path = save_checkpoint(model, tmp_path / "crfiqa.safetensors")
    meta = read_checkpoint_metadata(path)
    assert meta["quality_method"] == "crfiqa" and meta["calibration"]["method"] == "crfiqa"
    assert load_model(path).quality_method == "crfiqa"

    model.quality_method = "head"  # what checkpoints said before the crfiqa method existed
    old = save_checkpoint(model, tmp_path / "old.safetensors")
    assert read_checkpoint_metadata(old)["quality_method"] == "head"
    assert load_model(old).quality_method == "crfiqa"

    model.set_quality_method("norm")  # a head kept but not used by default stays unused
    kept = load_model(save_checkpoint(model, tmp_path / "norm.safetensors"))
    assert kept.quality_method == "norm" and kept.head_method == "crfiqa"


def test_onnx_export_carries_crfiqa(tmp_path: Path) -> None:
    from fqtool.export import OnnxFaceModel, export_onnx

    model = crfiqa_model(QualityCalibration(1.0, 2.0, "test"))
    path = tmp_path / "crfiqa.onnx"
    report = export_onnx(model, path)
    assert report.parity.ok and report.metadata["quality_method"] == "crfiqa"
    loaded = OnnxFaceModel(path)
    assert loaded.quality_method == "crfiqa"
    x = model.prepare(torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8))
    with torch.no_grad():
        want = model(x)[1]
    torch.testing.assert_close(loaded(x)[1], want, rtol=1e-4, atol=1e-5)
    loaded.set_quality_method("head")
    assert loaded.quality_method == "crfiqa"
    loaded.set_quality_method("norm")
    torch.testing.assert_close(loaded(x)[1], model.backbone(x).norm(dim=1), rtol=1e-4, atol=1e-4)


def _quality_column(path: Path) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as handle:
        return np.array([float(row["quality"]) for row in csv.DictReader(handle)])


def test_score_cli_method_crfiqa(tmp_path: Path) -> None:
    model = crfiqa_model(QualityCalibration(-5.0, 5.0, "test-calibration"))
    weights = save_checkpoint(model, tmp_path / "crfiqa.safetensors")
    runs = {}
    for method in ("auto", "head", "crfiqa", "norm"):
        out = tmp_path / f"{method}.csv"
        result = runner.invoke(app, ["score", str(FACES), "-w", str(weights), "-o", str(out), "-j", "0",
                                     "--method", method])
        assert result.exit_code == 0, result.output
        runs[method] = (result.output, _quality_column(out))
    for method in ("auto", "head", "crfiqa"):
        assert "quality (crfiqa)" in runs[method][0] and "from test-calibration" in runs[method][0]
        np.testing.assert_array_equal(runs[method][1], runs["crfiqa"][1])
    assert "quality (norm)" in runs["norm"][0] and "MagFace magnitude" in runs["norm"][0]
    assert not np.allclose(runs["norm"][1], runs["crfiqa"][1])


def test_score_cli_crfiqa_on_an_eqface_model_is_one_line(tmp_path: Path) -> None:
    weights = save_checkpoint(eqface_model(), tmp_path / "eqface.safetensors")
    result = runner.invoke(app, ["score", str(FACES), "-w", str(weights), "--method", "crfiqa", "-q"])
    assert result.exit_code == 2
    assert result.stderr.strip().count("\n") == 0 and "has an EQFace quality head" in result.stderr


def test_default_crfiqa_calibration_is_used_without_a_saved_one(tmp_path: Path) -> None:
    from fqtool.eval.scoring import DEFAULT_CALIBRATION, choose_calibration

    model = crfiqa_model()
    assert choose_calibration(model, "crfiqa", model.quality_method) is DEFAULT_CALIBRATION["crfiqa"]
    model.info.calibration = QualityCalibration(0.5, 1.5, "mine")
    assert choose_calibration(model, "crfiqa", model.quality_method).source == "mine"
    assert choose_calibration(model, "norm", model.quality_method) is DEFAULT_CALIBRATION["norm"]


def test_erc_curve_methods_of_a_crfiqa_model(tmp_path: Path) -> None:
    import json

    from fqtool.data.binfile import save_bin
    from fqtool.data.synth import encode_jpeg

    gen = torch.Generator().manual_seed(3)
    faces = torch.randint(0, 256, (16, 112, 112, 3), generator=gen, dtype=torch.uint8).numpy()
    save_bin(tmp_path / "pairs.bin", [encode_jpeg(f) for f in faces], [i % 2 == 0 for i in range(8)])
    weights = save_checkpoint(crfiqa_model(), tmp_path / "crfiqa.safetensors")
    base = ["erc-curve", str(tmp_path / "pairs.bin"), "-w", str(weights), "--device", "cpu", "-q",
            "--fmr", "1e-1", "--json"]
    own = runner.invoke(app, [*base, "-o", str(tmp_path / "own")])
    both = runner.invoke(app, [*base, "-o", str(tmp_path / "both"), "--method", "crfiqa", "--method", "norm"])
    assert own.exit_code == 0 and both.exit_code == 0, own.output + both.output
    own_rows = {r["method"]: r["auc"] for r in json.loads(own.stdout)["summary"]}
    both_rows = {r["method"]: r["auc"] for r in json.loads(both.stdout)["summary"]}
    assert set(own_rows) == {"model:crfiqa", "ideal", "random"}
    assert set(both_rows) == {"model:crfiqa", "model:norm", "ideal", "random"}
    assert both_rows["model:crfiqa"] == pytest.approx(own_rows["model:crfiqa"])

    eqface = save_checkpoint(eqface_model(), tmp_path / "eqface.safetensors")
    wrong = runner.invoke(app, [*base[:3], str(eqface), *base[4:], "-o", str(tmp_path / "w"),
                                "--method", "crfiqa"])
    assert wrong.exit_code == 2 and "has an EQFace quality head" in wrong.stderr


def method_name_comparisons(root: Path) -> list[str]:
    """``x == "crfiqa"``, ``m in ("head", "crfiqa")``, ``"serfiq" in methods`` … in the modules under
    ``root`` except the table itself: decisions that belong in a table field."""
    import ast

    from fqtool.quality_methods import BY_NAME

    names = set(BY_NAME) - {"auto"}  # "auto" is also a device and a precision

    def named(node: ast.AST) -> bool:
        items = node.elts if isinstance(node, ast.Tuple | ast.List | ast.Set) else [node]
        return any(isinstance(i, ast.Constant) and i.value in names for i in items)

    found = []
    for path in sorted(root.rglob("*.py")):
        if path.name == "quality_methods.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and any(named(n) for n in [node.left, *node.comparators]):
                found.append(f"{path.relative_to(root)}:{node.lineno}")
    return found


def test_no_decision_outside_the_table_compares_a_method_name() -> None:
    import fqtool

    assert method_name_comparisons(Path(fqtool.__file__).parent) == []


def test_methods_beside_the_model_name_a_module_with_the_runner_functions() -> None:
    from fqtool.eval.methods import beside_runner
    from fqtool.quality_methods import TABLE

    beside = [m.name for m in TABLE if m.beside]
    assert beside == ["serfiq"]
    for name in beside:
        runner = beside_runner(name)
        functions = ("check_options", "check_model", "embed_beside")
        assert all(callable(getattr(runner, f, None)) for f in functions)
    assert beside_runner("norm") is None and beside_runner("auto") is None
