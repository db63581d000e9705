"""The train job: one TrainConfig in, a complete run directory out.

    config = TrainConfig(epochs=5)            # the tutorial's program, as data
    result = train(config, Path("runs/default"))
    result.metrics["accuracy"]                # test accuracy of the saved model

The CLI maps its flags onto TrainConfig; experiments build TrainConfigs; the run directory
stores it as config.json, so any run can be reproduced from its own folder.

A time budget becomes a number of steps once, at the start: the run's first steps are a probe,
trained at the schedule's starting rate and timed (see fmnist.budget); the run goes on
from there, and config.json records both counts, so a rerun replays them.

A run written to a folder is resumable: it trains in ``runs.partial_dir(out)``, checkpointing
at every epoch end (and when asked to stop), and ``resume(out)`` continues it to the same
result as a run never interrupted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist import accelerator, data, engine, fit_state, parallel, plots, runs
from fmnist._backend import keras
from fmnist.batching import ceil_div, steps_per_epoch
from fmnist.budget import (
    FINISH_SECONDS,
    PACE_MARGIN,
    PROBE_CHUNKS,
    PROBE_SHARE,
    PaceProbe,
    ProbeDone,
    plan_steps,
    run_probe,
)
from fmnist.callbacks import EpochTimer, StopWhen, config_callbacks, run_callbacks
from fmnist.config import (
    CONFIG_SCHEMA,
    FIELDS_SINCE,
    RUN_RECORD_KEYS,
    SCHEDULES,
    TrainConfig,
    config_from_json,
    load_config,
)
from fmnist.errors import CheckpointError, FmnistError, Interrupted, RunError
from fmnist.fitting import build, fit, fit_images, make_optimizer, train_precision

# The train job's parts live in their own modules (config, callbacks, fitting, budget); their
# names stay importable from here.
__all__ = [
    "CHECKPOINT_SECONDS", "CONFIG_SCHEMA", "FIELDS_SINCE", "FINISH_SECONDS", "PACE_MARGIN", "PROBE_CHUNKS",
    "PROBE_SHARE", "RUN_RECORD_KEYS", "SCHEDULES", "Checkpointer", "EpochTimer", "PaceProbe", "ProbeDone",
    "StopWhen", "TrainConfig", "TrainResult", "build", "config_callbacks", "config_from_json", "load_config",
    "make_optimizer", "plan_steps", "resume", "resume_config", "resume_status", "run_probe", "save_run", "train",
]  # fmt: skip


@dataclass
class TrainResult:
    model: keras.Model
    history: dict[str, list[float]]  # as Model.fit's History.history, plus per-epoch 'seconds'
    metrics: dict  # test-set evaluation (see engine.evaluate)
    train_seconds: float  # fit() wall clock, compilation included
    run_dir: Path | None
    config: TrainConfig  # as run: with the planned steps when a time budget set them
    probs: np.ndarray  # test-set probabilities behind ``metrics`` (averaged over the run's views)
    phases: dict[str, float]  # wall-clock seconds: start (before train()), plan, train, evaluate
    plan: dict[str, float] = field(default_factory=dict)  # what a time budget's plan measured (PaceProbe.estimate)


# A checkpoint of the seed model (1.2 MB, with the history so far) takes ~12 ms to write and fsync on
# the 2-core machine: ~3% of one of its full epochs, but more than a whole epoch of a few hundred
# images, where one at every epoch end made a 30 s budget on 600 images (2,770 epochs) take 57 s.
# So an epoch end saves one only when this long has passed since the last: a kill loses at most
# these seconds and an epoch; a stop request (Ctrl-C, SIGTERM) always saves where it is.
CHECKPOINT_SECONDS = 2.0


class Checkpointer:
    """engine.fit's ``checkpoint`` hook for a run: a checkpoint at an epoch end (at most one every
    CHECKPOINT_SECONDS), and on request.

    ``should_stop()`` (e.g. set by a signal handler) is asked after every compiled chunk; when
    it says yes, the state there is saved and ``Interrupted`` raised, so training stops within
    one chunk and continues from that very step.
    """

    def __init__(self, run: Path, should_stop: Callable[[], bool] | None = None):
        self.run, self.should_stop = Path(run), should_stop
        self.path = runs.partial_dir(self.run) / runs.CHECKPOINT_FILE
        self.saved_at = time.monotonic()  # the fit starts now; nothing before it needs saving

    def __call__(self, state: engine.FitState) -> None:
        stop = self.should_stop is not None and self.should_stop()
        if stop or (state.at_epoch_end and time.monotonic() - self.saved_at >= CHECKPOINT_SECONDS):
            runs.save_checkpoint(self.path, state.to_tree())
            self.saved_at = time.monotonic()
        if stop:
            where = f"after epoch {state.epoch}" if state.chunk == 0 else f"in epoch {state.epoch + 1}"
            raise Interrupted(
                f"training stopped {where} (step {state.steps}) with a checkpoint in {self.path.parent}: "
                f"continue it with `fmnist train --resume {self.run}`."
            )


def train(
    config: TrainConfig,
    out: Path | None = None,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    dataset: tuple | None = None,
    started: float | None = None,
    restart: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Build, train and evaluate the model ``config`` describes; write the run to ``out`` if given.

    ``dataset`` (as ``load_data()`` returns it) skips loading, for callers that train many times.
    ``started`` (a ``time.perf_counter()`` value) is when the time budget began: default now.
    With a time budget and no recorded ``steps``, the first steps are a probe and the steps are
    planned from it (see run_probe, plan_steps); the returned ``config`` carries both counts.
    ``config.devices`` > 1, or a multi-process job (see fmnist.parallel.setup), trains
    data-parallel; then every process trains and only process 0 writes (and checkpoints, and
    locks) ``out``.

    With ``out`` the run is resumable (see ``resume``) and locked against a second writer; an
    interrupted training already there is a RunError unless ``restart`` discards it.
    ``should_stop()`` is asked after every compiled chunk: yes saves a checkpoint and raises
    ``Interrupted``.
    """
    if out is None or parallel.process_index() != 0:  # in a multi-process job only process 0 writes
        return _train(config, None, callbacks=callbacks, dataset=dataset, started=started)
    out = Path(out)
    with runs.run_lock(out):
        stage = runs.partial_dir(out)
        if stage.exists():
            if not restart:
                raise RunError(
                    f"{out} has an interrupted training ({stage}): continue it with `fmnist train --resume {out}`, "
                    "or start over with --restart."
                )
            shutil.rmtree(stage)
        return _train(config, out, callbacks=callbacks, dataset=dataset, started=started, should_stop=should_stop)


def resume_status(out: Path) -> str:
    """'interrupted' (resumable), 'finished' (a complete run, nothing to resume) or 'none'."""
    out = Path(out)
    if runs.partial_dir(out).is_dir():
        return "interrupted"
    return "finished" if (out / runs.MODEL_FILE).is_file() else "none"


def resume(
    out: Path,
    *,
    callbacks: Sequence[keras.callbacks.Callback] = (),
    dataset: tuple | None = None,
    started: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> TrainResult:
    """Continue the interrupted training of run ``out`` from its last checkpoint, with its recorded config.

    The result (weights, history, metrics) is that of the run never interrupted. A run with
    no interrupted training is a RunError; a damaged checkpoint a CheckpointError.
    """
    out = Path(out)
    with runs.run_lock(out):
        status = resume_status(out)
        if status != "interrupted":
            raise RunError(
                f"{out} is finished: there is nothing to resume." if status == "finished"
                else f"{out} has no interrupted training to resume: start one with `fmnist train --out {out}`."
            )  # fmt: skip
        config = resume_config(out)
        checkpoint, state = runs.partial_dir(out) / runs.CHECKPOINT_FILE, None
        if checkpoint.is_file():  # none yet: killed before the first epoch ended, it starts from step 0
            try:
                state = engine.FitState.from_tree(runs.load_checkpoint(checkpoint))
            except (CheckpointError, TypeError, KeyError) as e:
                raise CheckpointError(f"{checkpoint} is damaged, so {out} cannot be resumed: {_over(out)}.") from e
        return _train(
            config, out, callbacks=callbacks, dataset=dataset, started=started, should_stop=should_stop,
            resume_from=state,
        )  # fmt: skip


def _over(out: Path) -> str:
    return f"start over with `fmnist train --restart --out {out}` and the run's settings"


def resume_config(out: Path) -> TrainConfig:
    """The config an interrupted training of run ``out`` was started with (a CheckpointError if unreadable)."""
    try:
        return load_config(runs.partial_dir(out))
    except FmnistError as e:
        raise CheckpointError(f"{out} cannot be resumed: {e} ({_over(out)}).") from e


def _train(
    config: TrainConfig,
    out: Path | None,
    *,
    callbacks: Sequence[keras.callbacks.Callback],
    dataset: tuple | None,
    started: float | None,
    should_stop: Callable[[], bool] | None = None,
    resume_from: engine.FitState | None = None,
) -> TrainResult:
    """train() and resume(): ``out`` (locked by the caller) trains through its partial_dir."""
    started = time.perf_counter() if started is None else started
    (x_train, y_train), (x_test, y_test) = dataset or data.load_data(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    phases = {"start": time.perf_counter() - started}  # seconds spent before train() (CLI: imports, data)
    distribution = parallel.data_parallel(config.devices)
    # The probe's fit runs the run's callbacks that carry state (see fit_state), which the run continues with.
    probe_fit = {"callbacks": run_callbacks(config, [cb for cb in callbacks if fit_state.has_state(cb)])[1],
                 "distribution": distribution}  # fmt: skip
    probe, probe_seconds = None, 0.0
    if config.time_budget is not None and config.steps is None:
        t = time.perf_counter()
        probe = run_probe(config, x_train, y_train, **probe_fit, should_stop=should_stop)
        steps = plan_steps(config, probe, x_test, started)
        config = dataclasses.replace(config, steps=steps, probe_steps=probe.state.steps)
        phases["plan"], probe_seconds = time.perf_counter() - t, probe.seconds
    checkpointer = _stage(config, out, should_stop, resuming=resume_from is not None)
    start = time.perf_counter()
    if config.probe_steps and resume_from is None:  # the run continues from its probe's state
        if probe is None:  # a rerun of a recorded plan: train the probe's steps as the run did
            probe = run_probe(config, x_train, y_train, **probe_fit, steps=config.probe_steps)
        resume_from = probe.state
    model, history, timer = _fit_run(
        config, x_train, y_train, callbacks=callbacks, distribution=distribution, checkpoint=checkpointer,
        resume_from=resume_from,
    )  # fmt: skip
    phases["train"] = time.perf_counter() - start
    train_seconds = phases["train"] + probe_seconds  # every training step's, the planning probe's too
    hist = {k: [float(v) for v in vs] for k, vs in history.history.items()} | {"seconds": timer.seconds}
    if config.label_smoothing:  # report (and save) the plain cross-entropy against the true labels
        model.compile(optimizer=model.optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    t = time.perf_counter()
    metrics, probs = engine.evaluate(model, x_test, y_test, views=config.eval_views, return_probs=True)
    phases["evaluate"] = time.perf_counter() - t
    plan = probe.estimate if probe is not None else {}  # empty when no plan was made (a rerun replays one)
    if out is not None:
        with runs.staged_dir(out, stage=runs.partial_dir(out)) as staged:  # all or nothing: a previous run survives
            save_run(staged, model, config, hist, metrics, train_seconds, phases, plan)
        # Only now, with the run in place: a kill a moment earlier still finds the checkpoint to finish from.
        (out / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
    return TrainResult(model, hist, metrics, train_seconds, out, config, probs, phases, plan)


def _stage(config: TrainConfig, out: Path | None, should_stop, *, resuming: bool) -> Checkpointer | None:
    """A run written to ``out`` trains in its partial_dir: the config as run (planned steps included) comes
    first, then the checkpoints, written by the returned Checkpointer (None without ``out``)."""
    if out is None:
        return None
    stage = runs.partial_dir(out)
    if not resuming and not (stage / runs.CONFIG_FILE).is_file():
        stage.mkdir(parents=True, exist_ok=True)
        runs.write_json(stage / runs.CONFIG_FILE, config.to_json())
    return Checkpointer(out, should_stop)


def _fit_run(config: TrainConfig, x_train, y_train, *, callbacks, **fit_kwargs):
    """Build the run's model and fit it for its epochs or steps: (model, History, its EpochTimer)."""
    x_fit = fit_images(config, x_train)
    per_epoch = steps_per_epoch(len(x_fit), config.batch_size)
    epochs = config.epochs if config.steps is None else ceil_div(config.steps, per_epoch)
    model = build(config, total_steps=config.steps or epochs * per_epoch, x_train=x_fit)
    timer, all_callbacks = run_callbacks(config, callbacks)
    history = fit(model, config, x_train, y_train, epochs=epochs, max_steps=config.steps, callbacks=all_callbacks,
                  **fit_kwargs)  # fmt: skip
    return model, history, timer


def save_run(
    out: Path, model, config: TrainConfig, history: dict, metrics: dict, train_seconds: float, phases=None, plan=None
) -> None:
    """Write the run directory's core artifacts (model, config, history, metrics, learning curves).

    ``plan``: what a time budget's plan measured (PaceProbe.estimate), recorded beside the config.
    """
    import jax

    runs.save_model(out / runs.MODEL_FILE, model)
    runs.write_json(
        out / runs.CONFIG_FILE,
        {
            **config.to_json(),
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "train_seconds": round(train_seconds, 3),
            "phase_seconds": {k: round(v, 2) for k, v in (phases or {}).items()},
            "epochs_run": len(history.get("loss", [])),
            "steps_run": int(model.optimizer.iterations.numpy()),
            "params": int(model.count_params()),
            "model_description": config.model.describe(),  # for `fmnist runs`, which must not import Keras
            "versions": {"keras": keras.__version__, "jax": jax.__version__, "numpy": np.__version__},
            # where it trained (the config says what was asked: platform None is the best there is)
            "device": accelerator.record(train_precision(config)),
            "processes": jax.process_count(),  # each training ``devices`` devices (data-parallel when > 1 in all)
            **({"plan": plan} if plan else {}),
        },
    )
    runs.save_history(out, history)
    runs.write_json(out / runs.METRICS_FILE, metrics)
    runs.save_figure(out / runs.FIGURES_DIR / "learning_curves.png", plots.learning_curves(history))
