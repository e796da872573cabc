"""``verify IJBB IJBC`` under torchrun (2 Gloo processes on the CPU): every rank walks every set.

Before the fix, ranks other than 0 returned after the first set while rank 0 waited for them in the
second set's process group (a hang on NCCL, "connection refused" on Gloo)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from _ijb_fixture import write_ijb_release
from fqtool.models.checkpoint import save_checkpoint
from fqtool.models.registry import create_model

TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _run(cmd: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run ``cmd`` in its own process group; on a hang kill the whole group (torchrun's ranks too)."""
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"timed out after 120 s (hang): {err[-2000:]}")
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _env(tmp: Path) -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": path, "FQTOOL_DATA": str(tmp)}


@pytest.mark.slow
def test_verify_two_ijb_sets_under_torchrun_equals_one_process(tmp_path: Path) -> None:
    import torch

    release = tmp_path / "IJB_release"
    write_ijb_release(release, "IJBB", templates_per_id=2, impostors=20, seed=1)
    write_ijb_release(release, "IJBC", templates_per_id=2, impostors=30, seed=0)
    torch.manual_seed(0)
    weights = tmp_path / "tiny.safetensors"
    save_checkpoint(create_model("iresnet_tiny"), weights)

    def args(out: str) -> list[str]:
        return ["verify", "IJBB", "IJBC", "--data-dir", str(release), "-w", str(weights), "--device", "cpu",
                "-q", "--json", "--batch-size", "32", "--save-features", str(tmp_path / out / "f.npz")]

    one = _run([sys.executable, "-m", "fqtool", *args("one")], _env(tmp_path))
    assert one.returncode == 0, one.stderr
    two = _run([*TORCHRUN, "--standalone", "--nproc-per-node", "2", "-m", "fqtool", *args("two")],
               _env(tmp_path))
    assert two.returncode == 0, two.stderr[-3000:]
    expected = json.loads(one.stdout)["results"]
    assert [r["name"] for r in expected] == ["IJBB", "IJBC"]
    got = json.loads(two.stdout[two.stdout.index("{"):])["results"]
    assert got == expected
    for name in ("IJBB", "IJBC"):  # rank 0 saved both sets' features and removed the parts folders
        assert (tmp_path / "two" / f"f_{name}.npz").is_file()
        assert not (tmp_path / "two" / f"f_{name}.parts").exists()


def test_one_loader_serves_every_chunk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 22 item 11: the IJB loader (and its workers) is built once per set, not once per chunk; the
    batches stay inside their chunk, so the embeddings equal those of one big chunk."""
    import numpy as np
    import torch

    from fqtool.data.ijb import load_ijb
    from fqtool.eval import ijb_embed

    root = write_ijb_release(tmp_path / "IJB_release", "IJBB", templates_per_id=2, impostors=20, seed=1)
    meta = load_ijb(root)
    assert len(meta.images) > 2 * 40  # at least three chunks of 40
    torch.manual_seed(0)
    model = create_model("iresnet_tiny").eval()
    whole = ijb_embed.embed_ijb(model, meta, flip=True, batch_size=16, chunk=4096)
    built = []
    real = ijb_embed.DataLoader
    monkeypatch.setattr(ijb_embed, "DataLoader", lambda *a, **k: built.append(k) or real(*a, **k))
    chunked = ijb_embed.embed_ijb(model, meta, parts=tmp_path / "p", flip=True, batch_size=16, chunk=40)
    assert len(built) == 1 and all(len(rows) <= 16 for rows in built[0]["batch_sampler"])
    assert len(list((tmp_path / "p").glob("chunk_*.npz"))) == -(-len(meta.images) // 40)
    np.testing.assert_allclose(chunked.embeddings, whole.embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(chunked.embeddings_flip, whole.embeddings_flip, rtol=0, atol=1e-5)


def test_evaluation_defaults_and_torchrun_device() -> None:
    """Issue 22 items 11 and 9: workers and larger batches on CUDA only (the CPU keeps 64 and none, so its
    outputs stay as they were); under torchrun a plain ``cuda`` is this rank's GPU, not GPU 0."""
    import torch

    from fqtool.eval.benchmark import EmbedSettings, loader_defaults
    from fqtool.eval.ijb_embed import local_device
    from fqtool.runtime import loader_workers

    assert loader_defaults(torch.device("cpu")) == (64, 0)
    assert loader_defaults(torch.device("cuda", 0)) == (256, loader_workers(8))
    assert EmbedSettings(batch_size=32, workers=3).loader(torch.device("cuda")) == (32, 3)
    assert EmbedSettings(workers=0).loader(torch.device("cuda"))[1] == 0
    assert local_device(torch.device("cuda"), local_rank=1, world=2) == torch.device("cuda", 1)
    assert local_device(torch.device("cuda"), local_rank=0, world=1) == torch.device("cuda")
    assert local_device(torch.device("cpu"), local_rank=1, world=2) == torch.device("cpu")
