"""Peers' per-image quality files: CR-FIQA 'path score', MagFace feat.list, OFIQ ';' CSV, fqtool CSV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from fqtool.cli.app import app
from fqtool.errors import FqtoolError
from fqtool.eval.score_files import detect_format, load_scores, write_path_scores

FACES = Path(__file__).parent / "data" / "faces"


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_each_format_is_detected_and_matched(tmp_path) -> None:
    truth = np.array([0.5, 0.25, 0.75, 1.0])
    order = [2, 0, 3, 1]  # files list the images out of order; paths say which is which
    crfiqa = _write(tmp_path, "crfiqa.txt", "".join(f"images/{i:05d}.jpg {truth[i]}\n" for i in order))
    ofiq = _write(tmp_path, "ofiq.csv", "Filename;UnifiedQualityScore;UnifiedQualityScore.scalar;\n"
                  + "".join(f"/data/set/{i:06d}.png;0.1;{truth[i] * 100};\n" for i in order))
    csv_file = _write(tmp_path, "q.csv", "path,quality\n" + "".join(f"{i}.jpg,{truth[i]}\n" for i in order))
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(4, 8))
    feat_list = _write(tmp_path, "feat.list", "".join(
        f"toy_imgs/{name}.jpg " + " ".join(f"{v:.6f}" for v in row) + " \n"
        for name, row in zip("abcd", feats, strict=True)))
    assert [detect_format(p.read_text().splitlines()[0], p) for p in (crfiqa, ofiq, csv_file, feat_list)] == [
        "path-score", "ofiq", "csv", "feat-list"]
    np.testing.assert_allclose(load_scores(crfiqa, 4), truth)
    np.testing.assert_allclose(load_scores(ofiq, 4), truth * 100)
    np.testing.assert_allclose(load_scores(csv_file, 4), truth)
    np.testing.assert_allclose(load_scores(feat_list, 4), np.linalg.norm(feats, axis=1), rtol=1e-5)


def test_written_path_scores_read_back(tmp_path) -> None:
    quality = np.array([3.0, 1.5, 2.25], np.float32)
    out = write_path_scores(["images/000002.jpg", "images/000000.jpg", "images/000001.jpg"], quality,
                            tmp_path / "s.txt")
    np.testing.assert_allclose(load_scores(out, 3), [1.5, 2.25, 3.0])


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("u.txt", "just-one-token\n", "unknown scores format"),
        ("e.txt", "\n\n", "empty"),
        ("n.txt", "images/000000.jpg 0.1\nalice/photo.jpg 0.2\n", "path 'alice/photo.jpg' matches no"),
        ("r.txt", "images/000000.jpg 0.1\nimages/000009.jpg 0.2\n", "000009.jpg' matches no image"),
        ("d.txt", "0.jpg 0.1\n00.jpg 0.2\n", "line 2: image 0 is listed twice"),
        ("m.txt", "0.jpg 0.1\n", "1 of 2 images have no quality"),
        ("x.txt", "0.jpg 0.1\n1.jpg high\n", "line 2: score 'high' is not a number"),
        ("f.list", "a.jpg 1 2 3\n", "has 1 feature lines but the set has 2 images"),
        ("o.csv", "Filename;Sharpness\n0.png;3\n", "UnifiedQualityScore"),
    ],
)
def test_bad_scores_files_are_one_line(tmp_path, name, text, needle) -> None:
    path = _write(tmp_path, name, text)
    with pytest.raises(FqtoolError, match=needle) as info:
        load_scores(path, 2)
    assert "\n" not in str(info.value) and name in str(info.value)


@pytest.mark.slow
def test_score_path_score_then_erc_curve(tmp_path) -> None:
    """score --format path-score on a set's images → erc-curve --scores reads it; a bad file exits 2."""
    import fqtool
    from fqtool.data.binfile import load_bin, save_bin, write_verification_folder
    from fqtool.eval.features import save_features
    from fqtool.models import create_model
    from fqtool.models.checkpoint import save_checkpoint

    torch.manual_seed(0)
    weights = save_checkpoint(create_model("iresnet_tiny").eval(), tmp_path / "m.safetensors")
    faces = sorted(FACES.glob("*.jpg"))[:8]
    save_bin(tmp_path / "set.bin", [f.read_bytes() for f in faces], [True, False, True, False])
    write_verification_folder(load_bin(tmp_path / "set.bin"), tmp_path / "set")
    runner = CliRunner()
    scores = tmp_path / "q.txt"
    res = runner.invoke(app, ["score", str(tmp_path / "set" / "images"), "-w", str(weights),
                              "-o", str(scores), "--device", "cpu", "-q"])
    assert res.exit_code == 0, res.output
    assert scores.read_text().splitlines()[0].split()[0] == "000000.jpg"
    model = fqtool.load_model(weights, device="cpu")
    from fqtool.data.binfile import decode_pairs

    vset = load_bin(tmp_path / "set.bin")
    fs = model.features(decode_pairs(vset), vset.issame, name="set", flip=False)
    save_features(tmp_path / "set.npz", fs)
    np.testing.assert_allclose(load_scores(scores, 8), fs.quality, rtol=1e-4)
    out = tmp_path / "erc"
    res = runner.invoke(app, ["erc-curve", "--features", str(tmp_path / "set.npz"), "--scores",
                              f"crfiqa={scores}", "-o", str(out), "--json"])
    assert res.exit_code == 0, res.output
    assert "crfiqa" in (out / "summary.csv").read_text()
    bad = _write(tmp_path, "bad.txt", "people/alice.jpg 0.5\n")
    res = runner.invoke(app, ["erc-curve", "--features", str(tmp_path / "set.npz"), "--scores",
                              f"x={bad}", "-o", str(tmp_path / "erc2")])
    assert res.exit_code == 2 and "matches no image" in res.output
    assert len(res.output.strip().splitlines()) == 1
    assert not (tmp_path / "erc2").exists()
