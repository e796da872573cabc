"""What ``verify`` and ``erc-curve`` return: result objects that write themselves (CSV, JSON, plots) and
describe their table, so a renderer (the CLI's rich tables, a notebook) needs no knowledge of the set kind.

* :class:`VerifyReport`: one section per kind of set (:class:`PairResults`, :class:`IjbResults`);
* :class:`ErcResult`: the ERC/EDC curves of one set with its output folder layout.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from fqtool.errors import FqtoolError
from fqtool.eval.erc import CurveReport
from fqtool.eval.verification import DEFAULT_FARS, VerificationResult, far_key
from fqtool.fsutil import atomic_open, atomic_write_text, ensure_dir


@dataclass
class TableData:
    """A table as plain strings: what a renderer draws (``compact``: a light box, tight padding)."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    left: tuple[str, ...] = ()
    no_wrap: tuple[str, ...] = ()
    compact: bool = False


# ----------------------------------------------------------------------------------------------- pair sets


@dataclass
class PairResults:
    """10-fold verification results of pair sets (``.bin``, pairs folders)."""

    results: list[VerificationResult]
    fars: tuple[float, ...] = DEFAULT_FARS

    def table(self) -> TableData:
        first = self.results[0]
        flip = "flip" if first.flip else "no flip"
        columns = ["target", "pairs", "accuracy %", "AUC", "EER %", "thr", "XNorm",
                   *[f"TAR@{f:.0e}".replace("e-0", "e-") for f in self.fars]]
        rows = []
        for r in self.results:
            tars = [r.tar_at_far.get(far_key(f)) for f in self.fars]
            rows.append([
                r.name, str(r.num_pairs), f"{100 * r.accuracy:.2f}±{100 * r.accuracy_std:.2f}",
                "-" if r.auc is None else f"{r.auc:.4f}", "-" if r.eer is None else f"{100 * r.eer:.2f}",
                f"{r.threshold:.3f}", "-" if r.xnorm is None else f"{r.xnorm:.3f}",
                *["-" if t is None else f"{t:.4f}" for t in tars],
            ])
        title = f"Verification ({first.protocol} protocol, {first.folds}-fold, {flip})"
        return TableData(title, columns, rows, left=("target",), compact=True,
                         no_wrap=tuple(c for c in columns if c != "target"))  # a long name wraps

    def write_csv(self, path: str | Path) -> None:
        header = ["target", "protocol", "flip", "pairs", "accuracy", "accuracy_std", "threshold", "xnorm"]
        header += [f"tar_at_far_{far_key(f)}" for f in self.fars] + ["auc", "eer"]  # new columns last
        with atomic_open(Path(path), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for r in self.results:
                tars = [r.tar_at_far.get(far_key(f)) for f in self.fars]
                writer.writerow([
                    r.name, r.protocol, r.flip, r.num_pairs, f"{r.accuracy:.6f}", f"{r.accuracy_std:.6f}",
                    f"{r.threshold:.4f}", "" if r.xnorm is None else f"{r.xnorm:.6f}",
                    *["" if t is None else f"{t:.6f}" for t in tars],
                    "" if r.auc is None else f"{r.auc:.6f}", "" if r.eer is None else f"{r.eer:.6f}",
                ])

    def plot(self, path: str | Path) -> list[Path]:
        from fqtool.eval.plots import plot_roc

        return plot_roc(self.results, path)


# ----------------------------------------------------------------------------------------------- IJB sets

IJB_CSV_HEADER = ["set", "model", "protocol", "flip", "norm_score", "detector_score", "pairs", "genuine",
                  "impostor", "templates", "images", "auc"]


@dataclass
class IjbResults:
    """TAR@FAR of IJB-B / IJB-C template pairs, one result per set × model × pooling."""

    results: list

    def table(self) -> TableData:
        """TAR (%) at each FAR; pooling flags: F flip, N norm score, D detector score."""
        from fqtool.eval.ijb import IJB_FARS

        several_models = len({r.model for r in self.results}) > 1
        fars = [f"{f:.0e}" for f in IJB_FARS]
        columns = ["set", *(["model"] if several_models else []), "pooling", *fars, "AUC"]
        rows = []
        for r in self.results:
            model = [Path(r.model).stem] if several_models else []
            tars = [f"{100 * r.tar_at_far[far_key(f)]:.2f}" for f in IJB_FARS]
            rows.append([r.name, *model, r.pooling.short(), *tars, f"{100 * r.auc:.2f}"])
        no_wrap = tuple(c for c in columns if c != "model")
        return TableData("IJB 1:1 verification, TAR (%) @ FAR", columns, rows,
                         left=("set", "model", "pooling"), no_wrap=no_wrap, compact=True)

    def write_csv(self, path: str | Path) -> None:
        from fqtool.eval.ijb import IJB_FARS

        header = IJB_CSV_HEADER + [f"tar_at_far_{far_key(f)}" for f in IJB_FARS]
        header += [f"far_used_{far_key(f)}" for f in IJB_FARS]
        with atomic_open(Path(path), "w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle)
            writer.writerow(header)
            for r in self.results:
                p = r.pooling
                writer.writerow(
                    [r.name, r.model, p.protocol, p.flip, p.norm_score, p.detector_score, r.num_pairs,
                     r.num_genuine, r.num_impostor, r.num_templates, r.num_images, f"{r.auc:.6f}"]
                    + [f"{r.tar_at_far[far_key(f)]:.6f}" for f in IJB_FARS]
                    + [f"{r.far_used[far_key(f)]:.3e}" for f in IJB_FARS]
                )

    def plot(self, path: str | Path) -> list[Path]:
        from fqtool.eval.plots import plot_ijb_roc

        return plot_ijb_roc(self.results, path)


# ----------------------------------------------------------------------------------------------- verify


@dataclass
class VerifyReport:
    """Every set's verification results, one section per kind of set (IJB first, as evaluated).

    With exactly one result, its fields read through: ``fqtool.verify(model, "lfw").accuracy``.
    """

    sections: list
    warnings: list[str] = field(default_factory=list)

    @property
    def results(self) -> list:
        """Pair-set results, then IJB results (the order of ``to_dict``)."""
        return [r for section in reversed(self.sections) for r in section.results]

    def __getattr__(self, name: str):
        if name.startswith("_") or name in ("sections", "warnings"):
            raise AttributeError(name)
        results = self.results
        if len(results) != 1:
            raise AttributeError(f"{name!r}: this report holds {len(results)} results; use .results[i]")
        return getattr(results[0], name)

    def to_dict(self) -> dict:
        return {"results": [r.to_dict() for r in self.results]}

    def tables(self) -> list[TableData]:
        return [section.table() for section in self.sections]

    def _single(self, what: str):
        if len(self.sections) != 1:
            raise FqtoolError(f"{what} takes either .bin sets or IJB sets; run them separately")
        return self.sections[0]

    def to_csv(self, path: str | Path) -> Path:
        self._single("--csv").write_csv(path)
        return Path(path)

    def plot(self, path: str | Path) -> list[Path]:
        return self._single("--plot").plot(path)


# ----------------------------------------------------------------------------------------------- ERC / EDC

CURVE_COLUMNS = ["method", "mode", "operating_point", "fraction", "fnmr", "threshold", "genuine", "impostor"]
SUMMARY_COLUMNS = ["method", "mode", "operating_point", "fnmr_at_0", "auc", "pauc", "pauc_limit",
                   "pauc_corrected"]


def _fmt(value) -> str:
    return "" if value is None else f"{value:.6g}" if isinstance(value, float) else str(value)


@dataclass
class ErcResult:
    """ERC/EDC curves of one set: ``summary()`` per method, ``write(folder)`` for the CSV/JSON/plots."""

    name: str
    report: CurveReport

    @property
    def mode(self) -> str:
        return self.report.mode

    @property
    def warnings(self) -> list[str]:
        return self.report.warnings

    def summary(self) -> list[dict]:
        return self.report.summary()

    def default_output(self) -> Path:
        return Path(f"{self.name}-{self.mode}")

    def to_dict(self) -> dict:
        return {"set": self.name, "mode": self.mode, "summary": self.summary()}

    def to_csv(self, folder: str | Path) -> list[Path]:
        """``curves.csv``, ``summary.csv`` and ``summary.json`` in ``folder``."""
        out = ensure_dir(Path(folder))
        with atomic_open(out / "curves.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, CURVE_COLUMNS)
            writer.writeheader()
            for curve in self.report.ordered():
                writer.writerows({k: _fmt(v) for k, v in row.items()} for row in curve.rows())
        summary = self.summary()
        with atomic_open(out / "summary.csv", "w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, SUMMARY_COLUMNS)
            writer.writeheader()
            writer.writerows({k: _fmt(v) for k, v in row.items()} for row in summary)
        doc = {"set": self.name, "mode": self.mode, "pauc_limit": self.report.pauc_limit,
               "summary": summary, "warnings": self.warnings}
        atomic_write_text(out / "summary.json", json.dumps(doc, indent=2) + "\n")
        return [out / "curves.csv", out / "summary.csv", out / "summary.json"]

    def plot(self, folder: str | Path) -> list[Path]:
        """``<mode>.png`` and ``<mode>.svg`` in ``folder``."""
        from fqtool.eval.plots import plot_curves

        return plot_curves(self.report, ensure_dir(Path(folder)) / self.mode, title=self.name)

    def write(self, folder: str | Path | None = None) -> list[Path]:
        """Everything ``erc-curve`` writes, in ``folder`` (default ``<set>-<mode>``)."""
        folder = self.default_output() if folder is None else Path(folder)
        return [*self.to_csv(folder), *self.plot(folder)]

    def table(self) -> TableData:
        corrected = self.mode == "edc"
        columns = ["method", "operating point", "FNMR@0", "AUC", "pAUC"]
        columns += ["pAUC − ideal"] if corrected else []
        rows = []
        for row in self.summary():
            cells = [row["method"], row["operating_point"], row["fnmr_at_0"], row["auc"], row["pauc"]]
            cells += [row["pauc_corrected"]] if corrected else []
            rows.append([c if isinstance(c, str) else "-" if c is None else f"{c:.4f}" for c in cells])
        title = f"{self.mode.upper()} on {self.name} (pAUC up to {self.report.pauc_limit:g})"
        return TableData(title, columns, rows, left=("method", "operating point"))
