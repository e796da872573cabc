"""Verification protocols on hand-made distances (answers worked out here) and a brute-force reference."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.model_selection import KFold

from fqtool.errors import FqtoolError
from fqtool.eval.verification import (
    THRESHOLDS,
    angular_distance,
    evaluate_verification,
    sequential_folds,
    squared_l2_distance,
    tar_at_far,
)


def pairs_with_sq_l2(distances: list[float]) -> np.ndarray:
    """2-D embeddings whose pairs have the given squared L2 distance after normalisation (|a-b|² = 2-2cos)."""
    rows = []
    for d in distances:
        angle = math.acos(1.0 - d / 2.0)
        rows += [[3.0, 0.0], [2.0 * math.cos(angle), 2.0 * math.sin(angle)]]  # norms 3 and 2
    return np.asarray(rows)


# Two folds of five pairs; G = genuine, I = impostor. Distances are off the 0.01 grid.
HAND_DIST = [0.205, 0.905, 1.205, 0.705, 1.805, 0.305, 1.105, 0.805, 1.605, 0.255]
HAND_SAME = [True, True, False, False, False, True, True, False, False, True]


def test_hand_made_two_folds() -> None:
    # Fold 0 trains on pairs 5..9: G {0.305, 1.105, 0.255}, I {0.805, 1.605}. Thresholds in (0.305, 0.805]
    # and (1.105, 1.605] both get 4/5; the first maximum is 0.31. On pairs 0..4 at 0.31: G 0.205 right,
    # G 0.905 wrong, I 1.205 / 0.705 / 1.805 right → 4/5.
    # Fold 1 trains on pairs 0..4: G {0.205, 0.905}, I {1.205, 0.705, 1.805}. (0.205, 0.705] and
    # (0.905, 1.205] both get 4/5; first is 0.21. On pairs 5..9: only the two impostors are right → 2/5.
    emb = pairs_with_sq_l2(HAND_DIST)
    res = evaluate_verification(emb, np.array(HAND_SAME), folds=2, far_targets=())
    assert res.fold_thresholds == pytest.approx([0.31, 0.21])
    assert res.fold_accuracies == pytest.approx([0.8, 0.4])
    assert res.accuracy == pytest.approx(0.6)
    assert res.accuracy_std == pytest.approx(0.2)  # population std of {0.8, 0.4}
    assert res.threshold == pytest.approx(0.26)
    assert res.xnorm == pytest.approx(2.5)  # mean of norms 3 and 2
    assert res.warnings == []


def test_separable_pairs_give_full_accuracy() -> None:
    same = np.array([True, False] * 10)
    emb = pairs_with_sq_l2([0.5 if s else 1.5 for s in same])
    res = evaluate_verification(emb, same, far_targets=())
    assert res.folds == 10
    assert res.accuracy == 1.0 and res.accuracy_std == 0.0
    assert res.threshold == pytest.approx(0.51)  # first grid value above 0.5


def test_folds_match_sklearn_kfold() -> None:
    for n, k in ((23, 10), (10, 10), (6000, 10), (7, 3)):
        ours = sequential_folds(n, k)
        theirs = list(KFold(n_splits=k, shuffle=False).split(np.arange(n)))
        for (a_tr, a_te), (b_tr, b_te) in zip(ours, theirs, strict=True):
            assert np.array_equal(a_tr, b_tr) and np.array_equal(a_te, b_te)


def reference(emb: np.ndarray, issame: np.ndarray, subtract_mean: bool) -> tuple[float, float]:
    """The reference loop: per fold, per threshold, accuracy of dist < thr; argmax on train."""
    e0, e1 = emb[0::2].astype(np.float64), emb[1::2].astype(np.float64)
    accs = []
    for train, test in KFold(n_splits=10, shuffle=False).split(np.arange(len(issame))):
        if subtract_mean:
            mean = np.mean(np.concatenate([e0[train], e1[train]]), axis=0)
            a, b = e0 - mean, e1 - mean
            cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
            dist = np.arccos(np.clip(cos, -1, 1)) / math.pi
        else:
            a = e0 / np.linalg.norm(e0, axis=1, keepdims=True)
            b = e1 / np.linalg.norm(e1, axis=1, keepdims=True)
            dist = np.sum(np.square(a - b), 1)
        acc_train = [np.mean((dist[train] < t) == issame[train]) for t in THRESHOLDS]
        best = THRESHOLDS[int(np.argmax(acc_train))]
        accs.append(np.mean((dist[test] < best) == issame[test]))
    return float(np.mean(accs)), float(np.std(accs))


@pytest.mark.parametrize("protocol", ["insightface", "magface"])
def test_matches_reference_loop(protocol: str) -> None:
    rng = np.random.default_rng(0)
    ids = rng.normal(size=(60, 16))
    same = rng.random(300) < 0.5
    rows = []
    for i, s in enumerate(same):
        a = ids[i % 60]
        b = a if s else ids[(i * 7 + 3) % 60]
        rows += [a + 0.9 * rng.normal(size=16), b + 0.9 * rng.normal(size=16)]
    emb = np.asarray(rows, dtype=np.float32) + 0.3  # an offset, so mean subtraction matters
    res = evaluate_verification(emb, same, protocol=protocol, far_targets=())
    acc, std = reference(emb, same, subtract_mean=protocol == "magface")
    assert res.accuracy == pytest.approx(acc, abs=1e-12)
    assert res.accuracy_std == pytest.approx(std, abs=1e-12)
    assert 0.6 < res.accuracy < 1.0


def test_distances() -> None:
    a = np.array([[1.0, 0.0], [2.0, 0.0], [0.0, 0.0]])
    b = np.array([[0.0, 5.0], [-1.0, 0.0], [1.0, 0.0]])
    assert squared_l2_distance(a, b) == pytest.approx([2.0, 4.0, 1.0])  # zero row stays zero
    assert angular_distance(a[:2], b[:2]) == pytest.approx([0.5, 1.0])


def test_tar_at_far_picks_kth_impostor() -> None:
    # 1000 impostors at 0.001, 0.002, …; FAR 1e-3 → k = 1 → thr = 0.002: one impostor accepted.
    neg = np.arange(1, 1001) / 1000.0
    pos = np.array([0.0005, 0.0015, 0.0025, 0.5])
    dist = np.concatenate([pos, neg])
    same = np.concatenate([np.ones(4, bool), np.zeros(1000, bool)])
    tar, why = tar_at_far(dist, same, 1e-3)
    assert why is None and tar == pytest.approx(0.5)
    tar, why = tar_at_far(dist, same, 1e-4)
    assert tar is None and "1000 impostor pairs are too few" in why


def test_flip_xnorm_uses_given_norms() -> None:
    emb = pairs_with_sq_l2([0.5, 1.5] * 5)
    res = evaluate_verification(emb, np.array([True, False] * 5), xnorm_norms=np.array([1.0, 3.0]))
    assert res.xnorm == pytest.approx(2.0)
    assert any("TAR@FAR=0.001" in w for w in res.warnings)


@pytest.mark.parametrize("same", [[True] * 12, [False] * 12])
def test_single_class_is_defined_with_a_warning(same: list[bool]) -> None:
    emb = pairs_with_sq_l2(list(np.linspace(0.1, 1.9, 12)))
    res = evaluate_verification(emb, np.array(same))
    # All impostors: threshold 0 accepts nothing → 1.0. All genuine: each fold's threshold is the first
    # grid value above its train maximum, so only the last fold (test = the largest distance, 1.9) fails.
    assert res.accuracy == pytest.approx(0.9 if same[0] else 1.0)
    assert res.warnings and ("genuine" in res.warnings[0] or "impostor" in res.warnings[0])
    assert all(v is None for v in res.tar_at_far.values())


def test_fewer_pairs_than_folds() -> None:
    emb = pairs_with_sq_l2([0.305, 1.705, 0.405])
    res = evaluate_verification(emb, np.array([True, False, True]), far_targets=())
    # One pair per fold. Fold 0 trains on {I 1.705, G 0.405} → 0.41, G 0.305 right; fold 1 on
    # {G 0.305, G 0.405} → 0.41, I 1.705 right; fold 2 on {G 0.305, I 1.705} → 0.31, G 0.405 wrong.
    assert res.folds == 3 and res.accuracy == pytest.approx(2 / 3)
    assert res.fold_thresholds == pytest.approx([0.41, 0.41, 0.31])
    assert "using 3 fold" in res.warnings[0]
    one = evaluate_verification(pairs_with_sq_l2([0.3]), np.array([True]), far_targets=())
    assert one.folds == 1 and one.accuracy == 1.0 and "same pair" in one.warnings[-1]


def test_bad_shapes_raise_fqtool_error() -> None:
    with pytest.raises(FqtoolError, match="odd number"):
        evaluate_verification(np.zeros((3, 4)), np.array([True]))
    with pytest.raises(FqtoolError, match="labels"):
        evaluate_verification(np.zeros((4, 4)), np.array([True]))
    with pytest.raises(FqtoolError, match="no pairs"):
        evaluate_verification(np.zeros((0, 4)), np.array([], bool))
    with pytest.raises(FqtoolError, match="protocol"):
        evaluate_verification(np.zeros((2, 4)), np.array([True]), protocol="lfw")
