"""The demo's figures and rank statistics: quality per degradation level, the lowest- and highest-scored
images, and Spearman's rank correlation of the quality with the true degradation (numpy + matplotlib only).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from fqtool.errors import FqtoolError
from fqtool.fsutil import atomic_path


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(len(x), dtype=np.float64)
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=ranks)
    return sums[inverse] / counts[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def quality_vs_degradation(scores_csv: Path, degradations_csv: Path) -> tuple[float, float, float]:
    """Spearman(quality, degradation level) over training images, and mean quality of clean / degraded.

    ``convert-rec`` names files ``<class>/<record key>.<ext>``; the synthetic ground truth names them
    ``train:<record key>``.
    """
    levels = {row["name"].split(":", 1)[1]: float(row["level"]) for row in _read_csv(degradations_csv)}
    quality, level = [], []
    for row in _read_csv(scores_csv):
        key = Path(row["path"]).stem
        if key in levels:
            quality.append(float(row["quality"]))
            level.append(levels[key])
    if len(quality) < 3:
        raise FqtoolError("too few scored images match the ground truth", scores_csv)
    q, lv = np.asarray(quality), np.asarray(level)
    clean = q[lv == 0].mean() if (lv == 0).any() else float("nan")
    degraded = q[lv > 0.5].mean() if (lv > 0.5).any() else float("nan")
    return spearman(q, lv), float(clean), float(degraded)


#: Degradation-level bands of the per-level histogram: (label, low, high], clean is level 0 exactly.
LEVEL_BANDS = (("clean", -1.0, 0.0), ("level 0-⅓", 0.0, 1 / 3), ("level ⅓-⅔", 1 / 3, 2 / 3),
               ("level ⅔-1", 2 / 3, 1.0))


#: One colour per band, told apart by hue (green, blue, orange, purple), not shades of one.
LEVEL_COLOURS = ("#2a9d4b", "#3b75af", "#ef8636", "#8e44ad")


def scored_with_truth(scores_csv: Path, degradations_csv: Path) -> list[dict]:
    """Rows of ``scores.csv`` that have a ground truth, with ``level`` and ``kind`` added."""
    truth = {row["name"].split(":", 1)[1]: row for row in _read_csv(degradations_csv)}
    rows = []
    for row in _read_csv(scores_csv):
        known = truth.get(Path(row["path"]).stem)
        if known is not None:
            rows.append({**row, "level": float(known["level"]), "kind": known["kind"]})
    return rows


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    return pyplot


def level_groups(rows: list[dict]) -> list[tuple[str, np.ndarray]]:
    """``(legend label with count, 0-100 qualities)`` per degradation-level band, as the histogram draws."""
    level = np.array([r["level"] for r in rows])
    quality = np.array([float(r["quality_100"]) for r in rows])
    groups = []
    for label, low, high in LEVEL_BANDS:
        part = quality[(level > low) & (level <= high)]
        groups.append((f"{label} ({len(part)})", part))
    return groups


def plot_quality_by_level(rows: list[dict], path: Path) -> Path:
    """Histogram of the 0-100 quality, one colour per degradation-level band."""
    plt = _pyplot()

    fig, ax = plt.subplots(figsize=(7, 4))
    for (label, part), colour in zip(level_groups(rows), LEVEL_COLOURS, strict=True):
        ax.hist(part, bins=25, range=(0, 100), histtype="stepfilled", alpha=0.45, color=colour,
                edgecolor=colour, label=label)
    ax.set_xlabel("quality 0-100 (embedding norm, calibrated)")
    ax.set_ylabel("training images")
    ax.set_title("quality per true degradation level")
    ax.legend(fontsize="small")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


def pick_extremes(rows: list[dict], count: int = 8) -> tuple[list[dict], list[dict]]:
    """The ``count`` lowest- and highest-scored rows by raw quality (the 0-100 scale may saturate)."""
    ranked = sorted(rows, key=lambda r: float(r["quality"]))
    count = min(count, len(ranked) // 2)
    return ranked[:count], ranked[::-1][:count]


def extreme_label(row: dict) -> str:
    """The raw quality (it keeps ranking where the 0-100 scale saturates) and the 0-100 value."""
    return f"{float(row['quality']):.4g} ({float(row['quality_100']):.0f}/100)"


def plot_extremes(rows: list[dict], images_root: Path, path: Path, count: int = 8) -> Path:
    """Two rows of images: the ``count`` lowest-scored (top) and highest-scored (bottom), with their
    quality and true degradation under each."""
    from PIL import Image

    plt = _pyplot()

    lowest, highest = pick_extremes(rows, count)
    count = len(lowest)
    picks = (("lowest", lowest), ("highest", highest))
    fig, axes = plt.subplots(2, count, figsize=(1.5 * count, 4.1), squeeze=False)
    for row_axes, (name, chosen) in zip(axes, picks, strict=True):
        for ax, row in zip(row_axes, chosen, strict=True):
            with Image.open(images_root / row["path"]) as image:
                ax.imshow(np.asarray(image.convert("RGB")))
            truth = "clean" if row["kind"] == "none" else f"{row['kind']} {row['level']:.2f}"
            ax.set_title(f"{extreme_label(row)}\n{truth}", fontsize=7)
            ax.axis("off")
        row_axes[0].text(-0.1, 0.5, name, rotation=90, va="center", ha="right",
                         transform=row_axes[0].transAxes, fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
    return path


def draw_figures(out: Path) -> list[Path]:
    """The demo's own figures: quality per degradation level and the lowest/highest-scored images."""
    rows = scored_with_truth(out / "reports" / "scores.csv", out / "data" / "degradations.csv")
    if not rows:
        raise FqtoolError("no scored image has a ground truth", out / "reports" / "scores.csv")
    return [
        plot_quality_by_level(rows, out / "reports" / "quality_by_level.png"),
        plot_extremes(rows, out / "unpacked" / "images", out / "reports" / "extremes.png"),
    ]
