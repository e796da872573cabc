"""``fqtool demo``: the whole pipeline on embedded synthetic data, offline, on a CPU.

The demo runs the *real* commands, in process, in the order a user would type them on their own data:
``synth`` → ``convert-rec`` → ``make-list`` → ``train-magface`` → ``verify`` → ``score`` → ``erc-curve``
→ ``export``, then writes a short Markdown report with the numbers and the plots. Each step prints the
command line it ran, so the demo doubles as a walkthrough.
"""

from __future__ import annotations

import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# the figures and rank statistics live beside the demo; their names stay importable from here
from fqtool.demo_figures import (  # noqa: F401
    LEVEL_BANDS,
    LEVEL_COLOURS,
    _read_csv,
    draw_figures,
    extreme_label,
    level_groups,
    pick_extremes,
    quality_vs_degradation,
    spearman,
)
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
    val_identities: int = 20
    #: Per-image pose/expression/lighting variation of the synthetic faces (``synth --jitter``). At 0.5
    #: the tiny model learns the identities well enough that its errors come from the degradations.
    jitter: float = 0.5
    batch_size: int = 64
    lr: float = 0.1
    #: ERC operating points; with ``val_pairs / 2`` impostors the threshold rests on ``fmr × that`` of them.
    fmrs: tuple[float, ...] = (1e-1, 1e-2)
    #: Also train CR-FIQA on the same data and draw its quality in the ERC (the full demo's budget allows).
    crfiqa: bool = False


QUICK = DemoSize(identities=16, images_per_identity=16, val_pairs=1000, epochs=10, lr_steps="7,9")
#: 10 epochs (90 steps of 64) per model: half the training of the earlier 20 epochs for 1.5 points of
#: verification accuracy (78.3 % vs 79.8 %, seed 0); 180 steps of 32 instead cost as much and gave 75.4 %.
FULL = DemoSize(identities=24, images_per_identity=24, val_pairs=2000, epochs=10, lr_steps="6,9",
                crfiqa=True)


@dataclass
class Step:
    name: str
    what: str
    args: list[str]
    #: Wall time, and CPU time of this process (user + system, all threads): the CPU time is what a
    #: loaded machine does not inflate.
    seconds: float = 0.0
    cpu_seconds: float = 0.0

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


def _erc_source(features: Path, crfiqa_scores: Path | None) -> list[str]:
    """``verify``'s saved features (no second embedding pass) and, in the full demo, the CR-FIQA quality
    ``score`` wrote for the same images."""
    args = ["--features", str(features)]
    if crfiqa_scores is not None:
        args += ["--scores", f"crfiqa={crfiqa_scores}"]
    return args


def _train_args(size: DemoSize, train_list: Path, seed: int, output: Path) -> list[str]:
    """Options shared by the demo's training steps: the tiny iResNet, the demo's schedule, CPU."""
    return ["--data", str(train_list), "--arch", "iresnet_tiny", "--epochs", str(size.epochs),
            "--batch-size", str(size.batch_size), "--lr", str(size.lr), "--lr-schedule", "step",
            "--lr-steps", size.lr_steps, "--workers", "0", "--device", "cpu", "--seed", str(seed),
            "--output", str(output), "--overwrite"]  # a rerun of the demo replaces its own model


def _fmr_args(size: DemoSize) -> list[str]:
    return [arg for fmr in size.fmrs for arg in ("--fmr", f"{fmr:g}")]


def plan_steps(out: Path, size: DemoSize, seed: int) -> list[Step]:
    """The command lines of the demo, relative to nothing but ``out``."""
    data, unpacked, model_dir, reports = out / "data", out / "unpacked", out / "model", out / "reports"
    weights, features = model_dir / "model.safetensors", reports / "val_features.npz"
    crfiqa_dir = out / "model_crfiqa"
    crfiqa_scores = reports / "val_crfiqa.csv" if size.crfiqa else None
    crfiqa_train = [
        Step("train-crfiqa", "CR-FIQA training of the same tiny iResNet (its regressor's output = quality)",
             ["train-crfiqa", *_train_args(size, unpacked / "train_list.txt", seed, crfiqa_dir),
              "--lr-batch", "0"]),
    ] if size.crfiqa else []
    crfiqa_score = [
        Step("score", "CR-FIQA quality of the verification images (for the ERC)",
             ["score", str(unpacked / "verification" / "val" / "images"), "-w",
              str(crfiqa_dir / "model.safetensors"), "--device", "cpu", "--workers", "0",
              "-o", str(crfiqa_scores)]),
    ] if size.crfiqa else []
    return [
        Step("synth", "synthetic identities with graded degradations, as an insightface .rec + val.bin",
             ["synth", str(data), "--identities", str(size.identities), "--images-per-identity",
              str(size.images_per_identity), "--val-pairs", str(size.val_pairs), "--val-identities",
              str(size.val_identities), "--jitter", f"{size.jitter:g}", "--seed", str(seed)]),
        Step("convert-rec", "unpack the .rec (original JPEG bytes) and val.bin into folders",
             ["convert-rec", str(data), str(unpacked)]),
        Step("make-list", "a training list from the identity folders",
             ["make-list", str(unpacked / "images"), "--output", str(unpacked / "train_list.txt")]),
        Step("train-magface", "MagFace training of the tiny registered iResNet (magnitude = quality)",
             ["train-magface", *_train_args(size, unpacked / "train_list.txt", seed, model_dir)]),
        *crfiqa_train,
        Step("verify", "10-fold verification accuracy on the held-out identities; saves the features",
             ["verify", str(data / "val.bin"), "-w", str(weights), "--device", "cpu",
              "--csv", str(reports / "verify.csv"), "--plot", str(reports / "roc.png"),
              "--save-features", str(features)]),
        Step("score", "quality of every training image",
             ["score", str(unpacked / "images"), "-w", str(weights), "--device", "cpu", "--workers", "0",
              "-o", str(reports / "scores.csv"), "--bottom", "5"]),
        *crfiqa_score,
        Step("erc-curve", "error-versus-reject: the model's quality against the ground truth",
             ["erc-curve", *_erc_source(features, crfiqa_scores),
              "--scores", f"ground_truth={data / 'val_quality.csv'}",
              *_fmr_args(size), "--output", str(reports / "erc")]),
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
    on_done: Callable[[int, int, Step], None] | None = None,
) -> DemoResult:
    """Run every step, stop at the first failing one, then write ``output/report.md`` and
    ``output/report.json`` (the numbers and each step's time). ``on_step`` is called before a step,
    ``on_done`` after it (with its times filled in)."""
    output = ensure_dir(output)
    size = QUICK if quick else FULL
    runner = runner or cli_runner()
    result = DemoResult(output=output)
    steps = plan_steps(output, size, seed)
    ensure_dir(output / "reports")
    for index, step in enumerate(steps, start=1):
        if on_step is not None:
            on_step(index, len(steps), step)
        start, cpu = time.perf_counter(), time.process_time()
        code = runner(step.args)
        step.seconds, step.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
        result.steps.append(step)
        if code != 0:
            raise FqtoolError(f"demo step {index} ({step.name}) failed (exit {code}): {step.command_line}")
        if on_done is not None:
            on_done(index, len(steps), step)
    start, cpu = time.perf_counter(), time.process_time()
    draw_figures(output)
    result.numbers = collect_numbers(output, size)
    report = Step("report", "the demo's own figures, the numbers, report.md", [])
    report.seconds, report.cpu_seconds = time.perf_counter() - start, time.process_time() - cpu
    result.steps.append(report)
    result.report = write_report(result, size)
    write_json(result)
    return result


def write_json(result: DemoResult) -> Path:
    """``report.json``: every number of the report and each step's command, wall and CPU time."""
    doc = {
        "numbers": result.numbers,
        "steps": [{"step": i, "name": s.name, "command": s.command_line if s.args else None,
                   "seconds": round(s.seconds, 2), "cpu_seconds": round(s.cpu_seconds, 2)}
                  for i, s in enumerate(result.steps, start=1)],
        "seconds": round(sum(s.seconds for s in result.steps), 2),
        "cpu_seconds": round(sum(s.cpu_seconds for s in result.steps), 2),
    }
    path = result.output / "report.json"
    atomic_write_text(path, json.dumps(doc, indent=2, allow_nan=False, default=_json_number) + "\n")
    return path


def _json_number(value):
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON: {type(value).__name__}")


# ------------------------------------------------------------------------------------------- numbers


def _erc_counts(curves_csv: Path) -> tuple[int, int, int, float]:
    """Genuine and impostor pairs behind the ERC at 0 % rejected (the first row of ``curves.csv``), and
    the fewest impostors any quality measure leaves at the highest reject rate (with that rate): the
    threshold at each rate is set on the impostors that remain, so this is what the tail rests on."""
    rows = _read_csv(curves_csv)
    first = rows[0]
    measured = [r for r in rows if r["threshold"]]  # ideal/random have no threshold of their own
    top = max(float(r["fraction"]) for r in measured)
    fewest = min(int(r["impostor"]) for r in measured if float(r["fraction"]) == top)
    return int(first["genuine"]), int(first["impostor"]), fewest, top


def erc_key(what: str, method: str, operating_point: str) -> str:
    """Key of an ERC number in :attr:`DemoResult.numbers`, e.g. ``erc_auc[ground_truth@fmr=0.1]``."""
    return f"erc_{what}[{method}@{operating_point}]"


def collect_numbers(out: Path, size: DemoSize) -> dict[str, float | int | str]:
    """Every number of the report, read back from the files the steps wrote."""
    reports = out / "reports"
    numbers: dict[str, float | int | str] = {"fmrs": ",".join(f"{f:g}" for f in size.fmrs)}
    verify = _read_csv(reports / "verify.csv")[0]
    numbers["accuracy"] = float(verify["accuracy"])
    numbers["accuracy_std"] = float(verify["accuracy_std"])
    numbers["pairs"] = int(verify["pairs"])
    rho, clean, degraded = quality_vs_degradation(reports / "scores.csv", out / "data" / "degradations.csv")
    numbers["spearman_quality_vs_degradation"] = rho
    numbers["mean_quality_clean"] = clean
    numbers["mean_quality_heavily_degraded"] = degraded
    (numbers["genuine"], numbers["impostor"], numbers["impostor_fewest"],
     numbers["impostor_fewest_at"]) = _erc_counts(reports / "erc" / "curves.csv")
    summary = json.loads((reports / "erc" / "summary.json").read_text(encoding="utf-8"))
    for row in summary["summary"]:
        numbers[erc_key("auc", row["method"], row["operating_point"])] = row["auc"]
        numbers[erc_key("fnmr0", row["method"], row["operating_point"])] = row["fnmr_at_0"]
    return numbers


# -------------------------------------------------------------------------------------------- report

#: Published context for the ERC numbers (docs/demo.md; CR-FIQA, CVPR 2023, Table I).
REAL_DATA_CONTEXT = (
    "On real data the same plot is made with a strong recogniser, whose FNMR at 0 % rejected is a few "
    "percent rather than the tiny model's tens of percent, so the AUCs are much smaller. "
    "CR-FIQA (Boutros et al., CVPR 2023, Table I; "
    "ArcFace-R100 recogniser, ERC AUC at FMR 1e-3 over 0-95 % rejected, lower is better) reports on IJB-C: "
    "CR-FIQA(L) 0.0138, SER-FIQ 0.0161, MagFace magnitude 0.0171, CR-FIQA(S) 0.0171, and the generic image "
    "quality BRISQUE 0.0381. The gaps between methods there are small: what matters is the order of the "
    "curves, and that every learned quality beats a generic one by a wide margin."
)


def _fmt(value: float | int | str | None) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "-" if value is None else str(value)


def _method_label(method: str) -> str:
    labels = {
        "ground_truth": "ground truth (1 − true degradation level)",
        "random": "random (no quality)",
        "ideal": "ideal (rejects exactly the false non-matches)",
        "model:norm": "model: MagFace magnitude",
        "model:serfiq": "model: SER-FIQ (training-free)",
        "model:head": "model: quality head",
        "crfiqa": "CR-FIQA regressor (a second tiny model, trained the same way)",
    }
    return labels.get(method, method)


def erc_aucs(n: dict, fmr: float) -> dict[str, float | None]:
    """``{method: ERC AUC}`` at one operating point, methods then baselines."""
    tail = f"@fmr={fmr:g}]"
    return {k[len("erc_auc["):-len(tail)]: v for k, v in n.items()
            if k.startswith("erc_auc[") and k.endswith(tail)}


def impostor_note(n: dict, fmr: float) -> str:
    """What the ERC threshold rests on at ``fmr``: the impostors at 0 % rejected and at the highest rate."""
    impostors, fewest = int(n["impostor"]), int(n["impostor_fewest"])
    behind = (f"the {int(impostors * fmr)} most similar pass" if impostors * fmr >= 1
              else "fewer than 1/FMR: the threshold is the most similar impostor")
    tail = f"as few as {fewest} remain at {100 * float(n['impostor_fewest_at']):.0f} % rejected"
    if fewest * fmr < 1 - 1e-9:  # erc-curve's rule, and its warning
        tail += f" (fewer than 1/FMR = {round(1 / fmr)}: there the threshold is the most similar impostor)"
    return (f"threshold set at each reject rate on the impostor pairs that remain: {impostors} at 0 % "
            f"rejected ({behind}), {tail}; FNMR over {n['genuine']} genuine pairs")


def _erc_rows(n: dict) -> list[str]:
    rows = []
    for text in str(n["fmrs"]).split(","):
        fmr = float(text)
        rows.append(f"| **ERC at FMR {fmr:g}** | {impostor_note(n, fmr)} |")
        rows += [f"| ERC AUC, {_method_label(m)} | {_fmt(v)} |" for m, v in erc_aucs(n, fmr).items()]
    return rows


def _guide(n: dict) -> list[str]:
    return [
        "## What to look for",
        "",
        "- **Quality per degradation level**: the clean training images (green) should sit to the right and "
        "each stronger band further left; overlapping colours are images whose degradation did not hurt.",
        "- **Lowest and highest scored images**: the top row should be mostly heavily degraded faces, the "
        "bottom row clean ones; under each image its raw quality, that value on the 0-100 scale (which "
        "saturates at the ends, where the raw value still ranks) and its true degradation.",
        "- **ERC**: rejecting low-quality pairs should lower the FNMR; the ground truth (what a perfect "
        "quality measure of these degradations would do) falls well below the flat random line, and the "
        "model's quality should fall between them, the closer to the ground truth the better.",
        "- **ROC**: how well the tiny model verifies held-out identities at all; the verification accuracy "
        "bounds how much any quality measure can help.",
        "",
        "## What good looks like on real data",
        "",
        REAL_DATA_CONTEXT,
        "",
    ]


#: The same pipeline on a user's data: placeholders, not the demo's paths (and no --overwrite).
YOUR_DATA = [
    "## The same on your data",
    "",
    "Replace the placeholders in capitals: `DATA` an insightface folder (`train.rec`, `train.idx`, `*.bin`), "
    "`OUT` a new folder. Drop `--device cpu` on a GPU machine and use a real architecture.",
    "",
    "```bash",
    "fqtool convert-rec DATA OUT/unpacked",
    "fqtool make-list OUT/unpacked/images --output OUT/train_list.txt",
    "fqtool train-magface --data OUT/train_list.txt --arch iresnet50 --output OUT/model",
    "fqtool verify DATA/VAL.bin -w OUT/model/model.safetensors --save-features OUT/val_features.npz",
    "fqtool score YOUR_IMAGES -w OUT/model/model.safetensors -o OUT/scores.csv --report OUT/score_report",
    "fqtool erc-curve --features OUT/val_features.npz --fmr 1e-3 --output OUT/erc",
    "fqtool export OUT/model/model.safetensors --output OUT/model/model.onnx",
    "```",
    "",
]


def write_report(result: DemoResult, size: DemoSize) -> Path:
    """A Markdown report next to the plots it shows (paths relative to the report)."""
    out, n = result.output, result.numbers
    erc_plot = next(iter(sorted((out / "reports" / "erc").glob("*.png"))), None)
    lines = [
        "# fqtool demo report",
        "",
        f"Synthetic data: {size.identities} identities × {size.images_per_identity} images for training, "
        f"{n['pairs']} verification pairs from {size.val_identities} held-out identities; about half the "
        "images carry a blur, noise, down-scaling, occlusion or low-contrast degradation of known level. "
        "Every number below was measured by this run.",
        "",
        "| result | value |",
        "|---|---|",
        f"| verification accuracy (10-fold, held-out identities) | {100 * float(n['accuracy']):.2f}% "
        f"± {100 * float(n['accuracy_std']):.2f} |",
        f"| Spearman(quality, true degradation level), training images | "
        f"{_fmt(n['spearman_quality_vs_degradation'])} (negative = degraded images score lower) |",
        f"| mean quality (embedding norm): clean / level > 0.5 | {_fmt(n['mean_quality_clean'])} / "
        f"{_fmt(n['mean_quality_heavily_degraded'])} |",
        *_erc_rows(n),
        "",
        "## Plots",
        "",
        "![quality per degradation level](reports/quality_by_level.png)",
        "",
        "![lowest and highest scored images](reports/extremes.png)",
        "",
    ]
    if erc_plot is not None:
        lines += [f"![ERC]({erc_plot.relative_to(out).as_posix()})", ""]
    lines += ["![ROC](reports/roc.png)", "", *_guide(n)]
    lines += ["## Steps", "", "| # | step | what | time | CPU time |", "|---|---|---|---|---|"]
    lines += [f"| {i} | `{s.name}` | {s.what} | {s.seconds:.1f} s | {s.cpu_seconds:.1f} s |"
              for i, s in enumerate(result.steps, start=1)]
    total, cpu = sum(s.seconds for s in result.steps), sum(s.cpu_seconds for s in result.steps)
    lines += [f"| | **total** | | {total:.1f} s | {cpu:.1f} s |", ""]
    lines += ["The command lines this run used are in `report.json`.", "", *YOUR_DATA]
    path = out / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
