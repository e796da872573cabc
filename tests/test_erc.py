"""ERC (MagFace eval_quality) and EDC (ISO/IEC 29794-1) on hand-made numbers."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fqtool.errors import FqtoolError
from fqtool.eval.erc import (
    REJECT_RATES,
    compute_curves,
    edc_curve,
    edc_threshold,
    erc_curve,
    load_quality_csv,
    magface_index,
    magface_threshold,
    pair_distances,
    pair_quality,
    parse_scores_option,
    step_area,
    theoretical_best_area,
)


def magface_loop(pos: np.ndarray, neg: np.ndarray, target: float = 1e-3) -> tuple[float, float] | None:
    """MagFace's own index loop (eval_quality.py), re-typed here: (fnmr, thr) at ``target`` or None."""
    pos, neg = np.sort(pos), np.sort(neg)
    fmr, idx = 1.0, len(neg) - 1
    while idx >= 0:
        thresh = neg[idx]
        fnmr = 1.0 * (len(pos) - np.sum(pos < thresh)) / len(pos)
        if fmr == target:
            return fnmr, thresh
        if idx == 0:
            break
        idx = int(idx / 10)
        fmr /= 10.0
    return None


def test_reject_rates_are_magface_s() -> None:
    assert len(REJECT_RATES) == 20 and REJECT_RATES[0] == 0.0
    assert REJECT_RATES[-1] == pytest.approx(0.95)


@pytest.mark.parametrize("n", [1, 10, 11, 100, 101, 999, 1000, 1001, 12345, 3000])
def test_magface_index_matches_the_loop(n: int) -> None:
    neg = np.arange(n, dtype=float)
    for k in (1, 2, 3, 4):
        ref = magface_loop(np.array([0.5]), neg, 10.0**-k)
        if ref is not None:  # MagFace reaches this decade: same index (neg[i] == i here)
            assert magface_index(n, 10.0**-k) == int(ref[1])
        else:  # MagFace stops early; fqtool uses index 0 (the most similar impostor)
            assert magface_index(n, 10.0**-k) == 0


def test_magface_threshold_warns_with_few_impostors() -> None:
    thr, note = magface_threshold(np.array([0.5, 0.2, 0.9]), 1e-3)
    assert thr == 0.2 and "3 impostor pairs < 1/FMR" in note
    assert magface_threshold(np.arange(1001.0), 1e-3) == (1.0, None)


# 21 pairs. Impostors 0.30 … 0.80 (11): idx = 10 // 10 = 1 → threshold = second smallest = 0.35 at FMR 0.1.
IMP = [0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80]
GEN = [0.50, 0.36, 0.34, 0.10, 0.20, 0.12, 0.15, 0.18, 0.22, 0.25]
DIST = np.array(GEN + IMP)
SAME = np.array([True] * 10 + [False] * 11)
# Lowest quality first: G 0.50, then G 0.36, then I 0.35; everything else is better.
QUAL = np.array([0.0, 0.1] + [5.0] * 8 + [9.0, 0.2] + [9.0] * 9)


def test_erc_hand_made() -> None:
    curve = erc_curve(DIST, SAME, QUAL, fmr=0.1)
    # r=0: thr 0.35, failing genuine 0.50 and 0.36 → 2/10.
    # r=0.05: int(1.05)=1 pair rejected (G 0.50) → 1/9.  r=0.10: int(2.1)=2 (G 0.36 too) → 0/8.
    # r=0.15: int(3.15)=3 (I 0.35 too): 10 impostors, idx = 9 // 10 = 0 → thr = 0.30, G 0.34 fails → 1/8.
    assert curve.threshold[:4] == pytest.approx([0.35, 0.35, 0.35, 0.30])
    assert curve.fnmr[:4] == pytest.approx([0.2, 1 / 9, 0.0, 0.125])
    assert list(curve.genuine[:4]) == [10, 9, 8, 8] and list(curve.impostor[:4]) == [11, 11, 11, 10]
    ok = ~np.isnan(curve.fnmr)  # no genuine pair is left at the highest reject rates
    x, y = curve.fraction[ok], curve.fnmr[ok]
    area = float(np.sum((x[1:] - x[:-1]) * (y[1:] + y[:-1]) / 2))  # trapezoid rule by hand (numpy 1.23+)
    assert not ok.all() and curve.auc == pytest.approx(area)


def test_erc_matches_magface_loop_on_random_pairs() -> None:
    rng = np.random.default_rng(1)
    n = 2400
    same = rng.random(n) < 0.5
    dist = np.where(same, rng.normal(0.35, 0.06, n), rng.normal(0.5, 0.04, n))
    quality = rng.random(n) + np.where(dist > 0.42, -0.3, 0.0) * same
    curve = erc_curve(dist, same, quality, fmr=1e-3)
    order = np.argsort(quality, kind="stable")
    compared = 0
    for rate, ours, thr in zip(REJECT_RATES, curve.fnmr, curve.threshold, strict=True):
        kept = order[int(rate * n) :]
        ref = magface_loop(dist[kept][same[kept]], dist[kept][~same[kept]])
        if ref is not None:  # MagFace's curve stops once fewer than 101 impostors remain
            assert (ours, thr) == ref
            compared += 1
    assert compared == 19  # at 95 % only 120 pairs (≈ 60 impostors) are left


def test_edc_hand_made() -> None:
    # Five genuine pairs, quality [1, 2, 2, 3, 4], errors (dist >= 0.5) [yes, no, yes, no, no].
    dist = np.array([0.6, 0.1, 0.7, 0.2, 0.3, 0.9])
    same = np.array([True, True, True, True, True, False])
    quality = np.array([1, 2, 2, 3, 4, 0], dtype=float)
    curve = edc_curve(dist, same, quality, 0.5, pauc_limit=0.5)
    # Ties (two pairs at quality 2) are discarded together: discard counts 0, 1, 3, 4 (+ the (1, 0) end).
    assert curve.fraction == pytest.approx([0.0, 0.2, 0.6, 0.8, 1.0])
    assert curve.fnmr == pytest.approx([2 / 5, 1 / 4, 0.0, 0.0, 0.0])
    assert curve.pauc == pytest.approx(0.4 * 0.2 + 0.25 * 0.3)  # 0.155, step curve up to 0.5
    # Theoretical best max(0, 0.4 - d): area 0.4²/2 = 0.08 (it reaches 0 before 0.5).
    assert curve.pauc_corrected == pytest.approx(0.155 - 0.08)
    assert curve.auc == pytest.approx(0.08 + 0.25 * 0.4)


def test_step_area_and_theoretical_best() -> None:
    frac, err = np.array([0.0, 0.2, 0.6, 1.0]), np.array([0.4, 0.25, 0.0, 0.0])
    assert step_area(frac, err, 0.2) == pytest.approx(0.08)
    assert step_area(frac, err, 0.1) == pytest.approx(0.04)
    assert step_area(frac, err, 0.0) == 0.0
    assert theoretical_best_area(0.4, 0.2) == pytest.approx(0.08 - 0.02)  # 0.4²/2 − 0.2²/2
    assert theoretical_best_area(0.05, 0.2) == pytest.approx(0.05**2 / 2)


def test_edc_threshold_from_starting_fnmr_and_fmr() -> None:
    dist = np.concatenate([np.linspace(0.0, 1.0, 101), np.linspace(2.0, 3.0, 1001)])
    same = np.concatenate([np.ones(101, bool), np.zeros(1001, bool)])
    thr, _ = edc_threshold(dist, same, starting_fnmr=0.05)
    assert thr == pytest.approx(0.95)  # 95th percentile of 0..1
    assert np.mean(dist[same] >= thr) == pytest.approx(6 / 101)  # 0.95 … 1.00
    thr, note = edc_threshold(dist, same, fmr=1e-3)
    assert thr == pytest.approx(2.001) and note is None  # idx 1000 // 1000 = 1


def test_pair_quality_and_distances() -> None:
    q = np.array([1.0, 3.0, 4.0, 2.0])
    assert list(pair_quality(q, "min")) == [1.0, 2.0]
    assert list(pair_quality(q, "mean")) == [2.0, 3.0]
    assert list(pair_quality(q, "product")) == [3.0, 8.0]
    with pytest.raises(FqtoolError):
        pair_quality(q, "max")
    emb = np.array([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0], [-3.0, -3.0]])
    assert pair_distances(emb) == pytest.approx([0.5, 1.0])
    assert pair_distances(emb, "cosine") == pytest.approx([1.0, 2.0])


def _pairs_embeddings(dist: np.ndarray) -> np.ndarray:
    """2-D embeddings whose pairs have the given angular distance (in units of pi)."""
    rows = []
    for d in dist:
        rows += [[1.0, 0.0], [math.cos(math.pi * d), math.sin(math.pi * d)]]
    return np.asarray(rows)


def test_compute_curves_erc_and_edc_with_baselines() -> None:
    emb = _pairs_embeddings(DIST)
    qualities = {"a": np.repeat(QUAL, 2), "b": np.repeat(-QUAL, 2)}
    report = compute_curves(emb, SAME, qualities, mode="erc", fmrs=(0.1,))
    assert [c.method for c in report.curves] == ["a", "b"]
    assert report.curves[0].fnmr[:4] == pytest.approx([0.2, 1 / 9, 0.0, 0.125])
    ideal, random = report.baselines
    assert ideal.method == "ideal" and random.method == "random"
    assert np.allclose(random.fnmr, 0.2)
    # ideal: 2 false non-matches among 10 genuine of 21 pairs; r=0.05 drops 1 → 1/9, r=0.10 drops 2 → 0.
    assert ideal.fnmr[:3] == pytest.approx([0.2, 1 / 9, 0.0])
    edc = compute_curves(emb, SAME, qualities, mode="edc", starting_fnmr=0.2)
    assert edc.curves[0].operating_point == "fnr0=0.2".replace("fnr", "fnmr")
    assert edc.baselines[0].fnmr[0] == pytest.approx(edc.curves[0].fnmr[0])
    rows = edc.summary()
    assert {r["method"] for r in rows} == {"a", "b", "ideal", "random"}
    assert rows[0]["pauc_corrected"] is not None


def test_degenerate_inputs() -> None:
    emb = _pairs_embeddings(DIST)
    with pytest.raises(FqtoolError, match="no genuine pairs"):
        compute_curves(emb, np.zeros(21, bool), {"q": np.ones(42)})
    with pytest.raises(FqtoolError, match="42 images"):
        compute_curves(emb, SAME, {"q": np.ones(40)})
    report = compute_curves(emb, SAME, {"flat": np.ones(42)}, mode="erc")
    joined = " ".join(report.warnings)
    assert "same quality" in joined and "1/FMR" in joined
    assert not np.isnan(report.curves[0].fnmr[0])
    edc = compute_curves(emb, SAME, {"flat": np.ones(42)}, mode="edc")
    assert list(edc.curves[0].fraction) == [0.0, 1.0]  # one quality value: all discarded at once


def test_quality_csv(tmp_path: Path) -> None:
    by_index = tmp_path / "q.csv"
    by_index.write_text("index,level,kind,quality\n2,0,none,0.5\n0,0,none,0.1\n1,0.3,blur,0.7\n3,0,none,1\n")
    assert list(load_quality_csv(by_index, 4)) == [0.1, 0.7, 0.5, 1.0]
    by_path = tmp_path / "p.csv"
    by_path.write_text("path,quality\nimages/000001.jpg,2\nimages/000000.jpg,1\n")
    assert list(load_quality_csv(by_path, 2)) == [1.0, 2.0]
    with pytest.raises(FqtoolError, match=r"q\.csv: 2 of 6 images have no quality \(index 4, 5\)"):
        load_quality_csv(by_index, 6)
    with pytest.raises(FqtoolError, match="outside"):
        load_quality_csv(by_index, 3)
    bad = tmp_path / "bad.csv"
    bad.write_text("name,score\na,1\n")
    with pytest.raises(FqtoolError, match="'quality' column"):
        load_quality_csv(bad, 1)
    assert parse_scores_option("serfiq=x/s.csv") == ("serfiq", Path("x/s.csv"))
    assert parse_scores_option("x/s.csv") == ("s", Path("x/s.csv"))
