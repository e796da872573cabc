"""Python API niceties: a float for one image, an optional progress bar (issue 26 item 5)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

import fqtool


@pytest.fixture(scope="module")
def model_and_faces(tmp_path_factory, make_image):
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    root = tmp_path_factory.mktemp("api")
    weights = save_checkpoint(create_model("iresnet_tiny"), root / "tiny.safetensors")
    faces = []
    for n in range(3):
        faces.append(root / f"{n}.jpg")
        faces[-1].write_bytes(make_image((50 * n, 90, 120)))
    return fqtool.load_model(weights, device="cpu"), faces


def test_quality_of_one_image_is_a_float(model_and_faces) -> None:
    model, faces = model_and_faces
    one = model.quality(faces[0])
    assert type(one) is float
    assert type(model.quality(Image.open(faces[0]))) is float
    assert type(model.quality(np.asarray(Image.open(faces[0])))) is float
    many = model.quality([faces[0]])
    assert isinstance(many, np.ndarray) and many.shape == (1,) and many[0] == pytest.approx(one, rel=1e-5)
    assert model.quality(faces).shape == (3,)


def test_score_progress_callback_and_bar(model_and_faces, capsys) -> None:
    model, faces = model_and_faces
    seen: list[int] = []
    model.score(faces, on_progress=seen.append, batch_size=2)
    assert sum(seen) == 3
    result = model.score(faces, progress=True, batch_size=2)
    assert len(result) == 3
