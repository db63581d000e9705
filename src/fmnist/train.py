"""The train job: one TrainConfig in, a complete run directory out.

    config = TrainConfig(epochs=5)            # the tutorial's program, as data
    result = train(config, Path("runs/default"))
    result.metrics["accuracy"]                # test accuracy of the saved model

The CLI maps its flags onto TrainConfig; experiments build TrainConfigs; the run directory
stores it as config.json, so any run can be reproduced from its own folder.

A time budget becomes a number of steps once, at the start: the run's first steps are a probe,
trained at the schedule's starting rate and timed (see run_probe, plan_steps); the run goes on
from there, and config.json records both counts, so a rerun replays them.

A run written to a folder is resumable: it trains in ``runs.partial_dir(out)``, checkpointing
at every epoch end (and when asked to stop), and ``resume(out)`` continues it to the same
result as a run never interrupted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fmnist import augment, data, engine, fit_inputs, fit_state, models, parallel, plots, runs
from fmnist._backend import keras
from fmnist.errors import CheckpointError, FmnistError, Interrupted, RunError

SCHEDULES = ("constant", "one-cycle")
# config.json's layout. 1: a "schema" key, and every TrainConfig field present; 2 and 3: the same,
# with the fields of FIELDS_SINCE[2], then [3]. Older files are migrated: fields added after their schema take
# their defaults, which is how those runs were trained (each field was added with a neutral
# default); files without the key (schema 0, written before it existed) may lack any field. The
# model spec's fields (pool_first, conv_strides, standardize...) likewise: one missing from an older
# file takes its default, the neutral one it was added with (an unknown one is an error).
CONFIG_SCHEMA = 3
FIELDS_SINCE = {2: ("augment_erase",), 3: ("probe_steps",)}
# What config.json records about a run beside its TrainConfig (written by save_run).
RUN_RECORD_KEYS = frozenset(
    {"schema", "created", "train_seconds", "phase_seconds", "epochs_run", "steps_run", "params",
     "model_description", "versions", "device", "processes", "plan"}
)  # fmt: skip


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults reproduce the tutorial."""

    model: models.ModelSpec = field(default_factory=models.ModelSpec)  # what to build (see ModelSpec)
    epochs: int = 5  # passes over the training set (when ``steps`` is None)
    batch_size: int = 32  # images per gradient step (Keras' default)
    optimizer: str = "adam"  # adam, adamw, sgd, rmsprop or nadam
    learning_rate: float | None = None  # None keeps the optimizer's default (0.001 for Adam); one-cycle: the peak
    momentum: float = 0.0  # sgd only: momentum
    nesterov: bool = False  # sgd only: Nesterov momentum
    weight_decay: float | None = None  # decoupled weight decay per step (scaled by the learning rate); None: none
    schedule: str = "constant"  # learning rate over the run: constant, or one-cycle (linear warm-up, cosine to 0)
    warmup: float = 0.2  # one-cycle: fraction of the steps spent warming up from learning_rate / 10
    label_smoothing: float = 0.0  # train on targets (1 - s) one-hot + s / 10; the reported loss is plain
    augment_shift: int = 0  # training augmentation: random translation by up to this many pixels (0-padded)
    augment_flip: bool = False  # training augmentation: mirror half the images left-right
    augment_erase: float = 0.0  # training augmentation: probability of blanking a random rectangle of an image
    ema: float | None = None  # weight averaging: momentum of an exponential moving average of the weights
    eval_views: tuple[str, ...] = ("identity",)  # test-time views averaged by evaluate/predict (fmnist.augment)
    time_budget: float | None = None  # seconds for the whole run (compile, train, evaluate): plans ``steps``
    steps: int | None = None  # optimizer steps in all, overriding epochs (planned from time_budget, recorded)
    probe_steps: int | None = None  # the first steps, at the schedule's starting rate: the budget's probe (recorded)
    validation_split: float = 0.0  # last fraction of the training set held out for val_loss/val_accuracy
    stop_at_loss: float | None = None  # the tutorial's callback: stop once training loss < this
    stop_at_accuracy: float | None = None  # stop once training accuracy > this
    early_stopping: int | None = None  # patience in epochs on val_loss (loss without validation)
    seed: int = 0  # weights, batch order, augmentation and dropout; same seed -> same run on the CPU
    devices: int = 1  # devices of this process each batch is split over (data-parallel; same result to rounding)
    train_limit: int | None = None  # use only the first N training images (quick trials and smoke tests)
    data_dir: str | None = None  # where the dataset is (None: the usual search, see fmnist.data)
    recipe: str | None = None  # the named recipe this config started from (fmnist.recipes), if any

    def __post_init__(self):
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", models.spec_from_dict(self.model))
        object.__setattr__(self, "eval_views", augment.check_views(self.eval_views))
        if self.epochs < 1 or self.batch_size < 1:
            raise FmnistError(f"epochs and batch size must be at least 1 (got {self.epochs}, {self.batch_size}).")
        if not 0.0 <= self.validation_split < 1.0:
            raise FmnistError(f"validation split must be in [0, 1), got {self.validation_split}.")
        if self.train_limit is not None and self.train_limit < 1:
            raise FmnistError(f"train_limit must be at least 1, got {self.train_limit}.")
        if self.schedule not in SCHEDULES:
            raise FmnistError(f"unknown schedule {self.schedule!r}: use {' or '.join(SCHEDULES)}.")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.warmup < 1.0:
            raise FmnistError("label smoothing and warm-up fraction must be in [0, 1).")
        if self.augment_shift < 0 or (self.ema is not None and not 0.0 < self.ema < 1.0):
            raise FmnistError("augment_shift must be >= 0 and ema a momentum in (0, 1).")
        if not 0.0 <= self.augment_erase <= 1.0:
            raise FmnistError(f"augment_erase is a probability in [0, 1], got {self.augment_erase}.")
        if self.steps is not None and self.steps < 1:
            raise FmnistError(f"steps must be at least 1, got {self.steps}.")
        if self.probe_steps is not None and not (self.steps is not None and 1 <= self.probe_steps <= self.steps):
            raise FmnistError(f"probe_steps must be within the run's steps, got {self.probe_steps} of {self.steps}.")
        if self.devices < 1 or self.batch_size % self.devices:
            raise FmnistError(
                f"devices must be at least 1 and divide the batch size (got {self.devices} for a batch of "
                f"{self.batch_size}): each device takes an equal share of every batch."
            )
        if self.time_budget is not None and self.time_budget <= 0:
            raise FmnistError(f"the time budget must be positive, got {self.time_budget} s.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from its fields (missing ones take their defaults); an unknown field is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FmnistError(f"unknown TrainConfig fields {unknown}: known fields are {sorted(known)}.")
        try:
            return cls(**d)
        except TypeError as e:  # e.g. a model spec that is not a dict
            raise FmnistError(f"invalid TrainConfig: {e}") from e

    def to_json(self) -> dict:
        """What config.json holds for this config: its fields and the schema version."""
        return {"schema": CONFIG_SCHEMA, **self.to_dict()}


class StopWhen(keras.callbacks.Callback):
    """Stop training once ``logs[key]`` crosses ``threshold`` (below for losses, above otherwise).

    The tutorial's ``myCallback`` is ``StopWhen('loss', 0.4)``.
    """

    def __init__(self, key: str, threshold: float):
        super().__init__()
        self.key, self.threshold, self.stopped_epoch = key, threshold, None

    def on_epoch_end(self, epoch, logs=None):
        value = (logs or {}).get(self.key)
        if value is None:
            return
        crossed = value < self.threshold if "loss" in self.key else value > self.threshold
        if crossed:
            self.stopped_epoch = epoch
            self.model.stop_training = True

    def state_dict(self) -> dict:  # what a resumed fit needs (see fit_state.callback_state)
        return {"stopped_epoch": self.stopped_epoch}

    def load_state_dict(self, state: dict) -> None:
        self.stopped_epoch = state["stopped_epoch"]


class EpochTimer(keras.callbacks.Callback):
    """Wall-clock seconds of each epoch (compilation included in the first).

    A fit resumed inside an epoch (after an interruption, or after a time budget's probe) adds
    the seconds that epoch had already taken.
    """

    def on_train_begin(self, logs=None):
        self.seconds: list[float] = []
        self._start, self._carried = None, 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._carried = time.perf_counter() - self._carried, 0.0

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)
        self._start = None

    def state_dict(self) -> dict:  # a resumed run's history keeps the epochs timed before
        into = 0.0 if self._start is None else time.perf_counter() - self._start
        return {"seconds": list(self.seconds), "into_epoch": into}

    def load_state_dict(self, state: dict) -> None:
        self.seconds, self._carried = list(state["seconds"]), float(state.get("into_epoch", 0.0))


def config_callbacks(config: TrainConfig) -> list[keras.callbacks.Callback]:
    """The callbacks a config asks for (stop thresholds, early stopping)."""
    cbs: list[keras.callbacks.Callback] = []
    if config.stop_at_loss is not None:
        cbs.append(StopWhen("loss", config.stop_at_loss))
    if config.stop_at_accuracy is not None:
        cbs.append(StopWhen("accuracy", config.stop_at_accuracy))
    if config.early_stopping is not None:
        monitor = "val_loss" if config.validation_split > 0 else "loss"
        cbs.append(keras.callbacks.EarlyStopping(monitor, patience=config.early_stopping, restore_best_weights=True))
    return cbs


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


# What a time budget leaves for finishing after the last training step, beyond the measured
# compilation and test-set evaluation: saving the model, the learning-curve figure, the
# report's figures and page (measured ~3-5 s for the vgg net on the 2-core machine).
FINISH_SECONDS = 8.0


def make_optimizer(config: TrainConfig, total_steps: int | None) -> keras.optimizers.Optimizer:
    """The optimizer ``config`` describes, with its learning-rate schedule laid out over ``total_steps``.

    ``total_steps`` None (a time budget's probe, before the steps are planned): the schedule held
    at its starting rate, with the same variables, so the run continues from the probe's state.
    """
    if config.optimizer not in models.OPTIMIZERS:
        raise FmnistError(f"unknown optimizer {config.optimizer!r}: use one of {', '.join(models.OPTIMIZERS)}.")
    cls = keras.optimizers.get(config.optimizer).__class__
    peak = config.learning_rate if config.learning_rate is not None else cls().learning_rate.numpy().item()
    lr = peak
    if config.schedule == "one-cycle" and total_steps is None:
        lr = keras.optimizers.schedules.CosineDecay(peak / 10, decay_steps=1, alpha=1.0)  # peak / 10 at every step
    elif config.schedule == "one-cycle":
        warm = max(1, round(config.warmup * total_steps))
        lr = keras.optimizers.schedules.CosineDecay(
            peak / 10, decay_steps=max(1, total_steps - warm), alpha=0.0, warmup_target=peak, warmup_steps=warm
        )
    kwargs = {"learning_rate": lr}
    if config.optimizer == "sgd":
        kwargs |= {"momentum": config.momentum, "nesterov": config.nesterov}
    if config.weight_decay is not None:
        kwargs["weight_decay"] = config.weight_decay
    if config.ema is not None:
        kwargs |= {"use_ema": True, "ema_momentum": config.ema}
    return cls(**kwargs)


def build(config: TrainConfig, total_steps: int | None, x_train: np.ndarray | None = None) -> keras.Model:
    """The compiled model ``config`` describes (weights drawn from ``config.seed``).

    ``x_train``: the images it will train on, for a standardizing model's statistics.
    """
    keras.utils.set_random_seed(config.seed)
    model = models.build_model(config.model, x_train=x_train)
    loss = (
        keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
        if config.label_smoothing
        else "sparse_categorical_crossentropy"
    )
    model.compile(optimizer=make_optimizer(config, total_steps), loss=loss, metrics=["accuracy"])
    return model


def _fit_images(config: TrainConfig, x_train: np.ndarray) -> np.ndarray:
    """The training images that train: without the validation split, which fit takes from the end."""
    return x_train[: fit_inputs.train_size(len(x_train), config.validation_split)]


def _fit(model, config: TrainConfig, x, y, *, epochs: int, max_steps: int | None, callbacks=(), **fit_kwargs):
    """engine.fit as ``config`` says; ``fit_kwargs``: engine.fit's checkpoint, resume_from, distribution."""
    if config.label_smoothing:
        y = np.eye(data.NUM_CLASSES, dtype=np.float32)[y]  # the smoothed loss takes one-hot targets
    augment_fn = augment.Augment(config.augment_shift, config.augment_flip, config.augment_erase)
    return engine.fit(
        model, x, y, epochs=epochs, batch_size=config.batch_size, validation_split=config.validation_split,
        callbacks=callbacks, seed=config.seed, augment=augment_fn if augment_fn.active else None, max_steps=max_steps,
        verbose=0,  # the CLI reports progress through its own callback
        **fit_kwargs,
    )  # fmt: skip


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


class ProbeDone(Exception):
    """Raised by a PaceProbe to end the probe's fit at a chunk boundary."""


class PaceProbe:
    """engine.fit's ``checkpoint`` hook for a time budget's probe: the run's first steps, timed.

    Records ``perf_counter()`` and the steps done after every compiled chunk, keeps the latest
    FitState (the run continues from it) and ends the fit by raising ProbeDone: after ``steps``
    steps (a rerun replaying a recorded probe), else once it has timed ``min_chunks`` chunks and
    ``min_seconds`` after the first (which compiles), or at the first epoch's last chunk boundary
    past ``min_chunks`` (so that the run's own callbacks see every epoch end). ``should_stop()``
    yes (Ctrl-C) raises Interrupted: nothing is saved yet, so the run starts again.
    """

    def __init__(self, chunks_per_epoch, min_chunks, min_seconds=0.0, steps=None, should_stop=None):
        self.chunks_per_epoch, self.min_chunks, self.min_seconds, self.steps = (
            chunks_per_epoch, min_chunks, min_seconds, steps
        )  # fmt: skip
        self.should_stop = should_stop
        self.times: list[float] = []
        self.steps_at: list[int] = []
        self.state: engine.FitState | None = None
        self.model: keras.Model | None = None
        self.started = self.ended = 0.0  # perf_counter() around the probe's fit
        self.estimate: dict[str, float] = {}  # what plan_steps measured and planned with (config.json's "plan")

    def __call__(self, state: engine.FitState) -> None:
        if self.should_stop is not None and self.should_stop():
            raise Interrupted(
                f"training stopped at step {state.steps}, while timing the time budget's first steps and before "
                "anything was saved: run the same command again to start over."
            )
        self.state = state
        if state.at_epoch_end:
            return
        self.times.append(time.perf_counter())
        self.steps_at.append(state.steps)
        if self.steps is not None:
            done = state.steps >= self.steps
        else:
            enough = len(self.times) >= self.min_chunks
            epoch_ends_next = state.epoch == 0 and state.chunk == self.chunks_per_epoch - 1
            done = enough and (self.times[-1] - self.times[0] >= self.min_seconds or epoch_ends_next)
        if done:
            raise ProbeDone

    @property
    def seconds(self) -> float:
        return self.ended - self.started


# The time-budget probe: the run's first steps, trained at the schedule's starting rate (the
# schedule's length is not known yet) and timed. The 2-core machine's pace swings by ±15% within
# a minute (the best recipe, 10-second windows of one run: 14.1 to 18.8 ms a step) and by more
# over minutes, both ways: probes of 5-minute runs measured 13.6 ms a step for a run that trained
# at 16.7 (it overran by 43 s), and 19.8 for one that trained at 19.5. So the probe times at
# least PROBE_CHUNKS chunks and PROBE_SHARE of the budget after the first (which compiles), at
# most the first epoch (its steps are the run's own, so a longer probe costs nothing), and plans
# with steps PACE_MARGIN slower than their mean: the run also pays its progress and checkpoint
# callbacks. A larger margin would not make the plan safe, only shorter (1.25: the second run
# above finished 62 s early). What the machine does later no probe at the start can see: the
# plan is made once and recorded, so that a rerun replays the same steps.
PROBE_CHUNKS = 12
PROBE_SHARE = 0.05
PACE_MARGIN = 1.05


def run_probe(
    config: TrainConfig, x_train, y_train, callbacks=(), distribution=None, steps=None, should_stop=None
) -> PaceProbe:
    """Train the run's first steps with the schedule held at its starting rate, timing each chunk.

    ``steps``: that many (a rerun replaying a recorded probe); None: as many as the time budget's
    probe takes (PROBE_CHUNKS, PROBE_SHARE). Processes of one job probe exactly PROBE_CHUNKS
    chunks each: a clock could stop one process's probe before another's, and their steps are
    collective. ``callbacks``: the run's stateful ones, whose state the run continues with.
    ``should_stop``: see PaceProbe.
    """
    x_fit = _fit_images(config, x_train)
    model = build(config, total_steps=None, x_train=x_fit)
    per_epoch = -(-len(x_fit) // config.batch_size)
    chunk = min(engine.default_chunk_steps(model), per_epoch)  # as engine.fit chunks an epoch
    share = PROBE_SHARE if parallel.process_count() == 1 and steps is None else 0.0
    probe = PaceProbe(-(-per_epoch // chunk), PROBE_CHUNKS, share * (config.time_budget or 0.0), steps, should_stop)
    bound = steps or int((config.time_budget or 0.0) * 1000) + PROBE_CHUNKS * chunk  # the budget at 1 ms a step
    probe.model, probe.started = model, time.perf_counter()
    with contextlib.suppress(ProbeDone):  # how the probe ends its fit
        _fit(model, config, x_train, y_train, epochs=-(-bound // per_epoch), max_steps=bound, callbacks=callbacks,
             checkpoint=probe, distribution=distribution)  # fmt: skip
    probe.ended = time.perf_counter()
    return probe


def plan_steps(config: TrainConfig, probe: PaceProbe, x_test, started: float) -> int:
    """How many training steps in all fit in ``config.time_budget`` seconds counted from ``started``.

    From the probe's timed chunks (the first includes compilation; the mean step of the others,
    times PACE_MARGIN, is the step time) and the test-set forward pass with the run's views,
    measured now: the probe's steps, plus what is left after what has been spent, a second
    compilation (the run's schedule differs from the probe's), the evaluation and FINISH_SECONDS,
    divided by the step time. Recorded in config.json as ``steps``: a rerun replays it. Processes
    of one job train the same steps, process 0's plan.
    """
    t, done = np.array(probe.times), np.array(probe.steps_at)
    # The steady chunks (the first one compiled); just the first if a callback ended the probe there.
    measured_s = float((t[-1] - t[0]) / (done[-1] - done[0]) if len(t) > 1 else (t[0] - probe.started) / done[0])
    compile_s = max(0.0, t[0] - probe.started - measured_s * done[0])
    step_s = PACE_MARGIN * measured_s
    views = augment.with_identity(config.eval_views)  # as engine.evaluate computes them
    sample = x_test[: engine.INFER_BATCH]
    t0 = time.perf_counter()
    engine.predict_views(probe.model, sample, views)  # compilation and one batch
    t1 = time.perf_counter()
    engine.predict_views(probe.model, sample, views)  # one batch
    batch_s = time.perf_counter() - t1
    eval_s = (t1 - t0 - batch_s) + batch_s * len(x_test) / len(sample)
    left = config.time_budget - (time.perf_counter() - started) - compile_s - eval_s - FINISH_SECONDS
    probe.estimate = {"step_ms": round(1000 * step_s, 3), "compile_s": round(compile_s, 2),
                      "evaluate_s": round(eval_s, 2), "train_s": round(left, 1)}  # fmt: skip
    if left < step_s:
        needed = config.time_budget - left
        raise FmnistError(
            f"a time budget of {config.time_budget:.0f} s leaves no time to train here: measuring, compiling and "
            f"evaluating alone take ~{needed:.0f} s on this machine. Give a larger --time-budget (or --epochs N)."
        )
    return parallel.agree(probe.state.steps + int(left / step_s))


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
        return _train(config, None, callbacks, dataset, started)
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
        return _train(config, out, callbacks, dataset, started, should_stop)


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
        return _train(config, out, callbacks, dataset, started, should_stop, resume_from=state)


def _over(out: Path) -> str:
    return f"start over with `fmnist train --restart --out {out}` and the run's settings"


def resume_config(out: Path) -> TrainConfig:
    """The config an interrupted training of run ``out`` was started with (a CheckpointError if unreadable)."""
    try:
        return load_config(runs.partial_dir(out))
    except FmnistError as e:
        raise CheckpointError(f"{out} cannot be resumed: {e} ({_over(out)}).") from e


def _run_callbacks(config: TrainConfig, extra) -> tuple[EpochTimer, list[keras.callbacks.Callback]]:
    """A run's callbacks: the config's, an EpochTimer (returned first, to read) and ``extra``."""
    timer = EpochTimer()
    return timer, [*config_callbacks(config), timer, *extra]


def _train(config, out, callbacks, dataset, started, should_stop=None, resume_from=None) -> TrainResult:
    """train() and resume(): ``out`` (locked by the caller) trains through its partial_dir."""
    started = time.perf_counter() if started is None else started
    (x_train, y_train), (x_test, y_test) = dataset or data.load_data(config.data_dir)
    if config.train_limit:
        x_train, y_train = x_train[: config.train_limit], y_train[: config.train_limit]
    phases = {"start": time.perf_counter() - started}  # seconds spent before train() (CLI: imports, data)
    distribution = parallel.data_parallel(config.devices)
    # The probe's fit runs the run's callbacks that carry state (see fit_state), which the run continues with.
    probe_callbacks = _run_callbacks(config, [cb for cb in callbacks if fit_state.has_state(cb)])[1]
    probe, probe_seconds = None, 0.0
    if config.time_budget is not None and config.steps is None:
        t = time.perf_counter()
        probe = run_probe(config, x_train, y_train, probe_callbacks, distribution, should_stop=should_stop)
        steps = plan_steps(config, probe, x_test, started)
        config = dataclasses.replace(config, steps=steps, probe_steps=probe.state.steps)
        phases["plan"], probe_seconds = time.perf_counter() - t, probe.seconds
    stage = runs.partial_dir(out) if out is not None else None
    checkpointer = None
    if stage is not None:
        if resume_from is None and not (stage / runs.CONFIG_FILE).is_file():
            stage.mkdir(parents=True, exist_ok=True)  # the config as run (planned steps included) comes first
            runs.write_json(stage / runs.CONFIG_FILE, config.to_json())
        checkpointer = Checkpointer(out, should_stop)
    start = time.perf_counter()
    if config.probe_steps and resume_from is None:  # the run continues from its probe's state
        if probe is None:  # a rerun of a recorded plan: train the probe's steps as the run did
            probe = run_probe(config, x_train, y_train, probe_callbacks, distribution, steps=config.probe_steps)
        resume_from = probe.state
    x_fit = _fit_images(config, x_train)
    per_epoch = -(-len(x_fit) // config.batch_size)
    epochs = config.epochs if config.steps is None else -(-config.steps // per_epoch)
    model = build(config, total_steps=config.steps or epochs * per_epoch, x_train=x_fit)
    timer, run_callbacks = _run_callbacks(config, callbacks)
    history = _fit(
        model, config, x_train, y_train, epochs=epochs, max_steps=config.steps, callbacks=run_callbacks,
        distribution=distribution, checkpoint=checkpointer, resume_from=resume_from,
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
        with runs.staged_dir(out, stage=stage) as staged:  # all or nothing: a previous run there survives
            save_run(staged, model, config, hist, metrics, train_seconds, phases, plan)
        # Only now, with the run in place: a kill a moment earlier still finds the checkpoint to finish from.
        (out / runs.CHECKPOINT_FILE).unlink(missing_ok=True)
    return TrainResult(model, hist, metrics, train_seconds, out, config, probs, phases, plan)


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
            "device": str(jax.devices()[0].device_kind),
            "processes": jax.process_count(),  # each training ``devices`` devices (data-parallel when > 1 in all)
            **({"plan": plan} if plan else {}),
        },
    )
    runs.save_history(out, history)
    runs.write_json(out / runs.METRICS_FILE, metrics)
    runs.save_figure(out / runs.FIGURES_DIR / "learning_curves.png", plots.learning_curves(history))


def load_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig a run directory records (see CONFIG_SCHEMA); a damaged or foreign file is a RunError."""
    path = Path(run_dir) / runs.CONFIG_FILE
    return config_from_json(runs.read_json(path), path)


def config_from_json(record: dict, where: Path | str = runs.CONFIG_FILE) -> TrainConfig:
    """A config.json's content -> TrainConfig: schema checked, older schemas migrated, nothing dropped silently."""
    if not isinstance(record, dict):
        raise RunError(f"{where} does not hold a JSON object: it is not an fmnist config.")
    schema = record.get("schema", 0)
    if not isinstance(schema, int) or not 0 <= schema <= CONFIG_SCHEMA:
        raise RunError(
            f"{where} has config schema {schema!r}; this fmnist reads schemas 0-{CONFIG_SCHEMA}: upgrade it."
        )
    fields = {k: v for k, v in record.items() if k not in RUN_RECORD_KEYS}
    newer = {name for since, names in FIELDS_SINCE.items() if since > schema for name in names}
    missing = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(fields) - newer)
    if schema >= 1 and missing:
        raise RunError(f"{where} lacks the config fields {missing}: it was not written whole; retrain the run.")
    try:
        return TrainConfig.from_dict(fields)  # fields newer than the file take their defaults (see CONFIG_SCHEMA)
    except FmnistError as e:
        raise RunError(f"{where}: {e}") from e
