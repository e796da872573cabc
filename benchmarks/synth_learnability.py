"""Slow benchmark: is the synthetic data learnable by ``iresnet_tiny`` on a CPU, and does quality matter?

Trains the tiny iResNet with an ArcFace head (s=30, m=0.3, SGD) on ``fqtool.data.synth`` training images
(generated in memory, JPEG round-tripped like the written data set), then verifies held-out identities'
pairs and reports accuracy overall, by degradation level and by kind, how embedding norms follow the
ground-truth level, and (``--probe-pairs``) degraded-vs-clean accuracy per kind at fixed levels.
Not a test: run it by hand, e.g.

    python benchmarks/synth_learnability.py --steps 300 --batch 32 --probe-pairs 100
"""

from __future__ import annotations

import argparse
import io
import math
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from fqtool.data.synth import (
    DEGRADATION_KINDS,
    encode_jpeg,
    generate_face,
    identity_params,
    iter_train_samples,
    iter_val_pairs,
)
from fqtool.models import create_model


class ArcHead(nn.Module):
    """Normalised softmax with an additive angular margin (ArcFace)."""

    def __init__(self, dim: int, classes: int, s: float = 30.0, m: float = 0.3) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(classes, dim) * 0.01)
        self.s, self.m = s, m

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = F.normalize(emb) @ F.normalize(self.weight).T
        target = cos.gather(1, labels[:, None]).clamp(-1 + 1e-6, 1 - 1e-6)
        theta = torch.acos(target)
        fallback = target - self.m * math.sin(self.m)
        margin = torch.where(theta + self.m < math.pi, torch.cos(theta + self.m), fallback)
        return cos.scatter(1, labels[:, None], margin) * self.s


def _jpeg(image: np.ndarray) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(encode_jpeg(image))).convert("RGB"))


def _tensor(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.stack([_jpeg(x) for x in images])).permute(0, 3, 1, 2).contiguous()


def _accuracy(sims: np.ndarray, same: np.ndarray, thr: float) -> float:
    return float(((sims >= thr) == same).mean()) if len(sims) else float("nan")


def _best_threshold(sims: np.ndarray, same: np.ndarray) -> float:
    return float(max(np.unique(sims), key=lambda t: _accuracy(sims, same, t)))


def _parse() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--identities", type=int, default=24)
    parser.add_argument("--images", type=int, default=24, help="training images per identity")
    parser.add_argument("--val-identities", type=int, default=10)
    parser.add_argument("--pairs", type=int, default=400)
    parser.add_argument("--fraction", type=float, default=0.5, help="degraded fraction")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--probe-pairs", type=int, default=0,
                        help="degraded-vs-clean pairs per kind and level")
    return parser.parse_args()


def _train(args: argparse.Namespace, model: nn.Module) -> None:
    t0 = time.perf_counter()
    train = list(iter_train_samples(args.identities, args.images, degraded_fraction=args.fraction,
                                    seed=args.seed))
    images, labels = _tensor([s.image for s in train]), torch.tensor([s.label for s in train])
    print(f"generated {len(train)} training images in {time.perf_counter() - t0:.1f}s")
    head = ArcHead(model.embedding_size, args.identities)
    opt = torch.optim.SGD([*model.parameters(), *head.parameters()], lr=args.lr, momentum=0.9,
                          weight_decay=5e-4)
    warmup = max(1, args.steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * k / args.steps)))
    gen = torch.Generator().manual_seed(args.seed)
    order, pos = torch.randperm(len(images), generator=gen), 0
    t0 = time.perf_counter()
    model.train()
    for step in range(args.steps):
        if pos + args.batch > len(order):
            order, pos = torch.randperm(len(images), generator=gen), 0
        idx, pos = order[pos : pos + args.batch], pos + args.batch
        emb, _ = model(model.prepare(images[idx]))
        logits = head(emb, labels[idx])
        loss = F.cross_entropy(logits, labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        if step % 50 == 0 or step == args.steps - 1:
            acc = (logits.argmax(1) == labels[idx]).float().mean()
            elapsed = time.perf_counter() - t0
            print(f"step {step:4d} loss {loss.item():.3f} batch-acc {acc:.2f} ({elapsed:.0f}s)")
    print(f"trained {args.steps} steps x {args.batch} in {time.perf_counter() - t0:.1f}s")
    model.eval()


def _embed(model: nn.Module, images: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        emb, norms = model(model.prepare(_tensor(images)))
    return F.normalize(emb).numpy(), norms.numpy()


def _evaluate(args: argparse.Namespace, model: nn.Module) -> float:
    pairs = list(iter_val_pairs(args.pairs, first_identity=args.identities,
                                num_identities=args.val_identities, degraded_fraction=args.fraction,
                                seed=args.seed))
    val = [s for a, b, _ in pairs for s in (a, b)]
    emb, norms = _embed(model, [s.image for s in val])
    sims, same = (emb[0::2] * emb[1::2]).sum(1), np.array([p[2] for p in pairs])
    levels = np.array([s.level for s in val])
    kinds = np.array([s.kind for s in val]).reshape(-1, 2)
    worst = levels.reshape(-1, 2).max(1)
    thr = _best_threshold(sims, same)
    print(f"held-out verification: accuracy {_accuracy(sims, same, thr):.3f} (threshold {thr:.3f}), "
          f"{len(pairs)} pairs")
    for name, sel in (("both clean", worst == 0), ("worst level (0, 1/3]", (worst > 0) & (worst <= 1 / 3)),
                      ("worst level (1/3, 2/3]", (worst > 1 / 3) & (worst <= 2 / 3)),
                      ("worst level (2/3, 1]", worst > 2 / 3)):
        print(f"  {name:22s} n={sel.sum():3d} acc {_accuracy(sims[sel], same[sel], thr):.3f}  genuine sim "
              f"{sims[sel & same].mean():+.3f}  impostor sim {sims[sel & ~same].mean():+.3f}")
    for kind in DEGRADATION_KINDS:
        sel = (kinds == kind).any(1) & (worst > 0.5)
        print(f"  {kind:9s} level > 0.5: n={sel.sum():3d} acc {_accuracy(sims[sel], same[sel], thr):.3f}")
    rho = np.corrcoef(np.argsort(np.argsort(norms)), np.argsort(np.argsort(levels)))[0, 1]
    print(f"embedding norm: clean {norms[levels == 0].mean():.2f}, "
          f"level > 0.5 {norms[levels > 0.5].mean():.2f}, spearman(norm, level) {rho:+.3f}")
    pair_norm = norms.reshape(-1, 2).min(1)
    for name, keep in (("lowest min-norm", pair_norm >= np.quantile(pair_norm, 0.3)),
                       ("worst ground truth", worst <= np.quantile(worst, 0.7))):
        print(f"  reject 30% pairs by {name}: accuracy {_accuracy(sims[keep], same[keep], thr):.3f}")
    return thr


def _probe(args: argparse.Namespace, model: nn.Module, thr: float) -> None:
    """Accuracy (mean genuine similarity) of degraded-vs-clean held-out pairs per kind and fixed level."""
    ids = [identity_params(args.seed, args.identities + k) for k in range(args.val_identities)]
    print("probe: degraded-vs-clean pairs, accuracy (genuine sim) at level 0.25 / 0.5 / 0.75 / 1")
    for kind in DEGRADATION_KINDS:
        row = []
        for level in (0.25, 0.5, 0.75, 1.0):
            first, second, same = [], [], np.arange(args.probe_pairs) % 2 == 0
            for p in range(args.probe_pairs):
                rng = np.random.default_rng([99, p])
                a = int(rng.integers(len(ids)))
                b = a if same[p] else (a + 1 + int(rng.integers(len(ids) - 1))) % len(ids)
                first.append(generate_face(ids[a], rng, level=level, kind=kind))
                second.append(generate_face(ids[b], rng))
            sims = (_embed(model, first)[0] * _embed(model, second)[0]).sum(1)
            row.append(f"{_accuracy(sims, same, thr):.2f} ({sims[same].mean():+.2f})")
        print(f"  {kind:9s} " + "  ".join(row))


def main() -> None:
    args = _parse()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = create_model("iresnet_tiny")
    _train(args, model)
    thr = _evaluate(args, model)
    if args.probe_pairs:
        _probe(args, model, thr)


if __name__ == "__main__":
    main()
