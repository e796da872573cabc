"""`fqtool demo --quick`: the whole pipeline end to end, as a user runs it."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.demo import FULL, QUICK, erc_aucs, plan_steps, quality_vs_degradation, spearman


def test_spearman_matches_hand_computed_ranks() -> None:
    assert spearman(np.array([1, 2, 3, 4]), np.array([10, 20, 30, 40])) == pytest.approx(1.0)
    assert spearman(np.array([1, 2, 3, 4]), np.array([4, 3, 2, 1])) == pytest.approx(-1.0)
    # ties get average ranks: x ranks (0, 1.5, 1.5, 3), y ranks (0, 1, 2, 3) → r = 0.9486833
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 2, 3, 4])) == pytest.approx(0.9486833, abs=1e-6)
    assert np.isnan(spearman(np.ones(4), np.arange(4)))


def test_quality_vs_degradation_joins_by_record_key(tmp_path) -> None:
    scores = tmp_path / "scores.csv"
    scores.write_text("path,quality\n0000/1.jpg,30\n0000/2.jpg,20\n0001/3.jpg,10\n0001/9.jpg,99\n")
    truth = tmp_path / "degradations.csv"
    truth.write_text("name,label,level,kind\ntrain:1,0,0.0,none\ntrain:2,0,0.6,blur\ntrain:3,1,0.9,noise\n")
    rho, clean, degraded = quality_vs_degradation(scores, truth)
    assert rho == pytest.approx(-1.0)  # 9.jpg has no ground truth and is left out
    assert (clean, degraded) == (30.0, 15.0)


def test_plan_uses_only_registered_commands(tmp_path) -> None:
    from fqtool.cli.app import COMMANDS

    names = {name for name, _ in COMMANDS}
    steps = plan_steps(tmp_path, QUICK, seed=0)
    assert [s.name for s in steps] == [
        "synth", "convert-rec", "make-list", "train-magface", "verify", "score", "erc-curve", "export",
    ]
    assert [s.name for s in plan_steps(tmp_path, FULL, seed=0)] == [
        "synth", "convert-rec", "make-list", "train-magface", "train-crfiqa", "verify", "score", "score",
        "erc-curve", "export",
    ]
    assert all(s.args[0] in names for s in steps)


def test_full_demo_compares_crfiqa_and_quick_skips_it(tmp_path) -> None:
    """The full demo trains CR-FIQA like MagFace and draws its quality in the ERC; --quick stays lean."""
    full = {step.name: step.args for step in plan_steps(tmp_path, FULL, 0)}
    quick = {step.name: step.args for step in plan_steps(tmp_path, QUICK, 0)}
    crfiqa_weights = tmp_path / "model_crfiqa" / "model.safetensors"
    assert full["train-crfiqa"][0] == "train-crfiqa" and str(crfiqa_weights.parent) in full["train-crfiqa"]
    as_magface = [str(tmp_path / "model") if a == str(crfiqa_weights.parent) else a
                  for a in full["train-crfiqa"][1:]]
    assert as_magface == full["train-magface"][1:] + ["--lr-batch", "0"]  # same data, model and schedule
    assert f"crfiqa={tmp_path / 'reports' / 'val_crfiqa.csv'}" in full["erc-curve"]
    assert "train-crfiqa" not in quick and not any(a.startswith("crfiqa=") for a in quick["erc-curve"])
    assert "--features" in quick["erc-curve"] and "--features" in full["erc-curve"]


def _embedded_sets(step_args: list[str], out) -> list[tuple[str, str]]:
    """``(image set, weights)`` a step's command embeds: verify/score embed their input with ``-w``;
    erc-curve embeds its TARGET with ``-w`` and each ``--quality-model`` unless it reads ``--features``."""
    same_set = {str(out / "data" / "val.bin"): "val", str(out / "unpacked" / "images"): "train",
                str(out / "unpacked" / "verification" / "val" / "images"): "val"}
    name, *rest = step_args
    if name not in ("verify", "score", "erc-curve") or "--features" in rest:
        return []
    target = same_set.get(rest[0], rest[0])
    weights = [rest[i + 1] for i, a in enumerate(rest) if a == "-w"]
    weights += [rest[i + 1].split("=", 1)[1] for i, a in enumerate(rest) if a == "--quality-model"]
    return [(target, w) for w in weights]


@pytest.mark.parametrize("size", [QUICK, FULL], ids=["quick", "full"])
def test_no_step_embeds_the_same_set_twice(tmp_path, size) -> None:
    """Each (image set, model) pair is embedded by one step only: erc-curve reuses verify's features,
    and CR-FIQA's verification quality comes from one score pass, not a second embedding of val.bin."""
    steps = plan_steps(tmp_path, size, 0)
    embedded = [pair for step in steps for pair in _embedded_sets(step.args, tmp_path)]
    assert embedded and len(embedded) == len(set(embedded)), embedded
    val = [w for target, w in embedded if target == "val"]
    assert len(val) == (2 if size.crfiqa else 1)


def test_full_demo_trains_half_the_images_of_before() -> None:
    """Training dominates the demo: each model sees at most 10 × 576 images (the earlier 20 epochs saw
    twice that), with the learning-rate drops inside those epochs."""
    assert FULL.epochs * FULL.identities * FULL.images_per_identity <= 576 * 10
    assert all(0 < int(e) < FULL.epochs for e in FULL.lr_steps.split(","))


def test_report_figures_show_what_the_data_say() -> None:
    """Legend counts per band, hue-distinct colours, raw and 0-100 values under the extremes, and the
    ERC's x label in correct English."""
    from fqtool.demo import LEVEL_COLOURS, extreme_label, level_groups, pick_extremes

    rows = [{"level": lv, "quality": str(q), "quality_100": str(min(100.0, q * 10)), "kind": "blur"}
            for lv, q in ((0.0, 20.0), (0.0, 19.5), (0.2, 15.0), (0.5, 9.0), (0.9, 4.0), (0.95, 3.1))]
    groups = level_groups(rows)
    assert [label for label, _ in groups] == ["clean (2)", "level 0-⅓ (1)", "level ⅓-⅔ (1)", "level ⅔-1 (2)"]
    assert len(set(LEVEL_COLOURS)) == len(groups)
    hues = [int(c[1:3], 16) - int(c[5:7], 16) for c in LEVEL_COLOURS]  # red minus blue tells them apart
    assert len({h > 0 for h in hues}) == 2  # not all shades of one orange
    lowest, highest = pick_extremes(rows, 2)
    assert [r["quality"] for r in lowest] == ["3.1", "4.0"] and highest[0]["quality"] == "20.0"
    assert extreme_label(highest[0]) == "20 (100/100)" and extreme_label(highest[1]) == "19.5 (100/100)"
    from pathlib import Path

    import fqtool.eval.plots as plots

    text = Path(plots.__file__).read_text(encoding="utf-8")
    assert "Ratio of unconsidered images [%]" in text and "unconsidered image [" not in text


def test_impostor_note_is_honest_about_the_tail() -> None:
    from fqtool.demo import impostor_note

    n = {"impostor": 1000, "impostor_fewest": 24, "impostor_fewest_at": 0.95, "genuine": 1000}
    note = impostor_note(n, 0.01)
    assert "1000 at 0 % rejected (the 10 most similar pass)" in note
    assert ("as few as 24 remain at 95 % rejected (fewer than 1/FMR = 100: there the threshold is the most "
            "similar impostor)") in note
    assert "most similar impostor" not in impostor_note(n, 0.1)  # 24 ≥ 1/0.1
    assert "1/FMR = 100" not in impostor_note({**n, "impostor_fewest": 100}, 0.01)


def test_erc_aucs_per_operating_point() -> None:
    numbers = {"erc_auc[model:norm@fmr=0.1]": 0.5, "erc_auc[random@fmr=0.1]": 0.7,
               "erc_auc[model:norm@fmr=0.01]": 0.8, "accuracy": 0.9}
    assert erc_aucs(numbers, 0.1) == {"model:norm": 0.5, "random": 0.7}
    assert erc_aucs(numbers, 1e-2) == {"model:norm": 0.8}


def test_quick_demo_runs_end_to_end(tmp_path) -> None:
    out = tmp_path / "demo"
    result = CliRunner().invoke(app, ["demo", "--quick", "--output", str(out)])
    assert result.exit_code == 0, result.output
    report = (out / "report.md").read_text()
    for needle in ("verification accuracy", "Spearman", "quality_by_level.png", "extremes.png",
                   "fqtool train-magface", "What good looks like", "CR-FIQA(L) 0.0138", "impostor pairs",
                   "fqtool convert-rec DATA OUT/unpacked"):
        assert needle in report
    assert str(out) not in report.split("## The same on your data")[1] and "--overwrite" not in report
    doc = json.loads((out / "report.json").read_text())
    assert [s["name"] for s in doc["steps"]][-1] == "report" and len(doc["steps"]) == 9
    assert all(s["seconds"] >= 0 and s["cpu_seconds"] >= 0 for s in doc["steps"])
    assert doc["numbers"]["accuracy"] == float(verify_accuracy(out))
    assert "step 4/8 train-magface:" in result.output
    with open(out / "reports" / "verify.csv", newline="") as handle:
        verify = next(csv.DictReader(handle))
    assert int(verify["pairs"]) == QUICK.val_pairs
    assert 0.5 <= float(verify["accuracy"]) <= 1.0
    with open(out / "reports" / "scores.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == QUICK.identities * QUICK.images_per_identity
    assert all(0.0 <= float(r["quality_100"]) <= 100.0 for r in rows)
    summary = json.loads((out / "reports" / "erc" / "summary.json").read_text())
    methods = {row["method"] for row in summary["summary"]}
    assert {"model:norm", "ground_truth"} <= methods
    assert (out / "model" / "model.onnx").stat().st_size > 0
    for figure in ("quality_by_level.png", "extremes.png"):
        assert (out / "reports" / figure).read_bytes()[:4] == b"\x89PNG"
    _assert_demo_is_honest(out, summary)


#: Thresholds for the quick run, about half the measured effects: quick runs with seeds 0 and 1 (and
#: seed 0 trained from the .rec) gave ground truth below random by 0.202, 0.209 (0.212) ERC AUC at
#: FMR 1e-1, and Spearman(quality, level) on the training images of −0.52 and −0.60.
MIN_GT_GAIN = 0.1
MAX_SPEARMAN = -0.25


def verify_accuracy(out) -> str:
    with open(out / "reports" / "verify.csv", newline="") as handle:
        return next(csv.DictReader(handle))["accuracy"]


def _assert_demo_is_honest(out, summary: dict) -> None:
    """The ground truth beats random on the ERC (so the data's degradations matter for recognition),
    and the learned quality falls as the true degradation level rises."""
    auc = {row["method"]: row["auc"] for row in summary["summary"] if row["operating_point"] == "fmr=0.1"}
    assert auc["ground_truth"] < auc["random"] - MIN_GT_GAIN, auc
    assert auc["ideal"] < auc["ground_truth"], auc
    truth = out / "data" / "degradations.csv"
    rho, clean, degraded = quality_vs_degradation(out / "reports" / "scores.csv", truth)
    assert rho < MAX_SPEARMAN, rho
    assert clean > degraded
