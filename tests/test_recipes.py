"""Recipes, on-device augmentation, test-time views and time budgets."""

from __future__ import annotations

import dataclasses
import json
import re

import jax
import numpy as np
import pytest
from typer.testing import CliRunner

import fmnist.train
from fmnist import augment, cli, engine, models, recipes
from fmnist._backend import keras
from fmnist.errors import FmnistError
from fmnist.train import PROBE_CHUNKS, TrainConfig, load_config, plan_steps, run_probe, train


@pytest.mark.parametrize("name", list(recipes.RECIPES))
def test_recipe_round_trips_through_config_json(name):
    config = recipes.get(name).config
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config


def test_unknown_recipe_lists_the_known_ones():
    with pytest.raises(FmnistError, match=r"unknown recipe 'fastest'.*tutorial, mlp, best"):
        recipes.get("fastest")


def bordered_images(n=8, seed=0):
    """Random images with a 2-px black border: any ±2 px shift keeps every pixel."""
    x = np.zeros((n, 28, 28), np.uint8)
    x[:, 2:-2, 2:-2] = np.random.default_rng(seed).integers(1, 256, (n, 24, 24))
    return x


def test_augmentation_moves_pixels_but_keeps_them_and_is_deterministic_per_key():
    x = jax.numpy.asarray(bordered_images())
    aug = augment.Augment(shift=2, flip=True)
    key = jax.random.PRNGKey(0)
    a, b = np.asarray(aug(x, key)), np.asarray(aug(x, key))
    np.testing.assert_array_equal(a, b)  # same key, same images
    assert a.shape == x.shape and a.dtype == np.uint8
    np.testing.assert_array_equal(a.reshape(8, -1).sum(1), np.asarray(x).reshape(8, -1).sum(1))  # nothing lost
    np.testing.assert_array_equal(np.sort(a.reshape(8, -1), 1), np.sort(np.asarray(x).reshape(8, -1), 1))
    c = np.asarray(aug(x, jax.random.fold_in(key, 1)))  # the next step's draw
    assert not np.array_equal(a, c)
    assert not np.array_equal(a, np.asarray(x))


def test_translate_is_an_exact_zero_padded_shift():
    x = np.arange(2 * 28 * 28, dtype=np.float32).reshape(2, 28, 28)
    out = np.asarray(augment.translate(jax.numpy.asarray(x), jax.numpy.array([[1, -2], [0, 0]]), 2))
    np.testing.assert_array_equal(out[0, 1:, :-2], x[0, :-1, 2:])  # down 1, left 2
    assert (out[0, 0] == 0).all() and (out[0, :, -2:] == 0).all()
    np.testing.assert_array_equal(out[1], x[1])


def test_each_view_is_its_mirror_and_one_pixel_shift():
    x = np.zeros((1, 28, 28), np.float32)
    x[0, 10, 5] = 1.0
    expected = {"identity": (10, 5), "flip": (10, 22), "left": (10, 4), "down-right": (11, 6), "up-left": (9, 4)}
    expected |= {"flip-left": (10, 21), "flip-down-right": (11, 23), "flip-up": (9, 22)}
    for name, where in expected.items():
        assert tuple(np.argwhere(np.asarray(augment.view(jax.numpy.asarray(x), name))[0])[0]) == where, name
    assert len(augment.VIEWS) == 18 and all(augment.VIEWS[augment.FLIPPED + s] for s in augment.SHIFTS)


def test_erasing_blanks_one_rectangle_of_the_chosen_images_and_is_deterministic_per_key():
    x = jax.numpy.full((400, 28, 28), 200, jax.numpy.uint8)
    key = jax.random.PRNGKey(3)
    out = np.asarray(augment.erase(x, key, 0.5))
    np.testing.assert_array_equal(out, np.asarray(augment.erase(x, key, 0.5)))
    assert set(np.unique(out)) <= {0, 200}  # pixels are kept or blanked to the background, nothing else
    blank = out == 0
    erased = blank.any(axis=(1, 2))
    assert 0.4 < erased.mean() < 0.6  # about p of the images
    for image in blank[erased]:  # exactly one axis-aligned rectangle, of the drawn size
        rows, cols = np.flatnonzero(image.any(1)), np.flatnonzero(image.any(0))
        assert image.sum() == len(rows) * len(cols) and np.ptp(rows) == len(rows) - 1 and np.ptp(cols) == len(cols) - 1
        lo, hi = augment.ERASE_AREA
        assert lo * 784 * 0.5 <= image.sum() <= hi * 784 * 1.5  # rounding to whole pixels
    assert not np.array_equal(out, np.asarray(augment.erase(x, jax.random.fold_in(key, 1), 0.5)))
    np.testing.assert_array_equal(np.asarray(augment.erase(x, key, 0.0)), np.asarray(x))
    assert (np.asarray(augment.erase(x, key, 1.0)) == 0).any(axis=(1, 2)).all()
    assert augment.Augment(shift=0, flip=False, erase=0.25).active


def small_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    spec = models.ModelSpec(arch="vgg", conv_filters=(4, 8))
    return models.compile_model(models.build_model(spec))


def test_training_with_augmentation_keeps_labels_and_is_deterministic_for_a_seed(tiny_data):
    x, y = tiny_data[0][:64], tiny_data[1][:64]
    runs = [
        engine.fit(small_cnn(), x, y, epochs=2, batch_size=16, seed=s, augment=augment.Augment()).history
        for s in (4, 4, 5)
    ]
    assert runs[0] == runs[1]
    assert runs[0]["loss"] != runs[2]["loss"]
    plain = engine.fit(small_cnn(), x, y, epochs=2, batch_size=16, seed=4).history
    assert plain["loss"] != runs[0]["loss"]  # the augmentation did change what was trained on


def test_identical_views_equal_plain_prediction_and_flip_view_is_the_flipped_image(tiny_data):
    x = tiny_data[0][:20]
    model = small_cnn()
    plain = engine.predict_proba(model, x)
    np.testing.assert_allclose(engine.predict_proba(model, x, views=("identity", "identity")), plain, rtol=1e-6)
    flipped = engine.predict_proba(model, x[:, :, ::-1])
    both = engine.predict_proba(model, x, views=("identity", "flip"))
    np.testing.assert_allclose(both, (plain + flipped) / 2, rtol=1e-5, atol=1e-7)
    with pytest.raises(FmnistError, match="unknown test-time views"):
        engine.predict_proba(model, x, views=("rotate",))


def test_max_steps_stops_inside_an_epoch(tiny_data):
    x, y = tiny_data
    model = small_cnn()
    history = engine.fit(model, x, y, epochs=5, batch_size=32, max_steps=10)  # 7 steps per epoch
    assert int(model.optimizer.iterations.numpy()) == 10
    assert len(history.history["loss"]) == 2


def test_the_probe_trains_until_it_has_timed_enough_chunks_and_seconds(dataset):
    """2,000 images at batch 64: two chunks an epoch, so the probe crosses epochs."""
    (x, y), _ = dataset
    config = dataclasses.replace(
        recipes.get("best").config, model=models.ModelSpec(arch="vgg", conv_filters=(4, 8)), time_budget=30.0
    )
    probe = run_probe(config, x[:2000], y[:2000])
    times, steady = probe.times, fmnist.train.PROBE_SHARE * 30.0
    assert len(times) >= PROBE_CHUNKS and times[-1] - times[0] >= steady
    assert len(times) == PROBE_CHUNKS or times[-2] - times[0] < steady  # it stopped at the first chunk that sufficed
    assert probe.state.steps == probe.steps_at[-1] == 16 * len(times)  # the run continues from this state
    optimizer = probe.model.optimizer
    optimizer.iterations.assign(probe.state.steps)
    assert float(optimizer.learning_rate) == pytest.approx(config.learning_rate / 10)  # the schedule's start, held


def test_the_probe_keeps_within_the_first_epoch_when_that_has_enough_chunks(dataset):
    """The seed MLP at batch 8: 30 chunks of 256 steps an epoch, far quicker than 5% of 10 minutes."""
    (x, y), _ = dataset
    probe = run_probe(TrainConfig(batch_size=8, time_budget=600.0), x, y)
    assert (probe.state.epoch, probe.state.chunk, probe.state.steps) == (0, 29, 29 * 256)


def test_time_budget_plans_steps_from_a_measurement(dataset):
    (x, y), (xt, _) = dataset
    config = dataclasses.replace(recipes.get("best").config, model=models.ModelSpec(arch="vgg", conv_filters=(4, 8)))
    import time

    started = time.perf_counter()
    probe = run_probe(dataclasses.replace(config, time_budget=60.0), x, y)
    # Budgets well above what the probe, compiling and evaluating take even on a loaded machine (~25 s idle).
    short = plan_steps(dataclasses.replace(config, time_budget=600.0), probe, xt, started)
    long = plan_steps(dataclasses.replace(config, time_budget=6000.0), probe, xt, started)
    assert probe.state.steps < short < long
    with pytest.raises(FmnistError, match=r"leaves no time to train here.*larger --time-budget"):
        plan_steps(dataclasses.replace(config, time_budget=1.0), probe, xt, started)


def test_time_budget_plans_steps_when_an_epoch_is_shorter_than_a_chunk(dataset):
    """500 images of the seed MLP: 16 steps an epoch, under one 256-step chunk; the probe times whole epochs."""
    import time

    (x, y), (xt, _) = dataset
    config = TrainConfig(time_budget=60.0, train_limit=500)
    probe = run_probe(config, x[:500], y[:500])
    assert probe.steps_at[:3] == [16, 32, 48]
    assert plan_steps(config, probe, xt, time.perf_counter()) > probe.state.steps


def test_a_budget_run_goes_on_from_its_probe_and_a_rerun_replays_both(dataset, monkeypatch):
    config = TrainConfig(model={"hidden": (16,)}, schedule="one-cycle", time_budget=60.0, train_limit=600, seed=3)
    monkeypatch.setattr(fmnist.train, "plan_steps", lambda config, probe, *args: probe.state.steps + 40)
    result = train(config, None, dataset=dataset)
    probe_steps = result.config.probe_steps
    assert probe_steps >= PROBE_CHUNKS * 19 and result.config.steps == probe_steps + 40  # 19 steps an epoch
    assert int(result.model.optimizer.iterations.numpy()) == probe_steps + 40
    assert len(result.history["seconds"]) == len(result.history["loss"]) == -(-(probe_steps + 40) // 19)

    def must_not_plan(*args):
        raise AssertionError("a rerun replays its recorded steps")

    monkeypatch.setattr(fmnist.train, "plan_steps", must_not_plan)
    again = train(result.config, None, dataset=dataset)
    assert again.history["loss"] == result.history["loss"]
    for a, b in zip(again.model.get_weights(), result.model.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    replaced = train(dataclasses.replace(result.config, probe_steps=None), None, dataset=dataset)
    assert replaced.history["loss"] != result.history["loss"]  # the probe's steps trained at their own rate


@pytest.mark.parametrize(("text", "seconds"), [("300", 300), ("300s", 300), ("5m", 300), ("1.5h", 5400)])
def test_time_budget_syntax(text, seconds):
    assert cli.parse_duration(text) == seconds


def test_bad_time_budget_is_one_clear_line():
    with pytest.raises(FmnistError, match="positive duration such as 300, 300s, 5m"):
        cli.parse_duration("five minutes")


def test_recipe_best_smoke_run_and_overrides(dataset, tmp_path):
    """`--recipe best --limit N` is a quick trial; flags beside it change only their own field."""
    out = tmp_path / "best"
    args = ["train", "--recipe", "best", "--limit", "256", "--conv-filters", "4", "--conv-filters", "8",
            "--conv-filters", "8", "--batch-size", "32", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    config, best = load_config(out), recipes.get("best").config
    assert config.batch_size == 32 != best.batch_size and config.model.conv_filters == (4, 8, 8)
    assert config.model.pool_first == best.model.pool_first  # the recipe's other model fields stay
    assert config.time_budget is None and config.epochs == 1  # --limit: one pass over N images
    for field in ("optimizer", "learning_rate", "label_smoothing", "augment_shift", "eval_views", "recipe", "ema"):
        assert getattr(config, field) == getattr(best, field), field
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["views"] == list(best.eval_views) and 0 <= metrics["accuracy_single_view"] <= 1
    assert json.loads((out / "config.json").read_text())["steps_run"] == 8
    assert "recipe best" in result.output and f"({len(best.eval_views)} test-time views; one view" in result.output
    assert config.model.conv_strides == best.model.conv_strides


def test_standardize_flag_overrides_the_mlp_recipe_only_when_typed():
    assert cli._fixed_flags(["--recipe", "mlp"]).model.standardize  # the recipe's
    assert not cli._fixed_flags(["--recipe", "mlp", "--no-standardize"]).model.standardize
    assert cli._fixed_flags(["--standardize"]).model.standardize and not cli._fixed_flags([]).model.standardize


def test_recipes_command_lists_every_recipe():
    result = CliRunner().invoke(cli.app, ["recipes"])
    assert result.exit_code == 0
    for name in recipes.RECIPES:
        assert name in result.output


def test_a_time_budget_run_records_its_plan(tmp_path):
    """The seed MLP on 600 images for 20 s: the probe's steps, the plan and what it measured are in config.json.
    (Probing, compiling and evaluating take ~5 s on the idle 2-core machine, ~15 s beside another test suite.)"""
    out = tmp_path / "budget"
    args = ["train", "--time-budget", "20", "--limit", "600", "--hidden", "16", "--out", str(out)]
    result = CliRunner().invoke(cli.app, args)
    assert result.exit_code == 0, result.output
    record = json.loads((out / "config.json").read_text())
    assert record["time_budget"] == 20.0 and 0 < record["probe_steps"] < record["steps"] == record["steps_run"]
    assert record["probe_steps"] % 19 == 0  # whole chunks: 19 steps an epoch, one chunk each
    assert record["plan"]["step_ms"] > 0 and record["plan"]["train_s"] > 0
    assert "plan" in record["phase_seconds"] and load_config(out).probe_steps == record["probe_steps"]
    assert f"the budget's plan: its first {record['probe_steps']} steps timed" in result.output
    assert f"so {record['steps']} steps in all" in result.output
    # The probe spanned whole epochs (19 steps each), which the progress lines name and do not show.
    shown = re.search(r"Epochs 1-(\d+): the time budget's probe, timed to plan the steps \(not shown\)\nEpoch (\d+)/",
                      result.output)  # fmt: skip
    assert shown and int(shown[2]) == int(shown[1]) + 1 and int(shown[1]) >= record["probe_steps"] // 19 - 1
    assert "Epoch 1/" not in result.output


def test_whiten_flag_overrides_the_best_recipe_only_when_typed():
    assert cli._fixed_flags(["--recipe", "best"]).model.whiten  # the recipe's
    assert not cli._fixed_flags(["--recipe", "best", "--no-whiten"]).model.whiten
    assert cli._fixed_flags(["--arch", "cnn", "--conv-filters", "18", "--whiten"]).model.whiten
    assert not cli._fixed_flags([]).model.whiten


def test_members_and_conv_repeat_flags_set_their_fields_only_when_typed():
    assert cli._fixed_flags(["--recipe", "best", "--members", "3"]).model.members == 3
    assert cli._fixed_flags(["--recipe", "best"]).model.members == 1 and cli._fixed_flags([]).model.members == 1
    config = cli._fixed_flags(["--recipe", "best", "--members", "2"])
    assert TrainConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    filters, repeats = ["--conv-filters", "8", "--conv-filters", "16"], ["--conv-repeat", "2", "--conv-repeat", "3"]
    deeper = ["--arch", "cnn", *filters, *repeats]
    assert cli._fixed_flags(deeper).model.conv_repeats == (2, 3) and not cli._fixed_flags([]).model.conv_repeats
