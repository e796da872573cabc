"""Fast unit tests of the training building blocks: config precedence, schedules, the global sampler."""

from __future__ import annotations

import math

import pytest

from fqtool.errors import FqtoolError
from fqtool.train.config import dumps_toml, read_toml, resolve_config
from fqtool.train.data import GlobalBatchSampler
from fqtool.train.schedule import lr_factor


def test_recipe_defaults_follow_the_papers() -> None:
    mag = resolve_config("magface", data="x")
    assert (mag.arch, mag.batch_size, mag.lr, mag.epochs, mag.lr_steps) == ("iresnet50", 512, 0.1, 25,
                                                                            [10.0, 18.0, 22.0])
    assert (mag.weight_decay, mag.momentum, mag.scale, mag.lambda_g, mag.l_a, mag.u_a) == (5e-4, 0.9, 64, 35,
                                                                                          10, 110)
    feat = resolve_config("feature", data="x")
    expected = ("arcface", 0.5, 2.0, 0.05, "cosine")
    assert (feat.loss, feat.margin, feat.focal_gamma, feat.lr, feat.lr_schedule) == expected
    qual = resolve_config("quality", data="x", weights="stage1.safetensors")
    assert (qual.lr, qual.weight_decay, qual.loss) == (0.01, 0.0, "eqface")


def test_flags_override_file_overrides_recipe(tmp_path) -> None:
    path = tmp_path / "run.toml"
    path.write_text('data = "d"\nlr = 0.2\n[optim]\nepochs = 3\nlr-steps = [1, 2]\n', encoding="utf-8")
    cfg = resolve_config("magface", config_file=path, lr=0.3, batch_size=None)
    assert (cfg.lr, cfg.epochs, cfg.lr_steps, cfg.batch_size) == (0.3, 3, [1.0, 2.0], 512)
    # the resolved config reads back to the same values
    saved = tmp_path / "saved.toml"
    saved.write_text(dumps_toml(cfg), encoding="utf-8")
    again = resolve_config("magface", config_file=saved)
    assert again == cfg


def test_config_errors_are_clear(tmp_path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text('data = "d"\nlearning_rate = 0.1\n', encoding="utf-8")
    with pytest.raises(FqtoolError, match="unknown setting 'learning_rate'"):
        read_toml(path)
    with pytest.raises(FqtoolError, match="--loss"):
        resolve_config("magface", data="d", loss="cosface")
    with pytest.raises(FqtoolError, match="--weights"):
        resolve_config("quality", data="d")
    with pytest.raises(FqtoolError, match="--data"):
        resolve_config("magface")


def test_step_schedule_drops_at_epochs() -> None:
    spe = 10
    factors = [lr_factor(e * spe, spe, 25 * spe, lr_steps=[10, 18, 22]) for e in (0, 9, 10, 17, 18, 22, 24)]
    assert factors == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.001, 0.001])


def test_cosine_schedule_with_warmup() -> None:
    spe, total = 10, 100
    f = [lr_factor(s, spe, total, schedule="cosine", warmup_epochs=1, min_ratio=0.01) for s in range(total)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))
    assert f[-1] == pytest.approx(0.01, abs=1e-3)
    assert f[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))


def test_global_batches_do_not_depend_on_world_size() -> None:
    one = GlobalBatchSampler(100, 8, seed=3)
    two = [GlobalBatchSampler(100, 4, rank=r, world_size=2, seed=3) for r in range(2)]
    for sampler in (one, *two):
        sampler.set_epoch(1, start_batch=2)
    merged = [a + b for a, b in zip(*two, strict=True)]
    assert list(one) == merged and len(merged) == 100 // 8 - 2
    one.set_epoch(2)
    assert [i for b in one for i, _ in b] != [i for b in merged for i, _ in b]  # new epoch, new order


def test_sampler_needs_one_global_batch() -> None:
    with pytest.raises(FqtoolError, match="fewer than one global batch"):
        GlobalBatchSampler(10, 8, world_size=2)



def test_example_configs_resolve() -> None:
    from pathlib import Path

    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.toml"))
    assert len(examples) >= 6
    for path in examples:
        recipe = read_toml(path)["recipe"]
        cfg = resolve_config(recipe, config_file=path)
        assert cfg.data and cfg.epochs > 0, path
