"""``--json`` on every command that reports: one JSON object on stdout in one style (issue 26 item 3)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.cli.jsonout import dumps

runner = CliRunner()


def _json(args: list[str]) -> dict:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert isinstance(doc, dict)
    return doc


@pytest.fixture(scope="module")
def people(tmp_path_factory, make_image) -> Path:
    root = tmp_path_factory.mktemp("json") / "people"
    for person in range(3):
        for n in range(3):
            (root / f"p{person}").mkdir(parents=True, exist_ok=True)
            (root / f"p{person}" / f"{n}.jpg").write_bytes(make_image((60 * person, 30 * n + 10, 90)))
    return root


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> Path:
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    return save_checkpoint(create_model("iresnet_tiny"), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def test_style_helper_turns_nan_and_paths_into_json() -> None:
    import numpy as np

    text = dumps({"a": float("nan"), "p": Path("x/y"), "n": np.float32(1.5), "l": (np.int64(2),)})
    assert json.loads(text) == {"a": None, "p": "x/y", "n": 1.5, "l": [2]}


def test_make_list_make_pairs_models(people, tmp_path) -> None:
    doc = _json(["make-list", str(people), "--output", str(tmp_path / "list.txt"), "--json"])
    assert (doc["images"], doc["identities"], doc["list"]) == (9, 3, str(tmp_path / "list.txt"))
    doc = _json(["make-pairs", str(people), str(tmp_path / "p.bin"), "--genuine", "4", "--impostor", "4",
                 "--json"])
    assert (doc["genuine"], doc["impostor"], doc["identities"]) == (4, 4, 3)
    doc = _json(["models", "iresnet_tiny", "--families", "--json"])
    assert [a["name"] for a in doc["architectures"]] == ["iresnet_tiny"]
    assert doc["architectures"][0]["embedding_size"] > 0
    assert doc["presets"] and all("reads" in p for p in doc["presets"])


def test_convert_rec_json(mxnet_made, tmp_path) -> None:
    doc = _json(["convert-rec", str(mxnet_made), str(tmp_path / "out"), "--json", "-q"])
    assert (doc["images"], doc["classes"]) == (18, 6) and doc["verification"]


def test_score_and_export_json(people, weights, tmp_path) -> None:
    doc = _json(["score", str(people), "-w", str(weights), "--device", "cpu", "--workers", "0", "-q",
                 "-o", str(tmp_path / "s.csv"), "--json"])
    assert doc["images"] == 9 and doc["output"] == str(tmp_path / "s.csv") and "calibration" in doc
    doc = _json(["export", str(weights), "--output", str(tmp_path / "m.onnx"), "--json"])
    assert doc["ok"] is True and doc["paths"] == [str(tmp_path / "m.onnx")] and doc["parity"]["rows"]


def test_align_json(tmp_path, make_image) -> None:
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.jpg").write_bytes(make_image(size=(112, 112)))
    template = "38.29 51.70 73.53 51.50 56.03 71.74 41.55 92.37 70.73 92.20"
    (tmp_path / "lmk.txt").write_text(f"a.jpg {template}\n")
    doc = _json(["align", str(tmp_path / "in"), str(tmp_path / "out"), "--landmarks",
                 str(tmp_path / "lmk.txt"),
                 "-q", "--json"])
    assert (doc["images"], doc["faces"], doc["no_face"]) == (1, 1, 0)
    assert doc["faces_csv"] == str(tmp_path / "out" / "faces.csv")


def test_summaries_are_plural_aware(tmp_path, make_image) -> None:
    from fqtool.cli.console import plural

    assert (plural(1, "image"), plural(2, "image"), plural(1, "identity", "identities"),
            plural(3, "identity", "identities")) == ("1 image", "2 images", "1 identity", "3 identities")
    (tmp_path / "one" / "p").mkdir(parents=True)
    (tmp_path / "one" / "p" / "a.jpg").write_bytes(make_image())
    result = runner.invoke(app, ["make-list", str(tmp_path / "one"), "-o", str(tmp_path / "l.txt")])
    assert result.exit_code == 0 and "listed 1 image of 1 identity;" in result.stdout
