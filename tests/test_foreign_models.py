"""Models fqtool did not train (issue 24): declared preprocessing, stamping, calibration, sanity checks."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

import fqtool
from fqtool.cli.app import app
from fqtool.errors import FqtoolError
from fqtool.eval.sanity import check_scores
from fqtool.eval.scoring import DEFAULT_CALIBRATION
from fqtool.models import create_model
from fqtool.models.checkpoint import read_checkpoint_metadata, save_checkpoint
from fqtool.models.onnx_model import OnnxMetadataWarning
from fqtool.models.preprocess import FACENET, parse_preprocess

runner = CliRunner()
SPEC = "size=160,mean=127.5,std=128,colour=bgr"


class _Net(nn.Module):
    """A tiny FaceNet-like recogniser: 160×160 in, 16-d raw embedding out (optionally unit-norm)."""

    def __init__(self, unit_norm: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 5, stride=4)
        self.fc = nn.Linear(8 * 39 * 39, 16)
        self.unit_norm = unit_norm

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.fc(torch.flatten(torch.relu(self.conv(x)), 1)) * 5.0 + 20.0
        return nn.functional.normalize(out, dim=1) if self.unit_norm else out


def _export(path: Path, unit_norm: bool = False) -> Path:
    torch.manual_seed(0)
    net = _Net(unit_norm).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 3, 160, 160),),
            str(path),
            dynamo=False,
            input_names=["data"],
            output_names=["out"],
            dynamic_axes={"data": {0: "n"}, "out": {0: "n"}},
            opset_version=17,
        )
    return path


@pytest.fixture(scope="module")
def foreign(tmp_path_factory) -> Path:
    return _export(tmp_path_factory.mktemp("foreign") / "facenet.onnx")


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, np.ndarray]:
    """30 smooth random 160×160 RGB images, as files and as an N×H×W×3 array."""
    folder = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(0)
    small = rng.integers(0, 256, (30, 10, 10, 3), dtype=np.uint8)
    images = np.stack([np.asarray(Image.fromarray(s).resize((160, 160), Image.BILINEAR)) for s in small])
    for i, image in enumerate(images):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder, images


def _reference(onnx_path: Path, images: np.ndarray) -> np.ndarray:
    """A direct onnxruntime run with FaceNet-style BGR (x - 127.5) / 128 input."""
    x = (images[..., ::-1].astype(np.float32) - 127.5) / 128.0
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    return session.run(None, {"data": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def test_declared_preprocessing_matches_a_direct_onnxruntime_run(
    foreign: Path, faces, tmp_path: Path
) -> None:
    _, images = faces
    expected = _reference(foreign, images)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a declared preprocessing needs no warning
        model = fqtool.load_model(foreign, device="cpu", preprocess=SPEC)
    got = model.embed(list(images))
    assert np.abs(got - expected).max() <= 1e-5
    wrong = fqtool.load_model(foreign, device="cpu", preprocess="size=160,mean=127.5,std=128,colour=rgb")
    assert np.abs(wrong.embed(list(images)) - expected).max() > 1e-3

    stamped = tmp_path / "stamped.onnx"
    result = runner.invoke(app, ["convert-weights", str(foreign), str(stamped), "--preprocess", SPEC])
    assert result.exit_code == 0, result.output
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = fqtool.load_model(stamped, device="cpu")  # no flag: the copy says it
    assert np.abs(again.embed(list(images)) - expected).max() <= 1e-5
    import onnx

    original, copy = onnx.load(str(foreign)), onnx.load(str(stamped))
    assert copy.graph.SerializeToString() == original.graph.SerializeToString()  # the graph is untouched


def test_a_file_without_metadata_warns_once_in_one_line_naming_preprocess(foreign: Path, faces) -> None:
    with pytest.warns(OnnxMetadataWarning) as record:
        fqtool.load_model(foreign, device="cpu")
    message = str(record[0].message)
    assert "--preprocess" in message and "\n" not in message
    folder, _ = faces
    result = runner.invoke(
        app,
        [
            "score",
            str(folder),
            "-w",
            str(foreign),
            "--device",
            "cpu",
            "--workers",
            "0",
            "-o",
            str(folder.parent / "s.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stderr.splitlines() if "no fqtool metadata" in line]
    assert len(lines) == 1 and lines[0].startswith("warning:") and "--preprocess" in lines[0]
    assert "OnnxMetadataWarning" not in result.stderr and "loading.py" not in result.stderr


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("nosuch", "unknown preset"),
        ("std=0", "std must be positive"),
        ("size=0", "size must be whole pixels"),
        ("mean=127.5,127.5", "mean takes 1 or 3 finite values, not 2"),
    ],
)
def test_bad_specs_are_one_line_exit_2(foreign: Path, faces, spec: str, expected: str) -> None:
    folder, _ = faces
    result = runner.invoke(app, ["score", str(folder), "-w", str(foreign), "--preprocess", spec])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and expected in lines[0] and "Traceback" not in result.output
    with pytest.raises(FqtoolError, match=expected):
        parse_preprocess(spec)


def test_presets_come_from_the_one_table_and_override_with_keys() -> None:
    assert parse_preprocess("facenet") == FACENET and FACENET.size == (160, 160)
    assert parse_preprocess("insightface") == parse_preprocess("arcface") == parse_preprocess("arcface_torch")
    bgr = parse_preprocess("facenet,colour=bgr,mean=1,2,3")
    assert bgr.color == "BGR" and bgr.size == (160, 160)
    np.testing.assert_allclose(np.array(bgr.mean) * 255, [1, 2, 3])
    result = runner.invoke(app, ["models", "iresnet_tiny", "--families"], env={"COLUMNS": "200"})
    assert result.exit_code == 0 and "facenet" in result.stdout and "insightface" in result.stdout


def test_calibrate_maps_p1_p99_to_0_100_for_onnx_and_safetensors(
    foreign: Path, faces, tmp_path: Path
) -> None:
    folder, images = faces
    torch.manual_seed(0)
    weights = save_checkpoint(
        create_model("iresnet_tiny").eval(), tmp_path / "tiny.safetensors", training_config={"lr": 0.1}
    )
    for source, extra, out in (
        (weights, [], tmp_path / "cal.safetensors"),
        (foreign, ["--preprocess", SPEC], tmp_path / "cal.onnx"),
    ):
        result = runner.invoke(
            app, ["calibrate", str(folder), "-w", str(source), "-o", str(out), "--device", "cpu", *extra]
        )
        assert result.exit_code == 0, result.output
        before = fqtool.load_model(source, device="cpu", preprocess=SPEC if extra else None)
        quality = before.quality(list(images)).astype(np.float64)
        low, high = np.percentile(quality, [1, 99])
        after = fqtool.load_model(out, device="cpu")
        cal = after.network.info.calibration
        assert cal.low == pytest.approx(low, rel=1e-5) and cal.high == pytest.approx(high, rel=1e-5)
        if out.suffix == ".safetensors":  # the copy keeps the source's training record
            assert read_checkpoint_metadata(out)["training_config"] == {"lr": 0.1}
        scored = after.score(list(images)).quality_100
        assert scored.min() == 0.0 and scored.max() == 100.0
        assert 0 < np.mean(scored == 0) <= 0.05 and 0 < np.mean(scored == 100) <= 0.05


def test_calibrate_refuses_a_foreign_onnx_without_preprocess_and_a_wrong_suffix(
    foreign, faces, tmp_path
) -> None:
    folder, _ = faces
    result = runner.invoke(
        app, ["calibrate", str(folder), "-w", str(foreign), "-o", str(tmp_path / "c.onnx")]
    )
    assert result.exit_code == 2 and "--preprocess" in result.stderr and not (tmp_path / "c.onnx").exists()
    result = runner.invoke(
        app,
        [
            "calibrate",
            str(folder),
            "-w",
            str(foreign),
            "--preprocess",
            SPEC,
            "-o",
            str(tmp_path / "c.safetensors"),
        ],
    )
    assert result.exit_code == 2 and "written as .onnx" in result.stderr


def test_unit_norm_outputs_are_called_constant_and_quality_100_not_meaningful(faces, tmp_path: Path) -> None:
    folder, _ = faces
    unit = _export(tmp_path / "unit.onnx", unit_norm=True)
    result = runner.invoke(
        app,
        [
            "score",
            str(folder),
            "-w",
            str(unit),
            "--preprocess",
            SPEC,
            "--device",
            "cpu",
            "--workers",
            "0",
            "-o",
            str(tmp_path / "u.csv"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "is the same for all 30 images" in result.stderr and "unit-norm" in result.stderr
    assert "quality_100 is not meaningful" in result.stdout
    result = runner.invoke(
        app,
        ["calibrate", str(folder), "-w", str(unit), "--preprocess", SPEC, "-o", str(tmp_path / "u_cal.onnx")],
    )
    assert result.exit_code == 2 and "no scale to fit" in result.stderr


def test_saturated_default_scale_suggests_calibrate() -> None:
    quality = np.linspace(5.0, 9.0, 40)  # norms below MagFace's default l_a = 10: all at 0
    calibration = DEFAULT_CALIBRATION["norm"]
    report = check_scores(quality, calibration(torch.from_numpy(quality)).numpy(), calibration, "norm")
    assert report.meaningful and len(report.warnings) == 1
    assert (
        "100% of the images are at 0 or 100" in report.warnings[0]
        and "fqtool calibrate" in report.warnings[0]
    )
    spread = np.linspace(20.0, 100.0, 40)
    fine = check_scores(spread, calibration(torch.from_numpy(spread)).numpy(), calibration, "norm")
    assert fine.warnings == []


def test_a_model_trained_on_synthetic_data_says_so_on_other_images(tmp_path: Path) -> None:
    data = tmp_path / "synthdata"
    data.mkdir()
    (data / "synth.json").write_text("{}")
    model = create_model("iresnet_tiny").eval()
    path = save_checkpoint(
        model, tmp_path / "m.safetensors", training_config={"data": str(data / "list.txt")}
    )
    loaded = fqtool.load_model(path, device="cpu")
    assert loaded.network.info.trained_on_synthetic
    q = np.linspace(20.0, 100.0, 40)
    cal = DEFAULT_CALIBRATION["norm"]
    args = (q, cal(torch.from_numpy(q)).numpy(), cal, "norm")
    photos = check_scores(*args, trained_on_synthetic=True, input_path=tmp_path / "photos")
    assert sum("synthetic faces" in w for w in photos.warnings) == 1
    assert check_scores(*args, trained_on_synthetic=True, input_path=data / "images").warnings == []
    exported = tmp_path / "m.onnx"
    result = runner.invoke(app, ["export", str(path), "-o", str(exported), "--no-check"])
    assert result.exit_code == 0, result.output
    assert fqtool.load_model(exported, device="cpu").network.info.trained_on_synthetic  # the ONNX says it too
    unpacked = tmp_path / "unpacked"  # the demo's route: synth -> .rec -> convert-rec -> make-list
    unpacked.mkdir()
    (unpacked / "source.json").write_text(json.dumps({"rec": str(data / "train.rec")}))
    demo = save_checkpoint(
        model, tmp_path / "d.safetensors", training_config={"data": str(unpacked / "l.txt")}
    )
    assert fqtool.load_model(demo, device="cpu").network.info.trained_on_synthetic
    assert check_scores(*args, trained_on_synthetic=True, input_path=unpacked / "images").warnings == []
    plain = save_checkpoint(model, tmp_path / "p.safetensors", training_config={"data": str(tmp_path / "x")})
    assert not fqtool.load_model(plain, device="cpu").network.info.trained_on_synthetic


def test_stamp_records_calibration_and_keeps_metadata_valid(foreign: Path, tmp_path: Path) -> None:
    out = tmp_path / "cal.onnx"
    result = runner.invoke(
        app,
        [
            "convert-weights",
            "--weights",
            str(foreign),
            str(out),
            "--preprocess",
            "facenet",
            "--calibration",
            "10",
            "30",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).get_modelmeta()
    props = meta.custom_metadata_map
    assert json.loads(props["calibration"])["low"] == 10 and props["input_layout"] == "nchw-float"
    assert json.loads(props["preprocessing"])["size"] == [160, 160]
    result = runner.invoke(app, ["convert-weights", str(foreign), str(tmp_path / "x.onnx")])
    assert result.exit_code == 2 and "--preprocess" in result.stderr and not (tmp_path / "x.onnx").exists()


class _Nhwc(nn.Module):
    """A TensorFlow-style graph: float NHWC input."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = _Net()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x.permute(0, 3, 1, 2))


def test_an_nhwc_float_graph_and_the_api_calibrate(faces, tmp_path: Path) -> None:
    _, images = faces
    torch.manual_seed(0)
    net = _Nhwc().eval()
    path = tmp_path / "nhwc.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(2, 160, 160, 3),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
            opset_version=17,
        )
    x = (images.astype(np.float32) - 127.5) / 128.0
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    expected = session.run(None, {"x": x})[0]
    model = fqtool.load_model(path, device="cpu", preprocess="facenet,layout=nhwc")
    assert model.network.input_layout == "nhwc-float"
    assert np.abs(model.embed(list(images)) - expected).max() <= 1e-5
    fit = model.calibrate(list(images), percentiles=(5, 95))
    quality = np.linalg.norm(expected.astype(np.float64), axis=1)
    assert fit.calibration.low == pytest.approx(np.percentile(quality, 5), rel=1e-5)
    assert model.network.info.calibration is fit.calibration  # used from now on
    with pytest.raises(FqtoolError, match="does not fit this iresnet_tiny, whose input is 112x112"):
        torch.manual_seed(0)
        fqtool.load_model(
            save_checkpoint(create_model("iresnet_tiny"), tmp_path / "t.safetensors"),
            device="cpu",
            preprocess="facenet",
        )
