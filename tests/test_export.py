"""ONNX export: parity with PyTorch in ONNX Runtime, metadata, preprocessing graph, fp16, OnnxFaceModel."""

from __future__ import annotations

import json
import logging
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from fqtool.errors import BadInputError, FormatError, FqtoolError, OutputError
from fqtool.eval.embed import embed_images
from fqtool.export import (
    FP16_TOLERANCE,
    FP32_TOLERANCE,
    OnnxFaceModel,
    OnnxMetadataWarning,
    OnnxProviderWarning,
    export_onnx,
    select_providers,
)
from fqtool.export.parity import BATCH_SIZES, compare
from fqtool.models import QualityCalibration, create_model
from fqtool.models.preprocess import ARCFACE, MAGFACE

META_KEYS = {
    "fqtool_version",
    "graph",
    "arch",
    "arch_kwargs",
    "family",
    "preprocessing",
    "input_layout",
    "quality_method",
    "calibration",
    "embedding_size",
    "precision",
    "source_sha256",
}


def randomize_bn(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give every BatchNorm non-trivial statistics, so parity is tested on a model that is not ~identity."""
    gen = torch.Generator().manual_seed(seed)
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            n = module.num_features
            module.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
            module.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
            module.weight.data.copy_(torch.rand(n, generator=gen) + 0.5)
            module.bias.data.copy_(torch.randn(n, generator=gen) * 0.1)
    return model.eval()


def tiny(quality_head: bool, **kwargs) -> torch.nn.Module:
    torch.manual_seed(0)
    return randomize_bn(create_model("iresnet_tiny", quality_head=quality_head, **kwargs))


def images(n: int, seed: int = 1, size: int = 112) -> torch.Tensor:
    return torch.randint(
        0, 256, (n, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed)
    )


@pytest.fixture(scope="module")
def head_export(tmp_path_factory: pytest.TempPathFactory):
    model = tiny(True)
    model.info.calibration = QualityCalibration(0.1, 0.9, source="test")
    path = tmp_path_factory.mktemp("onnx") / "head.onnx"
    report = export_onnx(model, path, source_hash="ab" * 32)
    return model, path, report


def test_head_export_parity_and_dynamic_batch(head_export) -> None:
    model, path, report = head_export
    assert report.paths == [path] and path.is_file()
    rows = report.parity.rows
    assert report.parity.ok and report.parity.tolerance == FP32_TOLERANCE
    assert {(r.inputs, r.batch) for r in rows} == {(k, b) for k in ("random", "faces") for b in BATCH_SIZES}
    assert all(r.min_cosine >= 0.9999 and r.max_quality_rel <= 1e-3 for r in rows)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = session.get_inputs()
    assert inp.name == "input" and isinstance(inp.shape[0], str) and inp.shape[1:] == [3, 112, 112]
    assert [o.name for o in session.get_outputs()] == ["embedding", "quality"]
    x = model.prepare(images(5))
    emb, qual = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        ref_emb, ref_qual = model(x)
    np.testing.assert_allclose(emb, ref_emb.numpy(), atol=1e-4, rtol=1e-4)
    np.testing.assert_allclose(qual, ref_qual.numpy(), atol=1e-5, rtol=1e-4)


def test_metadata_round_trip(head_export) -> None:
    model, path, report = head_export
    meta = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert set(meta) >= META_KEYS and meta == report.metadata
    assert meta["arch"] == "iresnet_tiny" and meta["quality_method"] == "head" and meta["graph"] == "full"
    assert meta["input_layout"] == "nchw-float" and meta["embedding_size"] == "128"
    assert meta["source_sha256"] == "ab" * 32 and meta["precision"] == "fp32"
    assert json.loads(meta["preprocessing"]) == model.preprocess.to_dict()
    loaded = OnnxFaceModel(path, device="cpu")
    assert loaded.info.arch == "iresnet_tiny" and loaded.info.family == model.info.family
    assert loaded.info.preprocess == model.preprocess and loaded.info.arch_kwargs == model.info.arch_kwargs
    assert loaded.info.calibration == QualityCalibration(0.1, 0.9, source="test")
    assert loaded.quality_method == "head" and loaded.embedding_size == 128


def test_embed_images_onnx_equals_torch(head_export) -> None:
    model, path, _ = head_export
    batch = torch.cat([images(6, seed=3), images(5, seed=4, size=128)[:, :, 8:120, 8:120]])
    onnx_out = embed_images(OnnxFaceModel(path), batch, batch_size=4, flip=True)
    torch_out = embed_images(model, batch, batch_size=4, flip=True)
    for name in ("embeddings", "quality", "norms", "flip_norms"):
        np.testing.assert_allclose(getattr(onnx_out, name), getattr(torch_out, name), rtol=1e-4, atol=1e-4)
    norm_model = OnnxFaceModel(path)
    norm_model.set_quality_method("norm")
    np.testing.assert_allclose(embed_images(norm_model, batch[:3]).quality, torch_out.norms[:3], rtol=1e-5)


def test_norm_model_with_preprocessing_graph_is_quiet_and_exact(tmp_path: Path, capfd, caplog) -> None:
    """No head, BGR x/255 preprocessing inside the graph (uint8 NHWC in); nothing printed, no warnings."""
    model = tiny(False, preprocess=MAGFACE, family="magface")
    path = tmp_path / "magface.onnx"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.WARNING):
        warnings.simplefilter("always")
        report = export_onnx(model, path, include_preprocessing=True)
        loaded = OnnxFaceModel(path, device="auto")
    assert [str(w.message) for w in caught] == []
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING] == []
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert report.parity.ok and report.metadata["input_layout"] == "nhwc-uint8"
    assert loaded.quality_method == "norm" and loaded.preprocess == MAGFACE
    (inp,) = loaded.session.get_inputs()
    assert inp.type == "tensor(uint8)" and inp.shape[1:] == [112, 112, 3]
    pixels = images(7, seed=5)
    with torch.no_grad():
        ref_emb, ref_q = model(model.prepare(pixels))
    emb, qual = loaded.session.run(None, {"input": pixels.permute(0, 2, 3, 1).contiguous().numpy()})
    np.testing.assert_allclose(emb, ref_emb.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(qual, ref_q.numpy(), rtol=1e-5)
    prepared = loaded.prepare(pixels)
    assert prepared.dtype == torch.uint8 and prepared.is_contiguous(memory_format=torch.channels_last)
    from_nhwc = loaded(pixels.permute(0, 2, 3, 1).numpy())[0]
    torch.testing.assert_close(loaded(prepared)[0], from_nhwc)
    flipped = embed_images(loaded, pixels, flip=True).embeddings
    np.testing.assert_allclose(
        flipped, embed_images(model, pixels, flip=True).embeddings, rtol=1e-4, atol=1e-4
    )
    with pytest.raises(FqtoolError, match="quality head"):
        loaded.set_quality_method("head")


def test_fp16_export_uses_looser_tolerance(tmp_path: Path) -> None:
    model = tiny(True)
    report = export_onnx(model, tmp_path / "half.onnx", fp16=True)
    assert report.parity.ok and report.parity.tolerance == FP16_TOLERANCE
    assert report.metadata["precision"] == "fp16"
    assert min(r.min_cosine for r in report.parity.rows) >= FP16_TOLERANCE.min_cosine
    proto = onnx.load(str(tmp_path / "half.onnx"))
    dtypes = {init.data_type for init in proto.graph.initializer}
    assert onnx.TensorProto.FLOAT16 in dtypes
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    loaded = OnnxFaceModel(tmp_path / "half.onnx")
    x = model.prepare(images(3))
    with torch.no_grad():
        ref = model(x)[0]
    cos = torch.nn.functional.cosine_similarity(loaded(x)[0], ref)
    assert cos.min() >= 0.999


def test_metadata_less_onnx_falls_back_with_one_warning(head_export, tmp_path: Path) -> None:
    _, path, _ = head_export
    proto = onnx.load(str(path))
    del proto.metadata_props[:]
    plain = tmp_path / "plain.onnx"
    onnx.save(proto, str(plain))
    with pytest.warns(OnnxMetadataWarning, match="no fqtool metadata") as record:
        loaded = OnnxFaceModel(plain)
    assert len(record) == 1 and "\n" not in str(record[0].message)
    assert loaded.preprocess == ARCFACE and loaded.info.arch == "unknown" and loaded.embedding_size == 128
    x = loaded.prepare(images(2))
    torch.testing.assert_close(loaded(x), OnnxFaceModel(path)(x))


def test_split_without_head_and_bad_outputs_are_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(FqtoolError, match="--split needs a model with a quality head"):
        export_onnx(tiny(False), tmp_path / "m.onnx", split=True)
    with pytest.raises(OutputError, match="end in .onnx"):
        export_onnx(tiny(False), tmp_path / "m.pt")
    with pytest.raises(FqtoolError, match="opset"):
        export_onnx(tiny(False), tmp_path / "m.onnx", opset=17)
    assert list(tmp_path.iterdir()) == []


def test_onnx_face_model_bad_files_and_providers(tmp_path: Path) -> None:
    with pytest.raises(BadInputError, match="no such ONNX file"):
        OnnxFaceModel(tmp_path / "missing.onnx")
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(FormatError, match="not a loadable ONNX model"):
        OnnxFaceModel(junk)
    assert select_providers("cpu") == ["CPUExecutionProvider"]
    if not torch.cuda.is_available():
        assert select_providers("auto") == ["CPUExecutionProvider"]
        with pytest.raises(FqtoolError, match="CUDA is not available"):
            select_providers("cuda")


def test_provider_choice_without_a_real_gpu(monkeypatch) -> None:
    from fqtool.models import onnx_model as runtime

    monkeypatch.setattr(runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(runtime.torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert select_providers("auto") == ["CPUExecutionProvider"]
    with pytest.warns(OnnxProviderWarning, match="onnxruntime-gpu"):
        assert select_providers("cuda") == ["CPUExecutionProvider"]
    monkeypatch.setattr(
        runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    assert select_providers("auto")[0] == ("CUDAExecutionProvider", {"device_id": 0})
    assert select_providers("cuda:1")[0] == ("CUDAExecutionProvider", {"device_id": 1})
    assert select_providers("cpu") == ["CPUExecutionProvider"]


def test_compare_flags_outputs_that_differ() -> None:
    rng = np.random.default_rng(0)
    emb, qual = rng.normal(size=(7, 16)), rng.uniform(0.2, 0.8, 7)
    assert compare("full", "random", (emb, qual), (emb + 1e-7, qual), FP32_TOLERANCE).ok
    bent = emb.copy()
    bent[3] = rng.normal(size=16)
    row = compare("full", "random", (emb, qual), (bent, qual), FP32_TOLERANCE)
    assert not row.ok and row.min_cosine < 0.9
    assert not compare("full", "faces", (emb, qual), (emb, qual * 1.01), FP32_TOLERANCE).ok
    assert not compare("full", "faces", (emb, qual), (emb[:6], qual[:6]), FP32_TOLERANCE).ok
    nan = emb.copy()
    nan[0, 0] = np.nan
    assert not compare("full", "faces", (emb, qual), (nan, qual), FP32_TOLERANCE).ok


def test_iresnet18_export_parity(tmp_path: Path) -> None:
    """The one bigger model (about 10 s on 2 CPU cores): a real-size graph, 512-d embedding."""
    torch.manual_seed(0)
    model = randomize_bn(create_model("iresnet18"))
    report = export_onnx(model, tmp_path / "r18.onnx")
    assert report.parity.ok and report.metadata["embedding_size"] == "512"
    assert OnnxFaceModel(tmp_path / "r18.onnx").embedding_size == 512
