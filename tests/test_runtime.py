"""Run-time choices shared by training and inference: one precision rule, one autocast."""

from __future__ import annotations

import pytest
import torch

from fqtool.errors import FqtoolError
from fqtool.eval.embed import embed_images
from fqtool.models import create_model
from fqtool.runtime import autocast, resolve_precision

CPU = torch.device("cpu")


def test_precision_rules() -> None:
    assert resolve_precision("auto", CPU) == "fp32"
    assert resolve_precision("bf16", CPU) == "bf16"
    assert resolve_precision("fp32", CPU) == "fp32"
    with pytest.raises(FqtoolError, match="fp16 needs CUDA"):
        resolve_precision("fp16", CPU)
    with pytest.raises(FqtoolError, match="unknown precision"):
        resolve_precision("fp8", CPU)


def test_embedding_uses_the_training_autocast_on_the_cpu() -> None:
    """``embed_images(precision="bf16")`` on the CPU computes exactly what a bf16 training step sees."""
    torch.manual_seed(0)
    model = create_model("iresnet_tiny").eval()
    images = torch.randint(0, 256, (4, 3, 112, 112), dtype=torch.uint8)
    with torch.no_grad():
        with autocast(CPU, "bf16"):
            bf16 = model(model.prepare(images))[0].float()
        fp32 = model(model.prepare(images))[0]
    out = embed_images(model, images, precision="bf16")
    torch.testing.assert_close(torch.from_numpy(out.embeddings), bf16, rtol=0, atol=0)
    assert not torch.allclose(bf16, fp32, rtol=0, atol=1e-6)  # bf16 really changed the numbers
    torch.testing.assert_close(torch.from_numpy(embed_images(model, images).embeddings), fp32)
