"""fqtool .safetensors checkpoints: round trip, metadata, damage, and where weights come from."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from _models import random_bn_model
from fqtool import __version__
from fqtool.errors import CheckpointError, FqtoolError
from fqtool.models import EmbeddingModel, FaceModel, QualityCalibration
from fqtool.models.checkpoint import read_checkpoint_metadata, save_checkpoint
from fqtool.models.loading import NO_WEIGHTS_MESSAGE, load_model, resolve_weights
from fqtool.models.preprocess import MAGFACE

_model = random_bn_model


def _assert_same(a, b) -> None:
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        (ea, qa), (eb, qb) = a(x), b(x)
    torch.testing.assert_close(ea, eb, rtol=0, atol=0)
    torch.testing.assert_close(qa, qb, rtol=0, atol=0)


def test_round_trip_with_head_and_calibration(tmp_path: Path) -> None:
    model = _model(quality_head=True, style="magface", embedding_size=64)
    model.info.calibration = QualityCalibration(0.2, 0.9, "train 1st/99th percentile")
    config = {"lr": 0.1, "margins": (0.45, 0.8)}
    path = save_checkpoint(model, tmp_path / "out" / "model.safetensors", training_config=config,
                           extra={"epoch": 3})
    assert path.is_file() and [p.name for p in path.parent.iterdir()] == ["model.safetensors"]

    loaded = load_model(path)
    assert isinstance(loaded, FaceModel) and isinstance(loaded, EmbeddingModel)
    assert loaded.quality_method == "head" and loaded.embedding_size == 64
    assert loaded.info.calibration == model.info.calibration
    assert loaded.info.arch_kwargs == {"style": "magface", "embedding_size": 64}
    assert loaded.backbone.bn1.eps == 2e-5
    assert loaded.preprocess == model.preprocess
    _assert_same(loaded, model)

    meta = read_checkpoint_metadata(path)
    assert meta["fqtool_version"] == __version__ and meta["arch"] == "iresnet_tiny"
    assert meta["training_config"] == {"lr": 0.1, "margins": [0.45, 0.8]}
    assert meta["calibration"]["method"] == "head" and meta["extra"] == {"epoch": 3}


def test_round_trip_mobilefacenet_norm(tmp_path: Path) -> None:
    model = _model("mobilefacenet", preprocess=MAGFACE, family="magface")
    loaded = load_model(save_checkpoint(model, tmp_path / "mfn.safetensors"))
    assert (loaded.info.arch, loaded.info.family) == ("mobilefacenet", "magface")
    assert loaded.quality_method == "norm"
    assert loaded.preprocess == MAGFACE and loaded.info.calibration is None
    _assert_same(loaded, model)


def test_converted_checkpoint_keeps_family_and_source(tmp_path: Path) -> None:
    source = _model(style="magface")
    state = {"module.features." + k: v for k, v in source.backbone.state_dict().items()}
    torch.save({"epoch": 1, "arch": "iresnet_tiny", "state_dict": state}, tmp_path / "magface.pth")
    imported = load_model(tmp_path / "magface.pth")
    converted = load_model(save_checkpoint(imported, tmp_path / "magface.safetensors"))
    assert converted.info.family == "magface" and converted.preprocess == MAGFACE
    assert converted.info.source["files"] == ["magface.pth"]
    _assert_same(converted, source)


def test_damaged_and_mismatched_fqtool_files(tmp_path: Path) -> None:
    path = save_checkpoint(_model(), tmp_path / "m.safetensors")
    data = path.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="damaged") as exc:
        load_model(cut)
    assert "\n" not in str(exc.value)
    with pytest.raises(CheckpointError, match="holds a iresnet_tiny, not a iresnet50"):
        load_model(path, arch="iresnet50")
    empty = tmp_path / "empty.safetensors"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="empty file"):
        load_model(empty)


def test_plain_state_dict_safetensors_is_imported(tmp_path: Path) -> None:
    from safetensors.torch import save_file

    source = _model()
    state = {k: v.contiguous() for k, v in source.backbone.state_dict().items()}
    save_file(state, tmp_path / "b.safetensors")
    loaded = load_model(tmp_path / "b.safetensors")
    assert loaded.info.family == "arcface_torch"
    _assert_same(loaded, source)


def test_resolve_weights(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FQTOOL_WEIGHTS", raising=False)
    assert resolve_weights(tmp_path / "a.safetensors") == tmp_path / "a.safetensors"
    with pytest.raises(FqtoolError) as exc:
        resolve_weights(None)
    assert str(exc.value) == NO_WEIGHTS_MESSAGE and "convert-weights" in NO_WEIGHTS_MESSAGE
    monkeypatch.setenv("FQTOOL_WEIGHTS", str(tmp_path / "env.safetensors"))
    assert resolve_weights(None) == tmp_path / "env.safetensors"


def test_convert_weights_merges_eqface_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from fqtool.cli.app import app
    from fqtool.fsutil import sha256_file

    source = _model(style="eqface", quality_head=True)
    rename = {"conv1": "input_layer.0", "bn1": "input_layer.1", "prelu": "input_layer.2",
              "bn2": "output_layer.0", "fc": "feature_layer.0", "features": "feature_layer.1"}
    block = {"bn1": 0, "conv1": 1, "bn2": 2, "prelu": 3, "conv2": 4, "bn3": 5}
    backbone = {}
    for key, value in source.backbone.state_dict().items():
        parts = key.split(".")
        if parts[0].startswith("layer") and parts[2] == "downsample":
            name = ".".join([*parts[:2], "shortcut_layer", *parts[3:]])
        elif parts[0].startswith("layer"):
            name = ".".join([*parts[:2], "res_layer", str(block[parts[2]]), *parts[3:]])
        else:
            name = ".".join([rename[parts[0]], *parts[1:]])
        backbone["module." + name] = value
    torch.save(backbone, tmp_path / "backbone.pth")
    quality = {"module." + k: v for k, v in source.quality_head.state_dict().items()}
    torch.save(quality, tmp_path / "quality.pth")

    out = tmp_path / "eqface.safetensors"
    result = CliRunner().invoke(app, ["convert-weights", str(tmp_path / "backbone.pth"), str(out),
                                      "--quality-weights", str(tmp_path / "quality.pth"),
                                      "--calibration", "0.2", "0.8"])
    assert result.exit_code == 0, result.output
    assert "eqface iresnet_tiny" in result.stdout and "quality head" in result.stdout
    assert "RGB (x-127.5)/128" in result.stdout
    model = load_model(out)
    assert (model.info.family, model.quality_method) == ("eqface", "head")
    assert (model.info.calibration.low, model.info.calibration.high) == (0.2, 0.8)
    meta = read_checkpoint_metadata(out)
    assert meta["source"]["sha256"]["quality.pth"] == sha256_file(tmp_path / "quality.pth")
    _assert_same(model, source)


def test_models_command_lists_architectures() -> None:
    from typer.testing import CliRunner

    from fqtool.cli.app import app

    result = CliRunner().invoke(app, ["models", "--families"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name in ("iresnet50", "mobilefacenet", "43.59 M", "BGR x/255", "eqface"):
        assert name in result.stdout


def test_models_command_shows_aliases_and_no_phantom_command() -> None:
    from typer.testing import CliRunner

    from fqtool.cli.app import app

    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "fqtool train --arch" not in result.stdout  # there is no `fqtool train` command
    rows = {line.split("│")[1].strip(): line for line in result.stdout.splitlines() if line.count("│") > 3}
    assert " r50 " in rows["iresnet50"] and " mbf " in rows["mobilefacenet"]
