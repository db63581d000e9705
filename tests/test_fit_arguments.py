"""fmnist.fit takes Model.fit's arguments with Model.fit's meaning: for each one, the same
History and the same weights as Model.fit on the same data, initial weights and batches
(shuffle=False lines the batches up); and what it cannot take is one explained error."""

from __future__ import annotations

import re

import numpy as np
import pytest

from fmnist import engine, models
from fmnist._backend import keras
from fmnist.errors import ModelError

HISTORY_TOL = {"rtol": 1e-3, "atol": 1e-4}  # as tests/test_engine.py: float32 sums in another order
WEIGHT_TOL = {"rtol": 1e-4, "atol": 1e-5}


def seed_model(seed=0):
    keras.utils.set_random_seed(seed)
    return models.compile_model(models.build_model())


class Epochs(keras.callbacks.Callback):
    """The epoch numbers callbacks are given."""

    def on_train_begin(self, logs=None):
        self.seen = []

    def on_epoch_end(self, epoch, logs=None):
        self.seen.append(epoch)


def both(x, y, **kwargs):
    """(fmnist.fit's History and model, Model.fit's History and model) from the same start."""
    ours, theirs = seed_model(), seed_model()
    ours_history = engine.fit(ours, x, y, shuffle=False, **kwargs)
    theirs_history = theirs.fit(x, y, shuffle=False, **({"verbose": 0} | kwargs))
    return (ours_history, ours), (theirs_history, theirs)


def assert_same(ours, theirs):
    (h1, m1), (h2, m2) = ours, theirs
    assert sorted(h1.history) == sorted(h2.history)
    for key, values in h2.history.items():
        assert len(h1.history[key]) == len(values), key
        np.testing.assert_allclose(h1.history[key], values, **HISTORY_TOL, err_msg=key)
    assert h1.epoch == h2.epoch
    assert int(m1.optimizer.iterations.numpy()) == int(m2.optimizer.iterations.numpy())
    for a, b in zip(m1.get_weights(), m2.get_weights(), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), **WEIGHT_TOL)


def test_initial_epoch_numbers_the_epochs_as_model_fit(tiny_data):
    x, y = tiny_data
    seen_ours, seen_theirs = Epochs(), Epochs()
    ours = engine.fit(seed_model(), x, y, epochs=4, initial_epoch=2, shuffle=False, callbacks=[seen_ours])
    theirs = seed_model().fit(x, y, epochs=4, initial_epoch=2, shuffle=False, callbacks=[seen_theirs], verbose=0)
    assert seen_ours.seen == seen_theirs.seen == [2, 3]  # epochs 2 and 3 run: two epochs of training
    assert len(ours.history["loss"]) == 2
    assert_same((ours, ours.model), (theirs, theirs.model))


def test_class_weight_weighs_loss_and_accuracy_as_model_fit(tiny_data):
    x, y = tiny_data
    class_weight = {0: 2.0, 3: 0.5, 7: 3.0}  # the other classes weigh 1, as in Model.fit
    ours, theirs = both(x, y, epochs=2, class_weight=class_weight, validation_split=0.2)
    assert_same(ours, theirs)
    plain, _ = both(x, y, epochs=2, validation_split=0.2)
    assert ours[0].history["loss"] != pytest.approx(plain[0].history["loss"]), "class weights changed nothing"


def test_sample_weight_weighs_training_and_its_validation_part_as_model_fit(tiny_data):
    x, y = tiny_data
    weights = np.random.default_rng(3).uniform(0.0, 2.0, len(x)).astype(np.float32)
    weights[:5] = 0.0  # images that count for nothing
    # 150 training images: batches of 32 and a partial one of 22; the last 50 weights weigh validation.
    ours, theirs = both(x, y, epochs=2, sample_weight=weights, validation_split=0.25)
    assert_same(ours, theirs)
    held_out = (x[150:], y[150:], weights[150:])
    with_data, theirs_with_data = both(
        x[:150], y[:150], epochs=2, sample_weight=weights[:150], validation_data=held_out
    )
    assert_same(with_data, theirs_with_data)


@pytest.mark.parametrize("validation_freq", [2, [1, 3]])
def test_validation_freq_validates_after_the_same_epochs_as_model_fit(tiny_data, validation_freq):
    x, y = tiny_data
    ours, theirs = both(x, y, epochs=4, validation_split=0.2, validation_freq=validation_freq)
    assert len(ours[0].history["val_loss"]) == 2 and len(ours[0].history["loss"]) == 4
    assert_same(ours, theirs)


def shown(out: str) -> list[str]:
    """The first word of each line as a terminal finally shows it (after its last carriage return)."""
    final = (re.sub(r"\x1b\[[0-9;]*m|\x08", "", line.split("\r")[-1]) for line in out.split("\n"))
    return [line.split()[0] for line in final if line.strip()]


def test_verbose_prints_model_fits_progress_bar_and_zero_prints_nothing(tiny_data, capsys):
    x, y = tiny_data
    engine.fit(seed_model(), x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    lines = {}
    for verbose in ("auto", 1, 2):
        ours = engine.fit(seed_model(), x, y, epochs=2, verbose=verbose, shuffle=False)
        ours_out = capsys.readouterr().out
        theirs = seed_model().fit(x, y, epochs=2, verbose=verbose, shuffle=False)
        theirs_out = capsys.readouterr().out
        assert_same((ours, ours.model), (theirs, theirs.model))
        # The same bar: an "Epoch i/n" header, then "steps/steps" with the logs, for each epoch.
        lines[verbose] = shown(ours_out)
        assert lines[verbose] == shown(theirs_out), (ours_out, theirs_out)
        assert "loss:" in ours_out and "accuracy:" in ours_out
    assert lines["auto"] == lines[1] == ["Epoch", "7/7", "Epoch", "7/7"]  # 200 images, batch 32: 7 steps


def test_fmnists_own_jobs_train_silently(tiny_data, capsys):
    from fmnist import train

    x, y = tiny_data
    train.train(train.TrainConfig(epochs=1), None, dataset=((x, y), (x, y)))
    assert capsys.readouterr().out == ""


class Batches(keras.utils.PyDataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        return np.zeros((4, 28, 28), np.uint8), np.zeros(4, np.uint8)


def test_what_fit_cannot_take_is_one_error_naming_what_to_pass(tiny_data):
    x, y = tiny_data
    model = seed_model()
    with pytest.raises(ModelError, match=r"steps_per_epoch.*max_steps=N"):
        engine.fit(model, x, y, steps_per_epoch=3)
    with pytest.raises(ModelError, match=r"x is a generator.*array x of shape \(n, 28, 28\)"):
        engine.fit(model, (img for img in x))
    with pytest.raises(ModelError, match=r"x is a Batches.*np.concatenate"):
        engine.fit(model, Batches())
    with pytest.raises(ModelError, match="needs the labels"):
        engine.fit(model, x)
    with pytest.raises(ModelError, match="class_weight or sample_weight, not both"):
        engine.fit(model, x, y, class_weight={0: 2.0}, sample_weight=np.ones(len(x)))
    with pytest.raises(ModelError, match=r"one weight per image, shape \(200,\)"):
        engine.fit(model, x, y, sample_weight=np.ones(10))
    with pytest.raises(ModelError, match="validation_freq"):
        engine.fit(model, x, y, validation_freq=0)
    with pytest.raises(ModelError, match="verbose is 0"):
        engine.fit(model, x, y, verbose=3)
    with pytest.raises(ModelError, match="initial_epoch"):
        engine.fit(model, x, y, initial_epoch=-1)
    with pytest.raises(TypeError, match="unexpected keyword argument 'epoch'"):
        engine.fit(model, x, y, epoch=3)
    assert int(model.optimizer.iterations.numpy()) == 0, "a rejected call trained"
    weighted = models.build_model()
    weighted.compile(optimizer="adam", loss="sparse_categorical_crossentropy", weighted_metrics=["accuracy"])
    with pytest.raises(
        ModelError, match="drop weighted_metrics"
    ):  # fit reports the accuracy Model.fit's metrics= gives
        engine.fit(weighted, x, y, sample_weight=np.ones(len(x)))
    # Model.fit's defaults for those arguments are accepted, as Model.fit accepts them.
    engine.fit(model, x, y, steps_per_epoch=None, validation_steps=None, batch_size=None, callbacks=None, verbose=0)
