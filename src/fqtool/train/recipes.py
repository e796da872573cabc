"""The recipes' task builders, each a :class:`Task` for the one engine (which recipe uses which builder,
and with which losses and defaults: :data:`fqtool.train.recipe_spec.RECIPES`).

* ``magface``: backbone + MagFace head (magnitude-aware margin + regulariser); quality = ‖embedding‖.
* ``feature``: EQFace stage 1 (ArcFace/CosFace/combined + focal). With ``quality_weights`` it is
  EQFace stage 3: a frozen stage-2 model (stage-1 backbone + quality head) scores each batch, and a new
  backbone + head are trained with the quality-weighted ArcFace logits. The saved model pairs the new
  backbone with the stage-2 quality head, as EQFace's test scripts do.
* ``quality``: EQFace stage 2: the stage-1 backbone is frozen (eval, no grad); a new quality head and the
  stage-1 class head are trained with the quality-weighted focal loss, without any quality label.
* ``crfiqa``: CR-FIQA: backbone + regression head ``qs`` (on the BN-ed embedding) + CR-FIQA head, from
  scratch; the regression head learns each sample's certainty ratio and is the saved quality head.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from fqtool.errors import CheckpointError, FqtoolError
from fqtool.models import FaceModel, create_model
from fqtool.models.quality_head import QualityHead
from fqtool.train.config import TrainConfig, to_dict

#: ``forward(trainable_module_or_ddp, uint8 images on device, labels) -> (HeadOutput, quality (B,) | None)``
Forward = Callable[[nn.Module, torch.Tensor, torch.Tensor], tuple]


@dataclass
class Task:
    """What the engine trains. ``trainable`` is wrapped in DDP; ``head`` holds Partial FC shards."""

    model: FaceModel
    trainable: nn.Module
    head: nn.Module
    forward: Forward
    frozen: list[nn.Module] = field(default_factory=list)
    quality_is_head: bool = False

    def train_mode(self) -> None:
        """Training mode for what learns, eval mode for frozen parts (BatchNorm statistics stay put)."""
        self.trainable.train()
        self.head.train()
        for module in self.frozen:
            module.eval()


def head_kwargs(cfg: TrainConfig, kind: str) -> dict:
    """The margin's settings for ``build_head``: the configuration's values of the loss's options (unset ones
    take the registry's defaults)."""
    from fqtool.losses.registry import get_loss

    return get_loss(kind).margin_kwargs(to_dict(cfg))


def make_head(cfg: TrainConfig, kind: str, num_classes: int, embedding_size: int) -> nn.Module:
    from fqtool.losses import build_head

    try:
        return build_head(kind, num_classes=num_classes, embedding_size=embedding_size,
                          sample_rate=cfg.sample_rate, focal_gamma=cfg.focal_gamma, **head_kwargs(cfg, kind))
    except ValueError as exc:
        raise FqtoolError(f"cannot build the {kind} head: {exc}") from None


def init_head(head: nn.Module, seed: int, chunk: int = 65536) -> None:
    """Draw the class centres N(0, 0.01) from ``seed`` row by row over the *full* matrix and keep this
    rank's rows, so the initial head is the same for any number of processes."""
    from fqtool.losses import shard_slice
    from fqtool.losses.distributed import rank_and_world

    rank, world = rank_and_world()
    rows = shard_slice(head.num_classes, rank, world)
    gen = torch.Generator().manual_seed(seed + 7919)
    parts = []
    for start in range(0, rows.stop, chunk):
        block = torch.normal(0.0, 0.01, (min(chunk, head.num_classes - start), head.embedding_size),
                             generator=gen)
        lo, hi = max(rows.start - start, 0), min(rows.stop - start, block.shape[0])
        if hi > lo:
            parts.append(block[lo:hi])
    with torch.no_grad():
        head.weight.copy_(torch.cat(parts).to(head.weight.device))


def _new_model(cfg: TrainConfig) -> FaceModel:
    kwargs: dict = {"dropout": cfg.dropout}
    if cfg.embedding_size is not None:
        kwargs["embedding_size"] = cfg.embedding_size
    if cfg.style is not None:
        kwargs["style"] = cfg.style
    try:
        return create_model(cfg.arch, **kwargs)
    except TypeError as exc:
        raise FqtoolError(f"--arch {cfg.arch}: {exc}") from None


def _channels_last(x: torch.Tensor, enabled: bool) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if enabled else x


def _freeze(module: nn.Module) -> nn.Module:
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def magface_task(cfg: TrainConfig, num_classes: int, device: torch.device) -> Task:
    model = _new_model(cfg).to(device)
    head = make_head(cfg, cfg.loss, num_classes, model.embedding_size).to(device)
    init_head(head, cfg.seed)

    def forward(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        out = head(net(_channels_last(model.prepare(images), cfg.channels_last)), labels)
        return out, out.norms

    return Task(model=model, trainable=model.backbone, head=head, forward=forward)


def feature_task(cfg: TrainConfig, num_classes: int, device: torch.device) -> Task:
    if not cfg.quality_weights:
        return magface_task(cfg, num_classes, device)  # same wiring: backbone → margin head
    from fqtool.models.loading import load_face_model

    if cfg.loss not in ("arcface", "eqface"):
        raise FqtoolError("EQFace stage 3 (--quality-weights) trains the quality-weighted ArcFace; "
                          f"--loss {cfg.loss} cannot take a quality")
    scorer = load_face_model(cfg.quality_weights, device=device)
    if not isinstance(scorer.quality_head, QualityHead):  # EQFace's head, not CR-FIQA's regressor
        found = "a CR-FIQA regressor" if scorer.head_method else "no quality head"
        raise CheckpointError(f"has {found}, not an EQFace quality head; pass the train-quality output "
                              "(stage 2)", cfg.quality_weights)
    scorer.set_quality_method("head")
    _freeze(scorer)
    model = _new_model(cfg).to(device)
    _check_head_fits(cfg, scorer, model)
    model.quality_head = copy.deepcopy(scorer.quality_head)
    model.quality_method = "head"
    _freeze(model.quality_head)
    head = make_head(cfg, "eqface", num_classes, model.embedding_size).to(device)
    init_head(head, cfg.seed)

    def forward(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        with torch.no_grad():
            quality = scorer(_channels_last(scorer.prepare(images), cfg.channels_last))[1].float()
        out = head(net(_channels_last(model.prepare(images), cfg.channels_last)), labels, quality)
        return out, quality

    return Task(model=model, trainable=model.backbone, head=head, forward=forward,
                frozen=[scorer, model.quality_head], quality_is_head=True)


def _check_head_fits(cfg: TrainConfig, scorer: FaceModel, model: FaceModel) -> None:
    """Stage 3 saves the new backbone with the stage-2 quality head: refuse, before training, a backbone
    whose feature map the head cannot take (it would fail only when the finished run is calibrated)."""
    takes, gives = scorer.quality_head.qualtiy[0].in_features, model.backbone.feature_dim
    if takes != gives:
        raise CheckpointError(
            f"its quality head takes the {takes} features of {scorer.info.arch}, but --arch {cfg.arch} gives "
            f"{gives}; train stage 3 with --arch {scorer.info.arch}", cfg.quality_weights)


def stage1_head_state(cfg: TrainConfig) -> tuple[dict, Path]:
    """The stage-1 class centres and their file: ``--head-weights``, else ``head.safetensors`` or
    ``state/last.pt`` next to ``--weights``."""
    weights_dir = Path(cfg.weights).parent
    candidates = [Path(cfg.head_weights)] if cfg.head_weights else [
        weights_dir / "head.safetensors", weights_dir / "state" / "last.pt"]
    for path in candidates:
        if path.is_file():
            return _read_head(path), path
    raise FqtoolError(
        f"train-quality needs the stage-1 class head; none found at {', '.join(map(str, candidates))} "
        "(pass --head-weights, the head.safetensors written by train-feature)"
    )


def _read_head(path: Path) -> dict:
    """A class-head state from ``head.safetensors`` or a training state; any damage is one line."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(path))
        except Exception as exc:  # a damaged or foreign file is the user's to fix
            message = f"cannot read the class head ({exc.__class__.__name__}: {exc})"
            raise CheckpointError(message, path) from None
    else:
        from fqtool.train.state import load_state

        state = load_state(path).get("head", {})
    if not isinstance(state, dict) or not torch.is_tensor(state.get("weight")):
        raise CheckpointError("holds no class-head 'weight' (pass the head.safetensors written by "
                              "train-feature)", path)
    return state


def quality_task(cfg: TrainConfig, num_classes: int, device: torch.device) -> Task:
    from fqtool.models.loading import load_face_model

    base = load_face_model(cfg.weights, device=device)
    cfg.arch = base.info.arch  # the run trains on this backbone: banner and config.toml say so
    backbone = _freeze(base.backbone)
    quality_head = QualityHead(backbone.feature_dim).to(device)
    info = copy.deepcopy(base.info)
    info.calibration = None
    model = FaceModel(backbone, info, quality_head)
    head = make_head(cfg, "eqface", num_classes, model.embedding_size).to(device)
    state, head_path = stage1_head_state(cfg)
    try:
        head.load_full_state_dict({"weight": state["weight"]})
    except CheckpointError as exc:
        message = f"{exc} (the class head must come from stage 1 on this data)"
        raise CheckpointError(message, head_path) from None

    def forward(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        with torch.no_grad():
            x = _channels_last(model.prepare(images), cfg.channels_last)
            embedding, flat = backbone.forward_features(x)
        quality = net(flat.detach())
        out = head(embedding.float(), labels, quality)
        return out, quality.detach()

    return Task(model=model, trainable=quality_head, head=head, forward=forward, frozen=[backbone],
                quality_is_head=True)


class EmbeddingAndScore(nn.Module):
    """CR-FIQA's network: ``x -> (embedding, qs)`` with ``qs = Linear(E, 1)`` on the BN-ed embedding.

    One module, so DDP wraps both and the gradient clip covers both (as ``clip_grad_norm_(backbone)`` in
    CR-FIQA, whose ``qs`` lives inside the backbone). ``regressor`` is the saved quality head.
    """

    def __init__(self, backbone: nn.Module, regressor: nn.Module) -> None:
        super().__init__()
        self.backbone, self.regressor = backbone, regressor

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.backbone(x)
        return embedding, self.regressor.qs(embedding.float())[:, 0]


def crfiqa_task(cfg: TrainConfig, num_classes: int, device: torch.device) -> Task:
    from fqtool.models.quality_head import RegressionHead
    from fqtool.models.registry import get_spec

    if not get_spec(cfg.arch).name.startswith("iresnet"):
        raise FqtoolError(f"--arch {cfg.arch}: CR-FIQA trains iResNet backbones (its regression head reads "
                          "the embedding layers of an iResNet); use e.g. iresnet50, r100 or iresnet_tiny")
    model = _new_model(cfg)
    model.quality_head = RegressionHead(model.backbone, model.embedding_size)
    model.info.family = "crfiqa"
    model.set_quality_method("crfiqa")
    model.to(device)
    net = EmbeddingAndScore(model.backbone, model.quality_head)
    head = make_head(cfg, cfg.loss, num_classes, model.embedding_size).to(device)
    init_head(head, cfg.seed)

    def forward(net: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple:
        embedding, qs = net(_channels_last(model.prepare(images), cfg.channels_last))
        out = head(embedding, labels, qs)
        return out, qs.detach()

    return Task(model=model, trainable=net, head=head, forward=forward, quality_is_head=True)


def build_task(cfg: TrainConfig, num_classes: int, device: torch.device) -> Task:
    """The recipe's task, from its ``RecipeSpec.task`` builder."""
    from fqtool.train.recipe_spec import get_recipe

    return get_recipe(cfg.recipe).task_builder()(cfg, num_classes, device)
