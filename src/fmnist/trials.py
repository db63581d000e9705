"""Run many trainings: in spawned worker processes here, or as Ray tasks on a cluster.

    trials = [Trial(TrainConfig(epochs=1, seed=s)) for s in range(3)]
    results = run_trials(trials, workers=2)                           # local worker processes
    results = run_trials(trials, executor="ray", ray_address="auto")  # a running Ray cluster
    trial_record(results[0])                                          # its numbers, as the reports show them

Experiments and sweeps both hand this module a list of ``Trial``s and read back one
JSON-ready dict per trial. Why it is built this way:
- Where trials run is one seam, ``fmnist.trial_workers`` (worker processes or Ray tasks, XLA
  threading set alike in both); ordering, progress and failures are here, shared by both, so
  a trial's result depends only on its config and seed, whichever executor ran it.
- A trial that raises is recorded as ``{"failed": "...why..."}`` and the others go on;
  the caller decides what a failure means (experiments stop, sweeps list it).
- Resumable: with a ``TrialStore`` (``fmnist.trial_store``), each finished trial's result is kept
  as it finishes; a rerun after a kill runs only the trials that have no result yet.
- Only the calling process writes files: workers return numbers (and, for trials that
  keep a run directory, the directory's files), so a Ray task on another host writes
  nothing there.
- One reading of a trial's numbers (``trial_record``) and one validation split
  (``VALIDATION_SPLIT``) for experiments and sweeps alike.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import math
import os
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fmnist import fit_inputs, runs, trial_workers
from fmnist.data import IMAGE_SHAPE
from fmnist.errors import FmnistError, ModelError, RunError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig

# Re-exported: importable from fmnist.trials as before they had modules of their own.
from fmnist.trial_store import KEY_HEX, STORE_FORMAT, TRIALS_DIR, TrialStore, data_fingerprint  # noqa: F401
from fmnist.trial_workers import COMPILE_CACHE_DIR, SINGLE_THREAD_XLA, make_executor  # noqa: F401

EXECUTORS = ("local", "ray")
# Two workers by default: one training alone uses both cores well, and a second one at once still
# gains a little (BENCHMARKS.md, "fmnist experiment workers"); more workers than cores only add contention.
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
VALIDATION_SPLIT = 0.1  # the last 10% of the training images, held out where an experiment or a sweep needs them
CHECK_IMAGES = 1000  # images handed to fit() by a check-only trial (all ten classes occur in them)
# Trial cost model (seconds), for longest-first ordering and the time-left estimate only;
# fitted to the seed model and the 1024-wide one on the 2-core machine.
COMPILE_S = 2.5  # building and compiling a model, once per trial
EPOCH_S_PER_PARAM = 1.1e-5  # seconds per 60,000-image epoch per trainable parameter (Dense, batch 32)
MIN_EPOCH_S = 0.4  # small models don't get faster than this per full epoch
FULL_TRAIN = 60_000  # images in the full training set, for scaling the cost of train_limit runs


# --------------------------------------------------------------------------- numbers over seeds
@dataclass(frozen=True)
class Stat:
    """Mean and sample standard deviation of one number over seeds."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        values = [float(v) for v in values]
        return cls(statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0, len(values))

    def fmt(self, digits: int = 4, scale: float = 1.0, unit: str = "") -> str:
        if digits == 0 and self.std == 0:
            return f"{self.mean * scale:,.0f}{unit}"
        spread = f" ± {self.std * scale:.{digits}f}" if self.n > 1 else ""
        return f"{self.mean * scale:.{digits}f}{spread}{unit}"


def differs(a: Stat, b: Stat) -> bool:
    """Whether ``a`` and ``b`` differ by more than the seed-to-seed spread (their mean ± std don't overlap)."""
    return abs(a.mean - b.mean) > a.std + b.std


def aggregate(records: dict[str, list[dict]]) -> dict[str, dict[str, Stat]]:
    """Per variant, a Stat for every number that all its per-seed records have."""
    out = {}
    for name, recs in records.items():
        keys = [k for k, v in recs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)] if recs else []
        out[name] = {k: Stat.of([r[k] for r in recs]) for k in keys if all(k in r for r in recs)}
    return out


# --------------------------------------------------------------------------- one trial
@dataclass(frozen=True)
class Trial:
    """One training (or one check) that one or more results read their numbers from."""

    config: TrainConfig  # seed set; experiments: epochs = the longest variant sharing this run
    test_at: tuple[int, ...] = ()  # earlier epochs (1-based) after which the test set is evaluated too
    check_only: bool = False  # build the model and run fit()'s pre-training check; don't train
    run_dir: str | None = None  # keep the run: the caller writes this run directory from the worker's files

    @property
    def cost(self) -> float:
        """Estimated seconds (for longest-first ordering and the time-left estimate)."""
        if self.check_only:
            return COMPILE_S
        share = min(self.config.train_limit or FULL_TRAIN, FULL_TRAIN) * (1 - self.config.validation_split) / FULL_TRAIN
        epoch_s = max(MIN_EPOCH_S, EPOCH_S_PER_PARAM * dense_params(self.config.model))
        if self.config.steps is not None:
            return COMPILE_S + self.config.steps * self.config.batch_size / FULL_TRAIN * epoch_s
        return COMPILE_S + self.config.epochs * share * epoch_s

    def describe(self) -> str:
        what = "check" if self.check_only else f"{self.config.epochs} epochs"
        return f"{self.config.model.describe()}, {what}, seed {self.config.seed}"


def dense_params(spec: ModelSpec) -> int:
    """Trainable parameters of an MLP spec, without building it (a CNN is counted by its Dense part)."""
    widths = [math.prod(IMAGE_SHAPE), *spec.hidden, spec.output_units]
    return sum(a * b + b for a, b in itertools.pairwise(widths))


def run_trial(trial: Trial, dataset: tuple | None = None) -> dict:
    """Train (or check) one trial; returns JSON-ready numbers: history, test metrics, snapshots, params.

    A trial with ``run_dir`` also returns ``validation`` (the final model on the held-out images)
    and ``run_files`` (relative path -> bytes of the run directory it trained), for the caller to write.
    """
    from fmnist import data

    dataset = dataset or data.load_data(trial.config.data_dir)
    if trial.check_only:
        return _check(trial.config, dataset)
    from fmnist import engine, train

    (x_train, y_train), (x_test, y_test) = dataset
    snap = _test_at_callback(trial.test_at, x_test, y_test)
    with tempfile.TemporaryDirectory(prefix="fmnist-trial-") as tmp:
        out = Path(tmp) / "run" if trial.run_dir else None
        result = train.train(trial.config, out, callbacks=[snap], dataset=dataset)
        files = {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()} if out else {}
    outcome = {
        "history": result.history,
        "metrics": result.metrics,
        "snapshots": snap.snapshots,
        "params": int(result.model.count_params()),
        "fit_seconds": result.train_seconds,
    }
    if trial.run_dir:
        x_val, y_val = held_out(trial.config, x_train, y_train)
        if len(x_val):
            val = engine.evaluate(result.model, x_val, y_val, views=trial.config.eval_views)
            outcome["validation"] = {"accuracy": val["accuracy"], "loss": val["loss"], "n": len(x_val)}
        outcome["run_files"] = files
    return outcome


def _run_in_worker(trial: Trial) -> dict:
    return run_trial(trial, trial_workers.worker_dataset())


def held_out(config: TrainConfig, x, y):
    """The validation images ``config`` holds out: the last fraction of its training images, as fit() cuts them."""
    if config.train_limit:
        x, y = x[: config.train_limit], y[: config.train_limit]
    cut = fit_inputs.train_size(len(x), config.validation_split)
    return x[cut:], y[cut:]


def trial_record(outcome: dict, epochs: int | None = None) -> dict:
    """A trained trial's numbers after ``epochs`` of it (default: all it ran), as experiments and sweeps report them.

    Test accuracy and loss (at an earlier epoch: from the trial's ``test_at`` snapshot), the last
    epoch's training loss and accuracy, the steady seconds per epoch (the median from epoch 2 on:
    epoch 1 includes compiling), the history's validation numbers where it held images out, and
    the history itself, cut at ``epochs``.
    """
    full = outcome["history"]
    history = {k: v[:epochs] for k, v in full.items()}
    n = len(history["loss"])
    metrics = outcome["metrics"] if n == len(full["loss"]) else outcome["snapshots"][str(n)]
    seconds = history["seconds"]
    steady = statistics.median(seconds[1:]) if n > 1 else seconds[0]
    record = {
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "epochs_run": n,
        "train_loss": history["loss"][-1],
        "train_accuracy": history["accuracy"][-1],
        "seconds_per_epoch": steady,
        "compile_seconds": max(0.0, seconds[0] - steady),
        "train_seconds": sum(seconds),
        "params": outcome["params"],
    }
    if history.get("val_loss"):
        best = min(range(n), key=history["val_loss"].__getitem__)
        record |= {
            "val_loss": history["val_loss"][-1],
            "val_accuracy": history["val_accuracy"][-1],
            "best_val_epoch": best + 1,
            "best_val_loss": history["val_loss"][best],
            "gap": history["val_loss"][-1] - history["loss"][-1],
        }
    return record | {"history": history}


def _test_at_callback(epochs: Sequence[int], x_test, y_test):
    """A Keras callback that evaluates the test set after the given (1-based) epochs."""
    from fmnist import engine
    from fmnist._backend import keras

    class TestAt(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.snapshots: dict[str, dict] = {}

        def on_epoch_end(self, epoch, logs=None):
            if epoch + 1 in epochs:
                self.snapshots[str(epoch + 1)] = engine.evaluate(self.model, x_test, y_test)

    return TestAt()


def _check(config: TrainConfig, dataset: tuple) -> dict:
    """Hand the model to fit() as the tutorial would; return the explained error, or None if it trained."""
    from fmnist import engine, models

    (x_train, y_train), _ = dataset
    model = models.build_model(config.model, x_train=x_train[:CHECK_IMAGES])
    model = models.compile_model(model, config.optimizer, config.learning_rate)
    try:
        engine.fit(model, x_train[:CHECK_IMAGES], y_train[:CHECK_IMAGES], epochs=1, seed=config.seed, verbose=0)
    except ModelError as e:
        return {"error": str(e)}
    return {"error": None}


# --------------------------------------------------------------------------- many trials
@dataclass(frozen=True)
class Progress:
    done: int  # trials finished
    total: int
    work_done: float  # estimated seconds of the finished trials (see Trial.cost)
    work_total: float
    last: str = ""  # what just finished
    kept: int = 0  # trials not run because a TrialStore had their results (not counted in done/total)


def _failure(error: BaseException) -> str:
    """One line for a failed trial; a Ray task's error is reported as the error the task raised."""
    cause = getattr(error, "cause", None) if type(error).__name__.startswith("RayTaskError") else None
    error = cause or error
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def run_trials(
    trials: Sequence[Trial],
    workers: int = DEFAULT_WORKERS,
    progress: Callable[[Progress], None] | None = None,
    dataset: tuple | None = None,
    data_dir: str | None = None,
    xla_flags: str | None = None,
    *,
    executor: str = "local",
    ray_address: str | None = None,
    store: TrialStore | None = None,
) -> list[dict]:
    """Run every trial and return one result each, in order; a trial that raised is ``{"failed": why}``.

    ``executor='local'``: ``workers=0`` runs the trials in this process, otherwise in that many
    spawned processes. ``executor='ray'``: each trial a Ray task on the cluster at ``ray_address``
    (or a local Ray of ``workers`` CPUs). ``xla_flags`` (added to each worker's XLA_FLAGS) defaults
    to single-threaded XLA for Ray and for several local workers, and to XLA's own threading for
    one (benchmarks/experiment_workers.py compares them). Trials with a ``run_dir`` have it written
    here as they finish. With a ``store``, trials it holds are not run again, and every other
    trial's result is stored as soon as it finishes (failures are not: a rerun tries them again).
    """
    if executor not in EXECUTORS:
        raise FmnistError(f"unknown executor {executor!r}: use {' or '.join(EXECUTORS)}.")
    results: list[dict | None] = [store.get(t) if store else None for t in trials]
    todo = [i for i, r in enumerate(results) if r is None]
    kept = len(trials) - len(todo)
    work_total = sum(trials[i].cost for i in todo)
    done, work_done = 0, 0.0

    def finished(i: int, result: dict) -> None:
        nonlocal done, work_done
        if trials[i].run_dir and "run_files" in result:
            write_run(Path(trials[i].run_dir), result.pop("run_files"))
        if store is not None and "failed" not in result:
            store.put(trials[i], result)  # after its run directory: a kept result always has one
        results[i], done, work_done = result, done + 1, work_done + trials[i].cost
        if progress:
            progress(Progress(done, len(todo), work_done, work_total, trials[i].describe(), kept))

    if progress:
        progress(Progress(0, len(todo), 0.0, work_total, kept=kept))
    if not todo:
        return results
    if executor == "local" and workers <= 0:
        from fmnist import data

        dataset = dataset or data.load_data(data_dir)
        for i in todo:
            trial = trials[i]
            try:
                result = run_trial(trial, dataset)
            except Exception as e:
                result = {"failed": _failure(e)}
            finished(i, result)
        return results
    several = executor == "ray" or workers > 1
    flags = xla_flags if xla_flags is not None else SINGLE_THREAD_XLA if several else ""
    pool = make_executor(executor, max(1, workers), flags, dataset, data_dir, ray_address)
    try:
        futures = {pool.submit(_run_in_worker, trials[i]): i for i in todo}
        for future in cf.as_completed(futures):
            try:
                result = future.result()
            except cf.process.BrokenProcessPool:
                raise
            except Exception as e:
                result = {"failed": _failure(e)}
            finished(futures[future], result)
    except cf.process.BrokenProcessPool as e:
        raise RunError(f"a trial's worker process died ({e}); if memory is short, run with --workers 1.") from e
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    return results


def write_run(run_dir: Path, files: dict[str, bytes]) -> Path:
    """Write a run directory from a worker's files, whole or not at all (see runs.staged_dir)."""
    with runs.staged_dir(run_dir) as stage:
        for name, content in files.items():
            runs.write_bytes(stage / name, content)
    return run_dir
