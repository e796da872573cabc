"""Peer checkpoints, written here the way each project writes them, load with the right arch and input."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch

from _models import random_bn_model
from fqtool.errors import CheckpointError, FqtoolError
from fqtool.models import FaceModel, create_model
from fqtool.models.importers import detect
from fqtool.models.loading import load_model
from fqtool.models.preprocess import ARCFACE, EQFACE, MAGFACE
from fqtool.models.quality_head import QualityHead

_source = random_bn_model


def _same_outputs(loaded: FaceModel, source: FaceModel) -> None:
    x = torch.randn(2, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = loaded(x), source(x)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=0)
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)


PIXELS = torch.tensor([[[[255]], [[0]], [[127]]]], dtype=torch.uint8).expand(1, 3, 112, 112)  # R, G, B


def _first_pixel(model: FaceModel) -> list[float]:
    return model.prepare(PIXELS)[0, :, 0, 0].tolist()


# --------------------------------------------------------------------------------------------- MagFace


@pytest.mark.parametrize(
    ("prefix", "classifier"),
    [
        ("module.features.", {"module.fc.weight": (128, 10)}),  # DataParallel trainer: MagLinear (in, out)
        ("features.module.", {"parallel_fc.weight": (10, 128)}),  # DDP trainer
        ("features.", {}),  # NetworkBuilder_inf
    ],
)
def test_magface_checkpoint(tmp_path: Path, prefix: str, classifier: dict) -> None:
    source = _source(style="magface", preprocess=MAGFACE, family="magface")
    state = {prefix + k: v for k, v in source.backbone.state_dict().items()}
    state.update({k: torch.randn(shape) for k, shape in classifier.items()})
    optimizer = {"state": {}, "param_groups": [{"lr": 0.1, "momentum": 0.9, "params": [0, 1]}]}
    path = tmp_path / "00025.pth"
    torch.save({"epoch": 25, "arch": "iresnet_tiny", "state_dict": state, "optimizer": optimizer}, path)

    model = load_model(path)
    assert (model.info.family, model.info.arch) == ("magface", "iresnet_tiny")
    assert model.backbone.bn1.eps == 2e-5 and model.backbone.dropout_2d
    assert model.preprocess == MAGFACE
    assert _first_pixel(model) == pytest.approx([127 / 255, 0.0, 1.0])  # BGR, x/255
    assert model.quality_method == "norm"
    _same_outputs(model, source)
    if classifier:
        assert "dropped" in model.info.source


# --------------------------------------------------------------------------------------------- arcface_torch


def test_arcface_torch_backbone(tmp_path: Path) -> None:
    source = _source(style="arcface")
    path = tmp_path / "backbone.pth"
    torch.save(source.backbone.state_dict(), path)
    model = load_model(path)
    assert (model.info.family, model.info.arch) == ("arcface_torch", "iresnet_tiny")
    assert model.backbone.bn1.eps == 1e-5
    assert model.embedding_size == 128
    assert _first_pixel(model) == pytest.approx([1.0, -1.0, 127 / 127.5 - 1])  # RGB, (x/255 - .5)/.5
    _same_outputs(model, source)


def test_arcface_torch_resume_file_and_embedding_size(tmp_path: Path) -> None:
    source = _source(embedding_size=64)
    path = tmp_path / "checkpoint_gpu_0.pt"
    torch.save({"epoch": 3, "global_step": 10, "state_dict_backbone": source.backbone.state_dict()}, path)
    model = load_model(path)
    assert model.embedding_size == 64 and model.info.family == "arcface_torch"
    _same_outputs(model, source)


def test_arcface_torch_mobilefacenet(tmp_path: Path) -> None:
    source = _source("mobilefacenet")
    path = tmp_path / "backbone.pth"
    torch.save(source.backbone.state_dict(), path)
    model = load_model(path)
    assert (model.info.family, model.info.arch) == ("arcface_torch", "mobilefacenet")
    assert model.preprocess == ARCFACE
    _same_outputs(model, source)


@pytest.mark.parametrize(
    ("arch", "emb"),
    [("iresnet18", 512), ("iresnet34", 512), ("iresnet50", 512), ("iresnet100", 256), ("iresnet200", 512),
     ("mobilefacenet", 512), ("mobilefacenet_large", 128)],
)
def test_detects_arch_from_block_counts(arch: str, emb: int) -> None:
    with torch.device("meta"):
        state = create_model(arch, embedding_size=emb).backbone.state_dict()
    found = detect(state)
    assert (found.family, found.arch, found.arch_kwargs["embedding_size"]) == ("arcface_torch", arch, emb)


# --------------------------------------------------------------------------------------------- EQFace

_EQ_BLOCK = {"bn1": 0, "conv1": 1, "bn2": 2, "prelu": 3, "conv2": 4, "bn3": 5}
_EQ_TOP = {
    "conv1": "input_layer.0", "bn1": "input_layer.1", "prelu": "input_layer.2",
    "bn2": "output_layer.0", "fc": "feature_layer.0", "features": "feature_layer.1",
}


def _eqface_name(key: str) -> str:
    """iResNet key → EQFace ``models/model_resnet.py`` key (written independently of the importer)."""
    if m := re.match(r"(layer\d\.\d+)\.downsample\.(\d)\.(.+)", key):
        return f"{m[1]}.shortcut_layer.{m[2]}.{m[3]}"
    if m := re.match(r"(layer\d\.\d+)\.(\w+)\.(.+)", key):
        return f"{m[1]}.res_layer.{_EQ_BLOCK[m[2]]}.{m[3]}"
    module, rest = key.split(".", 1)
    return f"{_EQ_TOP[module]}.{rest}"


def test_eqface_backbone_and_quality(tmp_path: Path) -> None:
    source = _source(style="eqface", quality_head=True, preprocess=EQFACE, family="eqface")
    torch.nn.init.normal_(source.quality_head.qualtiy[3].weight, std=0.5)
    backbone = {"module." + _eqface_name(k): v for k, v in source.backbone.state_dict().items()}
    quality = {"module." + k: v for k, v in source.quality_head.state_dict().items()}
    assert "module.layer1.0.res_layer.4.weight" in backbone and "module.qualtiy.3.weight" in quality
    torch.save(backbone, tmp_path / "backbone.pth")
    torch.save(quality, tmp_path / "quality.pth")

    model = load_model(tmp_path / "backbone.pth", quality_weights=tmp_path / "quality.pth")
    assert (model.info.family, model.info.arch, model.quality_method) == ("eqface", "iresnet_tiny", "head")
    assert _first_pixel(model) == pytest.approx([127.5 / 128, -127.5 / 128, -0.5 / 128], rel=1e-6)
    _same_outputs(model, source)

    without_head = load_model(tmp_path / "backbone.pth")
    assert without_head.quality_method == "norm" and without_head.quality_head is None


def test_eqface_quality_for_another_backbone(tmp_path: Path) -> None:
    source = _source(style="eqface")
    torch.save({"module." + _eqface_name(k): v for k, v in source.backbone.state_dict().items()},
               tmp_path / "backbone.pth")
    torch.save({"qualtiy." + k: v for k, v in QualityHead(25088).qualtiy.state_dict().items()},
               tmp_path / "quality.pth")
    with pytest.raises(CheckpointError, match="takes 25088 features but the backbone gives 3136"):
        load_model(tmp_path / "backbone.pth", quality_weights=tmp_path / "quality.pth")


# --------------------------------------------------------------------------------------------- CR-FIQA


def test_crfiqa_regressor_is_the_quality(tmp_path: Path) -> None:
    from fqtool.models.checkpoint import save_checkpoint

    source = _source()
    qs = torch.nn.Linear(128, 1)
    state = dict(source.backbone.state_dict())
    state.update({"qs.weight": qs.weight.detach(), "qs.bias": qs.bias.detach()})
    torch.save(state, tmp_path / "181952backbone.pth")
    model = load_model(tmp_path / "181952backbone.pth")
    assert (model.info.family, model.quality_method) == ("crfiqa", "crfiqa") and model.preprocess == ARCFACE
    x = torch.randn(2, 3, 112, 112)
    with torch.no_grad():
        embedding, quality = model(x)
        torch.testing.assert_close(embedding, source(x)[0], rtol=0, atol=0)
        torch.testing.assert_close(quality, qs(embedding)[:, 0])  # CR-FIQA: qs on the BN1d output
    converted = load_model(save_checkpoint(model, tmp_path / "crfiqa.safetensors"))
    assert converted.quality_method == "crfiqa"
    _same_outputs(converted, model)
    assert sum(k.startswith("quality_head.") for k in _keys(tmp_path / "crfiqa.safetensors")) == 2


def _keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return list(handle.keys())


# --------------------------------------------------------------------------------------------- errors


def _one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text
    return text


def test_wrong_arch_names_missing_keys(tmp_path: Path) -> None:
    torch.save(_source().backbone.state_dict(), tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "backbone.pth", arch="iresnet18")
    text = _one_line(exc)
    assert "missing" in text and "layer1.1.bn1.weight" in text and "looks like iresnet_tiny" in text


def test_wrong_shape_is_named(tmp_path: Path) -> None:
    state = dict(_source().backbone.state_dict())
    state["layer2.0.bn1.weight"] = torch.ones(9)
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "backbone.pth")
    assert "layer2.0.bn1.weight has shape (9,)" in _one_line(exc)


def test_missing_and_unexpected_keys(tmp_path: Path) -> None:
    state = dict(_source().backbone.state_dict())
    del state["layer3.0.bn2.weight"]
    state["layer3.0.extra.weight"] = torch.ones(1)
    torch.save(state, tmp_path / "backbone.pth")
    with pytest.raises(CheckpointError) as exc:
        load_model(tmp_path / "backbone.pth")
    text = _one_line(exc)
    assert "1 key (layer3.0.bn2.weight) missing" in text and "layer3.0.extra.weight" in text


def test_not_a_checkpoint_and_damage(tmp_path: Path) -> None:
    junk = tmp_path / "notes.pth"
    junk.write_bytes(b"hello, this is text")
    with pytest.raises(CheckpointError, match="not a checkpoint"):
        load_model(junk)
    good = tmp_path / "good.pth"
    torch.save(_source().backbone.state_dict(), good)
    cut = tmp_path / "cut.pth"
    cut.write_bytes(good.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="damaged") as exc:
        load_model(cut)
    _one_line(exc)
    torch.save({"optimizer": {"lr": 0.1}}, tmp_path / "empty.pth")
    with pytest.raises(CheckpointError, match="no weights found"):
        load_model(tmp_path / "empty.pth")
    with pytest.raises(FqtoolError, match="no such file"):
        load_model(tmp_path / "absent.pth")


class _Payload:
    def __reduce__(self):
        return (print, ("side effect",))


def test_unsafe_pickle_is_refused(tmp_path: Path) -> None:
    torch.save({"state_dict": {"conv1.weight": torch.ones(1)}, "evil": _Payload()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="weights_only") as exc:
        load_model(tmp_path / "evil.pth")
    _one_line(exc)
