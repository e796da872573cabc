"""The ``train-*`` commands, one per recipe of :data:`fqtool.train.recipe_spec.RECIPES`, and their options,
declared once; their help shows each recipe's defaults.

Every option defaults to ``None`` (= "not given"), so the precedence recipe defaults → ``--config`` file →
flags is decided in :func:`fqtool.train.config.resolve_config`. The ``[default: …]`` of each option's help
is generated per command from the same recipe defaults and loss registry that the configuration uses (and
escaped, so Rich does not read it as markup). :func:`training_command` builds a command function from the
shared options, the recipe's loss options and its ``extra_options`` (declared in :data:`EXTRA`);
:data:`commands` holds one per recipe, and ``fqtool.cli.app`` registers them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from fqtool.cli.console import err_console
from fqtool.cli.options import ARCH, DEVICE, SEED
from fqtool.losses.registry import LOSSES, PARAM_CHOICES, loss_options
from fqtool.train.config import recipe_default
from fqtool.train.recipe_spec import RECIPES, RecipeSpec, get_recipe


@dataclass(frozen=True)
class Opt:
    """A training option: its type, flags, help and panel; ``unset`` describes a default of None."""

    type: Any
    flags: tuple[str, ...]
    help: str
    panel: str = "Training"
    unset: str = ""
    kwargs: tuple[tuple[str, Any], ...] = ()


def _format(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, list | tuple):
        return ",".join(_format(v) for v in value)
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _default_text(recipe: str, name: str, opt: Opt) -> str:
    value = recipe_default(recipe, name)
    if value is None or value == "":  # unset (data = "" in TrainConfig): no "[default: ]"
        return f"[default: {opt.unset}]" if opt.unset else ""
    text = _format(value)
    return f"[default: {text}]" if text else ""  # an empty default (--data "") says nothing


def _option(opt: Opt, help_text: str) -> Any:
    return Annotated[opt.type | None, typer.Option(*opt.flags, help=escape(help_text), show_default=False,
                                                     rich_help_panel=opt.panel, **dict(opt.kwargs))]


#: name → declaration. Order = order in --help.
SHARED: dict[str, Opt] = {
    "data": Opt(Path, ("--data", "-d"), "Training data: an insightface folder with train.rec/idx/property "
                "(read in place), a .rec, a list file or an image folder.", "Data"),
    "val": Opt(list[Path], ("--val",), "Verification .bin evaluated every --val-every steps and at each "
               "epoch end (repeatable).", "Data"),
    "config": Opt(Path, ("--config", "-c"), "TOML file of settings; flags override it (the run writes its "
                  "resolved config.toml).", "Data"),
    "output": Opt(Path, ("--output", "-o"), "Output folder: model.safetensors, state/, config.toml, "
                  "metrics.jsonl, tb/.", "Data"),
    "resume": Opt(str, ("--resume",), "Continue from a training state: 'auto' (OUTPUT/state/last.pt if "
                  "present), a state file or a run folder.", "Data"),
    "overwrite": Opt(bool, ("--overwrite",), "Start again in an output folder that holds a previous run (its "
                     "model, state/ and logs are deleted first).", "Data"),
    "workers": Opt(int, ("--workers", "-j"), "DataLoader worker processes per rank.", "Data",
                   kwargs=(("min", 0),)),
    "arch": Opt(str, ARCH.flags, ARCH.help, "Model"),
    "embedding_size": Opt(int, ("--embedding-size",), "Embedding dimension.", "Model", "512",
                          (("min", 1),)),
    "dropout": Opt(float, ("--dropout",), "Dropout before the embedding layer.", "Model",
                   kwargs=(("min", 0.0), ("max", 1.0))),
    "epochs": Opt(int, ("--epochs",), "Epochs.", kwargs=(("min", 1),)),
    "batch_size": Opt(int, ("--batch-size", "-b"), "The global batch: images per step over all processes "
                      "(each takes batch / processes; MagFace's and EQFace's recipes).",
                      unset="--batch-per-gpu × processes", kwargs=(("min", 1),)),
    "batch_per_gpu": Opt(int, ("--batch-per-gpu",), "Images per step per process, arcface_torch style "
                         "(global batch = this × processes); excludes --batch-size.",
                         unset="--batch-size / processes", kwargs=(("min", 1),)),
    "lr": Opt(float, ("--lr",), "Base learning rate (SGD)."),
    "lr_batch": Opt(int, ("--lr-batch",), "Linear lr scaling: the lr is --lr × global batch / this "
                    "(0 = --lr as given).", kwargs=(("min", 0),)),
    "lr_schedule": Opt(str, ("--lr-schedule",), "step (drops at --lr-steps) or cosine (to --min-lr)."),
    "lr_steps": Opt(str, ("--lr-steps",), "Epochs after which the lr is multiplied by --lr-gamma, e.g. "
                    "10,18,22."),
    "lr_gamma": Opt(float, ("--lr-gamma",), "Factor of each step drop."),
    "warmup_epochs": Opt(float, ("--warmup-epochs",), "Linear warm-up length in epochs.",
                         kwargs=(("min", 0.0),)),
    "min_lr": Opt(float, ("--min-lr",), "End of the cosine schedule (scaled with --lr by --lr-batch).",
                  kwargs=(("min", 0.0),)),
    "momentum": Opt(float, ("--momentum",), "SGD momentum."),
    "weight_decay": Opt(float, ("--weight-decay",), "Weight decay of the trainable network."),
    "head_weight_decay": Opt(float, ("--head-weight-decay",), "Weight decay of the class centres.",
                             unset="as --weight-decay"),
    "clip_grad": Opt(float, ("--clip-grad",), "Clip the network's gradient norm (0 = off).",
                     kwargs=(("min", 0.0),)),
    "focal_gamma": Opt(float, ("--focal-gamma",), "Focal loss γ (0 = plain cross entropy).", "Loss",
                       kwargs=(("min", 0.0),)),
    "sample_rate": Opt(float, ("--sample-rate",), "Partial FC: fraction of class centres sampled per step "
                       "(1 = all).", "Loss"),
    "precision": Opt(str, ("--precision",), "auto (bf16 on CUDA, fp32 on CPU), bf16, fp16 (GradScaler) or "
                     "fp32.", "Run"),
    "channels_last": Opt(bool, ("--channels-last/--no-channels-last",), "NHWC memory format (faster "
                         "convolutions on recent GPUs).", "Run"),
    "compile": Opt(bool, ("--compile/--no-compile",), "torch.compile the network.", "Run"),
    "sync_bn": Opt(bool, ("--sync-bn/--no-sync-bn",), "BatchNorm statistics over the global batch when "
                   "distributed (MagFace's DDP trainer does this).", "Run"),
    "seed": Opt(int, SEED.flags, "Seed of initialisation and data order.", "Run"),
    "device": Opt(str, DEVICE.flags, DEVICE.help, "Run"),
    "save_every": Opt(int, ("--save-every",), "Write state/last.pt every N steps (and at each epoch end).",
                      "Run", kwargs=(("min", 0),)),
    "val_every": Opt(int, ("--val-every",), "Validate every N steps (0 = only at epoch ends).", "Run",
                     kwargs=(("min", 0),)),
    "log_every": Opt(int, ("--log-every",), "Log scalars every N steps.", "Run", kwargs=(("min", 1),)),
    "max_steps": Opt(int, ("--max-steps",), "Stop after N steps in total (smoke tests; the schedule still "
                     "spans --epochs; 0 = no limit).", "Run", kwargs=(("min", 0),)),
    "max_bad_steps": Opt(int, ("--max-bad-steps",), "Stop after N consecutive steps with a NaN/inf loss.",
                         "Run", kwargs=(("min", 1),)),
    "quiet": Opt(bool, ("--quiet/--no-quiet", "-q"), "No progress display.", "Run"),
}

#: The options only some recipes take (``RecipeSpec.extra_options``), by configuration field.
EXTRA: dict[str, Opt] = {
    "quality_weights": Opt(Path, ("--quality-weights",), "EQFace stage 3: the train-quality output (stage-1 "
                           "backbone + quality head) that weights each sample.", "Model"),
    "weights": Opt(Path, ("--weights", "-w"), "Stage-1 model (train-feature's model.safetensors); its "
                   "backbone is frozen.", "Model"),
    "head_weights": Opt(Path, ("--head-weights",), "Stage-1 class centres.", "Model",
                        unset="head.safetensors next to --weights"),
}


def loss_declarations(recipe: str) -> dict[str, tuple[Any, Any]]:
    """``--loss`` (when the recipe has a choice) and every setting of the recipe's losses, with help and
    defaults from the loss registry."""
    losses = [LOSSES[name] for name in get_recipe(recipe).losses]
    params: dict[str, Any] = {}
    if len(losses) > 1:
        listing = "; ".join(f"{spec.name}: {spec.help}" for spec in losses)
        text = f"{' | '.join(spec.name for spec in losses)}. {listing}. [default: {losses[0].name}]"
        params["loss"] = (_option(Opt(str, ("--loss",), "", "Loss"), text), None)
    for option in loss_options():
        users = [(spec.name, spec.param(option)) for spec in losses if spec.param(option) is not None]
        if not users:
            continue
        first_loss, first = users[0]
        choices = PARAM_CHOICES.get(option)
        kind = str if choices or isinstance(first.default, str) else float
        if first_loss == losses[0].name:
            others = [f"{name}: {_format(p.default)}" for name, p in users[1:] if p.default != first.default]
            text = f"{first.help} [default: {_format(first.default)}]"
        else:
            others = [f"{name}: {_format(p.default)}" for name, p in users]
            text = first.help
        text += f" ({', '.join(others)})" if others else ""
        params[option] = (_option(Opt(kind, (first.flag,), "", "Loss"), text), None)
    return params


def declarations(recipe: str, names: dict[str, Opt]) -> dict[str, tuple[Any, Any]]:
    """Typer parameters for ``names`` with this recipe's defaults in their help."""
    return {name: (_option(opt, f"{opt.help} {_default_text(recipe, name, opt)}".rstrip()), None)
            for name, opt in names.items()}


def _as_str(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, list):
        return [str(v) for v in value] if value else None
    return value


def run_training(recipe: str, options: dict[str, Any]) -> None:
    """Resolve the configuration and train; print where the model went (rank 0)."""
    from fqtool.cli.train_progress import ConsoleProgress
    from fqtool.train.config import resolve_config
    from fqtool.train.engine import train

    config_file = options.pop("config", None)
    flags = {name: _as_str(value) for name, value in options.items()}
    cfg = resolve_config(recipe, config_file=config_file, **flags)
    result = train(cfg, progress=ConsoleProgress(err_console))
    if result.model_path is not None:
        val = "  ".join(f"{k.split('/')[1]} {v:.4f}" for k, v in result.val.items() if k.endswith("accuracy"))
        tail = f"  ({val})" if val else ""
        err_console.print(f"done: {result.steps} steps, model {result.model_path}{tail}", highlight=False)


def training_command(spec: RecipeSpec) -> Callable[..., None]:
    """The Typer command of a recipe: :data:`SHARED`, the recipe's loss options and its extra options."""
    recipe = spec.name
    names = {**SHARED, **{name: EXTRA[name] for name in spec.extra_options}}
    shared = declarations(recipe, names)
    first = {name: value for name, value in shared.items() if names[name].panel != "Loss"}
    params = {**first, **loss_declarations(recipe), **{k: v for k, v in shared.items() if k not in first}}

    def command(**options: Any) -> None:
        run_training(recipe, options)

    command.__doc__ = spec.doc
    command.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation)
         for name, (annotation, default) in params.items()]
    )
    command.__annotations__ = {name: annotation for name, (annotation, _) in params.items()}
    return command


#: ``train-<recipe>`` → its command, in the order of :data:`RECIPES`.
commands: dict[str, Callable[..., None]] = {spec.command: training_command(spec) for spec in RECIPES.values()}
