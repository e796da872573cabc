"""``fqtool demo``: the whole pipeline on embedded synthetic data, offline, on a CPU.

The demo runs the *real* commands, in process, in the order a user would type them on their own data:
``synth`` → ``convert-rec`` → ``make-list`` → ``train-magface`` → ``verify`` → ``score`` → ``erc-curve``
→ ``export``, then writes a short Markdown report with the numbers and the plots. Each step prints the
command line it ran, so the demo doubles as a walkthrough.
"""

from __future__ import annotations

import csv
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fqtool.errors import FqtoolError
from fqtool.fsutil import atomic_write_text, ensure_dir


@dataclass(frozen=True)
class DemoSize:
    """Data and training sizes; ``quick`` fits in about a minute, ``full`` in a few on 2 CPU cores."""

    identities: int
    images_per_identity: int
    val_pairs: int
    epochs: int
    lr_steps: str
    batch_size: int = 64
    lr: float = 0.1


QUICK = DemoSize(identities=16, images_per_identity=16, val_pairs=100, epochs=10, lr_steps="7,9")
FULL = DemoSize(identities=24, images_per_identity=24, val_pairs=300, epochs=20, lr_steps="12,17")


@dataclass
class Step:
    name: str
    what: str
    args: list[str]
    seconds: float = 0.0

    @property
    def command_line(self) -> str:
        return "fqtool " + " ".join(shlex.quote(a) for a in self.args)


@dataclass
class DemoResult:
    output: Path
    steps: list[Step] = field(default_factory=list)
    numbers: dict[str, float | int | str] = field(default_factory=dict)
    report: Path | None = None


#: Runs one fqtool command line (without the leading ``fqtool``); returns its exit code.
Runner = Callable[[list[str]], int]


def cli_runner() -> Runner:
    """Run fqtool commands in this process through the Typer app (same code path as the shell)."""
    from typer.main import get_command

    from fqtool.cli.app import app

    command = get_command(app)

    def run(args: list[str]) -> int:
        code = command.main(args=args, prog_name="fqtool", standalone_mode=False)
        return int(code or 0)

    return run


def plan_steps(out: Path, size: DemoSize, seed: int) -> list[Step]:
    """The command lines of the demo, relative to nothing but ``out``."""
    data, unpacked, model_dir, reports = out / "data", out / "unpacked", out / "model", out / "reports"
    weights = model_dir / "model.safetensors"
    return [
        Step("synth", "synthetic identities with graded degradations, as an insightface .rec + val.bin",
             ["synth", str(data), "--identities", str(size.identities), "--images-per-identity",
              str(size.images_per_identity), "--val-pairs", str(size.val_pairs), "--seed", str(seed)]),
        Step("convert-rec", "unpack the .rec (original JPEG bytes) and val.bin into folders",
             ["convert-rec", str(data), str(unpacked)]),
        Step("make-list", "a training list from the identity folders",
             ["make-list", str(unpacked / "images"), "--output", str(unpacked / "train_list.txt")]),
        Step("train-magface", "MagFace training of the tiny registered iResNet (magnitude = quality)",
             ["train-magface", "--data", str(unpacked / "train_list.txt"), "--arch", "iresnet_tiny",
              "--epochs", str(size.epochs), "--batch-size", str(size.batch_size), "--lr", str(size.lr),
              "--lr-schedule", "step", "--lr-steps", size.lr_steps, "--workers", "0", "--device", "cpu",
              "--seed", str(seed), "--val", str(data / "val.bin"), "--output", str(model_dir),
              "--overwrite"]),  # a rerun of the demo replaces its own model
        Step("verify", "10-fold verification accuracy on the held-out identities",
             ["verify", str(data / "val.bin"), "-w", str(weights), "--device", "cpu",
              "--csv", str(reports / "verify.csv"), "--plot", str(reports / "roc.png")]),
        Step("score", "quality of every training image, with a histogram",
             ["score", str(unpacked / "images"), "-w", str(weights), "--device", "cpu", "--workers", "0",
              "-o", str(reports / "scores.csv"), "--plot", str(reports / "quality_hist.png"),
              "--bottom", "5"]),
        Step("erc-curve", "error-versus-reject: the model's quality against the ground truth",
             ["erc-curve", str(data / "val.bin"), "-w", str(weights), "--device", "cpu",
              "--scores", f"ground_truth={data / 'val_quality.csv'}", "--fmr", "1e-2",
              "--output", str(reports / "erc")]),
        Step("export", "ONNX export with a dynamic batch, checked against ONNX Runtime",
             ["export", str(weights), "--output", str(model_dir / "model.onnx")]),
    ]


def run_demo(
    output: Path,
    *,
    quick: bool = False,
    seed: int = 0,
    runner: Runner | None = None,
    on_step: Callable[[int, int, Step], None] | None = None,
) -> DemoResult:
    """Run every step, stop at the first failing one, then write ``output/report.md``."""
    output = ensure_dir(output)
    size = QUICK if quick else FULL
    runner = runner or cli_runner()
    result = DemoResult(output=output)
    steps = plan_steps(output, size, seed)
    ensure_dir(output / "reports")
    for index, step in enumerate(steps, start=1):
        if on_step is not None:
            on_step(index, len(steps), step)
        start = time.perf_counter()
        code = runner(step.args)
        step.seconds = time.perf_counter() - start
        result.steps.append(step)
        if code != 0:
            raise FqtoolError(f"demo step {index} ({step.name}) failed (exit {code}): {step.command_line}")
    result.numbers = collect_numbers(output)
    result.report = write_report(result, size)
    return result


# ------------------------------------------------------------------------------------------- numbers


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


def collect_numbers(out: Path) -> dict[str, float | int | str]:
    reports = out / "reports"
    numbers: dict[str, float | int | str] = {}
    verify = _read_csv(reports / "verify.csv")[0]
    numbers["accuracy"] = float(verify["accuracy"])
    numbers["accuracy_std"] = float(verify["accuracy_std"])
    numbers["pairs"] = int(verify["pairs"])
    rho, clean, degraded = quality_vs_degradation(reports / "scores.csv", out / "data" / "degradations.csv")
    numbers["spearman_quality_vs_degradation"] = rho
    numbers["mean_quality_clean"] = clean
    numbers["mean_quality_heavily_degraded"] = degraded
    summary = json.loads((reports / "erc" / "summary.json").read_text(encoding="utf-8"))
    for row in summary["summary"]:
        numbers[f"erc_auc[{row['method']}]"] = row["auc"]
    return numbers


# -------------------------------------------------------------------------------------------- report


def _fmt(value: float | int | str | None) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def write_report(result: DemoResult, size: DemoSize) -> Path:
    """A Markdown report next to the plots it shows (paths relative to the report)."""
    out, n = result.output, result.numbers
    erc_rows = [(k[len("erc_auc["):-1], v) for k, v in n.items() if k.startswith("erc_auc[")]
    erc_plot = next(iter(sorted((out / "reports" / "erc").glob("*.png"))), None)
    lines = [
        "# fqtool demo report",
        "",
        f"Synthetic data: {size.identities} identities × {size.images_per_identity} images for training, "
        f"{n['pairs']} verification pairs from held-out identities; about half the images carry a blur, "
        "noise, down-scaling, occlusion or low-contrast degradation of known level.",
        "",
        "| result | value |",
        "|---|---|",
        f"| verification accuracy (10-fold, held-out identities) | {100 * float(n['accuracy']):.2f}% "
        f"± {100 * float(n['accuracy_std']):.2f} |",
        f"| Spearman(quality, true degradation level), training images | "
        f"{_fmt(n['spearman_quality_vs_degradation'])} (negative = degraded images score lower) |",
        f"| mean quality (embedding norm): clean / level > 0.5 | {_fmt(n['mean_quality_clean'])} / "
        f"{_fmt(n['mean_quality_heavily_degraded'])} |",
    ]
    lines += [f"| ERC AUC (FNMR vs reject, FMR 1e-2), {method} | {_fmt(v)} |" for method, v in erc_rows]
    lines += ["", "## Plots", "", "![quality histogram](reports/quality_hist.png)", "",
              "![ROC](reports/roc.png)", ""]
    if erc_plot is not None:
        lines += [f"![ERC]({erc_plot.relative_to(out).as_posix()})", ""]
    lines += ["## Steps", "", "| step | what | time |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.what} | {s.seconds:.1f} s |" for s in result.steps]
    lines += ["", "## The same on your data", "", "```bash"]
    lines += [s.command_line for s in result.steps] + ["```", ""]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
