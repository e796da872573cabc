"""Legal but unusual names and values end in one line, never a traceback (issue 25 item 11)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from _ijb_fixture import write_ijb_release
from fqtool.cli.app import app
from fqtool.data.binfile import load_verification_folder
from fqtool.data.ijb import load_ijb, meta_files
from fqtool.errors import BadInputError
from fqtool.fsutil import atomic_write_text

runner = CliRunner()


def _one_line_exit_2(result) -> str:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1, result.stderr
    return result.stderr


@pytest.mark.parametrize("name", ["a" * 251 + ".txt", "é" * 120 + ".png", "€" * 81 + ".jpg"])
def test_atomic_writes_of_names_up_to_255_bytes(tmp_path: Path, name: str) -> None:
    assert len(os.fsencode(name)) <= 255
    atomic_write_text(tmp_path / name, "x")
    assert (tmp_path / name).read_text() == "x" and os.listdir(tmp_path) == [name]


def test_align_keeps_a_244_character_name(tmp_path: Path) -> None:
    name = "p" * 240 + ".png"
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "in" / name)
    (tmp_path / "l.txt").write_text(f"{name} 20 25 44 25 32 35 22 45 42 45\n")
    result = runner.invoke(
        app,
        ["align", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--landmarks", str(tmp_path / "l.txt")],
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / name).is_file()


@pytest.mark.skipif(os.name != "posix", reason="needs byte file names")
def test_align_refuses_a_non_utf8_name_before_writing_crops(tmp_path: Path) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(tmp_path / "in" / "good.png")
    Image.fromarray(np.full((64, 64, 3), 90, np.uint8)).save(os.fsencode(tmp_path / "in") + b"/bad\xff.png")
    result = runner.invoke(app, ["align", str(tmp_path / "in"), str(tmp_path / "out"), "-q"])
    assert "not valid UTF-8" in _one_line_exit_2(result)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


@pytest.mark.parametrize("file", ["tid_mid", "pairs"])
def test_an_ijb_id_beyond_int64_is_one_line(tmp_path: Path, file: str) -> None:
    root = write_ijb_release(tmp_path / "IJB_release", "IJBB", templates_per_id=2, impostors=10, seed=1)
    path = meta_files(root, "IJBB")[file]
    lines = path.read_text().splitlines()
    fields = lines[0].split()
    fields[1 if file == "tid_mid" else 0] = "1" + "0" * 22
    path.write_text("\n".join([" ".join(fields), *lines[1:]]) + "\n")
    with pytest.raises(BadInputError, match="line 1: template id 10{22} is out of range"):
        load_ijb(root)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_dev_zero_in_pairs_txt_is_refused_at_once(tmp_path: Path, make_image) -> None:
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "a.jpg").write_bytes(make_image())
    (tmp_path / "set" / "pairs.txt").write_text("a.jpg /dev/zero 1\n")
    with pytest.raises(BadInputError, match="not a regular file"):
        load_verification_folder(tmp_path / "set")


@pytest.mark.skipif(os.name != "posix", reason="needs byte file names")
def test_score_refuses_a_non_utf8_name_in_one_line(tmp_path: Path) -> None:
    import torch

    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(tmp_path / "in" / "good.png")
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(os.fsencode(tmp_path / "in") + b"/bad\xff.png")
    torch.manual_seed(0)
    weights = save_checkpoint(create_model("iresnet_tiny"), tmp_path / "t.safetensors")
    result = runner.invoke(
        app, ["score", str(tmp_path / "in"), "-w", str(weights), "-o", str(tmp_path / "s.csv"), "-q"]
    )
    assert "not valid UTF-8" in _one_line_exit_2(result) and str(tmp_path / "in") in result.stderr


def test_dataloader_workers_without_shared_memory_end_in_one_line() -> None:
    """``score`` under ``ulimit -f`` (checked by hand: exit 2 and this line); here the loader's error."""
    from fqtool.data.datasets import guarded_batches
    from fqtool.errors import FqtoolError

    def failing():
        yield 1
        raise RuntimeError(
            "Caught RuntimeError in DataLoader worker process 0.\nOriginal Traceback:\n"
            "RuntimeError: unable to resize file </torch_1_2_0> to the right size: "
            "File too large (27)"
        )

    batches = guarded_batches(failing())
    assert next(batches) == 1
    with pytest.raises(
        FqtoolError,
        match=r"cannot share memory \(RuntimeError: unable to resize file .* "
        r"use --workers 0",
    ):
        next(batches)

    def other():
        raise RuntimeError("a real bug")
        yield

    with pytest.raises(RuntimeError, match="a real bug"):
        list(guarded_batches(other()))


def _recognizer(path: Path, batch, out_shape=None) -> Path:
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weight = numpy_helper.from_array(
        np.random.default_rng(0).normal(size=(3 * 112 * 112, 8)).astype(np.float32), "W"
    )
    shape = numpy_helper.from_array(np.array([0, -1], np.int64), "s")
    nodes = [helper.make_node("Reshape", ["x", "s"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["y"])]
    if out_shape is not None:
        nodes[-1].output[0] = "m"
        const = numpy_helper.from_array(np.array(out_shape, np.int64), "o")
        nodes.append(helper.make_node("Reshape", ["m", "o"], ["y"]))
    graph = helper.make_graph(
        nodes,
        "r",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 3, 112, 112])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [weight, shape] + ([const] if out_shape is not None else []),
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def test_foreign_onnx_recognizers_with_fixed_batch_or_odd_outputs(tmp_path: Path) -> None:
    import fqtool
    from fqtool.errors import FormatError

    images = [np.full((112, 112, 3), v, np.uint8) for v in (10, 90, 200)]
    fixed = fqtool.load_model(_recognizer(tmp_path / "b1.onnx", 1), device="cpu", preprocess="arcface")
    dynamic = fqtool.load_model(_recognizer(tmp_path / "bn.onnx", "N"), device="cpu", preprocess="arcface")
    np.testing.assert_allclose(fixed.embed(images, batch_size=2), dynamic.embed(images), rtol=1e-5)
    flat = fqtool.load_model(
        _recognizer(tmp_path / "flat.onnx", "N", [-1]), device="cpu", preprocess="arcface"
    )
    with pytest.raises(FormatError, match="flat.onnx: output 'y' has 24 rows for 3 images"):
        flat.embed(images)


def test_metadata_declaring_a_huge_input_is_damaged_not_allocated(tmp_path: Path) -> None:
    import json

    import torch
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import fqtool
    from fqtool.errors import FqtoolError
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    good = save_checkpoint(create_model("iresnet_tiny"), tmp_path / "t.safetensors")
    with safe_open(str(good), "pt") as handle:
        meta = dict(handle.metadata())
    record = json.loads(meta["fqtool"])
    record["preprocess"]["size"] = [100000, 100000]
    meta["fqtool"] = json.dumps(record)
    save_file(load_file(str(good)), str(tmp_path / "big.safetensors"), metadata=meta)
    with pytest.raises(FqtoolError, match="preprocess size \\[100000, 100000\\] is beyond 4096"):
        fqtool.load_model(tmp_path / "big.safetensors", device="cpu")


def test_a_pth_with_a_wrong_shaped_fc_weight_is_one_line(tmp_path: Path) -> None:
    import torch

    from fqtool.cli.app import app as cli
    from fqtool.models import create_model

    state = create_model("iresnet_tiny").state_dict()
    state["backbone.fc.weight"] = torch.zeros(7, 3)
    torch.save({"state_dict": state}, tmp_path / "bad.pth")
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((112, 112, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    result = runner.invoke(cli, ["score", str(tmp_path / "in"), "-w", str(tmp_path / "bad.pth"), "--arch",
                                 "iresnet_tiny", "-o", str(tmp_path / "s.csv"), "-q"])
    assert "fc.weight has shape [7, 3]" in _one_line_exit_2(result)
