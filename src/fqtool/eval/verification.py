"""1:1 verification on a pair list: insightface's 10-fold protocol and MagFace's ``eval_1v1`` variant.

Pairs are ``emb[0::2]`` vs ``emb[1::2]``. Both protocols use sequential folds (``KFold`` without
shuffling), pick per fold the first threshold of ``np.arange(0, 4, 0.01)`` that maximises train-fold
accuracy, and report the mean ± population std of the test-fold accuracies with the rule
``same = distance < threshold``.

* ``insightface``: rows L2-normalised (after summing image + flipped embeddings when flip is used),
  distance = squared L2 in [0, 4].
* ``magface``: per fold the mean of the train-fold embeddings (both sides) is subtracted from every
  embedding, distance = ``arccos(clip(cos, -1, 1)) / pi`` in [0, 1].

Everything is pure numpy; degenerate inputs give defined numbers and a note in ``warnings``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from fqtool.errors import FqtoolError

THRESHOLDS = np.arange(0, 4, 0.01)
PROTOCOLS = ("insightface", "magface")
DEFAULT_FARS = (1e-3, 1e-4)


@dataclass
class VerificationResult:
    """Accuracy and friends for one pair list. ``tar_at_far`` maps ``"1e-03"``-style keys to TAR or None."""

    name: str
    protocol: str
    num_pairs: int
    num_genuine: int
    num_impostor: int
    folds: int
    accuracy: float
    accuracy_std: float
    threshold: float
    fold_accuracies: list[float]
    fold_thresholds: list[float]
    xnorm: float | None
    tar_at_far: dict[str, float | None]
    roc_fpr: np.ndarray
    roc_tpr: np.ndarray
    roc_thresholds: np.ndarray
    flip: bool | None = None
    warnings: list[str] = field(default_factory=list)
    #: Threshold-free summaries on the whole set (no folds): ROC AUC and the equal error rate (None
    #: without both genuine and impostor pairs), and the accuracy of always giving the majority answer.
    auc: float | None = None
    eer: float | None = None
    eer_threshold: float | None = None
    majority_accuracy: float | None = None

    def to_dict(self, roc: bool = False) -> dict:
        data = {
            "name": self.name,
            "protocol": self.protocol,
            "flip": self.flip,
            "num_pairs": self.num_pairs,
            "num_genuine": self.num_genuine,
            "num_impostor": self.num_impostor,
            "folds": self.folds,
            "accuracy": self.accuracy,
            "accuracy_std": self.accuracy_std,
            "threshold": self.threshold,
            "fold_accuracies": self.fold_accuracies,
            "fold_thresholds": self.fold_thresholds,
            "xnorm": self.xnorm,
            "tar_at_far": self.tar_at_far,
            "auc": self.auc,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "majority_accuracy": self.majority_accuracy,
            "warnings": self.warnings,
        }
        if roc:
            data["roc"] = {
                "fpr": self.roc_fpr.tolist(),
                "tpr": self.roc_tpr.tolist(),
                "thresholds": self.roc_thresholds.tolist(),
            }
        return data


def far_key(far: float) -> str:
    """``1e-3`` → ``"1e-03"``: a stable key / column name for a FAR or FMR."""
    return f"{far:.0e}"


def l2_normalize(x: np.ndarray) -> np.ndarray:
    """Row-wise L2 normalisation; zero rows stay zero (as ``sklearn.preprocessing.normalize``)."""
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    norms[norms == 0.0] = 1.0
    return x / norms


def squared_l2_distance(emb0: np.ndarray, emb1: np.ndarray) -> np.ndarray:
    """insightface distance: squared L2 between L2-normalised rows, in [0, 4]."""
    diff = l2_normalize(emb0) - l2_normalize(emb1)
    return np.sum(np.square(diff), axis=1)


def angular_distance(emb0: np.ndarray, emb1: np.ndarray) -> np.ndarray:
    """MagFace distance: ``arccos(clip(cos, -1, 1)) / pi`` in [0, 1] (raw embeddings, float64)."""
    emb0 = np.asarray(emb0, dtype=np.float64)
    emb1 = np.asarray(emb1, dtype=np.float64)
    dot = np.sum(emb0 * emb1, axis=1)
    norm = np.linalg.norm(emb0, axis=1) * np.linalg.norm(emb1, axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = np.where(norm > 0, dot / np.where(norm > 0, norm, 1.0), 0.0)
    return np.arccos(np.clip(cos, -1.0, 1.0)) / math.pi


def confusion_at(threshold: float, dist: np.ndarray, issame: np.ndarray) -> tuple[float, float, float]:
    """``(tpr, fpr, accuracy)`` of ``same = dist < threshold``; rates are 0 when undefined."""
    predict = dist < threshold
    tp = int(np.sum(predict & issame))
    fp = int(np.sum(predict & ~issame))
    tn = int(np.sum(~predict & ~issame))
    fn = int(np.sum(~predict & issame))
    tpr = 0.0 if tp + fn == 0 else tp / (tp + fn)
    fpr = 0.0 if fp + tn == 0 else fp / (fp + tn)
    acc = (tp + tn) / dist.size if dist.size else 0.0
    return tpr, fpr, acc


def _accuracy_curve(thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray) -> np.ndarray:
    """Accuracy at every threshold at once (same counts as :func:`confusion_at`)."""
    if dist.size == 0:
        return np.zeros(len(thresholds))
    predict = dist[None, :] < thresholds[:, None]
    correct = predict == issame[None, :]
    return correct.sum(axis=1) / dist.size


def _rates_curve(
    thresholds: np.ndarray, dist: np.ndarray, issame: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    predict = dist[None, :] < thresholds[:, None]
    pos, neg = int(issame.sum()), int((~issame).sum())
    tp = (predict & issame[None, :]).sum(axis=1)
    fp = (predict & ~issame[None, :]).sum(axis=1)
    tpr = tp / pos if pos else np.zeros(len(thresholds))
    fpr = fp / neg if neg else np.zeros(len(thresholds))
    return tpr, fpr


def sequential_folds(num_pairs: int, folds: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """``KFold(n_splits=folds, shuffle=False)``: the first ``n % folds`` folds get one extra pair.

    One fold means train = test = every pair (insightface's ``LFold`` with ``n_splits=1``).
    """
    indices = np.arange(num_pairs)
    if folds <= 1:
        return [(indices, indices)]
    sizes = np.full(folds, num_pairs // folds, dtype=int)
    sizes[: num_pairs % folds] += 1
    splits, start = [], 0
    for size in sizes:
        test = indices[start : start + size]
        train = np.concatenate([indices[:start], indices[start + size :]])
        splits.append((train, test))
        start += size
    return splits


def _check_inputs(
    embeddings: np.ndarray, issame: np.ndarray, name: str
) -> tuple[np.ndarray, np.ndarray]:
    """Shape checks; errors name the set (its file name or target) when there is one."""
    where = name or None
    embeddings = np.asarray(embeddings)
    issame = np.asarray(issame).astype(bool).reshape(-1)
    if embeddings.ndim != 2:
        raise FqtoolError(
            f"embeddings must be a 2-D array (images × dims), got shape {embeddings.shape}", where
        )
    if len(embeddings) % 2:
        raise FqtoolError(f"an odd number of embeddings ({len(embeddings)}); pairs need 2 images each", where)
    if len(embeddings) // 2 != len(issame):
        raise FqtoolError(
            f"{len(embeddings)} images make {len(embeddings) // 2} pairs but there are {len(issame)} labels",
            where,
        )
    if len(issame) == 0:
        raise FqtoolError("no pairs to evaluate", where)
    return embeddings, issame


def _finite_warnings(embeddings: np.ndarray, warnings: list[str]) -> None:
    bad = ~np.isfinite(np.asarray(embeddings, dtype=np.float64)).all(axis=1)
    if bad.any():
        first = int(np.argmax(bad))
        warnings.append(
            f"{int(bad.sum())} of {len(bad)} embeddings are NaN or infinite (first: image {first}):"
            " their pairs count as rejected and XNorm is not a number; check the model and its input"
        )


def _fold_count(num_pairs: int, folds: int, warnings: list[str]) -> int:
    if num_pairs >= folds:
        return folds
    used = num_pairs if num_pairs >= 2 else 1
    warnings.append(
        f"only {num_pairs} pair(s) for {folds} folds: using {used} fold(s)"
        + (" (threshold chosen and tested on the same pair)" if used == 1 else "")
    )
    return used


def _class_warnings(issame: np.ndarray, warnings: list[str]) -> None:
    if issame.all():
        warnings.append("every pair is genuine: accuracy only measures TAR; FAR and TAR@FAR are undefined")
    elif not issame.any():
        warnings.append("every pair is an impostor: accuracy only measures 1 - FAR; TAR is undefined")


def tar_at_far(dist: np.ndarray, issame: np.ndarray, far: float) -> tuple[float | None, str | None]:
    """TAR at a FAR on the whole set (no folds), rule ``accept = dist < thr``.

    ``thr`` is the ``k``-th smallest impostor distance with ``k = floor(far * N_impostor)``, so at most
    ``k`` impostors are accepted (fewer with ties): measured FAR ≤ ``far``. Needs ``N_impostor ≥ 1/far``.
    """
    neg = np.sort(dist[~issame])
    pos = dist[issame]
    if len(pos) == 0:
        return None, "no genuine pairs"
    if len(neg) * far < 1.0 - 1e-9:
        return None, f"{len(neg)} impostor pairs are too few for FAR {far:g} (need ≥ {math.ceil(1 / far)})"
    k = int(math.floor(len(neg) * far + 1e-9))
    thr = neg[k] if k < len(neg) else np.inf
    return float(np.mean(pos < thr)), None


def roc_auc(dist: np.ndarray, issame: np.ndarray) -> float | None:
    """Area under the ROC of ``same = dist < t``: the chance that a random genuine pair is closer than a
    random impostor pair (ties count half; Mann-Whitney U). None without both kinds of pair."""
    dist, issame = np.asarray(dist, dtype=np.float64), np.asarray(issame, dtype=bool)
    pos, neg = dist[issame], np.sort(dist[~issame])
    if not len(pos) or not len(neg):
        return None
    farther = len(neg) - np.searchsorted(neg, pos, side="right")  # impostors strictly farther
    ties = np.searchsorted(neg, pos, side="right") - np.searchsorted(neg, pos, side="left")
    return float((farther.sum() + 0.5 * ties.sum()) / (len(pos) * len(neg)))


def equal_error_rate(dist: np.ndarray, issame: np.ndarray) -> tuple[float | None, float | None]:
    """``(EER, threshold)``: where the false accept rate of ``accept = dist <= t`` meets the false reject
    rate, over every distance in the set as ``t``; the EER is the mean of the two at the closest point."""
    dist, issame = np.asarray(dist, dtype=np.float64), np.asarray(issame, dtype=bool)
    pos, neg = np.sort(dist[issame]), np.sort(dist[~issame])
    if not len(pos) or not len(neg):
        return None, None
    candidates = np.unique(np.concatenate([dist[np.isfinite(dist)], [-np.inf]]))
    far = np.searchsorted(neg, candidates, side="right") / len(neg)
    frr = 1.0 - np.searchsorted(pos, candidates, side="right") / len(pos)
    best = int(np.argmin(np.abs(far - frr)))
    return float((far[best] + frr[best]) / 2), float(candidates[best])


#: Warn when always answering the majority class scores within this much of the accuracy.
MAJORITY_MARGIN = 0.05


def majority_warning(accuracy: float, num_genuine: int, num_impostor: int) -> tuple[float, str | None]:
    """``(majority accuracy, warning or None)``: on imbalanced pairs accuracy says little by itself."""
    total = num_genuine + num_impostor
    if not total:
        return 0.0, None
    majority = max(num_genuine, num_impostor) / total
    answer = "same" if num_genuine > num_impostor else "different"
    if not num_genuine or not num_impostor or majority <= 0.6 or accuracy - majority >= MAJORITY_MARGIN:
        return majority, None  # one class only has its own warning
    return majority, (
        f"imbalanced pairs ({num_genuine} genuine, {num_impostor} impostor): answering '{answer}' for every "
        f"pair scores {100 * majority:.2f}%, within {100 * (accuracy - majority):.1f} points of the "
        f"accuracy {100 * accuracy:.2f}%; read AUC and EER instead"
    )


def evaluate_verification(
    embeddings: np.ndarray,
    issame: np.ndarray,
    *,
    protocol: str = "insightface",
    folds: int = 10,
    far_targets: tuple[float, ...] = DEFAULT_FARS,
    xnorm_norms: np.ndarray | None = None,
    name: str = "",
    flip: bool | None = None,
) -> VerificationResult:
    """Evaluate raw embeddings (2P × D; with flip already ``e(x) + e(flip(x))``) against P labels.

    ``xnorm_norms``: the raw per-image norms XNorm averages (insightface: orig + flipped); default the
    norms of ``embeddings``.
    """
    if protocol not in PROTOCOLS:
        raise FqtoolError(f"unknown protocol {protocol!r}; use {' or '.join(PROTOCOLS)}")
    embeddings, issame = _check_inputs(embeddings, issame, name)
    warnings: list[str] = []
    _finite_warnings(embeddings, warnings)
    _class_warnings(issame, warnings)
    nfolds = _fold_count(len(issame), folds, warnings)
    emb0 = np.asarray(embeddings[0::2], dtype=np.float64)
    emb1 = np.asarray(embeddings[1::2], dtype=np.float64)
    fixed = squared_l2_distance(emb0, emb1) if protocol == "insightface" else angular_distance(emb0, emb1)
    accs, thrs, tprs, fprs = [], [], [], []
    for train, test in sequential_folds(len(issame), nfolds):
        dist = fixed if protocol == "insightface" else _magface_fold_distance(emb0, emb1, train)
        best = int(np.argmax(_accuracy_curve(THRESHOLDS, dist[train], issame[train])))
        tpr, fpr = _rates_curve(THRESHOLDS, dist[test], issame[test])
        tprs.append(tpr)
        fprs.append(fpr)
        thrs.append(float(THRESHOLDS[best]))
        accs.append(confusion_at(THRESHOLDS[best], dist[test], issame[test])[2])
    tars: dict[str, float | None] = {}
    for far in far_targets:
        tars[far_key(far)], why = tar_at_far(fixed, issame, far)
        if why:
            warnings.append(f"TAR@FAR={far:g} not reported: {why}")
    norms = np.linalg.norm(embeddings, axis=1) if xnorm_norms is None else np.asarray(xnorm_norms)
    accuracy = float(np.mean(accs))
    eer, eer_threshold = equal_error_rate(fixed, issame)
    majority, note = majority_warning(accuracy, int(issame.sum()), int((~issame).sum()))
    if note:
        warnings.append(note)
    return VerificationResult(
        name=name,
        protocol=protocol,
        num_pairs=len(issame),
        num_genuine=int(issame.sum()),
        num_impostor=int((~issame).sum()),
        folds=nfolds,
        accuracy=accuracy,
        accuracy_std=float(np.std(accs)),
        threshold=float(np.mean(thrs)),
        fold_accuracies=[float(a) for a in accs],
        fold_thresholds=thrs,
        xnorm=float(np.mean(norms)) if norms.size else None,
        tar_at_far=tars,
        roc_fpr=np.mean(fprs, axis=0),
        roc_tpr=np.mean(tprs, axis=0),
        roc_thresholds=THRESHOLDS.copy(),
        flip=flip,
        warnings=warnings,
        auc=roc_auc(fixed, issame),
        eer=eer,
        eer_threshold=eer_threshold,
        majority_accuracy=majority,
    )


def _magface_fold_distance(emb0: np.ndarray, emb1: np.ndarray, train: np.ndarray) -> np.ndarray:
    mean = np.mean(np.concatenate([emb0[train], emb1[train]]), axis=0)
    return angular_distance(emb0 - mean, emb1 - mean)
