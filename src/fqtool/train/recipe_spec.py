"""The one table of training recipes: what each ``train-*`` command trains and with which defaults.

A :class:`RecipeSpec` names its task builder (imported on demand, so this module stays torch-free and the
CLI builds its help from it), the losses it may train with (settings, ranges and focal γ come from
:data:`fqtool.losses.registry.LOSSES`), its paper defaults, the options only it takes, what it requires and
the command's help. The configuration (:mod:`fqtool.train.config`), the task builder
(:func:`fqtool.train.recipes.build_task`) and the CLI (each ``train-<name>`` command is registered from
:data:`RECIPES`) read nothing else. Adding a recipe: one entry here plus its task function.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from fqtool.errors import FqtoolError
from fqtool.losses.registry import LOSSES, loss_options


@dataclass(frozen=True)
class RecipeSpec:
    """A training recipe.

    ``task`` is ``"module:function"``, ``function(cfg, num_classes, device) -> Task``. ``losses``: the
    ``--loss`` choices, the first is the default. ``defaults``: the paper's settings (configuration field →
    value; never a loss setting: those belong to the loss). ``extra_options``: configuration fields only
    this command takes (the CLI declares their flags). ``required``: field → the message when it is unset.
    ``focal_loss``: the loss whose focal γ every loss of this recipe trains with (None: each its own).
    ``doc``: the command's help (first line = summary).
    """

    name: str
    task: str
    losses: tuple[str, ...]
    doc: str
    defaults: Mapping[str, Any] = field(default_factory=dict)
    extra_options: tuple[str, ...] = ()
    required: Mapping[str, str] = field(default_factory=dict)
    focal_loss: str | None = None

    def __post_init__(self) -> None:
        unknown = [loss for loss in (*self.losses, self.focal_loss or self.losses[0]) if loss not in LOSSES]
        if unknown:
            raise ValueError(f"recipe {self.name}: unknown loss {unknown[0]!r}")
        owned = set(loss_options()) | {"loss", "focal_gamma"}
        if owned & set(self.defaults):
            raise ValueError(f"recipe {self.name}: {sorted(owned & set(self.defaults))} are the loss's "
                             "settings (fqtool.losses.registry), not the recipe's")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))
        object.__setattr__(self, "required", MappingProxyType(dict(self.required)))

    @property
    def command(self) -> str:
        return f"train-{self.name}"

    @property
    def default_loss(self) -> str:
        return self.losses[0]

    def focal_gamma(self, loss: str) -> float:
        """γ of the focal loss when nothing sets ``--focal-gamma``: a loss's ``LossSpec.focal_gamma``."""
        return LOSSES[self.focal_loss or loss].focal_gamma

    def task_builder(self) -> Callable[..., Any]:
        module, _, name = self.task.partition(":")
        return getattr(importlib.import_module(module), name)


_TASKS = "fqtool.train.recipes"

#: Every recipe, in the order ``fqtool --help`` lists their commands. Defaults: MagFace: run.sh of
#: IrvingMeng/MagFace; EQFace: config.py of deepcam-cn/FaceQuality; CR-FIQA: config.py / train_cr_fiqa.py
#: of fdbtrs/CR-FIQA (CASIA-WebFace; its lr drops "at 20, 28, 32" with ``m − 1 <= epoch``, i.e. after 19,
#: 27, 31 epochs).
RECIPES: dict[str, RecipeSpec] = {
    spec.name: spec
    for spec in (
        RecipeSpec(
            "feature", f"{_TASKS}:feature_task", ("arcface", "cosface", "combined", "eqface"),
            """Train a recognition backbone (EQFace stage 1), or stage 3 with --quality-weights.

            Defaults follow EQFace: ArcFace s=64 m=0.5 with focal loss γ=2, SGD lr 0.05, cosine schedule with
            1 warm-up epoch, wd 5e-4 (0 on the class centres), iresnet100. --loss cosface or combined (m1, m2,
            m3) train the other arcface_torch margins. The class centres are saved as head.safetensors for
            train-quality. See docs/train-feature.md.
            """,
            defaults={
                "arch": "iresnet100", "style": "eqface",
                "epochs": 10, "batch_size": 512, "lr": 0.05, "lr_schedule": "cosine", "warmup_epochs": 1.0,
                "min_lr": 1e-5, "momentum": 0.9, "weight_decay": 5e-4, "head_weight_decay": 0.0,
            },
            extra_options=("quality_weights",),
            focal_loss="eqface",  # EQFace stage 1 is ArcFace (GaussianFace without quality) + FocalLoss(γ=2)
        ),
        RecipeSpec(
            "quality", f"{_TASKS}:quality_task", ("eqface",),
            """Learn EQFace's quality head on a frozen stage-1 model (no quality labels needed).

            The stage-1 backbone stays frozen; a quality head and the stage-1 class centres are trained with
            the quality-weighted focal ArcFace loss (SGD lr 0.01, no weight decay). The output is the stage-1
            model with its quality head. See docs/train-quality.md.
            """,
            defaults={
                "epochs": 5, "batch_size": 512, "lr": 0.01, "lr_schedule": "cosine",
                "warmup_epochs": 0.0, "min_lr": 1e-5, "momentum": 0.9, "weight_decay": 0.0,
                "head_weight_decay": 0.0,
            },
            extra_options=("weights", "head_weights"),
            required={"weights": "train-quality needs --weights: the stage-1 model from train-feature"},
        ),
        RecipeSpec(
            "magface", f"{_TASKS}:magface_task", ("magface", "mag-cosface"),
            """Train a MagFace model: the embedding's magnitude becomes its quality.

            Defaults reproduce MagFace's run.sh: iresnet50, batch 512, SGD lr 0.1 (×0.1 at epochs 10, 18,
            22), 25 epochs, wd 5e-4, s=64, l_a 10, u_a 110, l_m 0.45, u_m 0.8, λ_g 35; --loss mag-cosface
            takes run_dist_cos.sh's l_m 0.35 and λ_g 150. Under torchrun it runs DDP with Partial FC. See
            docs/train-magface.md.
            """,
            defaults={
                "arch": "iresnet50",
                "epochs": 25, "batch_size": 512, "lr": 0.1, "lr_schedule": "step",
                "lr_steps": [10.0, 18.0, 22.0], "momentum": 0.9, "weight_decay": 5e-4,
            },
        ),
        RecipeSpec(
            "crfiqa", f"{_TASKS}:crfiqa_task", ("crfiqa",),
            """Train a CR-FIQA model from scratch: backbone + ArcFace + a quality regressor.

            The regressor qs = Linear(512, 1) on the embedding learns the certainty ratio CCS/NNCCS of each
            image (loss CE + α·SmoothL1, α 10, β 0.5; --cr-target paper for the paper's CCS/(NNCCS+1+ε)) and
            is saved as the quality head, so `score` uses it. Defaults follow fdbtrs/CR-FIQA on CASIA-WebFace:
            iresnet50 with dropout 0.4, ArcFace s=64 m=0.5, SGD lr 0.1 × global batch/512, batch 128 per
            process, 34 epochs (×0.1 after 19, 27, 31), wd 5e-4, gradient clip 5. See docs/train-crfiqa.md.
            """,
            defaults={
                "arch": "iresnet50", "style": "crfiqa", "dropout": 0.4,
                "epochs": 34, "batch_size": None, "batch_per_gpu": 128, "lr": 0.1, "lr_batch": 512,
                "lr_schedule": "step", "lr_steps": [19.0, 27.0, 31.0], "momentum": 0.9, "weight_decay": 5e-4,
                "clip_grad": 5.0,
            },
        ),
    )
}


def get_recipe(name: str) -> RecipeSpec:
    try:
        return RECIPES[name]
    except KeyError:
        raise FqtoolError(f"unknown recipe {name!r}; known: {', '.join(RECIPES)}") from None


__all__ = ["RECIPES", "RecipeSpec", "get_recipe"]
