"""Shared test fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config, items) -> None:
    """``@pytest.mark.cuda`` tests run where CUDA exists and are skipped (with the reason) elsewhere."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA (torch.cuda.is_available() is false)")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True, scope="session")
def _cpu_threads() -> None:
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture(scope="session")
def mxnet_made() -> Path:
    """A small insightface-layout data set written by MXNet 1.9.1's own RecordIO writer."""
    return DATA / "mxnet-made"


@pytest.fixture(scope="session")
def make_image():
    """Factory: ``make_image(colour=(r, g, b), size=(h, w), fmt="JPEG", mode="RGB") -> bytes``, a small
    colour-plus-gradient image encoded with PIL."""
    import io

    import numpy as np
    from PIL import Image

    def make(colour=(120, 80, 60), size=(112, 112), fmt="JPEG", mode="RGB") -> bytes:
        h, w = size
        ramp = np.linspace(-20, 20, w)[None, :, None]
        arr = np.clip(np.array(colour, dtype=np.float64)[None, None, :] + ramp, 0, 255).astype(np.uint8)
        arr = np.broadcast_to(arr, (h, w, 3)).copy()
        buf = io.BytesIO()
        Image.fromarray(arr).convert(mode).save(buf, fmt, **({"quality": 95} if fmt == "JPEG" else {}))
        return buf.getvalue()

    return make


@pytest.fixture(scope="session")
def make_insightface_rec(make_image):
    """Factory: ``make_insightface_rec(folder, classes=3, per_class=2, label="pair"|"scalar",
    header_first=False, images=None) -> folder`` writes train.rec/.idx/property in the insightface
    layout (images 1..N, header record 0, identity records); ``images`` overrides the image bytes."""
    from fqtool.data.recordio import RecordIOWriter, pack_record

    def make(folder, classes=3, per_class=2, label="pair", header_first=False, images=None):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        n = classes * per_class
        images = images or [make_image((40 * (i // per_class) % 256, 100, 200 - i)) for i in range(n)]
        first = n + 1
        header = pack_record([float(first), float(first + classes)], b"")
        with RecordIOWriter(folder / "train.rec", folder / "train.idx") as w:
            if header_first:
                w.write(0, header)
            for i in range(n):
                c = float(i // per_class)
                w.write(i + 1, pack_record([c, 1.0] if label == "pair" else c, images[i], id=i + 1))
            if not header_first:
                w.write(0, header)
            for c in range(classes):
                span = [1.0 + c * per_class, 1.0 + (c + 1) * per_class]
                w.write(first + c, pack_record(span, b"", id=first + c))
        (folder / "property").write_text(f"{classes},112,112\n")
        return folder

    return make


@pytest.fixture(scope="session")
def tiny_rec(make_insightface_rec, tmp_path_factory) -> Path:
    """8 identities × 2 plain images in the insightface layout: enough for one-step training checks."""
    return make_insightface_rec(tmp_path_factory.mktemp("tiny-rec"), classes=8, per_class=2)


@pytest.fixture(scope="session")
def synthetic_dataset(tmp_path_factory) -> Path:
    """A small synthetic insightface-layout set, written once: train.rec/idx/property (24 ids × 24 images),
    val.bin (200 pairs of 10 held-out ids), degradations.csv, val_quality.csv."""
    from fqtool.data.synth import write_synthetic_dataset

    out = tmp_path_factory.mktemp("synthetic")
    write_synthetic_dataset(out, num_identities=24, images_per_identity=24, val_identities=10, val_pairs=200)
    return out


#: The MagFace run behind ``trained_tiny_checkpoint`` (iresnet_tiny, 128-d, CPU, deterministic).
TINY_MAGFACE = {"arch": "iresnet_tiny", "batch_size": 64, "epochs": 16, "lr": 0.1, "lr_steps": [10, 14],
                "workers": 0, "device": "cpu", "val_every": 0, "save_every": 0, "log_every": 9,
                "quiet": True, "calibration_images": 576}


@pytest.fixture(scope="session")
def trained_tiny_run(synthetic_dataset, tmp_path_factory) -> Path:
    """Output folder of a MagFace run of iresnet_tiny on ``synthetic_dataset`` (model.safetensors,
    head.safetensors, state/, metrics.jsonl...), trained once per session."""
    from fqtool.train.config import resolve_config
    from fqtool.train.engine import train

    out = tmp_path_factory.mktemp("tiny-magface")
    cfg = resolve_config("magface", data=str(synthetic_dataset), output=str(out), **TINY_MAGFACE)
    train(cfg)
    return out


@pytest.fixture(scope="session")
def trained_tiny_checkpoint(trained_tiny_run) -> Path:
    """A MagFace-trained iresnet_tiny checkpoint (.safetensors, with train-p1-p99 calibration)."""
    return trained_tiny_run / "model.safetensors"
