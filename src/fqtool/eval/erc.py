"""Error-versus-reject curves for face image quality: MagFace's ERC and ISO/IEC 29794-1 EDC.

Both work on pairs ``(2i, 2i+1)`` with a pair quality (``min`` of the two image qualities by default,
higher = better) and a pair *distance* (``angular`` = ``arccos(cos)/pi`` as MagFace, or ``cosine`` =
``1 - cos``); a pair is accepted as a match when ``distance < threshold``.

* ``erc`` (MagFace ``eval_quality.py``): for each reject rate ``r`` in ``np.arange(0, 0.98, 0.05)`` drop
  the ``int(r * num_pairs)`` lowest-quality pairs (genuine and impostor alike), recompute the threshold
  from the remaining impostors with MagFace's index rule (:func:`magface_threshold`) and report
  ``FNMR = #(genuine distance >= threshold) / #genuine``.
* ``edc`` (ISO/IEC 29794-1:2024, Schlett et al.): one threshold fixed on the full set (for a starting
  FNMR, or for a target FMR), then FNMR over the genuine pairs that remain when the lowest-quality
  genuine pairs are discarded, stepping at every distinct quality value; pAUC up to a discard limit,
  also minus the area under the theoretical-best line ``max(0, FNMR0 - d)``.

Ties in quality: ERC breaks them by pair order (stable sort; MagFace's ``np.argsort`` leaves the order
of ties unspecified); EDC discards tied pairs together, as the standard's sample-wise discarding does.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fqtool.errors import FqtoolError

#: MagFace's reject rates: 0, 0.05, …, 0.95 (20 points, the float values of np.arange).
REJECT_RATES = np.arange(0, 0.98, 0.05)
PAIR_QUALITY = ("min", "mean", "product")
METRICS = ("angular", "cosine")
MODES = ("erc", "edc")


@dataclass
class Curve:
    """One curve: ``fnmr[i]`` after discarding ``fraction[i]`` (of all pairs for ERC, of genuine for EDC)."""

    method: str
    mode: str
    operating_point: str
    fraction: np.ndarray
    fnmr: np.ndarray
    threshold: np.ndarray
    genuine: np.ndarray
    impostor: np.ndarray
    auc: float = float("nan")
    pauc: float = float("nan")
    pauc_corrected: float | None = None

    def rows(self) -> list[dict]:
        return [
            {
                "method": self.method,
                "mode": self.mode,
                "operating_point": self.operating_point,
                "fraction": float(f),
                "fnmr": _num(e),
                "threshold": _num(t),
                "genuine": int(g),
                "impostor": int(i),
            }
            for f, e, t, g, i in zip(
                self.fraction, self.fnmr, self.threshold, self.genuine, self.impostor, strict=True
            )
        ]


@dataclass
class CurveReport:
    """Every method's curves for one set, plus the ideal and random baselines per operating point."""

    mode: str
    curves: list[Curve]
    baselines: list[Curve]
    pauc_limit: float
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> list[dict]:
        return [
            {
                "method": c.method,
                "mode": c.mode,
                "operating_point": c.operating_point,
                "fnmr_at_0": _num(c.fnmr[0]) if len(c.fnmr) else None,
                "auc": _num(c.auc),
                "pauc": _num(c.pauc),
                "pauc_limit": self.pauc_limit,
                "pauc_corrected": _num(c.pauc_corrected) if c.pauc_corrected is not None else None,
            }
            for c in self.ordered()
        ]

    def ordered(self) -> list[Curve]:
        """Methods then baselines, grouped by operating point (in the order they were asked for)."""
        points = list(dict.fromkeys(c.operating_point for c in self.curves))
        everything = self.curves + self.baselines
        return sorted(
            everything, key=lambda c: points.index(c.operating_point) if c.operating_point in points else 0
        )


def _num(value: float | None) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def pair_quality(quality: np.ndarray, how: str = "min") -> np.ndarray:
    """Per-pair quality from per-image quality (images ``2i``, ``2i+1``): ``min``, ``mean`` or ``product``."""
    quality = np.asarray(quality, dtype=np.float64).reshape(-1)
    a, b = quality[0::2], quality[1::2]
    if how == "min":
        return np.minimum(a, b)
    if how == "mean":
        return (a + b) / 2.0
    if how == "product":
        return a * b
    raise FqtoolError(f"unknown pair quality {how!r}; use {', '.join(PAIR_QUALITY)}")


def pair_distances(embeddings: np.ndarray, metric: str = "angular") -> np.ndarray:
    """Distance of each pair ``(2i, 2i+1)`` of raw embeddings (float64): ``angular`` or ``cosine``."""
    emb = np.asarray(embeddings, dtype=np.float64)
    a, b = emb[0::2], emb[1::2]
    dot = np.sum(a * b, axis=1)
    norm = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    cos = np.clip(np.divide(dot, norm, out=np.zeros_like(dot), where=norm > 0), -1.0, 1.0)
    if metric == "angular":
        return np.arccos(cos) / math.pi
    if metric == "cosine":
        return 1.0 - cos
    raise FqtoolError(f"unknown metric {metric!r}; use {', '.join(METRICS)}")


def magface_index(num_impostors: int, fmr: float) -> int:
    """MagFace's impostor index for an FMR: ``idx = N - 1``, divided by 10 (``int``) once per decade.

    For ``fmr = 10**-k`` this is ``(N - 1) // 10**k`` exactly; other FMRs use ``floor((N - 1) * fmr)``.
    """
    decades = -math.log10(fmr)
    if abs(decades - round(decades)) < 1e-9 and round(decades) >= 0:
        return (num_impostors - 1) // 10 ** round(decades)
    return int(math.floor((num_impostors - 1) * fmr + 1e-9))


def magface_threshold(impostor_distances: np.ndarray, fmr: float) -> tuple[float, str | None]:
    """Threshold for ``fmr`` from impostor distances: ``sorted(neg)[magface_index(N, fmr)]``.

    With fewer than ``1/fmr`` impostors the index is 0: the threshold is the smallest impostor distance
    (the most similar impostor, so no impostor is accepted), and a warning text is returned. MagFace
    itself stops its curve when fewer than ``10**(k-1) + 1`` impostors remain.
    """
    neg = np.sort(np.asarray(impostor_distances, dtype=np.float64))
    if len(neg) == 0:
        return float("nan"), "no impostor pairs"
    note = None
    if len(neg) * fmr < 1.0 - 1e-9:
        note = f"{len(neg)} impostor pairs < 1/FMR for FMR {fmr:g}: threshold = most similar impostor"
    return float(neg[magface_index(len(neg), fmr)]), note


def fnmr_at(genuine_distances: np.ndarray, threshold: float) -> float:
    """``#(genuine >= threshold) / #genuine`` (MagFace: ``(num_query - #(pos < thr)) / num_query``)."""
    pos = np.asarray(genuine_distances)
    if len(pos) == 0 or math.isnan(threshold):
        return float("nan")
    return float(len(pos) - np.sum(pos < threshold)) / len(pos)


def magface_rule(genuine: np.ndarray, impostor: np.ndarray, fmr: float) -> float:
    """MagFace's ERC threshold: from the impostor distances alone."""
    return magface_threshold(impostor, fmr)[0]


def erc_curve(
    dist: np.ndarray,
    issame: np.ndarray,
    quality: np.ndarray,
    fmr: float = 1e-3,
    *,
    method: str = "",
    rates: np.ndarray = REJECT_RATES,
    pauc_limit: float = 0.2,
    warnings: list[str] | None = None,
    threshold: Callable[[np.ndarray, np.ndarray, float], float] = magface_rule,
) -> Curve:
    """ERC: FNMR at ``fmr`` (threshold recomputed by ``threshold(genuine, impostor, fmr)``, MagFace's rule
    by default) after rejecting the lowest-quality pairs."""
    order = np.argsort(np.asarray(quality, dtype=np.float64), kind="stable")
    fnmrs, thrs, gen, imp = [], [], [], []
    for rate in rates:
        kept = order[int(rate * len(order)) :]
        same = issame[kept]
        pos, neg = dist[kept][same], dist[kept][~same]
        thr = threshold(pos, neg, fmr)
        fnmrs.append(fnmr_at(pos, thr))
        thrs.append(thr)
        gen.append(len(pos))
        imp.append(len(neg))
    curve = Curve(
        method,
        "erc",
        f"fmr={fmr:g}",
        np.asarray(rates, float),
        np.asarray(fnmrs),
        np.asarray(thrs),
        np.asarray(gen),
        np.asarray(imp),
    )
    curve.auc = area_under(curve.fraction, curve.fnmr, float(curve.fraction[-1]) if len(rates) else 0.0)
    curve.pauc = area_under(curve.fraction, curve.fnmr, pauc_limit)
    if warnings is not None:
        warnings.extend(_erc_notes(method, fmr, imp, gen))
    return curve


def _erc_notes(method: str, fmr: float, impostors: list[int], genuine: list[int]) -> list[str]:
    notes = []
    short = [n for n in impostors if n > 0 and n * fmr < 1.0 - 1e-9]
    if short:
        notes.append(
            f"{method}: at {len(short)} reject rate(s) fewer than 1/FMR = {math.ceil(1 / fmr)} "
            f"impostor pairs remain (as few as {min(short)}): threshold = most similar impostor"
        )
    if 0 in genuine:
        notes.append(f"{method}: no genuine pairs remain at some reject rates (FNMR undefined there)")
    if 0 in impostors:
        notes.append(f"{method}: no impostor pairs remain at some reject rates (FNMR undefined there)")
    return notes


def area_under(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    """Trapezoid area of y(x) for x ≤ limit (x ascending; NaN points skipped)."""
    keep = (x <= limit + 1e-12) & ~np.isnan(y)
    if keep.sum() < 2:
        return float("nan")
    xs, ys = x[keep], y[keep]
    return float(np.sum((xs[1:] - xs[:-1]) * (ys[1:] + ys[:-1]) / 2.0))


def edc_threshold(
    dist: np.ndarray, issame: np.ndarray, *, starting_fnmr: float | None = None, fmr: float | None = None
) -> tuple[float, str | None]:
    """Threshold fixed once on the full set.

    ``starting_fnmr``: ``np.quantile(genuine distances, 1 - starting_fnmr)`` (linear interpolation), so
    FNMR at 0 % discard ≈ ``starting_fnmr``. ``fmr``: :func:`magface_threshold` on every impostor.
    """
    if (starting_fnmr is None) == (fmr is None):
        raise ValueError("give exactly one of starting_fnmr and fmr")
    if fmr is not None:
        return magface_threshold(dist[~issame], fmr)
    return float(np.quantile(dist[issame], 1.0 - starting_fnmr)), None


def edc_curve(
    dist: np.ndarray,
    issame: np.ndarray,
    quality: np.ndarray,
    threshold: float,
    *,
    method: str = "",
    operating_point: str = "",
    pauc_limit: float = 0.2,
) -> Curve:
    """FNM-EDC: FNMR of the genuine pairs left after discarding the lowest-quality ones at a fixed threshold.

    Points are at every distinct pair quality (tied pairs are discarded together), plus ``(1, 0)``.
    """
    same = np.asarray(issame, bool)
    q = np.asarray(quality, dtype=np.float64)[same]
    order = np.argsort(q, kind="stable")
    q_sorted = q[order]
    errors = (dist[same][order] >= threshold).astype(np.int64)
    remaining_errors = np.cumsum(errors[::-1])[::-1]
    count = len(q_sorted)
    discard = (
        np.concatenate(([0], np.flatnonzero(q_sorted[:-1] != q_sorted[1:]) + 1)) if count else np.array([0])
    )
    fnmr = remaining_errors[discard] / (count - discard) if count else np.array([np.nan])
    fraction = discard / max(count, 1)
    if fraction[-1] != 1.0:
        fraction, fnmr = np.append(fraction, 1.0), np.append(fnmr, 0.0)
        discard = np.append(discard, count)
    curve = Curve(
        method,
        "edc",
        operating_point,
        fraction.astype(float),
        fnmr.astype(float),
        np.full(len(fraction), threshold),
        count - discard,
        np.zeros(len(fraction), int),
    )
    curve.auc = step_area(curve.fraction, curve.fnmr, 1.0)
    curve.pauc = step_area(curve.fraction, curve.fnmr, pauc_limit)
    curve.pauc_corrected = curve.pauc - theoretical_best_area(float(curve.fnmr[0]), pauc_limit)
    return curve


def step_area(fraction: np.ndarray, error: np.ndarray, limit: float) -> float:
    """Area under a step curve (value ``error[i]`` on ``[fraction[i], fraction[i+1])``) up to ``limit``."""
    if limit <= 0:
        return 0.0
    edges = np.minimum(np.append(fraction[1:], limit), limit)
    widths = np.clip(edges - fraction, 0.0, None)
    return float(np.sum(np.nan_to_num(error) * widths))


def theoretical_best_area(fnmr0: float, limit: float) -> float:
    """Area under ``max(0, fnmr0 - d)`` on ``[0, limit]``: ``fnmr0²/2 − max(0, fnmr0 − limit)²/2``."""
    return fnmr0**2 / 2.0 - max(0.0, fnmr0 - limit) ** 2 / 2.0


def erc_ideal(dist: np.ndarray, issame: np.ndarray, threshold: float, rates: np.ndarray) -> np.ndarray:
    """ERC ideal: the rejected pairs are exactly the false non-matches at the 0 % threshold, first.

    ``FNMR(r) = max(0, E − rN) / (G − min(rN, E))`` with ``E`` false non-matches, ``G`` genuine, ``N`` pairs.
    """
    total, genuine = len(dist), int(issame.sum())
    errors = int(np.sum(dist[issame] >= threshold))
    out = []
    for rate in rates:
        drop = int(rate * total)
        left = genuine - min(drop, errors)
        out.append(max(0, errors - drop) / left if left > 0 else float("nan"))
    return np.asarray(out)


def _baselines(curve0: Curve, dist: np.ndarray, issame: np.ndarray, pauc_limit: float) -> list[Curve]:
    """Ideal and random baselines for one operating point (random = FNMR at 0 % discard, flat)."""
    x, f0, op = curve0.fraction, float(curve0.fnmr[0]), curve0.operating_point
    zeros = np.zeros(len(x), int)
    if curve0.mode == "erc":
        ideal_y = erc_ideal(dist, issame, float(curve0.threshold[0]), x)
    else:
        ideal_y = np.maximum(0.0, f0 - x)
    out = []
    for name, y in (("ideal", ideal_y), ("random", np.full(len(x), f0))):
        c = Curve(name, curve0.mode, op, x, y, np.full(len(x), np.nan), zeros, zeros)
        if curve0.mode == "erc":
            c.auc, c.pauc = area_under(x, y, float(x[-1])), area_under(x, y, pauc_limit)
        else:
            c.auc, c.pauc = _linear_area(x, y, 1.0), _linear_area(x, y, pauc_limit)
            c.pauc_corrected = c.pauc - theoretical_best_area(f0, pauc_limit)
        out.append(c)
    return out


def _linear_area(x: np.ndarray, y: np.ndarray, limit: float) -> float:
    grid = np.linspace(0.0, limit, 2001)
    vals = np.interp(grid, x, y)
    return float(np.sum((grid[1:] - grid[:-1]) * (vals[1:] + vals[:-1]) / 2.0))


def compute_curves(
    embeddings: np.ndarray,
    issame: np.ndarray,
    qualities: Mapping[str, np.ndarray],
    *,
    mode: str = "erc",
    fmrs: tuple[float, ...] | None = None,
    starting_fnmr: float = 0.05,
    pair_quality_rule: str = "min",
    metric: str = "angular",
    pauc_limit: float = 0.2,
) -> CurveReport:
    """Every method's curve at every operating point, plus baselines.

    ``qualities`` maps a method name to per-image quality (length ``2 × pairs``, higher = better).
    ``erc``: one operating point per FMR (default 1e-3). ``edc``: ``starting_fnmr`` unless ``fmrs`` given.
    """
    if mode not in MODES:
        raise FqtoolError(f"unknown mode {mode!r}; use erc or edc")
    if not 0.0 < pauc_limit <= 1.0:
        raise FqtoolError(f"--pauc-limit must be in (0, 1], got {pauc_limit}")
    issame = np.asarray(issame, bool).reshape(-1)
    _check_pairs(embeddings, issame, qualities)
    dist = pair_distances(embeddings, metric)
    report = CurveReport(mode, [], [], pauc_limit)
    _tie_warnings(qualities, pair_quality_rule, report.warnings)
    points = _operating_points(mode, fmrs, starting_fnmr)
    for op_name, fmr, start in points:
        first: Curve | None = None
        for method, image_q in qualities.items():
            pq = pair_quality(image_q, pair_quality_rule)
            curve = _one_curve(
                mode, dist, issame, pq, fmr, start, method, op_name, pauc_limit, report.warnings
            )
            report.curves.append(curve)
            first = first or curve
        if first is not None:
            report.baselines.extend(_baselines(first, dist, issame, pauc_limit))
    return report


def _operating_points(
    mode: str, fmrs: tuple[float, ...] | None, start: float
) -> list[tuple[str, float | None, float | None]]:
    for fmr in fmrs or ():
        if not 0.0 < fmr < 1.0:
            raise FqtoolError(f"--fmr must be in (0, 1), got {fmr}")
    if mode == "erc":
        return [(f"fmr={f:g}", f, None) for f in (fmrs or (1e-3,))]
    if fmrs:
        return [(f"fmr={f:g}", f, None) for f in fmrs]
    if not 0.0 < start < 1.0:
        raise FqtoolError(f"--starting-fnmr must be in (0, 1), got {start}")
    return [(f"fnmr0={start:g}", None, start)]


def _one_curve(mode, dist, issame, pq, fmr, start, method, op_name, pauc_limit, warnings) -> Curve:
    if mode == "erc":
        return erc_curve(dist, issame, pq, fmr, method=method, pauc_limit=pauc_limit, warnings=warnings)
    thr, note = edc_threshold(dist, issame, starting_fnmr=start, fmr=fmr)
    if note and note not in warnings:
        warnings.append(note)
    return edc_curve(dist, issame, pq, thr, method=method, operating_point=op_name, pauc_limit=pauc_limit)


def _check_pairs(embeddings: np.ndarray, issame: np.ndarray, qualities: Mapping[str, np.ndarray]) -> None:
    if len(embeddings) != 2 * len(issame):
        raise FqtoolError(f"{len(embeddings)} images do not make {len(issame)} pairs (need 2 per pair)")
    if len(issame) == 0 or not issame.any():
        raise FqtoolError("no genuine pairs: FNMR is undefined, an ERC/EDC needs genuine pairs")
    if not qualities:
        raise FqtoolError("no quality method to evaluate")
    for name, q in qualities.items():
        if len(np.asarray(q).reshape(-1)) != len(embeddings):
            raise FqtoolError(
                f"quality {name!r} has {len(np.asarray(q).reshape(-1))} values for {len(embeddings)} images"
            )
        if np.isnan(np.asarray(q, dtype=np.float64)).any():
            raise FqtoolError(f"quality {name!r} contains NaN values")


def _tie_warnings(qualities: Mapping[str, np.ndarray], rule: str, warnings: list[str]) -> None:
    for name, q in qualities.items():
        pq = pair_quality(q, rule)
        if len(pq) > 1 and np.all(pq == pq[0]):
            warnings.append(
                f"{name}: every pair has the same quality; "
                "ERC rejects in pair order, EDC discards all at once"
            )


def parse_scores_option(text: str) -> tuple[str, Path]:
    """``name=file.csv`` → ``(name, path)``; a bare ``file.csv`` is named after its stem."""
    name, sep, file = text.partition("=")
    if not sep:
        return Path(text).stem, Path(text)
    if not name.strip() or not file.strip():
        raise FqtoolError(f"--scores wants NAME=FILE.csv, got {text!r}")
    return name.strip(), Path(file.strip())


def load_quality_csv(path: str | Path, num_images: int) -> np.ndarray:
    """Per-image quality from a CSV with ``quality`` and ``index`` (0-based) or ``path`` (stem = index).

    Every image ``0 … num_images-1`` needs exactly one finite value; anything else is an error naming the
    file (the one reader policy of :mod:`fqtool.eval.score_files`)."""
    from fqtool.eval.score_files import read_quality_csv  # h6: one reader policy (issue 25.7)

    return read_quality_csv(path, num_images)
