"""IJB-B / IJB-C: meta parsing, alignment, the three pooling protocols, TAR@FAR, CR-FIQA's ERC, the
streaming/resumable embedding and ``verify`` / ``erc-curve`` end to end on a small fixture of real faces."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import auc as sk_auc
from sklearn.metrics import roc_curve as sk_roc_curve
from sklearn.preprocessing import normalize as sk_normalize
from typer.testing import CliRunner

from _ijb_fixture import write_ijb_release
from fqtool.cli.app import app
from fqtool.data.ijb import load_ijb
from fqtool.errors import FormatError
from fqtool.eval import ijb_embed
from fqtool.eval.ijb import (
    IJB_FARS,
    IjbFeatures,
    Pooling,
    evaluate_ijb,
    load_ijb_features,
    roc_curve,
    save_ijb_features,
    tar_at_fars,
)
from fqtool.eval.ijb_erc import crfiqa_threshold, ijb_erc
from fqtool.eval.verification import far_key
from fqtool.models import create_model
from fqtool.models.checkpoint import save_checkpoint

runner = CliRunner()


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An IJB_release folder with IJBC (4 templates per person) and IJBB (2), plus a tiny model."""
    root = tmp_path_factory.mktemp("ijb") / "IJB_release"
    write_ijb_release(root, "IJBC", templates_per_id=4, seed=0)
    write_ijb_release(root, "IJBB", templates_per_id=2, impostors=60, seed=1)
    torch.manual_seed(0)
    save_checkpoint(create_model("iresnet_tiny"), root.parent / "tiny.safetensors")
    return root


@pytest.fixture(scope="module")
def fake_features(release: Path) -> IjbFeatures:
    """The IJBC fixture's lists with random embeddings that carry identity (person = template // 44)."""
    meta = load_ijb(release / "IJBC")
    rng = np.random.default_rng(3)
    person = (meta.templates - 100) // 44
    centres = rng.normal(size=(person.max() + 1, 16))
    emb = centres[person] * 1.5 + rng.normal(size=(len(person), 16)) * rng.uniform(0.3, 3.0, (len(person), 1))
    return IjbFeatures(
        name="IJBC", images=meta.images, embeddings=emb.astype(np.float32),
        quality=rng.uniform(0, 40, len(person)).astype(np.float32), detector_scores=meta.detector_scores,
        templates=meta.templates, medias=meta.medias, pair_t1=meta.pair_t1, pair_t2=meta.pair_t2,
        pair_label=meta.pair_label,
        embeddings_flip=(emb + rng.normal(size=emb.shape) * 0.5).astype(np.float32), meta={},
    )  # fmt: skip


# ----------------------------------------------------------------------------- reference re-implementations


def _reference_templates(feats, templates, medias, *, normalize_media, template_mean):
    """The reference scripts' loops: per template the media means, then their sum or mean (magface)."""
    unique_templates = np.unique(templates)
    out = np.zeros((len(unique_templates), feats.shape[1]))
    for k, t in enumerate(unique_templates):
        (ind_t,) = np.where(templates == t)
        face_feats, face_medias = feats[ind_t], medias[ind_t]
        media_feats = []
        for m in np.unique(face_medias):
            (ind_m,) = np.where(face_medias == m)
            media_feats.append(np.mean(face_feats[ind_m], axis=0))
        media_feats = np.array(media_feats)
        if normalize_media:
            media_feats = media_feats / np.linalg.norm(media_feats, axis=1, keepdims=True)
        out[k] = np.mean(media_feats, axis=0) if template_mean else np.sum(media_feats, axis=0)
    return out, unique_templates


def _reference_scores(f: IjbFeatures, pooling: Pooling) -> np.ndarray:
    feats = f.embeddings.astype(np.float64)
    if pooling.flip:
        feats = feats + f.embeddings_flip.astype(np.float64)
    if pooling.protocol == "magface":
        tf, ids = _reference_templates(feats, f.templates, f.medias, normalize_media=not pooling.norm_score,
                                       template_mean=True)  # fmt: skip
    else:
        if not pooling.norm_score:
            feats = feats / np.sqrt(np.sum(feats**2, -1, keepdims=True))
        if pooling.detector_score:
            feats = feats * f.detector_scores[:, np.newaxis]
        if pooling.protocol == "quality":
            qs = f.quality.astype(np.float64)
            qs = (qs - min(qs)) / (max(qs) - min(qs))
            feats = (feats * qs[:, np.newaxis]) / sum(qs)
        tf, ids = _reference_templates(
            feats, f.templates, f.medias, normalize_media=False, template_mean=False
        )
        tf = sk_normalize(tf)
    index = {t: k for k, t in enumerate(ids)}
    a = tf[[index[t] for t in f.pair_t1]]
    b = tf[[index[t] for t in f.pair_t2]]
    if pooling.protocol == "magface":
        cos = np.sum(a * b, 1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
        return 1 - np.arccos(np.clip(cos, -1, 1)) / math.pi
    return np.sum(a * b, -1)


def _reference_tar(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    fpr, tpr, _ = sk_roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = {}
    for far in IJB_FARS:
        _, min_index = min(list(zip(abs(fpr - far), range(len(fpr)), strict=True)))
        out[far_key(far)] = tpr[min_index]
    return out


POOLINGS = [
    Pooling("insightface", flip=True),
    Pooling("insightface", flip=False),
    Pooling("insightface", flip=True, norm_score=True, detector_score=True),
    Pooling("magface", flip=False),
    Pooling("magface", flip=False, norm_score=True),
    Pooling("quality", flip=True),
    Pooling("quality", flip=True, norm_score=True),
]


@pytest.mark.parametrize("pooling", POOLINGS, ids=lambda p: p.label().replace(", ", "-"))
def test_pooling_and_tar_match_reference(fake_features: IjbFeatures, pooling: Pooling) -> None:
    from fqtool.eval.ijb import pair_scores, template_features

    feats, ids = template_features(fake_features, pooling)
    ours = pair_scores(feats, ids, fake_features.pair_t1, fake_features.pair_t2, pooling.protocol)
    reference = _reference_scores(fake_features, pooling)
    np.testing.assert_allclose(ours, reference, rtol=0, atol=1e-12)
    result = evaluate_ijb(fake_features, pooling)
    labels = fake_features.pair_label.astype(int)
    assert result.tar_at_far == _reference_tar(labels, reference)
    fpr, tpr, _ = sk_roc_curve(labels, reference)
    assert result.auc == pytest.approx(sk_auc(fpr, tpr), abs=1e-12)


def test_pooling_protocols_differ(fake_features: IjbFeatures) -> None:
    """Each protocol is its own rule: the three score lists are not the same."""
    scores = [evaluate_ijb(fake_features, p).auc for p in (POOLINGS[0], POOLINGS[3], POOLINGS[5])]
    assert len({round(s, 12) for s in scores}) == 3


def test_roc_and_nearest_far_rule_with_ties() -> None:
    """Tied scores and runs of impostors: the collinear-point dropping and the 'larger TPR on ties' rule."""
    rng = np.random.default_rng(1)
    labels = (rng.random(3000) < 0.3).astype(int)
    scores = np.round(rng.normal(labels * 1.2, 1.0), 1)
    fpr, tpr, thr = roc_curve(labels, scores)
    ref_fpr, ref_tpr, ref_thr = sk_roc_curve(labels, scores)
    np.testing.assert_array_equal(fpr, ref_fpr)
    np.testing.assert_array_equal(tpr, ref_tpr)
    np.testing.assert_array_equal(thr[1:], ref_thr[1:])
    ours = {k: v[0] for k, v in tar_at_fars(fpr, tpr).items()}
    assert ours == _reference_tar(labels, scores)


# ----------------------------------------------------------------------------- ERC (CR-FIQA)


def _reference_threshold(pos: np.ndarray, neg: np.ndarray, op: float) -> float:
    """CR-FIQA ``calculate_roc`` + ``get_fmr_op`` on dissimilarity scores, written out plainly."""
    scored = sorted([(-d, 1) for d in pos] + [(-d, 0) for d in neg], key=lambda x: x[0])
    scores = np.array(scored, dtype=np.float64)
    cumul = np.cumsum(scores[:, 1])
    thresholds, u_indices = np.unique(scores[:, 0], return_index=True)
    fnm = cumul[u_indices] - scores[u_indices][:, 1]
    fm = len(neg) - (u_indices - fnm)
    return float(-thresholds[np.argmin(abs(fm / len(neg) - op))])


def _reference_erc(f: IjbFeatures, quality: np.ndarray, fmr: float) -> list[float]:
    feats = np.concatenate([f.embeddings, f.embeddings_flip], axis=1).astype(np.float64)
    tf, ids = _reference_templates(feats, f.templates, f.medias, normalize_media=False, template_mean=False)
    tf = sk_normalize(tf)
    index = {t: k for k, t in enumerate(ids)}
    x, y = tf[[index[t] for t in f.pair_t1]], tf[[index[t] for t in f.pair_t2]]
    dist = np.arccos(
        np.clip(np.sum(x * y, 1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(y, axis=1)), -1, 1)
    )
    dist = dist / math.pi
    template_q = {t: min(quality[f.templates == t]) for t in ids}
    pair_q = np.array([min(template_q[a], template_q[b]) for a, b in zip(f.pair_t1, f.pair_t2, strict=True)])
    order = np.argsort(pair_q, kind="stable")
    out = []
    for rate in np.arange(0, 0.98, 0.05):
        kept = order[int(rate * len(order)) :]
        labels = f.pair_label[kept]
        pos, neg = np.sort(dist[kept][labels == 1]), np.sort(dist[kept][labels == 0])
        thr = _reference_threshold(pos, neg, fmr)
        out.append(1 - len([g for g in pos if g < thr]) / len(pos))
    return out


def test_erc_matches_crfiqa_rule(fake_features: IjbFeatures) -> None:
    quality = fake_features.quality.astype(np.float64)
    report = ijb_erc(fake_features, {"q": quality}, fmrs=(1e-1, 1e-2))
    for curve, fmr in zip([c for c in report.curves if c.method == "q"], (1e-1, 1e-2), strict=True):
        assert curve.fnmr.tolist() == pytest.approx(_reference_erc(fake_features, quality, fmr), abs=1e-12)
    assert {c.method for c in report.baselines} == {"ideal", "random"}


def test_crfiqa_threshold_prefers_the_larger_distance_on_ties() -> None:
    pos = np.array([0.1, 0.2, 0.45, 0.46])
    neg = np.array([0.3, 0.5, 0.6, 0.7])
    thr = crfiqa_threshold(pos, neg, 0.25)
    assert thr == _reference_threshold(pos, neg, 0.25) == 0.46  # 0.3, 0.45 and 0.46 all give FMR 0.25


# ----------------------------------------------------------------------------- alignment and meta files


def test_loose_crops_are_aligned_back_to_their_source_face(release: Path) -> None:
    """The loader's warp (decode + five points → 112×112) gives back the face each crop was made from."""
    from _ijb_fixture import identities
    from fqtool.data.ijb import IjbAlignedFaces

    people = list(identities().values())
    sources = [np.asarray(Image.open(f).convert("L"), np.float64) for files in people for f in files]
    owner = [k for k, files in enumerate(people) for _ in files]
    meta = load_ijb(release / "IJBC")
    faces = IjbAlignedFaces(meta, np.arange(40))
    right = 0
    for i in range(40):
        _, aligned, error = faces[i]
        assert error == ""
        grey = aligned.double().mean(0).numpy()
        scores = [np.corrcoef(grey[16:96, 16:96].ravel(), src[16:96, 16:96].ravel())[0, 1] for src in sources]
        right += owner[int(np.argmax(scores))] == (meta.templates[i] - 100) // 44
    assert right >= 36, right


def _broken_copy(release: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "IJBC"
    shutil.copytree(release / "IJBC", copy)
    return copy


@pytest.mark.parametrize(
    ("file", "edit", "expect"),
    [
        ("loose_crop/5.jpg", "delete", "ijbc_face_tid_mid.txt: line 5: image '5.jpg' not found"),
        (
            "meta/ijbc_template_pair_label.txt",
            "unknown",
            "ijbc_template_pair_label.txt: line 3: template 99999",
        ),
        ("meta/ijbc_name_5pts_score.txt", "nine", "ijbc_name_5pts_score.txt: line 4: expected an image name"),
        ("loose_crop/5.jpg", "garbage", "loose_crop/5.jpg: "),
    ],
)
def test_bad_ijb_input_is_one_line(release: Path, tmp_path: Path, file: str, edit: str, expect: str) -> None:
    root = _broken_copy(release, tmp_path)
    path = root / file
    if edit == "delete":
        path.unlink()
    elif edit == "garbage":  # found only while embedding, in the loader
        path.write_bytes(b"\xff\xd8\xff this is not a JPEG")
    else:
        lines = path.read_text().splitlines()
        row = 2 if edit == "unknown" else 3
        fields = lines[row].split()
        lines[row] = f"{fields[0]} 99999 {fields[2]}" if edit == "unknown" else " ".join(fields[:10])
        path.write_text("\n".join(lines) + "\n")
    weights = str(release.parent / "tiny.safetensors")
    result = runner.invoke(app, ["verify", str(root), "-w", weights, "--device", "cpu", "-q"])
    assert result.exit_code == 2, result.output
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert expect in result.stderr


def test_damaged_ijb_features_file_is_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "f.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    result = runner.invoke(app, ["erc-curve", "--features", str(bad)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    npy = tmp_path / "one.npy"
    np.save(npy, np.zeros((3, 4)))
    with pytest.raises(FormatError, match=r"one array \(\.npy\)"):
        load_ijb_features(npy)


# ----------------------------------------------------------------------------- embedding: shards, resume


class CountingModel(torch.nn.Module):
    """Wraps a FaceModel and counts the images it embeds."""

    def __init__(self, inner) -> None:
        super().__init__()
        self.inner, self.seen = inner, 0
        self.preprocess, self.prepare = inner.preprocess, inner.prepare

    def forward(self, x):
        self.seen += len(x)
        return self.inner(x)


def test_embedding_resumes_and_shards(release: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    meta = load_ijb(release / "IJBB")
    torch.manual_seed(0)
    model = CountingModel(create_model("iresnet_tiny").eval())
    full = ijb_embed.embed_ijb(model, meta, parts=tmp_path / "a", flip=True, batch_size=16, chunk=40)
    assert model.seen == 2 * len(meta.images)
    chunks = sorted((tmp_path / "a").glob("chunk_*.npz"))
    chunks[1].unlink()  # an interrupted run: one chunk never written, one damaged
    chunks[2].write_bytes(b"garbage")
    model.seen = 0
    again = ijb_embed.embed_ijb(model, meta, parts=tmp_path / "a", flip=True, batch_size=16, chunk=40)
    assert model.seen == 2 * 80  # only the two missing chunks were embedded again
    np.testing.assert_allclose(again.embeddings, full.embeddings, rtol=0, atol=1e-5)
    np.testing.assert_allclose(again.embeddings_flip, full.embeddings_flip, rtol=0, atol=1e-5)
    # torchrun with two ranks (the barrier replaced): rank 1 embeds odd chunks, rank 0 the rest + assembles
    monkeypatch.setattr(ijb_embed, "_wait_for_others", lambda world, parts, ranges: None)
    for rank in (1, 0):
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("WORLD_SIZE", "2")
        model.seen = 0
        out = ijb_embed.embed_ijb(model, meta, parts=tmp_path / "b", flip=True, batch_size=16, chunk=40)
        assert (out is None) == (rank == 1)
        assert model.seen > 0 and model.seen < 2 * len(meta.images)
    np.testing.assert_allclose(out.embeddings, full.embeddings, rtol=0, atol=1e-5)
    assert (out.templates == meta.templates).all() and (out.pair_label == meta.pair_label).all()


def test_parts_of_another_run_are_refused(release: Path, tmp_path: Path) -> None:
    meta = load_ijb(release / "IJBB")
    model = create_model("iresnet_tiny").eval()
    ijb_embed.embed_ijb(model, meta, parts=tmp_path / "p", flip=False, batch_size=64, chunk=4096)
    with pytest.raises(Exception, match="another run"):
        ijb_embed.embed_ijb(model, meta, parts=tmp_path / "p", flip=True, batch_size=64, chunk=4096)


# ----------------------------------------------------------------------------- commands end to end


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.fixture(scope="module")
def verified(release: Path) -> tuple[Path, dict]:
    feats = release.parent / "ijbb.npz"
    weights = str(release.parent / "tiny.safetensors")
    args = ["verify", "IJBB", "--data-dir", str(release), "-w", weights, "--device", "cpu", "-q"]
    out = _ok(
        [*args, "--json", "--save-features", str(feats), "--protocol", "insightface", "--protocol", "quality"]
    )
    return feats, json.loads(out)


def test_verify_ijb_json_and_features_round_trip(verified: tuple[Path, dict], tmp_path: Path) -> None:
    feats_path, first = verified
    assert [r["protocol"] for r in first["results"]] == ["insightface", "quality"]
    assert not feats_path.with_name("ijbb.parts").exists()  # removed once the features are saved
    feats = load_ijb_features(feats_path)
    assert feats.embeddings_flip is not None and len(feats.images) == first["results"][0]["num_images"]
    again = json.loads(_ok(["verify", "--features", str(feats_path), "--json", "--protocol", "insightface",
                            "--protocol", "quality"]))  # fmt: skip
    assert again["results"] == first["results"]
    direct = evaluate_ijb(feats, Pooling("insightface", flip=True))
    assert first["results"][0]["tar_at_far"] == direct.tar_at_far
    copy = save_ijb_features(tmp_path / "copy.npz", feats)
    assert (
        evaluate_ijb(load_ijb_features(copy), Pooling("magface", False)).tar_at_far
        == evaluate_ijb(feats, Pooling("magface", False)).tar_at_far
    )


def test_verify_ijb_table_csv_and_plot(verified: tuple[Path, dict], tmp_path: Path) -> None:
    feats_path, _ = verified
    out = _ok(["verify", "--features", str(feats_path), "--protocol", "magface", "--norm-score",
               "--csv", str(tmp_path / "r.csv"), "--plot", str(tmp_path / "roc")])  # fmt: skip
    assert "IJBB" in out and "magface N" in out and "1e-06" in out
    rows = (tmp_path / "r.csv").read_text().splitlines()
    assert rows[0].startswith("set,model,protocol") and len(rows) == 2 and rows[1].startswith("IJBB,")
    assert (tmp_path / "roc.png").stat().st_size > 0 and (tmp_path / "roc.svg").is_file()


def test_erc_curve_on_ijb(verified: tuple[Path, dict], tmp_path: Path) -> None:
    feats_path, _ = verified
    feats = load_ijb_features(feats_path)
    csv = tmp_path / "q.csv"
    rng = np.random.default_rng(0)
    csv.write_text("path,quality\n" + "".join(f"loose_crop/{n},{rng.random():.5f}\n" for n in feats.images))
    args = ["erc-curve", "--features", str(feats_path), "--scores", f"rand={csv}", "-o", str(tmp_path / "e")]
    out = _ok([*args, "--json"])
    summary = json.loads(out)
    methods = {(row["method"], row["operating_point"]) for row in summary["summary"]}
    assert ("rand", "fmr=0.01") in methods and ("model:norm", "fmr=0.0001") in methods
    for name in ("curves.csv", "summary.csv", "summary.json", "erc.png", "erc.svg"):
        assert (tmp_path / "e" / name).is_file()
    result = runner.invoke(app, ["erc-curve", "--features", str(feats_path), "--mode", "edc"])
    assert result.exit_code == 2 and "CR-FIQA" in result.stderr


def test_erc_curve_on_ijb_methods_held_in_the_features(verified: tuple[Path, dict], tmp_path: Path) -> None:
    """``--method`` on IJB features: ``norm`` and the model's own quality (``head`` = whichever head) come
    from the saved arrays; a method that needs the images again is one line."""
    import dataclasses

    feats_path, _ = verified
    feats = load_ijb_features(feats_path)
    rng = np.random.default_rng(1)
    crfiqa = dataclasses.replace(feats, quality=rng.random(len(feats.images)).astype(np.float32),
                                 meta={**feats.meta, "quality_method": "crfiqa"})
    path = save_ijb_features(tmp_path / "crfiqa.npz", crfiqa)

    def aucs(features: Path, *methods: str) -> dict:
        args = ["erc-curve", "--features", str(features), "--fmr", "1e-2", "-o", str(tmp_path / "e"),
                "--json"]
        for method in methods:
            args += ["--method", method]
        return {row["method"]: row["auc"] for row in json.loads(_ok(args))["summary"]}

    own = aucs(feats_path)  # a norm model: its own quality is the norm
    both = aucs(path, "crfiqa", "norm")
    assert set(both) == {"model:crfiqa", "model:norm", "ideal", "random"}
    assert both["model:norm"] == pytest.approx(own["model:norm"])
    assert both["model:crfiqa"] != pytest.approx(both["model:norm"])
    assert aucs(path, "head")["model:head"] == pytest.approx(both["model:crfiqa"])
    for features, method, held in ((path, "serfiq", "crfiqa"), (feats_path, "head", "norm")):
        result = runner.invoke(app, ["erc-curve", "--features", str(features), "--method", method])
        assert result.exit_code == 2 and f"model's own quality ({held}) only" in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1


def test_erc_curve_ijb_method_is_checked_before_embedding(release: Path, tmp_path: Path) -> None:
    weights = str(release.parent / "tiny.safetensors")
    result = runner.invoke(app, ["erc-curve", "IJBC", "--data-dir", str(release), "-w", weights, "--device",
                                 "cpu", "-q", "--method", "crfiqa", "--save-features", str(tmp_path / "f")])
    assert result.exit_code == 2 and "--method crfiqa on IJBC" in result.stderr
    assert list(tmp_path.iterdir()) == []  # nothing embedded, nothing written


@pytest.mark.slow
def test_verify_ijbb_and_ijbc_and_erc_from_the_release(release: Path, tmp_path: Path) -> None:
    """The issue's "done when": both sets from the release folder in one table, erc-curve from the model."""
    weights = str(release.parent / "tiny.safetensors")
    common = ["--data-dir", str(release), "-w", weights, "--device", "cpu", "-q"]
    out = _ok(["verify", "IJBB", "IJBC", *common, "--protocol", "insightface", "--protocol", "magface"])
    lines = [line for line in out.splitlines() if line.strip().startswith(("IJBB", "IJBC"))]
    assert len(lines) == 4
    _ok(["erc-curve", "IJBC", *common, "-o", str(tmp_path / "erc")])
    assert (tmp_path / "erc" / "summary.csv").read_text().count("fmr=") == 9


def test_plain_progress_line_shows_rate_and_eta(capsys: pytest.CaptureFixture[str]) -> None:
    from fqtool.cli.progress import progress_bar

    with progress_bar("embed IJBC", 100, log_every_s=0.0) as advance:
        advance(10)
    line = capsys.readouterr().err
    assert "embed IJBC: 10/100 img (" in line and "img/s, ETA " in line


def test_ijb_name_not_found_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FQTOOL_DATA", raising=False)
    result = runner.invoke(app, ["verify", "IJBC", "--data-dir", str(tmp_path), "-w", "x.safetensors"])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1, result.output
    assert "IJBC/meta/ijbc_face_tid_mid.txt" in result.stderr


def test_several_models_share_one_table(verified: tuple[Path, dict], tmp_path: Path) -> None:
    feats_path, _ = verified
    other = load_ijb_features(feats_path)
    other.meta["weights"] = "other.safetensors"
    other.embeddings = other.embeddings[:, ::-1].copy()
    other.embeddings_flip = other.embeddings_flip[:, ::-1].copy()
    copy = save_ijb_features(tmp_path / "other.npz", other)
    out = _ok(["verify", "--features", str(feats_path), "--features", str(copy), "--json"])
    models = [r["model"] for r in json.loads(out)["results"]]
    assert models == ["tiny.safetensors", "other.safetensors"]
    table = _ok(["verify", "--features", str(feats_path), "--features", str(copy)])
    assert "model" in table and table.count("IJBB") == 2
