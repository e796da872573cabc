"""The head's cosines are fp32 under autocast, and its backward keeps at most one (B, C) matrix."""

from __future__ import annotations

import pytest
import torch

from fqtool.losses import build_head

C, E, B = 3000, 64, 16


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(B, E, generator=g) * 15
    labels = torch.randint(0, C, (B,), generator=g)
    quality = torch.rand(B, generator=g)
    return emb, labels, quality


class _Recorder:
    """Wraps a margin and keeps the logits it returned (the margin's interface is unchanged)."""

    def __init__(self, margin) -> None:
        self.margin, self.logits = margin, None

    def __call__(self, cos, labels, **kw):
        self.logits = self.margin(cos, labels, **kw)
        return self.logits

    def __getattr__(self, name):
        return getattr(self.margin, name)


@pytest.mark.parametrize("kind", ["arcface", "magface", "crfiqa"])
def test_logits_under_bf16_autocast_equal_fp32(kind: str) -> None:
    """Under CPU bf16 autocast the logits (and the loss) are the fp32 ones: the matmul is not bf16."""
    torch.manual_seed(0)
    head = build_head(kind, num_classes=C, embedding_size=E)
    head.margin = _Recorder(head.margin)
    emb, labels, quality = _inputs()
    q = quality if head.margin.takes_quality else None
    fp32 = head(emb, labels, q)
    ref = head.margin.logits.clone()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = head(emb, labels, q)
    got = head.margin.logits
    assert got.dtype == torch.float32
    # logits are s·cos with s = 64: 1e-6 relative to s is the fp32 rounding of the product, no more
    assert (got - ref).abs().max().item() <= 64 * 1e-6
    loss, ref_loss = float(amp.loss.detach()), float(fp32.loss.detach())
    assert abs(loss - ref_loss) <= 1e-5 * max(1.0, abs(ref_loss))


def _saved_matrices(fn) -> int:
    """How many distinct (B, C) storages autograd keeps for backward while ``fn()`` runs."""
    seen: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        if t.dim() == 2 and t.shape == (B, C):
            seen.add(t.untyped_storage().data_ptr())
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    out.backward()  # the saved tensors were enough for a backward
    return len(seen)


@pytest.mark.parametrize(("kind", "most"), [("arcface", 1), ("magface", 1), ("crfiqa", 1), ("eqface", 2)])
def test_backward_keeps_at_most_one_bxc_matrix(kind: str, most: int) -> None:
    """arcface_torch keeps one (B, C) matrix (the softmax); so does this head (EQFace's quality scaling of
    the logits needs the logits for the quality's gradient: one more)."""
    torch.manual_seed(0)
    head = build_head(kind, num_classes=C, embedding_size=E)
    emb, labels, quality = _inputs()
    emb.requires_grad_()
    quality.requires_grad_()
    q = quality if head.margin.takes_quality else None
    assert _saved_matrices(lambda: head(emb, labels, q).loss) <= most
    assert torch.isfinite(emb.grad).all() and head.weight.grad is not None
