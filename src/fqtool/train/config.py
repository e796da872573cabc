"""Training configuration: one flat dataclass, recipe defaults, TOML files, flag overrides.

Precedence (lowest to highest): base defaults → the recipe's defaults (MagFace / EQFace papers) →
``--config FILE.toml`` → command-line flags. The resolved configuration is written as ``config.toml``
next to the checkpoints, so a run can be repeated with ``--config out/config.toml``.

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
from fqtool.losses.registry import LOSSES, PARAM_CHOICES, loss_options

RECIPES = ("feature", "quality", "magface", "crfiqa")

#: The losses each recipe trains with; the first is its default. Their settings live in the loss registry.
RECIPE_LOSSES: dict[str, tuple[str, ...]] = {
    "feature": ("arcface", "cosface", "combined", "eqface"),
    "quality": ("eqface",),
    "magface": ("magface", "mag-cosface"),
    "crfiqa": ("crfiqa",),
}


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
    batch_size: int = 512
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
    focal_gamma: float = 0.0
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


#: Paper recipes (the loss settings come from the loss registry). MagFace: run.sh of IrvingMeng/MagFace;
#: EQFace: config.py of deepcam-cn/FaceQuality; CR-FIQA: config.py / train_cr_fiqa.py of fdbtrs/CR-FIQA
#: (CASIA-WebFace; its lr drops "at 20, 28, 32" with ``m − 1 <= epoch``, i.e. after 19, 27, 31 epochs).
RECIPE_DEFAULTS: dict[str, dict[str, Any]] = {
    "magface": {
        "arch": "iresnet50",
        "epochs": 25, "batch_size": 512, "lr": 0.1, "lr_schedule": "step", "lr_steps": [10.0, 18.0, 22.0],
        "momentum": 0.9, "weight_decay": 5e-4, "focal_gamma": 0.0,
    },
    "feature": {
        "arch": "iresnet100", "style": "eqface",
        "epochs": 10, "batch_size": 512, "lr": 0.05, "lr_schedule": "cosine", "warmup_epochs": 1.0,
        "min_lr": 1e-5, "momentum": 0.9, "weight_decay": 5e-4, "head_weight_decay": 0.0, "focal_gamma": 2.0,
    },
    "quality": {
        "epochs": 5, "batch_size": 512, "lr": 0.01, "lr_schedule": "cosine",
        "warmup_epochs": 0.0, "min_lr": 1e-5, "momentum": 0.9, "weight_decay": 0.0, "head_weight_decay": 0.0,
        "focal_gamma": 2.0,
    },
    "crfiqa": {
        "arch": "iresnet50", "style": "crfiqa", "dropout": 0.4,
        "epochs": 34, "batch_size": 128, "lr": 0.1, "lr_batch": 512, "lr_schedule": "step",
        "lr_steps": [19.0, 27.0, 31.0], "momentum": 0.9, "weight_decay": 5e-4, "clip_grad": 5.0,
        "focal_gamma": 0.0,
    },
}

_CHOICES = {
    "recipe": RECIPES,
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
    if name in loss_options():
        param = LOSSES[RECIPE_LOSSES[recipe][0]].param(name)
        return None if param is None else param.default
    if name == "loss":
        return RECIPE_LOSSES[recipe][0]
    if name in RECIPE_DEFAULTS[recipe]:
        return RECIPE_DEFAULTS[recipe][name]
    spec = _FIELDS.get(name)
    if spec is None:
        return None
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory() or None
    return None if spec.default is dataclasses.MISSING else spec.default


def effective_lr(cfg: TrainConfig, world_size: int) -> float:
    """``lr``, or ``lr × global batch / lr_batch`` with linear scaling (CR-FIQA: 0.1 × batch/512)."""
    if cfg.lr_batch <= 0:
        return cfg.lr
    return cfg.lr * cfg.batch_size * world_size / cfg.lr_batch


def _resolve_loss_settings(values: dict[str, Any], flagged: set[str]) -> None:
    """Fill the chosen loss's unset settings with its defaults; a flag of another loss is an error, and a
    file's setting of another loss (e.g. an old config.toml) is dropped."""
    spec = LOSSES.get(values.get("loss", ""))
    if spec is None:
        return  # validate() names the bad --loss
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


def resolve_config(recipe: str, *, config_file: str | Path | None = None, **flags: Any) -> TrainConfig:
    """Build the run's configuration: defaults → recipe → TOML file → flags that are not None; the loss's
    settings not given anywhere take the loss registry's defaults."""
    if recipe not in RECIPES:
        raise FqtoolError(f"unknown recipe {recipe!r}; known: {', '.join(RECIPES)}")
    values: dict[str, Any] = {"loss": RECIPE_LOSSES[recipe][0], **RECIPE_DEFAULTS[recipe]}
    origin: dict[str, str] = {}
    if config_file is not None:
        from_file = read_toml(config_file)
        if from_file.get("recipe", recipe) != recipe:
            message = f"this file is for recipe {from_file['recipe']!r}, not {recipe!r}"
            raise BadInputError(message, config_file)
        values.update({k: _coerce(k, v, str(config_file)) for k, v in from_file.items()})
        origin.update(dict.fromkeys(from_file, str(config_file)))
    flagged = set()
    for name, value in flags.items():
        if _key(name) not in _FIELDS:
            raise _unknown(name, "command line")
        if value is not None:
            values[_key(name)] = _coerce(_key(name), value, "command line")
            flagged.add(_key(name))
            origin[_key(name)] = "command line"
    values["recipe"] = recipe
    _resolve_loss_settings(values, flagged)
    cfg = TrainConfig(**values)
    validate(cfg, origin)
    return cfg


@dataclass(frozen=True)
class _Range:
    """An interval of valid values; ``open_low``/``open_high`` exclude the end."""

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"> {self.low:g}" if self.open_low else f">= {self.low:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE = _Range(0.0, open_low=True), _Range(0.0), _Range(1.0)
_MARGIN = _Range(0.0, math.pi / 2)
#: Valid ranges of numeric settings. Every float setting (listed here or not) must also be finite.
_RANGES: dict[str, _Range] = {
    "dropout": _Range(0.0, 1.0, open_high=True), "epochs": _AT_LEAST_ONE, "batch_size": _Range(2.0),
    "lr": _POSITIVE, "lr_gamma": _Range(0.0, 1.0, open_low=True), "warmup_epochs": _NON_NEGATIVE,
    "min_lr": _NON_NEGATIVE, "momentum": _Range(0.0, 1.0, open_high=True), "weight_decay": _NON_NEGATIVE,
    "head_weight_decay": _NON_NEGATIVE, "clip_grad": _NON_NEGATIVE, "scale": _POSITIVE, "margin": _MARGIN,
    "focal_gamma": _NON_NEGATIVE, "sample_rate": _Range(0.0, 1.0, open_low=True), "l_a": _POSITIVE,
    "u_a": _POSITIVE, "l_m": _MARGIN, "u_m": _MARGIN, "lambda_g": _NON_NEGATIVE, "m1": _POSITIVE,
    "m2": _MARGIN, "m3": _MARGIN, "alpha": _NON_NEGATIVE, "beta": _NON_NEGATIVE,
    "quality_std_warn": _NON_NEGATIVE, "embedding_size": _Range(1.0, 65536.0), "workers": _NON_NEGATIVE,
    "save_every": _NON_NEGATIVE, "val_every": _NON_NEGATIVE, "log_every": _AT_LEAST_ONE,
    "max_steps": _NON_NEGATIVE, "max_bad_steps": _AT_LEAST_ONE, "calibration_images": _NON_NEGATIVE,
}
_WHY = {"batch_size": " (BatchNorm needs at least 2 images per batch)"}


def _option(name: str) -> str:
    return f"--{name.replace('_', '-')}"


def _check_numbers(cfg: TrainConfig, origin: dict[str, str]) -> None:
    """Every float setting finite, every numeric setting in its range (the message says where it came
    from: a NaN momentum would otherwise train a model of NaNs)."""
    for name, spec in _FIELDS.items():
        value, kind = getattr(cfg, name), str(spec.type)
        where = f" (from {origin[name]})" if origin.get(name, "command line") != "command line" else ""
        items = value if isinstance(value, list) else [value]
        if "float" in kind and any(v is not None and not math.isfinite(v) for v in items):
            raise FqtoolError(f"{_option(name)} must be a finite number, not {value}{where}")
        valid = _RANGES.get(name, _NON_NEGATIVE if kind.startswith("list[float]") else None)
        bad = [v for v in items if v is not None and valid is not None and v not in valid]
        if bad:
            raise FqtoolError(f"{_option(name)} must be {valid}, not {bad[0]}{_WHY.get(name, '')}{where}")


def validate(cfg: TrainConfig, origin: dict[str, str] | None = None) -> None:
    """Reject settings that cannot work, with a message naming the option (and the file it came from,
    from ``origin``: setting name → source)."""
    for name, choices in _CHOICES.items():
        if getattr(cfg, name) not in choices and not (name in PARAM_CHOICES and getattr(cfg, name) is None):
            raise FqtoolError(f"--{name.replace('_', '-')} must be one of {', '.join(choices)}, "
                              f"not {getattr(cfg, name)!r}")
    if cfg.loss not in RECIPE_LOSSES[cfg.recipe]:
        raise FqtoolError(f"--loss {cfg.loss} does not fit this command; use one of "
                          f"{', '.join(RECIPE_LOSSES[cfg.recipe])}")
    if not cfg.data:
        raise FqtoolError("--data is required (a .rec folder, a list file or an image folder)")
    _check_numbers(cfg, origin or {})
    if cfg.l_a is not None and cfg.u_a is not None and cfg.l_a >= cfg.u_a:
        raise FqtoolError(f"MagFace needs l_a < u_a (got {cfg.l_a} and {cfg.u_a})")
    if cfg.lr_batch < 0:
        raise FqtoolError(f"--lr-batch must be >= 0 (0 = no scaling), not {cfg.lr_batch}")
    if cfg.recipe == "quality" and not cfg.weights:
        raise FqtoolError("train-quality needs --weights: the stage-1 model from train-feature")


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


def dumps_toml(cfg: TrainConfig) -> str:
    """The resolved configuration as TOML (unset optional values are written as comments)."""
    lines = ["# fqtool training configuration (resolved: defaults + recipe + file + flags)"]
    for name, value in to_dict(cfg).items():
        if name in ("resume", "overwrite"):  # about this invocation, not the run's settings
            continue
        lines.append(f"# {name} = (unset)" if value is None else f"{name} = {_toml_value(value)}")
    return "\n".join(lines) + "\n"


def save_config(cfg: TrainConfig, path: str | Path) -> None:
    atomic_write_text(path, dumps_toml(cfg))
