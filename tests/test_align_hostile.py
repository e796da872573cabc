"""Hostile or foreign detector graphs and degenerate landmarks: one line, never a hang (issue 25.10/11)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from PIL import Image
from typer.testing import CliRunner

from fqtool.align.detectors import load_detector
from fqtool.cli.app import app
from fqtool.errors import FormatError

runner = CliRunner()
PRIORS_64 = (64 * 64 // 64 + 64 * 64 // 256 + 64 * 64 // 1024) * 2  # a 64×64 image, 2 priors per cell


def _save(path: Path, nodes, outputs, inputs=None, opset: int = 17) -> Path:
    inputs = inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])]
    graph = helper.make_graph(nodes, "det", inputs, outputs)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)]), str(path))
    return path


def _constants(path: Path, arrays: dict[str, np.ndarray]) -> Path:
    nodes = [
        helper.make_node("Constant", [], [name], value=numpy_helper.from_array(a.astype(np.float32)))
        for name, a in arrays.items()
    ]
    outputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(a.shape)) for n, a in arrays.items()]
    return _save(path, nodes, outputs)


def _endless_loop(path: Path) -> Path:
    body = helper.make_graph(
        [helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [
            helper.make_tensor_value_info("i", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
        ],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, [])],
    )
    nodes = [
        helper.make_node("Constant", [], ["cond"], value=helper.make_tensor("c", TensorProto.BOOL, [], [1])),
        helper.make_node("Loop", ["", "cond"], [], body=body),
    ]
    nodes += [
        helper.make_node("Constant", [], [n], value=numpy_helper.from_array(np.zeros((1, 1, k), np.float32)))
        for n, k in (("loc", 4), ("conf", 2), ("landmarks", 10))
    ]
    outs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("loc", "conf", "landmarks")]
    return _save(path, nodes, outs)


def test_control_flow_and_odd_inputs_are_refused_before_running(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="control flow \\(Loop\\)"):
        load_detector(_endless_loop(tmp_path / "loop.onnx"))
    for name, shape, kind in (("rank2", [1, 3], TensorProto.FLOAT), ("int", [1, 3, 8, 8], TensorProto.INT64)):
        path = _save(
            tmp_path / f"{name}.onnx",
            [helper.make_node("Identity", ["x"], ["y"])],
            [helper.make_tensor_value_info("y", kind, shape)],
            [helper.make_tensor_value_info("x", kind, shape)],
        )
        with pytest.raises(FormatError, match="4-D float tensor"):
            load_detector(path)
    (tmp_path / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    with pytest.raises(FormatError, match=r"junk\.onnx"):
        load_detector(tmp_path / "junk.onnx")


def test_wrong_layout_outputs_name_the_detector(tmp_path: Path) -> None:
    path = _constants(
        tmp_path / "wrong.onnx",
        {"loc": np.zeros((1, 7, 4)), "conf": np.zeros((1, 7, 2)), "landmarks": np.zeros((1, 7, 10))},
    )
    with pytest.raises(FormatError, match="7 rows for") as info:
        load_detector(path).detect(np.zeros((64, 64, 3), np.uint8))
    assert str(path) in str(info.value)
    odd = _constants(
        tmp_path / "odd.onnx",
        {"loc": np.zeros((1, 5)), "conf": np.zeros((1, 3)), "landmarks": np.zeros((1, 7))},
    )
    with pytest.raises(FormatError, match="odd.onnx"):
        load_detector(odd).detect(np.zeros((64, 64, 3), np.uint8))


def test_huge_and_everywhere_boxes_are_dropped_not_warped(tmp_path: Path) -> None:
    n = PRIORS_64
    conf = np.stack([np.zeros(n), np.ones(n)], axis=1)[None]
    huge = _constants(
        tmp_path / "huge.onnx",
        {"loc": np.full((1, n, 4), 1e30), "conf": conf, "landmarks": np.full((1, n, 10), -1e30)},
    )
    assert len(load_detector(huge).detect(np.zeros((64, 64, 3), np.uint8))) == 0
    everywhere = _constants(
        tmp_path / "all.onnx", {"loc": np.zeros((1, n, 4)), "conf": conf, "landmarks": np.zeros((1, n, 10))}
    )
    found = load_detector(everywhere).detect(np.zeros((64, 64, 3), np.uint8))
    assert 0 < len(found) <= n and np.isfinite(found.boxes).all()
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    result = runner.invoke(
        app, ["align", str(tmp_path / "in"), str(tmp_path / "out"), "-q", "--detector", str(huge)]
    )
    assert result.exit_code == 0 and (tmp_path / "out" / "no_face.txt").read_text() == "a.png\n"


@pytest.mark.parametrize(
    ("values", "needle"),
    [
        ("10 10 10 10 10 10 10 10 10 10", "within 1 pixel"),
        ("10 10 10.000001 10 10 10.000001 10 10 10 10", "within 1 pixel"),
        ("1e300 1 2 3 4 5 6 7 8 9", "beyond"),
        ("-1e300 1 2 3 4 5 6 7 8 9", "beyond"),
    ],
)
def test_degenerate_landmarks_are_one_line(tmp_path: Path, values: str, needle: str) -> None:
    (tmp_path / "in").mkdir()
    Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path / "in" / "a.png")
    (tmp_path / "l.txt").write_text(f"a.png {values}\n")
    result = runner.invoke(
        app, ["align", str(tmp_path / "in"), str(tmp_path / "out"), "--landmarks", str(tmp_path / "l.txt")]
    )
    assert result.exit_code == 2 and needle in result.stderr and "line 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
