"""What a training run must refuse or survive (issue 11): numbers that cannot train, divergence, NaN
weights, a reused output folder, a kill -9 leftover, a wrong ``--head-weights``. Every failure is one
line and exit 2, and no NaN is ever saved as a model."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.train import engine
from fqtool.train.state import load_state

CLI_FAST = ["--arch", "iresnet_tiny", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--val-every",
            "0", "--quiet", "--log-every", "1"]


def _cli(*args: str):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(result, *needles: str) -> None:
    """Exit 2, an ``error:`` line holding every needle, no traceback."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    for needle in needles:
        assert needle in result.output.replace("\n", ""), (needle, result.output)


def _all_finite(tensors: dict) -> bool:
    floats = [t for t in tensors.values() if torch.is_tensor(t) and t.is_floating_point()]
    return all(torch.isfinite(t).all() for t in floats)


def _strict_json_lines(path) -> list[dict]:
    def refuse(name: str):
        raise ValueError(f"{name} is not JSON")

    return [json.loads(line, parse_constant=refuse) for line in path.read_text().splitlines()]


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["1e6", "1e30"])
def test_divergence_hits_the_nan_guard_not_the_logger(tiny_rec, tmp_path, lr) -> None:
    """Before: TensorBoard's histogram raised 'The histogram is empty' on the NaN norms (exit 1)."""
    out = tmp_path / "run"
    result = _cli("train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "2", "--lr", lr,
                  "--save-every", "1", "--max-bad-steps", "2")
    _one_line_error(result, "consecutive steps had a NaN/inf loss")
    assert not (out / "model.safetensors").exists()
    assert _all_finite(load_state(out / "state" / "last.pt")["model"])
    records = _strict_json_lines(out / "metrics.jsonl")  # NaN is logged as null, never as bare NaN
    assert any(r.get("loss/total", 0.0) is None for r in records)


@pytest.mark.slow
def test_weights_turning_nan_are_never_saved_as_a_model(monkeypatch, tiny_rec, tmp_path) -> None:
    """A step whose loss and gradients are finite can still leave NaN weights (e.g. a NaN momentum):
    no state/last.pt and no model.safetensors with them; exit 2 naming the last good state."""
    make = engine.Trainer._make_optimizer

    def poisoning_optimizer(self):
        optimizer = make(self)
        param = optimizer.param_groups[0]["params"][0]

        def poison(opt, args, kwargs) -> None:
            if self.step == 2:  # the third step (self.step counts finished steps)
                with torch.no_grad():
                    param.fill_(math.nan)

        optimizer.register_step_post_hook(poison)
        return optimizer

    monkeypatch.setattr(engine.Trainer, "_make_optimizer", poisoning_optimizer)
    out = tmp_path / "run"
    result = _cli("train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1", "--lr", "0.01",
                  "--save-every", "1", "--max-steps", "3")
    kept = out / "state" / "last.pt"
    _one_line_error(result, "NaN/inf values in", f"the last good state is {kept} (step 2)")
    assert not (out / "model.safetensors").exists() and not (out / "head.safetensors").exists()
    state = load_state(out / "state" / "last.pt")
    assert state["step"] == 2 and _all_finite(state["model"])


@pytest.mark.slow
def test_a_non_finite_calibration_is_never_saved(monkeypatch, tiny_rec, tmp_path) -> None:
    monkeypatch.setattr(engine.Trainer, "_calibrate", lambda self: SimpleNamespace(low=math.nan, high=1.0))
    out = tmp_path / "run"
    result = _cli("train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1",
                  "--max-steps", "1")
    _one_line_error(result, "NaN/inf values in 1 of 2 tensors (e.g. calibration.low)")
    assert not (out / "model.safetensors").exists() and not (out / "head.safetensors").exists()


@pytest.mark.parametrize(("option", "value", "needle"), [
    ("--momentum", "nan", "--momentum must be a finite number"),
    ("--weight-decay", "nan", "--weight-decay must be a finite number"),
    ("--lr", "inf", "--lr must be a finite number"),
    ("--batch-size", "1", "BatchNorm needs at least 2"),
    ("--momentum", "1.5", "--momentum must be in [0, 1)"),
])
def test_bad_numbers_are_refused_before_training(tiny_rec, tmp_path, option, value, needle) -> None:
    result = _cli("train-magface", "--data", tiny_rec, "-o", tmp_path / "run", *CLI_FAST, option, value)
    _one_line_error(result, needle)
    assert not (tmp_path / "run").exists()


def test_bad_numbers_in_a_config_file_name_the_file(tiny_rec, tmp_path) -> None:
    config = tmp_path / "run.toml"
    config.write_text("[optim]\nmomentum = nan\n", encoding="utf-8")
    _one_line_error(_cli("train-magface", "--data", tiny_rec, "-c", config, *CLI_FAST),
                    "--momentum must be a finite number", f"(from {config})")
    config.write_text("batch_size = true\n", encoding="utf-8")  # TOML true must not become a batch of 1
    _one_line_error(_cli("train-magface", "--data", tiny_rec, "-c", config, "--arch", "iresnet_tiny"),
                    "'batch_size': True is not a valid int")


@pytest.mark.slow
def test_a_finished_run_folder_needs_resume_or_overwrite(tiny_rec, tmp_path) -> None:
    out = tmp_path / "run"
    common = ["train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1", "--max-steps", "1"]
    assert _cli(*common).exit_code == 0
    before = {p.name: p.read_bytes() for p in (out / "config.toml", out / "model.safetensors")}
    again = _cli(*common, "--lr", "0.5")
    _one_line_error(again, "output folder is not empty", "--resume auto", "--overwrite")
    assert before == {p.name: p.read_bytes() for p in (out / "config.toml", out / "model.safetensors")}
    _one_line_error(_cli(*common, "--resume", "auto", "--overwrite"), "pass one of them")
    assert _cli(*common, "--lr", "0.5", "--overwrite").exit_code == 0
    assert "lr = 0.5" in (out / "config.toml").read_text()
    assert [r["step"] for r in _strict_json_lines(out / "metrics.jsonl") if "loss/total" in r] == [1]


def test_a_failed_start_leaves_nothing_that_blocks_the_next_run(tiny_rec, tmp_path) -> None:
    """A start that fails while setting up (here: a damaged --val set) writes nothing into the output
    folder, so the corrected command runs without --overwrite."""
    out = tmp_path / "run"
    damaged = tmp_path / "lfw.bin"
    damaged.write_bytes(b"not a pickle")
    common = ["train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1", "--max-steps", "1"]
    _one_line_error(_cli(*common, "--val", damaged), "lfw.bin")
    assert not out.exists() or list(out.iterdir()) == []
    assert _cli(*common).exit_code == 0
    assert (out / "model.safetensors").is_file()


@pytest.mark.slow
def test_resume_removes_temporary_files_left_by_kill_9(tiny_rec, tmp_path) -> None:
    """kill -9 during an atomic save leaves ``state/.last.pt.XXXX.tmp`` behind; the next run drops it."""
    out = tmp_path / "run"
    common = ["train-magface", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1", "--save-every", "1"]
    assert _cli(*common, "--max-steps", "1").exit_code == 0
    leftover = out / "state" / ".last.pt.k9x2a1.tmp"
    leftover.write_bytes(b"half a state")
    assert _cli(*common, "--max-steps", "2", "--resume", "auto").exit_code == 0
    assert not leftover.exists() and load_state(out / "state" / "last.pt")["step"] == 2


@pytest.fixture(scope="module")
def stage1(tiny_rec, tmp_path_factory):
    out = tmp_path_factory.mktemp("stage1")
    result = _cli("train-feature", "--data", tiny_rec, "-o", out, *CLI_FAST, "--epochs", "1",
                  "--max-steps", "1")
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.slow
def test_wrong_head_weights_are_one_line(stage1, tiny_rec, tmp_path) -> None:
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 64)
    no_weight = tmp_path / "no-weight.safetensors"
    save_file({"centres": torch.zeros(8, 128)}, str(no_weight))
    wrong_shape = tmp_path / "wrong-shape.safetensors"
    save_file({"weight": torch.zeros(5, 128)}, str(wrong_shape))
    model = stage1 / "model.safetensors"
    assert load_file(str(stage1 / "head.safetensors"))["weight"].shape == (8, 128)
    for path, needle in [(garbage, "cannot read the class head"), (no_weight, "holds no class-head 'weight'"),
                         (wrong_shape, "head weight is (5, 128)"), (model, "holds no class-head 'weight'")]:
        result = _cli("train-quality", "--data", tiny_rec, "-w", model, "--head-weights", path,
                      "-o", tmp_path / path.stem, *CLI_FAST, "--epochs", "1", "--max-steps", "1")
        _one_line_error(result, str(path), needle)


@pytest.mark.slow
def test_symlink_loops_in_a_training_folder_are_skipped_and_listed(make_image, tmp_path) -> None:
    """Before: os.walk / stat on a looping link ended the run with a traceback."""
    root = tmp_path / "faces"
    for identity in range(4):
        folder = root / f"id{identity}"
        folder.mkdir(parents=True)
        for i in range(2):
            (folder / f"{i}.jpg").write_bytes(make_image((60 * identity, 90, 40 * i)))
    (root / "id0" / "self.jpg").symlink_to("self.jpg")  # a link to itself
    (root / "id1" / "back").symlink_to(root)  # a folder link back up the tree
    out = tmp_path / "run"
    result = _cli("train-magface", "--data", root, "-o", out, *CLI_FAST, "--epochs", "1", "--max-steps", "1")
    assert result.exit_code == 0, (result.output, result.exception)
    said = result.output.replace("\n", " ")
    assert "symbolic links that loop or point nowhere" in said and "self.jpg" in said, result.output
    assert (out / "model.safetensors").is_file()
