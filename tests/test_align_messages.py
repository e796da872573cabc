"""A detector whose outputs have another layout: the error names the detector file and leaves no
resume journal behind (issue 25 item 12)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper
from typer.testing import CliRunner

from fqtool.align.pipeline import JOURNAL
from fqtool.cli.app import app


def _retinaface_with_wrong_rows(path: Path) -> Path:
    """loc / conf / landmarks outputs (biubug6 names) with 7 rows: no prior-box count is 7."""
    nodes, infos = [], []
    for name, width in (("loc", 4), ("conf", 2), ("landmarks", 10)):
        value = np.zeros((1, 7, width), np.float32)
        tensor = helper.make_tensor(name + "_value", TensorProto.FLOAT, value.shape, value.ravel().tolist())
        nodes.append(helper.make_node("Constant", [], [name], value=tensor))
        infos.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(value.shape)))
    graph = helper.make_graph(nodes, "detector", [helper.make_tensor_value_info(
        "input", TensorProto.FLOAT, [1, 3, 64, 64])], infos)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)
    return path


def test_detector_layout_error_names_the_file_and_leaves_no_journal(tmp_path, make_image) -> None:
    detector = _retinaface_with_wrong_rows(tmp_path / "odd_retina.onnx")
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(make_image(size=(64, 64)))
    result = CliRunner().invoke(app, ["align", str(tmp_path / "in"), str(tmp_path / "out"), "-q",
                                      "--detector", str(detector), "-j", "1"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {detector}:"), result.stderr
    assert not (tmp_path / "out" / JOURNAL).exists()
