"""CR-FIQA's error-versus-reject curve on IJB-B / IJB-C template pairs (``erc_ijbc.py``): template
features from the raw image features (``[e, e_flip]`` with flip), pair quality = min of the templates'
minimum image quality, distance ``arccos(cos)/pi``, threshold by CR-FIQA's nearest-FMR rule."""

from __future__ import annotations

import numpy as np

from fqtool.errors import FormatError, FqtoolError
from fqtool.eval.erc import Curve, CurveReport, area_under, erc_curve, erc_ideal
from fqtool.eval.ijb import ERC_FMRS, IjbFeatures, _groups, media_then_template, pair_scores
from fqtool.eval.verification import l2_normalize


def erc_template_features(f: IjbFeatures, flip: bool) -> tuple[np.ndarray, np.ndarray]:
    """CR-FIQA's template features: raw image features (``[e, e_flip]`` concatenated with flip), media mean,
    sum over media, L2-normalised."""
    feats = np.asarray(f.embeddings, np.float64)
    if flip:
        if f.embeddings_flip is None:
            raise FormatError("these features have no flipped embeddings; use --no-flip", f.meta.get("path"))
        feats = np.concatenate([feats, np.asarray(f.embeddings_flip, np.float64)], axis=1)
    pooled, ids = media_then_template(
        feats, f.templates, f.medias, normalize_media=False, template_mean=False
    )
    return l2_normalize(pooled), ids


def template_pair_quality(f: IjbFeatures, image_quality: np.ndarray) -> np.ndarray:
    """Pair quality = min of the two template qualities; template quality = min of its images' quality."""
    q = np.asarray(image_quality, np.float64)
    order = np.argsort(f.templates, kind="stable")
    starts, _ = _groups(f.templates[order])
    template_q = np.minimum.reduceat(q[order], starts)
    ids = f.templates[order][starts]
    q1 = template_q[np.searchsorted(ids, f.pair_t1)]
    q2 = template_q[np.searchsorted(ids, f.pair_t2)]
    return np.minimum(q1, q2)


def crfiqa_threshold(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    """CR-FIQA ``get_eer_threshold``: among the distinct pair distances, the one whose FMR
    ``#(impostor <= d) / #impostor`` is nearest ``fmr`` (the largest such distance on ties)."""
    if len(impostor) == 0:
        return float("nan")
    candidates = np.unique(np.concatenate([genuine, impostor]))[::-1]  # similarity ascending
    neg = np.sort(impostor)
    fmr_at = np.searchsorted(neg, candidates, side="right") / len(neg)
    return float(candidates[int(np.argmin(np.abs(fmr_at - fmr)))])


def _erc_one(dist, labels, pq, fmr, method, pauc_limit) -> Curve:
    return erc_curve(dist, labels, pq, fmr, method=method, pauc_limit=pauc_limit, threshold=crfiqa_threshold)


def ijb_erc(
    f: IjbFeatures,
    qualities: dict[str, np.ndarray],
    *,
    fmrs=ERC_FMRS,
    flip: bool = True,
    pauc_limit: float = 0.2,
) -> CurveReport:
    """Error-versus-reject on the template pairs as CR-FIQA's ``erc_ijbc.py`` (arccos(cos)/pi)."""
    feats, ids = erc_template_features(f, flip)
    dist = 1.0 - pair_scores(feats, ids, f.pair_t1, f.pair_t2, "magface")
    labels = np.asarray(f.pair_label).astype(bool)
    if not labels.any():
        raise FqtoolError(f"{f.name}: no genuine template pairs: FNMR is undefined")
    report = CurveReport("erc", [], [], pauc_limit)
    for fmr in fmrs:
        first = None
        for method, image_q in qualities.items():
            curve = _erc_one(dist, labels, template_pair_quality(f, image_q), fmr, method, pauc_limit)
            report.curves.append(curve)
            first = first or curve
        report.baselines.extend(_baselines(first, dist, labels, pauc_limit))
        impostors = int((~labels).sum())
        if impostors * fmr < 1.0:
            report.warnings.append(
                f"{impostors} impostor pairs are too few for FMR {fmr:g}: nearest FMR used"
            )
    return report


def _baselines(first: Curve, dist: np.ndarray, labels: np.ndarray, pauc_limit: float) -> list[Curve]:
    x = first.fraction
    zeros = np.zeros(len(x), int)
    out = []
    ideal = erc_ideal(dist, labels, float(first.threshold[0]), x)
    for name, y in (("ideal", ideal), ("random", np.full(len(x), first.fnmr[0]))):
        c = Curve(name, "erc", first.operating_point, x, y, np.full(len(x), np.nan), zeros, zeros)
        c.auc, c.pauc = area_under(x, y, float(x[-1])), area_under(x, y, pauc_limit)
        out.append(c)
    return out
