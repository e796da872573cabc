"""The options of ``train-feature``, ``train-quality`` and ``train-magface``, declared once.

Every option defaults to ``None`` (= "not given"), so the precedence recipe defaults → ``--config`` file →
flags is decided in :func:`fqtool.train.config.resolve_config`; the help text states each recipe's default.
:func:`training_command` builds a command function from the shared options plus a command's own.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from fqtool.cli.console import err_console

_P = "Training"


def _opt(*names: str, help: str, **kwargs: Any) -> typer.models.OptionInfo:
    panel = kwargs.pop("panel", _P)
    return typer.Option(*names, help=help, show_default=False, rich_help_panel=panel, **kwargs)


#: name → (annotation, default). Order = order in --help.
SHARED: dict[str, tuple[Any, Any]] = {
    "data": (Annotated[Path | None, _opt("--data", "-d", help="Training data: an insightface folder with "
             "train.rec/idx/property (read in place), a .rec, a list file or an image folder.",
             panel="Data")], None),
    "val": (Annotated[list[Path] | None, _opt("--val", help="Verification .bin evaluated every --val-every "
            "steps and at each epoch end (repeatable).", panel="Data")], None),
    "config": (Annotated[Path | None, _opt("--config", "-c", help="TOML file of settings; flags override it "
               "(the run writes its resolved config.toml).", panel="Data")], None),
    "output": (Annotated[Path | None, _opt("--output", "-o", help="Output folder: model.safetensors, "
               "state/, config.toml, metrics.jsonl, tb/. [default: runs/train]", panel="Data")], None),
    "resume": (Annotated[str | None, _opt("--resume", help="Continue from a training state: 'auto' (OUTPUT/"
               "state/last.pt if present), a state file or a run folder.", panel="Data")], None),
    "overwrite": (Annotated[bool | None, _opt("--overwrite", help="Start again in an output "
                  "folder that holds a previous run (its model, state/, logs are deleted first).",
                  panel="Data")], None),
    "workers": (Annotated[int | None, _opt("--workers", "-j", min=0, help="DataLoader worker processes per "
                "rank. [default: 4]", panel="Data")], None),
    "arch": (Annotated[str | None, _opt("--arch", help="Backbone from the registry (`fqtool models`). "
             "[default: iresnet50 (magface), iresnet100 (feature)]", panel="Model")], None),
    "embedding_size": (Annotated[int | None, _opt("--embedding-size", min=1, help="Embedding dimension. "
                       "[default: 512]", panel="Model")], None),
    "epochs": (Annotated[int | None, _opt("--epochs", min=1, help="Epochs. [default: 25 magface, 10 "
               "feature, 5 quality]")], None),
    "batch_size": (Annotated[int | None, _opt("--batch-size", "-b", min=1, help="Images per batch per "
                   "process (global batch = this × processes). [default: 512]")], None),
    "lr": (Annotated[float | None, _opt("--lr", help="Base learning rate (SGD). [default: 0.1 magface, "
           "0.05 feature, 0.01 quality]")], None),
    "lr_schedule": (Annotated[str | None, _opt("--lr-schedule", help="step (drops at --lr-steps) or cosine "
                    "(to --min-lr). [default: step magface, cosine feature/quality]")], None),
    "lr_steps": (Annotated[str | None, _opt("--lr-steps", help="Epochs where the lr is multiplied by "
                 "--lr-gamma, e.g. 10,18,22. [default: 10,18,22]")], None),
    "lr_gamma": (Annotated[float | None, _opt("--lr-gamma", help="Factor of each step drop. [default: "
                 "0.1]")], None),
    "warmup_epochs": (Annotated[float | None, _opt("--warmup-epochs", min=0.0, help="Linear warm-up length "
                      "in epochs. [default: 0; 1 for feature]")], None),
    "min_lr": (Annotated[float | None, _opt("--min-lr", min=0.0, help="End of the cosine schedule.")], None),
    "momentum": (Annotated[float | None, _opt("--momentum", help="SGD momentum. [default: 0.9]")], None),
    "weight_decay": (Annotated[float | None, _opt("--weight-decay", help="Weight decay of the trainable "
                     "network. [default: 5e-4; 0 for quality]")], None),
    "head_weight_decay": (Annotated[float | None, _opt("--head-weight-decay", help="Weight decay of the "
                          "class centres. [default: as --weight-decay; 0 for EQFace]")], None),
    "clip_grad": (Annotated[float | None, _opt("--clip-grad", min=0.0, help="Clip the network's gradient "
                  "norm (0 = off). [default: 0]")], None),
    "scale": (Annotated[float | None, _opt("--scale", help="Softmax scale s. [default: 64]",
              panel="Loss")], None),
    "margin": (Annotated[float | None, _opt("--margin", help="Angular/additive margin (arcface 0.5, "
               "cosface 0.4).", panel="Loss")], None),
    "focal_gamma": (Annotated[float | None, _opt("--focal-gamma", min=0.0, help="Focal loss γ (0 = plain "
                    "cross entropy). [default: 2 for EQFace, 0 for MagFace]", panel="Loss")], None),
    "sample_rate": (Annotated[float | None, _opt("--sample-rate", help="Partial FC: fraction of class "
                    "centres sampled per step (1 = all). [default: 1]", panel="Loss")], None),
    "precision": (Annotated[str | None, _opt("--precision", help="auto (bf16 on CUDA, fp32 on CPU), bf16, "
                  "fp16 (GradScaler) or fp32.", panel="Run")], None),
    "channels_last": (Annotated[bool | None, _opt("--channels-last/--no-channels-last", help="NHWC memory "
                      "format (faster convolutions on recent GPUs).", panel="Run")], None),
    "compile": (Annotated[bool | None, _opt("--compile/--no-compile", help="torch.compile the network.",
                panel="Run")], None),
    "sync_bn": (Annotated[bool | None, _opt("--sync-bn/--no-sync-bn", help="BatchNorm statistics over the "
                "global batch when distributed (MagFace's DDP trainer does this).", panel="Run")], None),
    "seed": (Annotated[int | None, _opt("--seed", help="Seed of initialisation and data order. [default: 0]",
             panel="Run")], None),
    "device": (Annotated[str | None, _opt("--device", help="auto, cpu, cuda or cuda:N (under torchrun each "
               "process takes cuda:LOCAL_RANK).", panel="Run")], None),
    "save_every": (Annotated[int | None, _opt("--save-every", min=0, help="Write state/last.pt every N steps "
                   "(and at each epoch end). [default: 1000]", panel="Run")], None),
    "val_every": (Annotated[int | None, _opt("--val-every", min=0, help="Validate every N steps (0 = only "
                  "at epoch ends). [default: 2000]", panel="Run")], None),
    "log_every": (Annotated[int | None, _opt("--log-every", min=1, help="Log scalars every N steps. "
                  "[default: 50]", panel="Run")], None),
    "max_steps": (Annotated[int | None, _opt("--max-steps", min=0, help="Stop after N steps in total (smoke "
                  "tests; the schedule still spans --epochs).", panel="Run")], None),
    "max_bad_steps": (Annotated[int | None, _opt("--max-bad-steps", min=1, help="Stop after N consecutive "
                      "steps with a NaN/inf loss. [default: 20]", panel="Run")], None),
    "quiet": (Annotated[bool | None, _opt("--quiet/--no-quiet", "-q", help="No progress display.",
              panel="Run")], None),
}

LOSS_FEATURE = (Annotated[str | None, _opt("--loss", help="arcface, cosface or combined. [default: arcface]",
                                           panel="Loss")], None)
LOSS_MAGFACE = (Annotated[str | None, _opt("--loss", help="magface or mag-cosface. [default: magface]",
                                           panel="Loss")], None)
QUALITY_WEIGHTS = (Annotated[Path | None, _opt("--quality-weights", help="EQFace stage 3: the "
                   "train-quality output (stage-1 backbone + quality head) that weights each sample.",
                   panel="Model")], None)
WEIGHTS = (Annotated[Path | None, _opt("--weights", "-w", help="Stage-1 model (train-feature's "
           "model.safetensors); its backbone is frozen.", panel="Model")], None)
HEAD_WEIGHTS = (Annotated[Path | None, _opt("--head-weights", help="Stage-1 class centres. [default: "
                "head.safetensors next to --weights]", panel="Model")], None)
MAGFACE = {
    name: (Annotated[float | None, _opt(f"--{name.replace('_', '-')}", help=text, panel="Loss")], None)
    for name, text in {
        "l_a": "Lower magnitude bound. [default: 10]", "u_a": "Upper magnitude bound. [default: 110]",
        "l_m": "Margin at l_a. [default: 0.45]", "u_m": "Margin at u_a. [default: 0.8]",
        "lambda_g": "Weight of the magnitude regulariser. [default: 35 (MagFace run.sh/paper)]",
    }.items()
}


def _as_str(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [str(v) for v in value] if value else None
    return value


def run_training(recipe: str, options: dict[str, Any]) -> None:
    """Resolve the configuration and train; print where the model went (rank 0)."""
    from fqtool.train.config import resolve_config
    from fqtool.train.engine import train

    config_file = options.pop("config", None)
    flags = {name: _as_str(value) for name, value in options.items()}
    cfg = resolve_config(recipe, config_file=config_file, **flags)
    result = train(cfg, console=err_console)
    if result.model_path is not None:
        val = "  ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in result.val.items() if k.endswith("accuracy"))
        tail = f"  ({val})" if val else ""
        err_console.print(f"done: {result.steps} steps, model {result.model_path}{tail}", highlight=False)


def training_command(recipe: str, doc: str, extra: dict[str, tuple[Any, Any]]) -> Callable[..., None]:
    """A Typer command for ``recipe`` taking :data:`SHARED` plus ``extra`` options."""
    params = {**SHARED, **extra}

    def command(**options: Any) -> None:
        run_training(recipe, options)

    command.__doc__ = doc
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
         for name, (annotation, default) in params.items()]
    )
    command.__annotations__ = {name: annotation for name, (annotation, _) in params.items()}
    return command
