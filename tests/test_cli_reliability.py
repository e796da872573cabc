"""Issue 11 through the CLI: a full disk, an output that is a folder, bad features files, NaN, --opset,
--debug's exit code and onnxruntime's telemetry line; issue 18: ``verify`` against a hand-computed answer."""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from typer.testing import CliRunner

import fqtool
from fqtool import fsutil
from fqtool.cli.app import app
from fqtool.data.binfile import save_bin
from fqtool.errors import FqtoolError, OutputError
from fqtool.eval.erc import load_quality_csv
from fqtool.eval.features import FeatureSet, save_features
from fqtool.eval.verification import evaluate_verification
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.train.state import save_state

runner = CliRunner()
FACES = Path(__file__).parent / "data" / "faces"


def _fails(args: list[str], *needles: str) -> str:
    """Exit 2, no traceback, and one error line (after any warnings) that contains every needle."""
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert "Traceback" not in result.stderr
    assert [line for line in lines if not line.startswith("warning: ")] == lines[-1:], result.stderr
    for needle in needles:
        assert needle in lines[-1], lines[-1]
    return lines[-1]


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny checkpoint, a folder of four faces, a 4-pair .bin and a features file."""
    root = tmp_path_factory.mktemp("reliability")
    torch.manual_seed(0)
    save_checkpoint(create_model("iresnet_tiny"), root / "tiny.safetensors")
    faces = root / "faces"
    faces.mkdir()
    images = sorted(FACES.glob("*.jpg"))[:8]
    for path in images[:4]:
        shutil.copy(path, faces / path.name)
    save_bin(root / "pairs.bin", [p.read_bytes() for p in images], [True, False, True, False])
    rng = np.random.default_rng(0)
    same = np.array([1, 0, 1, 0], bool)
    save_features(root / "feats.npz", FeatureSet("feats", rng.normal(size=(8, 4)), same, rng.random(8)))
    return root


@pytest.fixture
def disk_full_for(monkeypatch: pytest.MonkeyPatch):
    """``disk_full_for(names)``: atomic writes of files with those names (all when None) go to /dev/full,
    where the kernel answers ENOSPC exactly as a full disk does."""
    if not os.path.exists("/dev/full"):
        pytest.skip("needs /dev/full (Linux)")
    # Modules that bind ``temp_file_for`` by name must be imported before the patch, or a first import
    # during a test would keep the patched function for the rest of the session.
    importlib.import_module("fqtool.data.recordio")
    real = fsutil.temp_file_for

    def install(names: set[str] | None = None) -> None:
        def on_full_disk(path):
            fd, tmp = real(path)
            if names is not None and Path(path).name not in names:
                return fd, tmp
            os.close(fd)
            tmp.unlink()
            tmp.symlink_to("/dev/full")
            return os.open(os.devnull, os.O_RDONLY), tmp

        monkeypatch.setattr(fsutil, "temp_file_for", on_full_disk)
        monkeypatch.setattr(os, "chmod", lambda *args, **kwargs: None)  # never change /dev/full itself

    return install


@pytest.fixture
def full_disk(disk_full_for) -> None:
    """Every atomic write fails as on a full disk."""
    disk_full_for(None)


# ------------------------------------------------------------------------------------------- full disk
def test_convert_weights_on_a_full_disk_keeps_the_previous_file(work: Path, tmp_path: Path,
                                                                 full_disk) -> None:
    out = tmp_path / "out.safetensors"
    out.write_bytes(b"previous checkpoint")
    _fails(["convert-weights", str(work / "tiny.safetensors"), str(out)], str(out), "No space left on device")
    assert out.read_bytes() == b"previous checkpoint"
    assert _leftovers(tmp_path) == []


def test_score_csv_on_a_full_disk(work: Path, tmp_path: Path, full_disk) -> None:
    csv = tmp_path / "q.csv"
    csv.write_text("old\n")
    args = ["score", str(work / "faces"), "-w", str(work / "tiny.safetensors"), "-o", str(csv), "--device",
            "cpu", "-j", "0", "-q"]
    _fails(args, str(csv), "No space left on device")
    assert csv.read_text() == "old\n" and _leftovers(tmp_path) == []


def test_verify_csv_and_save_features_on_a_full_disk(work: Path, tmp_path: Path, full_disk) -> None:
    csv = tmp_path / "v.csv"
    _fails(["verify", "--features", str(work / "feats.npz"), "--no-flip", "--csv", str(csv)],
           str(csv), "No space left on device")
    feats = tmp_path / "f.npz"
    args = ["verify", str(work / "pairs.bin"), "-w", str(work / "tiny.safetensors"), "--device", "cpu", "-q",
            "--save-features", str(feats)]
    _fails(args, str(feats), "No space left on device")
    assert not csv.exists() and not feats.exists() and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_export_on_a_full_disk(work: Path, tmp_path: Path, full_disk) -> None:
    out = tmp_path / "m.onnx"
    _fails(["export", str(work / "tiny.safetensors"), "-o", str(out), "--no-check"],
           str(out), "No space left on device")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_training_state_on_a_full_disk_keeps_the_last_good_state(tmp_path: Path, full_disk) -> None:
    last = tmp_path / "last.pt"
    last.write_bytes(b"last good state")
    with pytest.raises(OutputError, match="No space left on device") as caught:
        save_state(last, {"step": 3, "weights": torch.zeros(1000)})
    assert str(last) in str(caught.value)
    assert last.read_bytes() == b"last good state" and _leftovers(tmp_path) == []


@pytest.mark.slow
def test_training_on_a_full_disk_stops_with_one_line_and_keeps_the_last_state(
    synthetic_dataset: Path, tmp_path: Path, disk_full_for
) -> None:
    out = tmp_path / "run"
    common = ["train-magface", "--data", str(synthetic_dataset), "-o", str(out), "--arch", "iresnet_tiny",
              "-b", "16", "--epochs", "1", "--save-every", "2", "--workers", "0", "--device", "cpu",
              "--val-every", "0", "--quiet"]
    first = runner.invoke(app, [*common, "--max-steps", "2"])
    assert first.exit_code == 0, first.output
    last, model = out / "state" / "last.pt", out / "model.safetensors"
    before = last.read_bytes(), model.read_bytes()
    disk_full_for({"last.pt"})
    failed = runner.invoke(app, [*common, "--resume", "auto", "--max-steps", "4"])
    assert failed.exit_code == 2 and "Traceback" not in failed.stderr, failed.output
    error = failed.stderr.strip().splitlines()[-1]  # after the run's banner
    assert error.startswith(f"error: {last}: cannot write (No space left on device)"), failed.stderr
    assert (last.read_bytes(), model.read_bytes()) == before
    assert _leftovers(out / "state") == []


def test_a_disk_error_outside_the_atomic_writers_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                             work: Path) -> None:
    def no_space(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "train.txt"))

    monkeypatch.setattr("fqtool.data.lists.make_list", no_space)
    _fails(["make-list", str(work / "faces")], "train.txt", "No space left on device")


# -------------------------------------------------------------------------------- output that is a folder
def _never(*args, **kwargs):
    raise AssertionError("the work started before the output was checked")


@pytest.mark.parametrize(
    ("args", "heavy"),
    [
        (["score", "{faces}", "-w", "{w}", "-o", "{dir}"], "fqtool.eval.scoring.score_dataset"),
        (["verify", "--features", "{feats}", "--csv", "{dir}"], "fqtool.eval.benchmark.run_verify"),
        (["convert-weights", "{w}", "{dir}"], "fqtool.models.loading.load_face_model"),
        (["make-list", "{faces}", "-o", "{dir}"], "fqtool.data.lists.make_list"),
        (["export", "{w}", "-o", "{dir}"], "fqtool.models.loading.load_face_model"),
    ],
    ids=["score", "verify", "convert-weights", "make-list", "export"],
)
def test_an_output_that_is_a_folder_is_refused_before_work(
    args: list[str], heavy: str, work: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(heavy, _never)
    folder = tmp_path / "a_folder"
    folder.mkdir()
    values = {"faces": work / "faces", "w": work / "tiny.safetensors", "dir": folder,
              "feats": work / "feats.npz"}
    _fails([a.format(**values) for a in args], str(folder), "is a folder")
    assert list(folder.iterdir()) == []


# ------------------------------------------------------------------------------------ features files, NaN
def test_features_that_are_a_npy_are_one_line(tmp_path: Path) -> None:
    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((4, 8)))
    _fails(["verify", "--features", str(npy)], str(npy), ".npy")
    _fails(["erc-curve", "--features", str(npy)], str(npy), ".npy")


def test_features_with_a_nan_row_or_no_pairs_are_one_line(tmp_path: Path) -> None:
    emb = np.ones((8, 4))
    emb[5, 2] = np.nan
    bad = save_features(tmp_path / "nan.npz", FeatureSet("nan", emb, np.ones(4, bool), np.ones(8)))
    _fails(["verify", "--features", str(bad), "--no-flip"], str(bad), "NaN", "image 5")
    nothing = FeatureSet("empty", np.ones((0, 4)), np.ones(0, bool), np.ones(0))
    empty = save_features(tmp_path / "empty.npz", nothing)
    _fails(["verify", "--features", str(empty), "--no-flip"], str(empty), "no pairs")


def test_nan_embeddings_from_a_model_give_a_warning() -> None:
    emb = np.random.default_rng(0).normal(size=(8, 4))
    emb[3] = np.nan
    result = evaluate_verification(emb, np.array([1, 0, 1, 0], bool), folds=2, name="set")
    assert any("NaN" in w and "image 3" in w for w in result.warnings), result.warnings
    clean = evaluate_verification(np.nan_to_num(emb), np.array([1, 0, 1, 0], bool), folds=2, name="set")
    assert not any("NaN" in w for w in clean.warnings)


def test_no_pairs_names_the_set() -> None:
    with pytest.raises(FqtoolError, match="lfw: no pairs to evaluate"):
        evaluate_verification(np.ones((0, 4)), np.ones(0, bool), name="lfw")


def test_a_nan_quality_in_a_scores_csv_names_file_and_line(tmp_path: Path) -> None:
    scores = tmp_path / "q.csv"
    scores.write_text("index,quality\n0,0.5\n1,nan\n")
    with pytest.raises(FqtoolError, match=r"q\.csv: line 3: quality 'nan' is not a finite number"):
        load_quality_csv(scores, 2)


@pytest.mark.parametrize("pair", [("nan", "10"), ("0", "inf"), ("5", "5")])
def test_convert_weights_calibration_must_be_finite_and_ordered(pair, work: Path, tmp_path: Path) -> None:
    out = tmp_path / "c.safetensors"
    args = ["convert-weights", str(work / "tiny.safetensors"), str(out), "--calibration", *pair]
    _fails(args, "--calibration")
    assert not out.exists()


def test_export_opset_beyond_onnx_is_one_line_and_writes_nothing(work: Path, tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    _fails(["export", str(work / "tiny.safetensors"), "-o", str(out), "--opset", "99"], "--opset 99")
    assert not out.exists() and _leftovers(tmp_path) == []


def test_an_opset_the_exporter_cannot_reach_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """torch falls back to its own opset when conversion fails: that must not be written as success."""
    from fqtool.export import onnx as onnx_export

    class _Program:
        model_proto = onnx.helper.make_model(
            onnx.helper.make_graph([], "g", [], []), opset_imports=[onnx.helper.make_opsetid("", 18)]
        )

    monkeypatch.setattr(onnx_export, "_export", lambda graph, opset: _Program())
    graph = onnx_export._Graph("full", torch.nn.Identity(), torch.zeros(2, 3), ["embedding"])
    with pytest.raises(FqtoolError, match="--opset 21: .*stays at opset 18"):
        onnx_export._to_proto(graph, 21)


# ------------------------------------------------------------------------------------- exit codes, noise
def test_debug_prints_the_traceback_and_keeps_exit_code_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["--debug", "verify", "--features", str(tmp_path / "missing.npz")])
    assert result.exit_code == 2, result.output
    assert "Traceback" in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith("missing.npz: features file not found")


def test_onnxruntime_prints_nothing_when_home_is_not_writable(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.write_text("a file, so nothing can be created under HOME (even for root)")
    env = {k: v for k, v in os.environ.items() if k != "ORT_DISABLE_TELEMETRY"}
    env["HOME"] = str(home)
    env["PYTHONPATH"] = os.pathsep.join([str(Path(fqtool.__file__).parents[1]), env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "-c", "import fqtool.models.onnx_model"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


# ------------------------------------------------------------------------ issue 18: a known verify answer
def _pair_at(rng: np.random.Generator, squared_l2: float, norm: float) -> tuple[np.ndarray, np.ndarray]:
    """Two 8-D vectors of length ``norm`` whose unit vectors are ``squared_l2`` apart."""
    u, v = np.linalg.qr(rng.normal(size=(8, 2)))[0].T
    cos = 1.0 - squared_l2 / 2.0
    return norm * u, norm * (cos * u + np.sqrt(1.0 - cos**2) * v)


def test_verify_cli_gives_the_hand_computed_answer(tmp_path: Path) -> None:
    """40 pairs, 10 sequential folds of 4 (pairs 4k..4k+3 in fold k). Genuine pairs lie 0.505 apart and
    impostors 1.5 (squared L2 of the unit vectors), except: genuine pair 0 (fold 0) at 3.0, impostor pair
    13 (fold 3) at 0.2, genuine pair 22 (fold 5) at 0.945.

    Train splits that include fold 5 are best at any threshold in (0.945, 1.5]: the first of 0, 0.01,
    … is 0.95 (0.2 and 3.0 stay wrong whatever the threshold). Without fold 5 (testing fold 5) the first
    best is 0.51, which rejects pair 22. Folds 0, 3 and 5 score 3/4, the other seven 4/4: accuracy
    0.925, population std sqrt((3·0.75² + 7)/10 − 0.925²) = sqrt(0.013125), mean threshold
    (9·0.95 + 0.51)/10 = 0.906. A threshold tuned on the test fold, or accuracy over all pairs, differs."""
    rng = np.random.default_rng(7)
    issame = np.array([i % 2 == 0 for i in range(40)])
    distance = np.where(issame, 0.505, 1.5)
    distance[0], distance[13], distance[22] = 3.0, 0.2, 0.945
    assert issame[0] and not issame[13] and issame[22]
    rows = [v for d in distance for v in _pair_at(rng, d, norm=2.5)]
    feats = save_features(tmp_path / "known.npz", FeatureSet("known", np.array(rows), issame, np.ones(80)))
    csv = tmp_path / "known.csv"
    args = ["verify", "--features", str(feats), "--no-flip", "--json", "--csv", str(csv)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    res = json.loads(result.stdout)["results"][0]
    assert res["fold_accuracies"] == pytest.approx([0.75, 1, 1, 0.75, 1, 0.75, 1, 1, 1, 1])
    assert res["fold_thresholds"] == pytest.approx([0.95] * 5 + [0.51] + [0.95] * 4)
    assert res["accuracy"] == pytest.approx(0.925)
    assert res["accuracy_std"] == pytest.approx(np.sqrt(0.013125))
    assert res["threshold"] == pytest.approx(0.906)
    assert res["xnorm"] == pytest.approx(2.5)
    assert res["num_genuine"] == 20 and res["num_impostor"] == 20
    assert "0.925000,0.114564,0.9060,2.500000" in csv.read_text()


def test_score_with_a_nan_model_warns_naming_the_weights(work: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny")
    with torch.no_grad():
        next(model.parameters()).fill_(float("nan"))
    weights = save_checkpoint(model, tmp_path / "nan.safetensors")
    csv = tmp_path / "q.csv"
    args = ["score", str(work / "faces"), "-w", str(weights), "-o", str(csv), "--device", "cpu", "-q",
            "-j", "0"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    warning = [line for line in result.stderr.splitlines() if "NaN" in line]
    assert len(warning) == 1 and str(weights) in warning[0] and "4 of 4 images" in warning[0], result.stderr
