"""``fqtool demo``: the whole pipeline on embedded synthetic data, offline, on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from fqtool.cli.console import console
from fqtool.cli.options import Seed
from fqtool.demo import Step, erc_aucs, impostor_note, run_demo


def _announce(index: int, total: int, step: Step) -> None:
    console.rule(f"[bold]{index}/{total} {step.name}[/]")  # the description wraps below, never clipped
    console.print(step.what, highlight=False)
    console.print(f"$ {step.command_line}", style="cyan", highlight=False, soft_wrap=True)


def _done(index: int, total: int, step: Step) -> None:
    console.print(f"step {index}/{total} {step.name}: {step.seconds:.1f} s (CPU {step.cpu_seconds:.1f} s)",
                  style="dim", highlight=False)


def command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for data, model and report.")] = Path(
        "fqtool-demo"
    ),
    quick: Annotated[
        bool, typer.Option("--quick", help="Small and short (~30 s on 2 CPU cores; no CR-FIQA).")
    ] = False,
    seed: Seed = 0,
) -> None:
    """Run the whole pipeline on synthetic faces: synth → convert-rec → make-list → train-magface →
    train-crfiqa → verify → score → erc-curve → export, then write OUTPUT/report.md (and report.json)
    with the numbers, the plots and each step's time.

    Needs no download and no GPU: about 2½ minutes on 2 CPU cores (--quick: about 30 s, no CR-FIQA).
    Each step prints the real command it ran and then its time.
    """
    result = run_demo(output, quick=quick, seed=seed, on_step=_announce, on_done=_done)
    n = result.numbers
    console.rule("[bold]demo finished")
    console.print(
        f"verification accuracy {100 * float(n['accuracy']):.2f}% ± {100 * float(n['accuracy_std']):.2f} "
        f"on {n['pairs']} held-out pairs; Spearman(quality, degradation) "
        f"{float(n['spearman_quality_vs_degradation']):+.3f}",
        highlight=False,
    )
    for text in str(n["fmrs"]).split(","):
        aucs = ", ".join(f"{m} {v:.3f}" for m, v in erc_aucs(n, float(text)).items() if v is not None)
        console.print(f"ERC AUC at FMR {text}: {aucs}", highlight=False, soft_wrap=True)
        console.print(f"  {impostor_note(n, float(text))}", style="dim", highlight=False, soft_wrap=True)
    total, cpu = sum(s.seconds for s in result.steps), sum(s.cpu_seconds for s in result.steps)
    console.print(f"report: {result.report} and report.json ({total:.0f} s in all, CPU {cpu:.0f} s)",
                  highlight=False, soft_wrap=True)
    console.print(
        "On your own data: `fqtool convert-rec faces_webface_112x112 out/`, then "
        "`fqtool train-magface --data faces_webface_112x112 --arch iresnet50 "
        "--val faces_webface_112x112/lfw.bin`.",
        highlight=False,
        soft_wrap=True,
    )
