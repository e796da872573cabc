"""The loss registry is the one source: head, configuration, CLI choices and help all follow it."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from fqtool.errors import FqtoolError
from fqtool.losses import HEAD_KINDS, LOSSES, build_head
from fqtool.train.config import resolve_config
from fqtool.train.recipe_spec import RECIPES
from fqtool.train.recipes import make_head


def _recipe_of(loss: str) -> str:
    return next(name for name, spec in RECIPES.items() if loss in spec.losses)


def _margin_settings(margin, names) -> dict:
    return {name: getattr(margin, name) for name in names}


def test_every_registered_loss_is_buildable_and_has_a_recipe() -> None:
    assert tuple(LOSSES) == HEAD_KINDS
    assert {loss for spec in RECIPES.values() for loss in spec.losses} == set(LOSSES)


@pytest.mark.parametrize("loss", list(LOSSES))
def test_defaults_reaching_the_margin_equal_the_spec(loss: str) -> None:
    """Through the whole path the trainer uses: recipe defaults → resolve_config → make_head."""
    spec = LOSSES[loss]
    recipe = _recipe_of(loss)
    extra = {"weights": "stage1.safetensors"} if recipe == "quality" else {}
    cfg = resolve_config(recipe, data="d", loss=loss, **extra)
    head = make_head(cfg, loss, num_classes=5, embedding_size=4)
    assert isinstance(head.margin, spec.margin_class())
    assert _margin_settings(head.margin, spec.defaults) == spec.defaults
    assert head.focal_gamma == cfg.focal_gamma
    # the resolved configuration shows the loss's own settings, and only those
    for param in spec.params:
        assert getattr(cfg, param.option) == param.default
    others = {p.option for s in LOSSES.values() for p in s.params} - set(spec.options)
    assert all(getattr(cfg, option) is None for option in others)
    # build_head without arguments gets the same margin
    bare = build_head(loss, num_classes=5, embedding_size=4)
    assert _margin_settings(bare.margin, spec.defaults) == spec.defaults


def test_mag_cosface_trains_with_its_own_settings() -> None:
    """Was l_m 0.45 and λ_g 35 (MagFace's) before the registry."""
    cfg = resolve_config("magface", data="d", loss="mag-cosface")
    assert (cfg.l_m, cfg.u_m, cfg.lambda_g) == (0.35, 0.8, 150.0)
    margin = make_head(cfg, cfg.loss, num_classes=5, embedding_size=4).margin
    assert (margin.l_m, margin.lambda_g, margin.cos_margin, margin.easy_margin) == (0.35, 150.0, True, False)
    flagged = make_head(resolve_config("magface", data="d", loss="mag-cosface", lambda_g=120.0),
                        "mag-cosface", num_classes=5, embedding_size=4).margin
    assert (flagged.lambda_g, flagged.l_m) == (120.0, 0.35)


def test_combined_sets_all_three_margins_from_flags() -> None:
    cfg = resolve_config("feature", data="d", loss="combined", m1=1.1, m2=0.25, m3=0.15)
    margin = make_head(cfg, "combined", num_classes=5, embedding_size=4).margin
    assert (margin.m1, margin.m2, margin.m3) == (1.1, 0.25, 0.15)
    default = make_head(resolve_config("feature", data="d", loss="combined"), "combined", 5, 4).margin
    assert (default.m1, default.m2, default.m3) == (1.0, 0.3, 0.2)
    cfg = resolve_config("feature", data="d", loss="cosface", margin=0.35)
    cosface = make_head(cfg, "cosface", 5, 4).margin
    assert (cosface.m2, cosface.m3) == (0.0, 0.35)


def test_a_setting_of_another_loss_is_an_error_on_the_command_line(tmp_path) -> None:
    with pytest.raises(FqtoolError, match="--m2 is not a setting of --loss arcface"):
        resolve_config("feature", data="d", m2=0.3)
    with pytest.raises(FqtoolError, match="--lambda-g is not a setting of --loss arcface"):
        resolve_config("feature", data="d", lambda_g=35.0)
    with pytest.raises(FqtoolError, match="--cr-target must be one of code, paper"):
        resolve_config("crfiqa", data="d", cr_target="both")
    # a config.toml written by fqtool 0.1 (MagFace settings in an ArcFace run) still reads
    old = tmp_path / "old.toml"
    old.write_text('data = "d"\nloss = "arcface"\nmargin = 0.45\nl_a = 10.0\nlambda_g = 35.0\n',
                   encoding="utf-8")
    cfg = resolve_config("feature", config_file=old)
    assert (cfg.margin, cfg.l_a, cfg.lambda_g) == (0.45, None, None)


def test_registry_and_config_do_not_import_torch() -> None:
    code = ("import sys, fqtool.losses, fqtool.losses.registry, fqtool.train.config; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def _help(command: str) -> str:
    from typer.testing import CliRunner

    from fqtool.cli.app import app

    result = CliRunner().invoke(app, [command, "--help"], env={"COLUMNS": "100", "TERMINAL_WIDTH": "100"})
    assert result.exit_code == 0, result.output
    return re.sub(r"[\s│╭╮╰╯─]+", "", result.output)  # wrapping-proof


def test_train_magface_help_shows_recipe_defaults() -> None:
    text = _help("train-magface")
    assert "Weightλ_gofthemagnituderegulariserg(a).[default:35](mag-cosface:150)" in text
    assert "Marginatl_a.[default:0.45](mag-cosface:0.35)" in text
    assert "Epochs.[default:25]" in text and "[default:10,18,22]" in text
    assert "magface|mag-cosface" in text


def test_every_training_option_shows_a_default() -> None:
    from fqtool.cli.train_options import SHARED

    without = {"data", "val", "config", "resume"}  # required, or nothing to show
    for command in ("train-feature", "train-crfiqa"):
        text = _help(command)
        for name, opt in SHARED.items():
            if name in without:
                continue
            described = re.sub(r"\s+", "", opt.help)
            assert re.search(re.escape(described) + r"\[default:", text), (command, name)
    feature = _help("train-feature")
    assert "arcface|cosface|combined|eqface" in feature and "[default:arcface]" in feature
    assert "Additivecosinemarginm3.(combined:0.2)" in feature
    crfiqa = _help("train-crfiqa")
    assert "Epochs.[default:34]" in crfiqa and "[default:19,27,31]" in crfiqa and "--loss" not in crfiqa
