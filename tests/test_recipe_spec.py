"""The recipe table is the one source of the ``train-*`` commands: losses, defaults, focal γ, extra options,
requirements, help and registration; each loss setting's range comes from its ``LossParam``."""

from __future__ import annotations

import dataclasses
import re

import pytest
import typer
from typer.testing import CliRunner

from fqtool.errors import FqtoolError
from fqtool.losses import registry
from fqtool.losses.registry import LOSSES, Range, loss_options
from fqtool.train import recipe_spec
from fqtool.train.config import TrainConfig, resolve_config
from fqtool.train.recipe_spec import RECIPES, RecipeSpec

_EXTRA = {"weights": "stage1.safetensors"}


def _resolve(recipe: str, **flags):
    extra = _EXTRA if "weights" in RECIPES[recipe].required else {}
    return resolve_config(recipe, data="d", **extra, **flags)


@pytest.mark.parametrize("recipe", list(RECIPES))
def test_focal_gamma_comes_from_the_loss_spec(recipe: str, monkeypatch) -> None:
    """Change a loss's ``LossSpec.focal_gamma`` and the recipe's runs follow it (the recipe's defaults used
    to restate γ and win); ``--focal-gamma`` still overrides."""
    spec = RECIPES[recipe]
    for loss in spec.losses:
        source = spec.focal_loss or loss
        monkeypatch.setitem(LOSSES, source, dataclasses.replace(LOSSES[source], focal_gamma=0.75))
        assert _resolve(recipe, loss=loss).focal_gamma == 0.75, (recipe, loss)
        assert _resolve(recipe, loss=loss, focal_gamma=1.5).focal_gamma == 1.5
        monkeypatch.undo()
        assert _resolve(recipe, loss=loss).focal_gamma == LOSSES[source].focal_gamma


def test_eqface_stage_1_keeps_eqface_focal_loss() -> None:
    """EQFace stage 1 is ArcFace + FocalLoss(γ=2): the feature recipe takes γ from the eqface loss."""
    assert RECIPES["feature"].focal_loss == "eqface"
    assert (_resolve("feature").loss, _resolve("feature").focal_gamma) == ("arcface", 2.0)
    assert _resolve("magface").focal_gamma == 0.0 and _resolve("crfiqa").focal_gamma == 0.0


def test_a_loss_setting_is_checked_against_its_loss_param(monkeypatch) -> None:
    """The range of ``--margin`` is the chosen loss's ``LossParam.valid``, not a copy in the config."""
    arcface = LOSSES["arcface"]
    narrow = tuple(dataclasses.replace(p, valid=Range(0.0, 0.1)) if p.option == "margin" else p
                   for p in arcface.params)
    monkeypatch.setitem(LOSSES, "arcface", dataclasses.replace(arcface, params=narrow))
    with pytest.raises(FqtoolError, match=r"--margin must be in \[0, 0.1\], not 0.2"):
        _resolve("feature", margin=0.2)
    assert _resolve("feature", loss="cosface", margin=0.2).margin == 0.2  # cosface's own range


def test_every_loss_setting_declares_its_values() -> None:
    for spec in LOSSES.values():
        for param in spec.params:
            assert (param.valid is not None) != bool(param.choices), (spec.name, param.option)
            assert param.default in param.choices if param.choices else param.default in param.valid
    assert set(loss_options()) <= {f.name for f in dataclasses.fields(TrainConfig)}
    assert registry.PARAM_CHOICES == {"cr_target": ("code", "paper")}


def test_every_recipe_entry_is_consistent() -> None:
    from fqtool.cli.train_options import EXTRA

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    for spec in RECIPES.values():
        assert set(spec.defaults) <= fields and set(spec.required) <= fields, spec.name
        assert set(spec.extra_options) <= set(EXTRA) and set(EXTRA) <= fields, spec.name
        assert spec.task_builder().__name__ == spec.task.partition(":")[2]
        assert spec.doc.strip().splitlines()[0].endswith(".")


def test_a_recipe_cannot_restate_a_loss_setting() -> None:
    for bad in ({"margin": 0.3}, {"focal_gamma": 2.0}, {"loss": "cosface"}):
        with pytest.raises(ValueError, match="loss's settings"):
            RecipeSpec("toy", "fqtool.train.recipes:magface_task", ("cosface",), "Toy.", defaults=bad)
    with pytest.raises(ValueError, match="unknown loss"):
        RecipeSpec("toy", "fqtool.train.recipes:magface_task", ("sphereface",), "Toy.")


def test_required_settings_come_from_the_recipe(monkeypatch) -> None:
    with pytest.raises(FqtoolError, match="train-quality needs --weights"):
        resolve_config("quality", data="d")
    toy = dataclasses.replace(RECIPES["magface"], name="toy", required={"val": "toy needs --val"})
    monkeypatch.setitem(RECIPES, "toy", toy)
    with pytest.raises(FqtoolError, match="toy needs --val"):
        resolve_config("toy", data="d")
    assert resolve_config("toy", data="d", val=["v.bin"]).val == ["v.bin"]


def test_a_new_recipe_is_one_table_entry(monkeypatch) -> None:
    """A new ``RecipeSpec`` is enough for a configuration, a task and a command with its help."""
    import torch

    from fqtool.cli.train_options import training_command
    from fqtool.losses.margins import CombinedMarginLoss
    from fqtool.train.recipes import build_task

    toy = RecipeSpec("toy", "fqtool.train.recipes:magface_task", ("cosface", "arcface"),
                     "Train a toy.\n\nCosFace by default.", defaults={"epochs": 3, "lr": 0.02})
    monkeypatch.setitem(RECIPES, "toy", toy)
    cfg = resolve_config("toy", data="d", arch="iresnet_tiny")
    assert (cfg.recipe, cfg.loss, cfg.margin, cfg.epochs, cfg.lr, cfg.focal_gamma) == (
        "toy", "cosface", 0.4, 3, 0.02, 0.0)
    task = build_task(cfg, num_classes=5, device=torch.device("cpu"))
    assert isinstance(task.head.margin, CombinedMarginLoss) and task.head.num_classes == 5

    app = typer.Typer()
    app.command(toy.command)(training_command(toy))
    app.command("other")(lambda: None)
    result = CliRunner().invoke(app, [toy.command, "--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    text = re.sub(r"[\s│╭╮╰╯─]+", "", result.output)
    assert result.exit_code == 0 and "Trainatoy." in text
    assert "Epochs.[default:3]" in text and "cosface|arcface" in text and "[default:cosface]" in text


def test_the_train_commands_are_registered_from_the_table() -> None:
    from fqtool.cli.app import COMMANDS, app

    names = [name for name, _ in COMMANDS]
    train = [name for name in names if name.startswith("train-")]
    assert train == [spec.command for spec in RECIPES.values()]
    assert names.index("synth") + 1 == names.index(train[0])
    assert names.index(train[-1]) + 1 == names.index("align")
    result = CliRunner().invoke(app, ["--help"], env={"COLUMNS": "200", "TERMINAL_WIDTH": "200"})
    listed = [name for name in re.findall(r"│ (\S+)", result.output) if name in names]
    assert [n for n in listed if n.startswith("train-")] == train
    for spec in RECIPES.values():
        first = spec.doc.strip().splitlines()[0]
        assert first[:40] in result.output, spec.name


def test_unknown_recipe_is_one_line() -> None:
    with pytest.raises(FqtoolError, match="unknown recipe 'nope'; known: feature, quality, magface, crfiqa"):
        recipe_spec.get_recipe("nope")
