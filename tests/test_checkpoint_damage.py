"""Damaged or hostile weights files: one line naming the file, never a traceback, never torch's advice to
turn ``weights_only`` off; finished files get normal permissions (issue 11, the ``models`` side)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from fqtool.errors import CheckpointError
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.loading import load_model
from fqtool.train.state import load_state

FACE = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))[0]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", quality_head=True).eval()
    return save_checkpoint(model, tmp_path_factory.mktemp("ckpt") / "tiny.safetensors")


def _with_metadata(source: Path, out: Path, change) -> Path:
    tensors = load_file(str(source))
    with safe_open(str(source), "pt") as handle:
        metadata = dict(handle.metadata())
    meta = json.loads(metadata["fqtool"])
    change(meta)
    save_file(tensors, str(out), metadata={**metadata, "fqtool": json.dumps(meta)})
    return out


METADATA_DAMAGE = {
    "size": (lambda m: m["preprocess"].update(size=[0, -5]), "size must be two positive integers"),
    "color": (lambda m: m["preprocess"].update(color="XYZ"), "color must be RGB or BGR"),
    "mean": (lambda m: m["preprocess"].update(mean=[1, 2]), "mean must be three finite numbers"),
    "std": (lambda m: m["preprocess"].update(std=[0, 1, 1]), "std must be positive"),
    "arch": (lambda m: m.update(arch="resnet9000"), "unknown architecture 'resnet9000'"),
    "arch_kwargs": (lambda m: m.update(arch_kwargs={"embedding_size": -3}), "cannot rebuild iresnet_tiny"),
    "calibration": (lambda m: m.update(calibration={"low": "a", "high": 1}), "calibration low/high"),
    "nan calibration": (lambda m: m.update(calibration={"low": float("nan"), "high": 1}), "calibration"),
    "version": (lambda m: m.update(format_version="x"), "format_version"),
}


@pytest.mark.parametrize("case", sorted(METADATA_DAMAGE))
def test_damaged_metadata_is_one_line_naming_the_file(checkpoint: Path, tmp_path: Path, case: str) -> None:
    change, expected = METADATA_DAMAGE[case]
    path = _with_metadata(checkpoint, tmp_path / "damaged.safetensors", change)
    with pytest.raises(CheckpointError) as info:
        load_model(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ") and expected in message and "\n" not in message


def _hostile_files(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        "protocol 4 pickle": pickle.dumps({"weight": 1}, protocol=4),  # torch warns about the protocol
        "pickled function": pickle.dumps({"f": print}, protocol=2),
        "random bytes": bytes(range(256)) * 4,
    }
    paths = {}
    for name, data in files.items():
        paths[name] = folder / f"{name.replace(' ', '_')}.pth"
        paths[name].write_bytes(data)
    zipped = folder / "truncated.pth"
    torch.save({"weight": torch.ones(64, 64)}, zipped)
    zipped.write_bytes(zipped.read_bytes()[:300])
    paths["truncated zip"] = zipped
    return paths


def test_bad_resume_state_is_one_quiet_line(tmp_path: Path) -> None:
    for name, path in _hostile_files(tmp_path).items():
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with pytest.raises(CheckpointError) as info:
                load_state(path)
        message = str(info.value)
        assert caught == [], name
        assert message.startswith(f"{path}: ") and "\n" not in message, name
        assert "weights_only=False" not in message and "weights_only` set to `False" not in message, name


@pytest.mark.parametrize("name", ["protocol 4 pickle", "pickled function"])
def test_legacy_pickle_weights_print_one_line(tmp_path: Path, name: str) -> None:
    """Through the real CLI process: stderr is exactly one line (no torch warning), exit 2."""
    path = _hostile_files(tmp_path / "files")[name]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    command = ["score", str(FACE), "--weights", str(path), "-o", str(tmp_path / "q.csv")]
    run = subprocess.run(
        [sys.executable, "-m", "fqtool", *command], capture_output=True, text=True, env=env, timeout=300
    )
    lines = run.stderr.strip().splitlines()
    assert run.returncode == 2 and len(lines) == 1, run.stderr
    assert str(path) in lines[0] and "weights_only=False" not in lines[0]


def test_safetensors_get_normal_permissions(tmp_path: Path) -> None:
    """The same permissions as any file this process writes (0666 minus the umask), not mkstemp's 0600."""
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    path = save_checkpoint(create_model("iresnet_tiny"), tmp_path / "m.safetensors")
    assert path.stat().st_mode & 0o777 == plain.stat().st_mode & 0o777
