"""Model helpers shared by the checkpoint and importer tests."""

from __future__ import annotations

import torch

from fqtool.models import FaceModel, create_model


def random_bn_model(arch: str = "iresnet_tiny", **kwargs) -> FaceModel:
    """An fqtool model with random weights *and* random BatchNorm statistics and affine terms, so that
    eps, running stats and γ/β all matter when outputs are compared after a save/load or an import."""
    torch.manual_seed(0)
    model = create_model(arch, **kwargs).eval()
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm1d | torch.nn.BatchNorm2d):
            module.running_mean.uniform_(-0.2, 0.2)
            module.running_var.uniform_(0.5, 1.5)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    return model
