"""ROC and ERC/EDC figures (matplotlib, Agg backend), each written as PNG and SVG."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fqtool.eval.erc import Curve, CurveReport  # noqa: E402
from fqtool.eval.verification import VerificationResult  # noqa: E402
from fqtool.fsutil import atomic_path  # noqa: E402

FORMATS = ("png", "svg")
EDC_X_MAX = 0.95


def _save(fig, path: Path) -> list[Path]:
    """Save ``fig`` as ``<stem>.png`` and ``<stem>.svg`` next to ``path``; return both paths."""
    stem = path.with_suffix("") if path.suffix.lower() in (".png", ".svg") else path
    written = []
    for fmt in FORMATS:
        out = stem.with_name(f"{stem.name}.{fmt}")
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight")
        written.append(out)
    plt.close(fig)
    return written


def plot_roc(results: Sequence[VerificationResult], path: str | Path) -> list[Path]:
    """TAR vs FAR (log x) for each set, from the fold-averaged ROC points."""
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for res in results:
        keep = res.roc_fpr > 0
        label = f"{res.name} ({100 * res.accuracy:.2f}%)"
        ax.plot(res.roc_fpr[keep], res.roc_tpr[keep], label=label, drawstyle="steps-post")
    ax.set_xscale("log")
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("ROC (10-fold mean)")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, Path(path))


def _draw_curve(ax, curve: Curve, style: dict) -> None:
    x = curve.fraction * 100.0 if curve.mode == "erc" else curve.fraction
    draw = "steps-post" if curve.mode == "edc" and curve.method not in ("ideal", "random") else "default"
    ax.plot(x, curve.fnmr, label=curve.method, drawstyle=draw, **style)


def plot_curves(report: CurveReport, path: str | Path, title: str = "") -> list[Path]:
    """One panel per operating point; one line per method plus dashed ideal and dotted random baselines."""
    points = list(dict.fromkeys(c.operating_point for c in report.curves))
    fig, axes = plt.subplots(1, len(points), figsize=(7 * len(points), 4), squeeze=False)
    for ax, point in zip(axes[0], points, strict=True):
        for curve in (c for c in report.curves if c.operating_point == point):
            _draw_curve(ax, curve, {"linewidth": 1.6})
        for curve in (c for c in report.baselines if c.operating_point == point):
            style = {"color": "grey", "linewidth": 1.0, "linestyle": "--" if curve.method == "ideal" else ":"}
            _draw_curve(ax, curve, style)
        _decorate(ax, report, point, title)
    return _save(fig, Path(path))


def _visible_max(report: CurveReport, point: str, x_max: float) -> float:
    values = [
        c.fnmr[(c.fraction <= x_max) & np.isfinite(c.fnmr)]
        for c in report.curves + report.baselines
        if c.operating_point == point
    ]
    top = max((float(v.max()) for v in values if v.size), default=0.0)
    return max(top, 1e-3)


def _decorate(ax, report: CurveReport, point: str, title: str) -> None:
    if report.mode == "erc":
        ax.set_xlabel("Ratio of unconsidered images [%]")
        ax.set_title(f"{title} FNMR at {point.split('=')[1]} FMR".strip())
        top = _visible_max(report, point, 1.0)
    else:
        ax.set_xlabel("Fraction of genuine comparisons discarded")
        ax.axvline(report.pauc_limit, color="grey", linewidth=0.6, alpha=0.5)
        ax.set_title(f"{title} EDC ({point})".strip())
        ax.set_xlim(0.0, EDC_X_MAX)  # the last few pairs make the far end pure noise
        top = _visible_max(report, point, EDC_X_MAX)
    ax.set_ylabel("FNMR")
    ax.set_ylim(0, top * 1.05)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")


def plot_ijb_roc(results: Sequence, path: str | Path) -> list[Path]:
    """IJB ROC: TAR vs FAR on a log axis (1e-6 … 1), one line per set × model × pooling, AUC in the legend."""
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for res in results:
        keep = res.roc_fpr > 0
        label = f"{res.name} {res.model} {res.pooling.protocol} (AUC {100 * res.auc:.2f}%)".replace("  ", " ")
        ax.plot(res.roc_fpr[keep], res.roc_tpr[keep], label=label, linewidth=1.2)
    ax.set_xscale("log")
    ax.set_xlim(1e-6, 1.0)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("FAR")
    ax.set_ylabel("TAR")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title("ROC on IJB (template pairs)")
    ax.legend(loc="lower right", fontsize="small")
    return _save(fig, Path(path))
