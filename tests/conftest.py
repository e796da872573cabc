"""Shared test fixtures. Tests make their own data; nothing is downloaded."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

DATA = Path(__file__).parent / "data"


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
