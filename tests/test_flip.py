"""The one flip (``embed_images(flip=True)``) against a flip done independently: numpy on decoded pixels."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from fqtool.eval.embed import embed_images
from fqtool.eval.features import extract_features
from fqtool.models import create_model
from fqtool.models.preprocess import MAGFACE

FACES = sorted((Path(__file__).parent / "data" / "faces").glob("*.jpg"))[:8]


def _decoded() -> np.ndarray:
    """The test faces decoded by PIL: N×H×W×3 RGB uint8 (no fqtool code involved)."""
    return np.stack([np.asarray(Image.open(path).convert("RGB")) for path in FACES])


def _as_batch(pixels: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(pixels.transpose(0, 3, 1, 2)))


@pytest.mark.parametrize("preprocess", [None, MAGFACE], ids=["rgb", "bgr"])
def test_flip_is_a_left_right_mirror_of_the_pixels(preprocess) -> None:
    torch.manual_seed(0)
    model = create_model("iresnet_tiny", preprocess=preprocess).eval()
    pixels = _decoded()
    assert pixels.shape[1:] == (112, 112, 3) and len(pixels) == 8
    mirrored = pixels[:, :, ::-1, :]  # numpy: reverse the width axis of H×W×3 images
    plain_ref = embed_images(model, _as_batch(pixels), batch_size=4).embeddings
    mirror_ref = embed_images(model, _as_batch(mirrored), batch_size=4).embeddings
    assert not np.allclose(plain_ref, mirror_ref, atol=1e-3)  # faces are not symmetric: a real check

    out = embed_images(model, _as_batch(pixels), batch_size=4, flip=True)
    np.testing.assert_allclose(out.unflipped, plain_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.flipped, mirror_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(out.embeddings, plain_ref + mirror_ref, rtol=0, atol=2e-6)
    np.testing.assert_allclose(out.flip_norms, np.linalg.norm(mirror_ref, axis=1), rtol=1e-6)

    features = extract_features(model, _as_batch(pixels), np.zeros(4, bool), name="faces", batch_size=4)
    np.testing.assert_allclose(features.embeddings, plain_ref, rtol=0, atol=1e-6)
    np.testing.assert_allclose(features.embeddings_flip, mirror_ref, rtol=0, atol=1e-6)


def test_progress_counts_both_passes() -> None:
    model = create_model("iresnet_tiny").eval()
    seen: list[int] = []
    embed_images(model, _as_batch(_decoded()[:6]), batch_size=4, flip=True, on_batch=seen.append)
    assert seen == [8, 4]
