"""AUC, EER and the majority-answer warning beside the 10-fold accuracy (issue 26 item 2)."""

from __future__ import annotations

import numpy as np
import pytest

from fqtool.eval.verification import (
    equal_error_rate,
    evaluate_verification,
    majority_warning,
    roc_auc,
)


def test_auc_matches_sklearn_with_ties() -> None:
    sklearn = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    issame = rng.random(400) < 0.3
    dist = np.round(rng.random(400) + np.where(issame, -0.3, 0.3), 1)  # rounding makes ties
    assert roc_auc(dist, issame) == pytest.approx(sklearn.roc_auc_score(issame, -dist), abs=1e-12)


def test_auc_and_eer_by_hand() -> None:
    # genuine distances 0.1, 0.4; impostor 0.3, 0.5: 3 of 4 (genuine, impostor) orderings right
    dist, issame = np.array([0.1, 0.4, 0.3, 0.5]), np.array([True, True, False, False])
    assert roc_auc(dist, issame) == pytest.approx(0.75)
    eer, thr = equal_error_rate(dist, issame)
    assert eer == pytest.approx(0.5) and thr in (0.1, 0.3, 0.4)  # FAR = FRR = 1/2 there
    separable = np.array([0.1, 0.2, 0.8, 0.9])
    assert roc_auc(separable, issame) == 1.0
    assert equal_error_rate(separable, issame)[0] == 0.0
    assert roc_auc(dist, np.ones(4, bool)) is None
    assert equal_error_rate(dist, np.zeros(4, bool)) == (None, None)


def test_majority_warning_on_imbalanced_pairs() -> None:
    """The issue's case: 46 genuine, 460 impostor, 93.09 % accuracy where 'different' scores 90.9 %."""
    majority, note = majority_warning(0.9309, 46, 460)
    assert majority == pytest.approx(460 / 506)
    assert note is not None and "'different'" in note and "90.91%" in note and "\n" not in note
    assert majority_warning(0.99, 46, 460)[1] is None  # well above the majority answer
    assert majority_warning(0.52, 500, 500)[1] is None  # balanced: weak, but not imbalanced


def test_result_carries_auc_eer_and_warns() -> None:
    rng = np.random.default_rng(1)
    pairs, dims = 506, 8
    issame = np.zeros(pairs, bool)
    issame[:46] = True
    base = rng.normal(size=(pairs, dims))
    noise, stranger = rng.normal(size=(pairs, dims)), rng.normal(size=(pairs, dims))
    other = np.where(issame[:, None], base + 2.0 * noise, stranger)
    emb = np.empty((2 * pairs, dims))
    emb[0::2], emb[1::2] = base, other
    res = evaluate_verification(emb, issame, name="imb")
    assert 0.5 < res.auc <= 1.0 and 0.0 <= res.eer < 0.5
    assert res.majority_accuracy == pytest.approx(460 / 506)
    assert any("imbalanced pairs" in w for w in res.warnings)
    data = res.to_dict()
    assert data["auc"] == res.auc and data["eer"] == res.eer


def test_verify_table_fits_80_columns() -> None:
    from rich.console import Console

    from fqtool.cli.eval_options import rich_table
    from fqtool.eval.results import PairResults

    rng = np.random.default_rng(0)
    res = evaluate_verification(rng.normal(size=(40, 8)), np.arange(20) % 2 == 0, name="agedb_30")
    console = Console(width=80, record=True)
    console.print(rich_table(PairResults([res], (1e-3, 1e-4)).table()))
    text = console.export_text()
    assert "agedb_30" in text and "AUC" in text and "EER %" in text and "TAR@1e-4" in text
    assert "…" not in text and all(len(line) <= 80 for line in text.splitlines())


def test_verify_csv_has_auc_and_eer_last(tmp_path) -> None:
    import csv

    from fqtool.eval.results import PairResults

    rng = np.random.default_rng(0)
    res = evaluate_verification(rng.normal(size=(40, 8)), np.arange(20) % 2 == 0, name="s")
    PairResults([res], (1e-3,)).write_csv(tmp_path / "r.csv")
    with open(tmp_path / "r.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert list(row)[-2:] == ["auc", "eer"]
    assert float(row["auc"]) == pytest.approx(res.auc, abs=1e-6)
    assert float(row["eer"]) == pytest.approx(res.eer)
