"""Training configuration: one flat dataclass, recipe defaults, TOML files, flag overrides.

Precedence (lowest to highest): base defaults → the recipe's defaults (MagFace / EQFace papers, from
:data:`fqtool.train.recipe_spec.RECIPES`) → ``--config FILE.toml`` → command-line flags; the chosen loss's
settings (and focal γ) not given anywhere take the loss registry's defaults. The resolved configuration
is written as ``config.toml`` next to the checkpoints, so a run can be repeated with
``--config out/config.toml``.

TOML keys are the field names below (``-`` and ``_`` are interchangeable). Tables are flattened one level,
so ``[optim] lr = 0.1`` and ``lr = 0.1`` mean the same; unknown keys are an error (a typo is never silent).
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fqtool.errors import BadInputError, FqtoolError
from fqtool.fsutil import atomic_write_text
from fqtool.losses.registry import LOSSES, NON_NEGATIVE, PARAM_CHOICES, POSITIVE, Range, loss_options
from fqtool.train.recipe_spec import get_recipe


@dataclass
class TrainConfig:
    """Every knob of a training run. See docs/train-*.md for what each recipe sets."""

    recipe: str = "magface"
    # data / output
    data: str = ""
    val: list[str] = field(default_factory=list)
    output: str = "runs/train"
    resume: str | None = None
    overwrite: bool = False
    # model
    arch: str = "iresnet50"
    style: str | None = None
    embedding_size: int | None = None
    dropout: float = 0.0
    # optimisation
    epochs: int = 25
    batch_size: int | None = 512  # the global batch (all processes together); see batch_split
    batch_per_gpu: int | None = None  # arcface_torch style: images per process (global = this × processes)
    lr: float = 0.1
    lr_batch: int = 0
    lr_schedule: str = "step"
    lr_steps: list[float] = field(default_factory=lambda: [10.0, 18.0, 22.0])
    lr_gamma: float = 0.1
    warmup_epochs: float = 0.0
    min_lr: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 5e-4
    head_weight_decay: float | None = None
    clip_grad: float = 0.0
    # loss (None = the loss's default from fqtool.losses.registry; settings of other losses stay None)
    loss: str = "magface"
    focal_gamma: float | None = None  # None = the loss's (RecipeSpec.focal_gamma → LossSpec.focal_gamma)
    sample_rate: float = 1.0
    scale: float | None = None
    margin: float | None = None
    m1: float | None = None
    m2: float | None = None
    m3: float | None = None
    l_a: float | None = None
    u_a: float | None = None
    l_m: float | None = None
    u_m: float | None = None
    lambda_g: float | None = None
    alpha: float | None = None
    beta: float | None = None
    cr_target: str | None = None
    # EQFace stages 2 and 3
    weights: str | None = None
    head_weights: str | None = None
    quality_weights: str | None = None
    quality_std_warn: float = 0.01
    # run-time
    precision: str = "auto"
    channels_last: bool = False
    compile: bool = False
    sync_bn: bool = False
    workers: int = 4
    seed: int = 0
    device: str = "auto"
    save_every: int = 1000
    val_every: int = 2000
    log_every: int = 50
    max_steps: int = 0
    max_bad_steps: int = 20
    calibration_images: int = 2000
    quiet: bool = False


_CHOICES = {
    "lr_schedule": ("step", "cosine"),
    "precision": ("auto", "bf16", "fp16", "fp32"),
    "loss": tuple(LOSSES),
    **PARAM_CHOICES,
}
_FIELDS = {f.name: f for f in dataclasses.fields(TrainConfig)}


def _key(name: str) -> str:
    return name.replace("-", "_")


def _unknown(name: str, source: str) -> FqtoolError:
    close = difflib.get_close_matches(_key(name), list(_FIELDS), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return BadInputError(f"unknown setting {name!r}{hint}", source)


def read_toml(path: str | Path) -> dict[str, Any]:
    """Settings from a TOML file, tables flattened one level, keys normalised; unknown keys raise."""
    path = Path(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError("config file not found", path) from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"not valid TOML ({exc})", path) from None
    flat: dict[str, Any] = {}
    for name, value in raw.items():
        items = value.items() if isinstance(value, dict) else [(name, value)]
        for key, item in items:
            if _key(key) not in _FIELDS:
                raise _unknown(key, str(path))
            flat[_key(key)] = item
    return flat


def _coerce(name: str, value: Any, source: str) -> Any:
    if value is None:
        return None
    kind = str(_FIELDS[name].type)
    try:
        if kind.startswith("list"):
            items = value.split(",") if isinstance(value, str) else list(value)
            conv = float if "float" in kind else str
            if conv is float and any(isinstance(v, bool) for v in items):
                raise TypeError
            return [conv(v) for v in items if str(v).strip() != ""]
        if kind.startswith("bool"):
            if not isinstance(value, bool):
                raise TypeError
            return value
        if isinstance(value, bool) and kind.startswith(("int", "float")):
            raise TypeError  # TOML's true is not 1: `batch_size = true` must not become a batch of one
        if kind.startswith("int"):
            if isinstance(value, float) and not value.is_integer():
                raise TypeError
            return int(value)
        if kind.startswith("float"):
            return float(value)
        return str(value)
    except (TypeError, ValueError):
        raise BadInputError(f"setting {name!r}: {value!r} is not a valid {kind}", source) from None


def recipe_default(recipe: str, name: str) -> Any:
    """What ``name`` is when nothing sets it: the recipe's value, its default loss's, or the base default."""
    spec = get_recipe(recipe)
    if name in loss_options():
        param = LOSSES[spec.default_loss].param(name)
        return None if param is None else param.default
    if name == "loss":
        return spec.default_loss
    if name == "focal_gamma":
        return spec.focal_gamma(spec.default_loss)
    if name in spec.defaults:
        return spec.defaults[name]
    base = _FIELDS.get(name)
    if base is None:
        return None
    if base.default_factory is not dataclasses.MISSING:
        return base.default_factory() or None
    return None if base.default is dataclasses.MISSING else base.default


@dataclass(frozen=True)
class BatchSplit:
    """The global batch and its share per process; ``given`` is the option that defined it."""

    global_batch: int
    per_gpu: int
    world_size: int
    given: str  # "batch_size" (global) or "batch_per_gpu"

    def describe(self, unit: str = "processes") -> str:
        """``global 512 = 2 GPUs × 256``."""
        if self.world_size == 1:
            unit = {"processes": "process", "GPUs": "GPU"}.get(unit, unit)
        return f"global {self.global_batch} = {self.world_size} {unit} × {self.per_gpu}"


def batch_split(cfg: TrainConfig, world_size: int) -> BatchSplit:
    """Split the batch over ``world_size`` processes: ``--batch-size`` is global (per process = global /
    world size, which must divide), ``--batch-per-gpu`` is per process (global = it × world size)."""
    world_size = max(1, int(world_size))
    if cfg.batch_per_gpu is not None:
        return BatchSplit(cfg.batch_per_gpu * world_size, cfg.batch_per_gpu, world_size, "batch_per_gpu")
    if cfg.batch_size is None:
        raise FqtoolError("no batch size: set --batch-size (global) or --batch-per-gpu")
    per_gpu, rest = divmod(cfg.batch_size, world_size)
    if rest:
        lower, upper = cfg.batch_size - rest, cfg.batch_size - rest + world_size
        options = f"{lower} or {upper}" if lower >= 2 * world_size else f"{upper}"
        raise FqtoolError(f"--batch-size {cfg.batch_size} is the global batch and does not split over "
                          f"{world_size} processes; use a multiple of {world_size} (e.g. {options}) "
                          "or --batch-per-gpu")
    if per_gpu < 2:
        raise FqtoolError(f"--batch-size {cfg.batch_size} is the global batch: {per_gpu} image(s) per "
                          f"process over {world_size} processes, and BatchNorm needs at least 2; use "
                          f"--batch-size {2 * world_size} or more")
    return BatchSplit(cfg.batch_size, per_gpu, world_size, "batch_size")


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """``lr``, or ``lr × global batch / lr_batch`` with linear scaling (CR-FIQA: 0.1 × batch/512)."""
    if cfg.lr_batch <= 0:
        return cfg.lr
    return cfg.lr * batch_split(cfg, world_size).global_batch / cfg.lr_batch


def _resolve_loss_settings(values: dict[str, Any], flagged: set[str]) -> None:
    """Fill the chosen loss's unset settings (and focal γ) with its defaults; a flag of another loss is an
    error, and a file's setting of another loss (e.g. an old config.toml) is dropped."""
    spec = LOSSES.get(values.get("loss", ""))
    if spec is None:
        return  # validate() names the bad --loss
    if values.get("focal_gamma") is None:
        values["focal_gamma"] = get_recipe(values["recipe"]).focal_gamma(spec.name)
    for option in loss_options():
        param = spec.param(option)
        if param is not None:
            if values.get(option) is None:
                values[option] = param.default
        elif option in flagged:
            own = ", ".join(p.flag for p in spec.params)
            raise FqtoolError(f"--{option.replace('_', '-')} is not a setting of --loss {spec.name} "
                              f"(its settings: {own})")
        else:
            values[option] = None


_BATCH_OPTIONS = ("batch_size", "batch_per_gpu")


def _one_batch_option(values: dict[str, Any], layer: dict[str, Any], source: str) -> None:
    """A layer (file or flags) that sets one of --batch-size / --batch-per-gpu replaces the other."""
    set_here = [name for name in _BATCH_OPTIONS if layer.get(name) is not None]
    if len(set_here) == 2:
        if source == "command line":
            raise FqtoolError("--batch-size (the global batch) and --batch-per-gpu exclude each other; "
                              "give one")
        raise BadInputError("sets both batch_size (global) and batch_per_gpu; keep one", source)
    if set_here:
        other = _BATCH_OPTIONS[1 - _BATCH_OPTIONS.index(set_here[0])]
        values[other] = None
        layer.pop(other, None)


def resolve_config(recipe: str, *, config_file: str | Path | None = None, **flags: Any) -> TrainConfig:
    """Build the run's configuration: defaults → recipe → TOML file → flags that are not None; the loss's
    settings not given anywhere take the loss registry's defaults."""
    spec = get_recipe(recipe)
    values: dict[str, Any] = {"loss": spec.default_loss, **spec.defaults}
    origin: dict[str, str] = {}
    if config_file is not None:
        from_file = read_toml(config_file)
        if from_file.get("recipe", recipe) != recipe:
            message = f"this file is for recipe {from_file['recipe']!r}, not {recipe!r}"
            raise BadInputError(message, config_file)
        from_file = {k: _coerce(k, v, str(config_file)) for k, v in from_file.items()}
        _one_batch_option(values, from_file, str(config_file))
        values.update(from_file)
        origin.update(dict.fromkeys(from_file, str(config_file)))
    flagged = set()
    given: dict[str, Any] = {}
    for name, value in flags.items():
        if _key(name) not in _FIELDS:
            raise _unknown(name, "command line")
        if value is not None:
            given[_key(name)] = _coerce(_key(name), value, "command line")
    _one_batch_option(values, given, "command line")
    values.update(given)
    flagged.update(given)
    origin.update(dict.fromkeys(given, "command line"))
    values["recipe"] = recipe
    _resolve_loss_settings(values, flagged)
    cfg = TrainConfig(**values)
    validate(cfg, origin)
    return cfg


_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = POSITIVE, NON_NEGATIVE, Range(1.0)
#: Valid ranges of the numeric settings that are not a loss's (those come from its ``LossParam.valid``).
#: Every float setting (listed here or not) must also be finite.
_RANGES: dict[str, Range] = {
    "dropout": Range(0.0, 1.0, open_high=True), "epochs": _AT_LEAST_ONE, "batch_size": Range(2.0),
    "lr": _POSITIVE, "lr_gamma": Range(0.0, 1.0, open_low=True), "warmup_epochs": _NON_NEGATIVE,
    "min_lr": _NON_NEGATIVE, "momentum": Range(0.0, 1.0, open_high=True), "weight_decay": _NON_NEGATIVE,
    "head_weight_decay": _NON_NEGATIVE, "clip_grad": _NON_NEGATIVE, "focal_gamma": _NON_NEGATIVE,
    "sample_rate": Range(0.0, 1.0, open_low=True), "quality_std_warn": _NON_NEGATIVE,
    "embedding_size": Range(1.0, 65536.0), "workers": _NON_NEGATIVE, "save_every": _NON_NEGATIVE,
    "val_every": _NON_NEGATIVE, "log_every": _AT_LEAST_ONE, "max_steps": _NON_NEGATIVE,
    "max_bad_steps": _AT_LEAST_ONE, "calibration_images": _NON_NEGATIVE, "batch_per_gpu": Range(2.0),
}
_WHY = {"batch_size": " (BatchNorm needs at least 2 images per batch)",
        "batch_per_gpu": " (BatchNorm needs at least 2 images per batch)"}


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _valid_range(cfg: TrainConfig, name: str, kind: str) -> Range | None:
    """The range of setting ``name``: the chosen loss's ``LossParam.valid`` for a loss setting, else
    :data:`_RANGES` (lists of floats: >= 0)."""
    if name in loss_options():
        param = LOSSES[cfg.loss].param(name) if cfg.loss in LOSSES else None
        return None if param is None else param.valid
    return _RANGES.get(name, _NON_NEGATIVE if kind.startswith("list[float]") else None)


def _check_numbers(cfg: TrainConfig, origin: dict[str, str]) -> None:
    """Every float setting finite, every numeric setting in its range (the message says where it came
    from: a NaN momentum would otherwise train a model of NaNs)."""
    for name, spec in _FIELDS.items():
        value, kind = getattr(cfg, name), str(spec.type)
        where = f" (from {origin[name]})" if origin.get(name, "command line") != "command line" else ""
        items = value if isinstance(value, list) else [value]
        if "float" in kind and any(v is not None and not math.isfinite(v) for v in items):
            raise FqtoolError(f"{_option(name)} must be a finite number, not {value}{where}")
        valid = _valid_range(cfg, name, kind)
        bad = [v for v in items if v is not None and valid is not None and v not in valid]
        if bad:
            raise FqtoolError(f"{_option(name)} must be {valid}, not {bad[0]}{_WHY.get(name, '')}{where}")


def validate(cfg: TrainConfig, origin: dict[str, str] | None = None) -> None:
    """Reject settings that cannot work, with a message naming the option (and the file it came from,
    from ``origin``: setting name → source)."""
    recipe = get_recipe(cfg.recipe)
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices and not (name in PARAM_CHOICES and getattr(cfg, name) is None):
            raise FqtoolError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                              f"not {getattr(cfg, name)!r}")
    if cfg.loss not in recipe.losses:
        raise FqtoolError(f"--loss {cfg.loss} does not fit this command; use one of "
                          f"{', '.join(recipe.losses)}")
    if not cfg.data:
        raise FqtoolError("--data is required (a .rec folder, a list file or an image folder)")
    _check_numbers(cfg, origin or {})
    if (cfg.batch_size is None) == (cfg.batch_per_gpu is None):
        raise FqtoolError("set exactly one of --batch-size (the global batch) and --batch-per-gpu "
                          f"(got {cfg.batch_size} and {cfg.batch_per_gpu})")
    if cfg.l_a is not None and cfg.u_a is not None and cfg.l_a >= cfg.u_a:
        raise FqtoolError(f"MagFace needs l_a < u_a (got {cfg.l_a} and {cfg.u_a})")
    if cfg.lr_batch < 0:
        raise FqtoolError(f"--lr-batch must be >= 0 (0 = no scaling), not {cfg.lr_batch}")
    for name, message in recipe.required.items():
        if not getattr(cfg, name):
            raise FqtoolError(message)


def to_dict(cfg: TrainConfig) -> dict[str, Any]:
    return dataclasses.asdict(cfg)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'


def dumps_toml(cfg: TrainConfig, world_size: int | None = None) -> str:
    """The resolved configuration as TOML (unset optional values are written as comments). With
    ``world_size`` the batch option this run did not set is written as a comment with its value, so the
    file records both the global and the per-process batch and still reads back as the same setting."""
    split = batch_split(cfg, world_size) if world_size else None
    lines = ["# fqtool training configuration (resolved: defaults + recipe + file + flags)"]
    for name, value in to_dict(cfg).items():
        if name in ("resume", "overwrite"):  # about this invocation, not the run's settings
            continue
        if split is not None and name in _BATCH_OPTIONS and value is None:
            derived = split.global_batch if name == "batch_size" else split.per_gpu
            lines.append(f"# {name} = {derived}  (this run: {split.describe()}; set by {split.given})")
            continue
        lines.append(f"# {name} = (unset)" if value is None else f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(cfg: TrainConfig, path: str | Path, world_size: int | None = None) -> None:
    atomic_write_text(path, dumps_toml(cfg, world_size))
