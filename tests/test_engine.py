"""fmnist.fit: Keras semantics (callbacks, History, partial batches, validation), determinism,
the explained mistakes, and equivalence with Model.fit."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from fmnist import engine, models
from fmnist._backend import keras
from fmnist.errors import ModelError


def seed_model(seed=0, **spec):
    keras.utils.set_random_seed(seed)
    return models.compile_model(models.build_model(models.ModelSpec(**spec)))


def weights(model):
    return [np.array(w) for w in model.get_weights()]


class TutorialCallback(keras.callbacks.Callback):
    """The tutorial's class, verbatim apart from the threshold being a parameter."""

    def __init__(self, threshold):
        super().__init__()
        self.threshold = threshold

    def on_epoch_end(self, epoch, logs={}):  # noqa: B006 (the tutorial's signature)
        if logs.get("loss") < self.threshold:
            print("\nLoss is low so cancelling training!")
            self.model.stop_training = True


def test_history_matches_model_fit_keys_and_values(tiny_data):
    x, y = tiny_data
    ours = engine.fit(seed_model(), x, y, epochs=2, validation_split=0.2, shuffle=False)
    theirs = seed_model().fit(x, y, epochs=2, validation_split=0.2, shuffle=False, verbose=0)
    assert isinstance(ours, keras.callbacks.History)
    assert sorted(ours.history) == sorted(theirs.history) == ["accuracy", "loss", "val_accuracy", "val_loss"]
    for key in theirs.history:
        np.testing.assert_allclose(ours.history[key], theirs.history[key], rtol=1e-3, atol=1e-4, err_msg=key)


@pytest.mark.parametrize("chunk_steps", [None, 3, 1])  # one chunk; 3+1 steps (a short last chunk); a step loop
def test_same_weights_as_model_fit_with_partial_last_batch(tiny_data, chunk_steps):
    """100 images, batch 32: 3 full batches and one of 4, trained as Model.fit trains them."""
    x, y = tiny_data[0][:100], tiny_data[1][:100]
    ours, theirs = seed_model(), seed_model()
    engine.fit(ours, x, y, epochs=2, batch_size=32, shuffle=False, chunk_steps=chunk_steps)
    theirs.fit(x, y, epochs=2, batch_size=32, shuffle=False, verbose=0)
    assert int(ours.optimizer.iterations.numpy()) == 2 * 4
    for a, b in zip(weights(ours), weights(theirs), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_tutorial_callback_stops_after_first_epoch_below_threshold(tiny_data):
    x, y = tiny_data
    losses = engine.fit(seed_model(), x, y, epochs=6, seed=1).history["loss"]
    threshold = (losses[2] + losses[3]) / 2  # first crossed at epoch index 3
    assert losses[2] > threshold > losses[3]
    history = engine.fit(seed_model(), x, y, epochs=6, seed=1, callbacks=[TutorialCallback(threshold)])
    assert len(history.history["loss"]) == 4
    np.testing.assert_allclose(history.history["loss"], losses[:4], rtol=1e-6)


def test_same_seed_same_history_different_seed_different(tiny_data):
    x, y = tiny_data
    a = engine.fit(seed_model(), x, y, epochs=3, seed=7, validation_split=0.1).history
    b = engine.fit(seed_model(), x, y, epochs=3, seed=7, validation_split=0.1).history
    c = engine.fit(seed_model(), x, y, epochs=3, seed=8, validation_split=0.1).history
    assert a == b
    assert a["loss"] != c["loss"]


def test_early_stopping_restores_best_weights(tiny_data):
    x, y = tiny_data  # random labels: validation loss rises quickly, so patience runs out

    class Snapshots(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.weights = []

        def on_epoch_end(self, epoch, logs=None):
            self.weights.append(weights(self.model))

    snaps = Snapshots()
    stop = keras.callbacks.EarlyStopping("val_loss", patience=2, restore_best_weights=True)
    model = seed_model(hidden=(256,))
    history = engine.fit(
        model, x, y, epochs=30, validation_split=0.3, callbacks=[snaps, stop], seed=0, batch_size=16
    ).history
    epochs_run = len(history["val_loss"])
    assert epochs_run < 30, "validation loss on random labels should stop improving"
    best = int(np.argmin(history["val_loss"]))
    assert epochs_run == best + 1 + 2
    for a, b in zip(weights(model), snaps.weights[best], strict=True):
        np.testing.assert_array_equal(a, b)


def test_validation_metrics_equal_evaluate_on_held_out_part(tiny_data):
    x, y = tiny_data
    model = seed_model()
    history = engine.fit(model, x, y, epochs=2, validation_split=0.25)
    held_x, held_y = x[150:], y[150:]  # the last quarter, as Model.fit holds it out
    expected = model.evaluate(held_x, held_y, verbose=0, return_dict=True)
    assert history.history["val_loss"][-1] == pytest.approx(expected["loss"], rel=1e-4)
    assert history.history["val_accuracy"][-1] == pytest.approx(expected["accuracy"], abs=1e-6)
    val = engine.fit(seed_model(), x[:150], y[:150], epochs=1, validation_data=(held_x, held_y)).history
    assert set(val) == {"loss", "accuracy", "val_loss", "val_accuracy"}


def test_keras_callbacks_checkpoint_csv_terminate_on_nan(tiny_data, tmp_path):
    x, y = tiny_data
    ckpt = tmp_path / "best.keras"
    csv = tmp_path / "log.csv"
    engine.fit(
        seed_model(),
        x,
        y,
        epochs=3,
        validation_split=0.2,
        callbacks=[keras.callbacks.ModelCheckpoint(ckpt), keras.callbacks.CSVLogger(csv)],
    )
    assert keras.saving.load_model(ckpt).count_params() > 0
    lines = csv.read_text().strip().splitlines()
    assert lines[0].split(",")[0] == "epoch" and len(lines) == 4

    poisoned = x.astype(np.float32)
    poisoned[0, 0, 0] = np.nan  # one NaN pixel makes the first chunk's loss NaN
    model = seed_model()
    history = engine.fit(model, poisoned, y, epochs=5, shuffle=False, callbacks=[keras.callbacks.TerminateOnNaN()])
    assert model.stop_training
    assert len(history.history["loss"]) == 1 and np.isnan(history.history["loss"][0])


def test_batch_norm_statistics_and_conv_models_train(tiny_data):
    x, y = tiny_data[0][:64], tiny_data[1][:64]
    model = seed_model(arch="cnn", conv_filters=(4,), hidden=(8,), dropout=0.5)
    bn = model.get_layer("bn0")
    before = np.array(bn.moving_mean)
    history = engine.fit(model, x, y, epochs=2, batch_size=16)
    assert not np.allclose(np.array(bn.moving_mean), before), "BatchNormalization statistics were not carried"
    assert np.isfinite(history.history["loss"]).all()


def test_wrong_output_width_is_explained_before_training(tiny_data):
    x, y = tiny_data
    model = seed_model(output_units=5)
    with pytest.raises(ModelError, match=r"labels go up to 9 but the output layer has 5 units"):
        engine.fit(model, x, y, epochs=1)
    assert int(model.optimizer.iterations.numpy()) == 0


def test_missing_flatten_is_explained_with_the_shape_that_reached_the_loss(tiny_data):
    x, y = tiny_data
    with pytest.raises(ModelError, match=r"output has shape \(None, 28, 10\).*Flatten"):
        engine.fit(seed_model(flatten=False), x, y, epochs=1)


def test_uncompiled_model_and_mismatched_lengths_are_errors(tiny_data):
    x, y = tiny_data
    with pytest.raises(ModelError, match="not compiled"):
        engine.fit(models.build_model(), x, y)
    with pytest.raises(ModelError, match="200 images but 10 labels"):
        engine.fit(seed_model(), x, y[:10])


def test_predict_proba_pads_any_batch_size_consistently(tiny_data):
    x, _ = tiny_data
    model = seed_model()
    full = engine.predict_proba(model, x)
    assert full.shape == (200, 10)
    np.testing.assert_allclose(full.sum(axis=1), 1.0, rtol=1e-5)
    for n in (1, 3, 17):
        np.testing.assert_allclose(engine.predict_proba(model, x[:n]), full[:n], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(full, model.predict(x, verbose=0), rtol=1e-5, atol=1e-7)


def test_saved_model_loads_with_plain_keras_and_gives_same_predictions(tiny_data, tmp_path):
    from fmnist import runs

    x, y = tiny_data
    model = seed_model()
    engine.fit(model, x, y, epochs=1)
    path = runs.save_model(tmp_path / "model.keras", model)
    loaded = keras.saving.load_model(path)
    np.testing.assert_allclose(engine.predict_proba(loaded, x), engine.predict_proba(model, x), rtol=1e-6)
    assert engine.evaluate(loaded, x, y) == engine.evaluate(model, x, y)


def test_standardize_uses_the_training_images_statistics_floors_the_std_and_survives_saving(tiny_data, tmp_path):
    from fmnist import runs, train

    x, y = tiny_data
    x = x.copy()
    x[:, 0, 0] = 7  # a constant pixel: its std is 0, so it is divided by the floor
    config = train.TrainConfig(model=models.ModelSpec(standardize=True), epochs=1, validation_split=0.25)
    model = train.build(config, total_steps=10, x_train=x[:150])
    layer = model.get_layer(models.STANDARDIZE_LAYER)
    out = np.asarray(layer(x[:150].astype(np.float32) / 255))
    np.testing.assert_allclose(out.mean(axis=0), 0.0, atol=1e-4)
    spread = out.std(axis=0)
    assert spread[0, 0] == 0.0 and np.allclose(np.delete(spread.ravel(), 0), 1.0, atol=1e-3)
    bright = x[:1].copy()
    bright[0, 0, 0] = 255  # one stray pixel moves its input by (255 - 7) / 255 / STD_FLOOR, no more
    assert np.asarray(layer(bright.astype(np.float32) / 255))[0, 0, 0] == pytest.approx(248 / 255 / models.STD_FLOOR)

    result = train.train(config, dataset=((x, y), (x[:20], y[:20])))  # statistics of the 150 that train, not all 200
    trained = np.asarray(result.model.get_layer(models.STANDARDIZE_LAYER).mean)
    np.testing.assert_allclose(trained.reshape(28, 28), x[:150].mean(axis=0) / 255, rtol=1e-5)
    loaded = keras.saving.load_model(runs.save_model(tmp_path / "model.keras", result.model))
    np.testing.assert_allclose(engine.predict_proba(loaded, x), engine.predict_proba(result.model, x), rtol=1e-6)
    assert "standardized" in config.model.describe()
    with pytest.raises(ModelError, match="needs the training images"):
        models.build_model(config.model)  # never a silent identity in place of the statistics


def test_whiten_fixes_the_first_conv_to_decorrelating_filters_that_training_and_saving_keep(tiny_data, tmp_path):
    from fmnist import runs, train

    x, y = tiny_data
    spec = models.ModelSpec(arch="cnn", conv_filters=(18, 16), pool_first=True, whiten=True)
    config = train.TrainConfig(model=spec, epochs=1, batch_size=32, validation_split=0.25)
    model = train.build(config, total_steps=10, x_train=x[:150])
    conv = model.get_layer("conv0")
    kernel = np.asarray(conv.kernel)
    assert not conv.trainable and all(w is not conv.kernel for w in model.trainable_weights)
    np.testing.assert_array_equal(kernel[..., 9:], -kernel[..., :9])  # each direction and its negative
    # On the images it was made from, the first nine filters' outputs are uncorrelated, each of variance ~1.
    seen = np.asarray(keras.Sequential(model.layers[:3])(x[:150].astype(np.float32)))[:, 1:-1, 1:-1, :9]
    covariance = np.einsum("nhwi,nhwj->ij", seen, seen) / (seen.size / 9)
    np.testing.assert_allclose(covariance, np.eye(9), atol=0.02)

    result = train.train(config, dataset=((x, y), (x[:20], y[:20])))
    np.testing.assert_array_equal(np.asarray(result.model.get_layer("conv0").kernel), kernel)  # never trained
    conv1 = [np.asarray(m.get_layer("conv1").kernel) for m in (model, result.model)]
    assert not np.allclose(*conv1)  # the layers after it train
    loaded = keras.saving.load_model(runs.save_model(tmp_path / "model.keras", result.model))
    assert not loaded.get_layer("conv0").trainable
    np.testing.assert_allclose(engine.predict_proba(loaded, x), engine.predict_proba(result.model, x), rtol=1e-5)
    assert "whitened" in spec.describe()
    with pytest.raises(ModelError, match="needs the training images"):
        models.build_model(spec)
    for wrong in ({"arch": "mlp"}, {"arch": "cnn", "conv_filters": (32, 64)}, {"arch": "cnn", "conv_filters": (9,)}):
        with pytest.raises(ModelError, match="at most 18"):
            models.ModelSpec(whiten=True, **wrong)


def test_conv_repeats_add_unpooled_convs_at_each_blocks_output_size():
    spec = models.ModelSpec(arch="cnn", conv_filters=(8, 16), conv_strides=(1, 2), conv_repeats=(2, 3), pool_first=True)
    convs = {layer.name: layer.output.shape for layer in models.build_model(spec).layers if layer.name[:4] == "conv"}
    assert convs == {
        "conv0": (None, 28, 28, 8), "conv0_1": (None, 14, 14, 8),  # after the pool
        "conv1": (None, 7, 7, 16), "conv1_1": (None, 7, 7, 16), "conv1_2": (None, 7, 7, 16),  # after the stride
    }  # fmt: skip
    assert "repeats 2-3" in spec.describe()
    with pytest.raises(ModelError, match="one count of at least 1 per conv block"):
        models.ModelSpec(arch="cnn", conv_filters=(8, 16), conv_repeats=(2,))


def test_each_member_of_an_ensemble_trains_as_it_would_alone_and_the_saved_model_averages_them(tiny_data, tmp_path):
    from fmnist import runs, train

    x, y = tiny_data
    net = models.ModelSpec(arch="cnn", conv_filters=(18, 16), pool_first=True, whiten=True)
    config = train.TrainConfig(
        model=net, epochs=2, batch_size=32, optimizer="sgd", learning_rate=0.05, momentum=0.9, augment_shift=2,
        label_smoothing=0.1,
    )  # fmt: skip
    solo = train.train(config, dataset=((x, y), (x[:20], y[:20])))
    alone = solo.model
    config = dataclasses.replace(config, model=dataclasses.replace(net, members=3))
    result = train.train(config, dataset=((x, y), (x[:20], y[:20])))
    members = models.ensemble_members(result.model)
    assert [m.name for m in members] == ["member0", "member1", "member2"]
    # The first member is drawn first from the seed, as the net alone is, and sees the same batches:
    # it ends with the same weights, so the ensemble's step gave it its own loss's gradient, undiluted.
    for ours, theirs in zip(members[0].get_weights(), alone.get_weights(), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-5)
    assert not np.allclose(members[1].get_layer("hidden0").kernel, members[0].get_layer("hidden0").kernel)
    mean = sum(engine.predict_proba(m, x) for m in members) / 3
    np.testing.assert_allclose(engine.predict_proba(result.model, x), mean, rtol=1e-5, atol=1e-6)
    # Reported: the members' mean loss (random labels: each near ln 10), not their sum.
    assert result.history["loss"][0] == pytest.approx(solo.history["loss"][0], rel=0.05)
    loaded = keras.saving.load_model(runs.save_model(tmp_path / "model.keras", result.model))
    np.testing.assert_allclose(engine.predict_proba(loaded, x), mean, rtol=1e-5, atol=1e-6)
    assert models.ensemble_members(loaded) is not None and "ensemble of 3" in config.model.describe()
    with pytest.raises(ModelError, match="at least 1 member"):
        models.ModelSpec(members=0)


@pytest.mark.slow
def test_seed_program_accuracy_matches_model_fit_over_three_seeds(dataset):
    """The issue's equivalence bar: mean test accuracy within 1 point of Model.fit's."""
    (x, y), (xt, yt) = dataset
    ours, theirs = [], []
    for seed in range(3):
        model = seed_model(seed)
        engine.fit(model, x, y, epochs=5, seed=seed)
        ours.append(engine.evaluate(model, xt, yt)["accuracy"])
        model = seed_model(seed)
        model.fit(x, y, epochs=5, verbose=0)
        theirs.append(model.evaluate(xt, yt, verbose=0, return_dict=True)["accuracy"])
    assert abs(np.mean(ours) - np.mean(theirs)) < 0.01, (ours, theirs)


def test_same_architecture_reuses_the_compiled_program_and_trains_the_same(tiny_data):
    x, y = tiny_data
    first = engine.fit(seed_model(), x, y, epochs=2, seed=5).history
    programs = dict(engine._PROGRAMS)
    second = engine.fit(seed_model(), x, y, epochs=2, seed=5).history
    assert programs == engine._PROGRAMS, "an identical model compiled its training program again"
    assert first == second
    engine.fit(seed_model(hidden=(64,)), x, y, epochs=1)
    assert len(engine._PROGRAMS) == min(len(programs) + 1, engine.PROGRAMS_KEPT)


@pytest.mark.parametrize(("n", "batch_size", "chunk_steps"), [(100, 32, None), (100, 32, 3), (96, 32, 1), (100, 7, 5)])
def test_chunking_is_how_fit_chunks_an_epoch(tiny_data, n, batch_size, chunk_steps):
    """The planner's arithmetic (batching.chunking) is fit's own: its chunks and steps per epoch."""
    from fmnist import batching

    x, y = tiny_data[0][:n], tiny_data[1][:n]
    model, states = seed_model(), []
    engine.fit(model, x, y, epochs=2, batch_size=batch_size, chunk_steps=chunk_steps, checkpoint=states.append)
    plan = batching.chunking(model, n, batch_size, chunk_steps)
    assert plan.steps_per_epoch == batching.ceil_div(n, batch_size) == int(np.ceil(n / batch_size))
    assert states[0].plan["chunk_steps"] == plan.chunk_steps
    in_epoch = [s for s in states if s.epoch == 0 and not s.at_epoch_end]
    assert [s.chunk for s in in_epoch] == list(range(1, plan.chunks_per_epoch + 1))
    assert [s.steps for s in states if s.at_epoch_end] == [plan.steps_per_epoch, 2 * plan.steps_per_epoch]
    assert int(model.optimizer.iterations.numpy()) == 2 * plan.steps_per_epoch


def test_every_fit_state_reads_back_as_the_position_it_was_taken_at(tiny_data):
    """Chunk boundaries and epoch ends: the FitState fit hands out converts back to the same Position."""
    x, y = tiny_data[0][:100], tiny_data[1][:100]
    states = []
    engine.fit(seed_model(), x, y, epochs=2, batch_size=10, chunk_steps=4, seed=1, checkpoint=states.append)
    assert len(states) == 2 * (3 + 1)  # 10 steps an epoch in chunks of 4, 4, 2; then the epoch end
    for state in states:
        position = engine.Position.from_state(state)
        fields = ("epoch", "chunk", "steps", "epoch_start_steps", "running", "rng")
        assert [getattr(position, f) for f in fields] == [getattr(state, f) for f in fields]
    assert [(s.epoch, s.chunk, s.steps, s.epoch_start_steps) for s in states[:4]] == [
        (0, 1, 4, 0), (0, 2, 8, 0), (0, 3, 10, 0), (1, 0, 10, 10)
    ]  # fmt: skip
    assert [s.running[2] for s in states] == [40.0, 80.0, 100.0, 0.0] * 2  # images seen in the epoch so far


def test_the_program_cache_tells_a_cpu_device_from_a_gpu_device_of_the_same_id():
    """CPU device 0 and GPU device 0 share the id 0: a program compiled for one must not be taken for the other."""
    from types import SimpleNamespace

    from fmnist import programs

    def on(platform):
        device = SimpleNamespace(platform=platform, id=0)
        return SimpleNamespace(sharding=SimpleNamespace(device_set=[device]))

    assert programs._placement([on("cpu")]) != programs._placement([on("gpu")])
    assert programs._placement([on("cpu")]) == programs._placement([on("cpu")])
