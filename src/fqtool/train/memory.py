"""How much GPU memory one training step needs, estimated before the first step.

Three parts, per process:

* **activations**: what autograd keeps for backward, per image, for the backbone. Measured with
  saved-tensor hooks (:func:`measure_activation_bytes`: one forward + loss at two tiny batch sizes, the
  difference is the per-image part), tabulated in :data:`ACTIVATION_BYTES` for every registered
  architecture at 112×112 (default style) and measured on the CPU on the spot for other sizes or archs;
* **head**: the (global batch × local classes) fp32 tensors of the classifier: the ones it keeps for
  backward plus the logits' gradient and one temporary (:data:`HEAD_BYTES_PER_LOGIT`);
* **weights**: the backbone's and the class centres' fp32 weights, gradients and SGD momentum (+ DDP's
  gradient buckets for the backbone);
and nothing for the cuDNN workspace and the allocator's fragmentation: the check leaves 10 % of the GPU free.

``torch.compile`` fuses BatchNorm + PReLU and usually keeps less; channels_last keeps the same bytes.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from torch import nn

GIB = 2**30

#: Activation bytes kept for backward per 112×112 image, per precision ("bf16" also stands for fp16: same
#: element size). Measured on the CPU (torch 2.14) by ``python benchmarks/memory_table.py``.
ACTIVATION_BYTES: dict[tuple[str, str], int] = {
    ("iresnet18", "fp32"): 46_115_840, ("iresnet18", "bf16"): 23_110_144,
    ("iresnet50", "fp32"): 70_802_432, ("iresnet50", "bf16"): 35_453_440,
    ("iresnet100", "fp32"): 111_746_048, ("iresnet100", "bf16"): 55_925_248,
    ("iresnet_tiny", "fp32"): 4_767_744, ("iresnet_tiny", "bf16"): 2_390_656,
    ("iresnet34", "fp32"): 61_168_640, ("iresnet34", "bf16"): 30_636_544,
    ("iresnet152", "fp32"): 106_929_152, ("iresnet152", "bf16"): 53_516_800,
    ("iresnet200", "fp32"): 195_439_616, ("iresnet200", "bf16"): 97_772_032,
    ("mobilefacenet", "fp32"): 45_216_768, ("mobilefacenet", "bf16"): 22_609_408,
    ("mobilefacenet_large", "fp32"): 113_556_480, ("mobilefacenet_large", "bf16"): 56_779_264,
}

#: Bytes per (sample × local class) logit: the fp32 B×C tensors the margin head keeps for backward
#: (34, measured with saved-tensor hooks on the ArcFace and MagFace heads by benchmarks/memory_table.py)
#: + the logits' gradient and one temporary (4 + 4).
HEAD_BYTES_PER_LOGIT = 42

#: Fraction of the GPU's memory the estimate may use (the rest: CUDA context, cuDNN workspace, fragments).
USABLE_FRACTION = 0.9


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes per process of one training step, split by what holds them."""

    activations: int
    head: int
    weights: int
    per_image: int  # bytes one more image per process adds (activations + its rows of the head)

    @property
    def total(self) -> int:
        return self.activations + self.head + self.weights

    def describe(self) -> str:
        return (f"≈ {self.total / GIB:.1f} GiB (activations {self.activations / GIB:.1f}, head "
                f"{self.head / GIB:.1f}, weights {self.weights / GIB:.1f})")


def _table_precision(precision: str) -> str:
    return "fp32" if precision == "fp32" else "bf16"


def measure_activation_bytes(model: nn.Module, precision: str = "fp32", size: tuple[int, int] = (112, 112),
                             batches: tuple[int, int] = (2, 4)) -> int:
    """Bytes autograd keeps per image for ``model`` (a backbone ``x -> embedding``), measured on the CPU.

    Runs forward + a scalar loss at two batch sizes under saved-tensor hooks and returns the difference
    per image, so what does not grow with the batch (weights, their autocast copies) cancels out. Each
    storage is counted once. ``model`` is used as it is (train mode recommended; BatchNorm statistics
    move: pass a throw-away copy).
    """
    import torch

    from fqtool.runtime import autocast

    params = {p.untyped_storage().data_ptr() for p in model.parameters()}

    def kept(batch: int) -> int:
        seen: dict[int, int] = {}

        def pack(t: torch.Tensor) -> torch.Tensor:
            storage = t.untyped_storage()
            if storage.data_ptr() not in params:
                seen[storage.data_ptr()] = storage.nbytes()
            return t

        x = torch.randn(batch, 3, *size)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                autocast(torch.device("cpu"), "fp32" if precision == "fp32" else "bf16"):
            out = model(x)
            out = out[0] if isinstance(out, tuple) else out
            out.float().square().mean().backward()  # the loss keeps a little too
        model.zero_grad(set_to_none=True)
        return sum(seen.values())

    small, large = batches
    return max(0, round((kept(large) - kept(small)) / (large - small)))


def measure_head_bytes_per_logit(kind: str = "arcface", batch: int = 16, classes: int = 256) -> float:
    """Bytes the ``kind`` margin head keeps for backward per (sample × class), by saved-tensor hooks on
    the CPU (one process: call it outside a process group); only tensors of at least B×C bytes count."""
    import torch

    from fqtool.losses import build_head

    head = build_head(kind, num_classes=classes, embedding_size=64)
    params = {p.untyped_storage().data_ptr() for p in head.parameters()}
    seen: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.untyped_storage().data_ptr() not in params:
            seen[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    emb = torch.randn(batch, 64, requires_grad=True)
    labels = torch.randint(0, classes, (batch,))
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        head(emb, labels).loss.backward()
    return sum(v for v in seen.values() if v >= batch * classes) / (batch * classes)


@functools.lru_cache(maxsize=32)
def activation_bytes(arch: str, precision: str, size: tuple[int, int] = (112, 112)) -> int:
    """Activation bytes per image: the table's value, else measured on a fresh CPU copy of ``arch`` (the
    global RNG is left as it was)."""
    import torch

    from fqtool.models import create_model, get_spec

    name = get_spec(arch).name
    key = (name, _table_precision(precision))
    if tuple(size) == (112, 112) and key in ACTIVATION_BYTES:
        return ACTIVATION_BYTES[key]
    with torch.random.fork_rng(devices=[]):
        backbone = create_model(name).backbone.train()
        return measure_activation_bytes(backbone, precision, tuple(size))


def estimate_memory(*, per_gpu: int, world_size: int, activation_per_image: int, trunk_params: int,
                    local_classes: int, embedding_size: int, sample_rate: float = 1.0,
                    distributed: bool | None = None) -> MemoryEstimate:
    """The memory one process needs for a step with ``per_gpu`` images (Partial FC: the head sees the
    global batch against this rank's ``local_classes`` rows, a fraction ``sample_rate`` of them)."""
    distributed = world_size > 1 if distributed is None else distributed
    columns = max(1, math.ceil(local_classes * sample_rate))
    head_per_image = world_size * columns * HEAD_BYTES_PER_LOGIT
    trunk_copies = 4 if distributed else 3  # weight, gradient, momentum (+ DDP's bucket copy)
    weights = 4 * (trunk_copies * trunk_params + 4 * local_classes * embedding_size)  # head: + normalised
    return MemoryEstimate(activations=per_gpu * activation_per_image, head=per_gpu * head_per_image,
                          weights=weights, per_image=activation_per_image + head_per_image)


def fitting_batch(estimate: MemoryEstimate, budget: int) -> int:
    """The largest per-process batch whose estimate fits ``budget`` bytes (a multiple of 8 when ≥ 8)."""
    room = budget - estimate.weights
    if room <= 0 or estimate.per_image <= 0:
        return 0
    batch = int(room // estimate.per_image)
    return batch - batch % 8 if batch >= 8 else batch


def device_budget(device: torch.device) -> int | None:
    """Usable bytes of ``device`` (a fraction of its total memory), or None off CUDA."""
    import torch

    if device.type != "cuda":
        return None
    return int(torch.cuda.get_device_properties(device).total_memory * USABLE_FRACTION)


def fit_warning(estimate: MemoryEstimate, budget: int | None, *, per_gpu: int, world_size: int,
                what: str) -> str | None:
    """One line when ``estimate`` exceeds ``budget``, naming the batch that fits; None when it fits."""
    if budget is None or estimate.total <= budget:
        return None
    fits = fitting_batch(estimate, budget)
    total = budget / USABLE_FRACTION / GIB
    if fits < 2:
        advice = "even 2 images per process do not fit: use --precision bf16, a smaller --arch or more GPUs"
    else:
        advice = f"about {fits} images per process fit (--batch-per-gpu {fits}"
        advice += f", or --batch-size {fits * world_size})" if world_size > 1 else ")"
    return (f"memory: {what} with {per_gpu} images per process needs {estimate.describe()}, more than "
            f"{USABLE_FRACTION:.0%} of the GPU's {total:.1f} GiB; {advice}")


def training_estimate(*, arch: str, precision: str, per_gpu: int, world_size: int, trainable: nn.Module,
                      head: nn.Module, size: tuple[int, int],
                      backbone_trained: bool = True) -> MemoryEstimate:
    """The estimate for a training task: its backbone's activations (none when the backbone is frozen,
    as in train-quality: it runs without autograd), its head shard and its trainable weights."""
    trunk = sum(p.numel() for p in trainable.parameters() if p.requires_grad)
    per_image = activation_bytes(arch, precision, size) if backbone_trained else 0
    return estimate_memory(per_gpu=per_gpu, world_size=world_size, activation_per_image=per_image,
                           trunk_params=trunk, local_classes=int(head.num_local),
                           embedding_size=int(head.embedding_size), sample_rate=float(head.sample_rate))


def training_notes(cfg, task, split, precision: str, device: torch.device) -> list[str]:
    """``[estimate line, warning (only if it will not fit the GPU)]`` for a run's set-up, before its first
    step (``cfg``: its TrainConfig, ``task``: its recipe Task, ``split``: its BatchSplit)."""
    estimate = training_estimate(
        arch=cfg.arch, precision=precision, per_gpu=split.per_gpu, world_size=split.world_size,
        trainable=task.trainable, head=task.head, size=tuple(task.model.preprocess.size),
        backbone_trained=any(p.requires_grad for p in task.model.backbone.parameters()))
    warning = fit_warning(estimate, device_budget(device), per_gpu=split.per_gpu, world_size=split.world_size,
                          what=f"{cfg.arch} {precision}")
    return [f"memory per process {estimate.describe()}"] + ([warning] if warning else [])
