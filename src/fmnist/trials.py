"""Run many trainings: in spawned worker processes here, or as Ray tasks on a cluster.

    trials = [Trial(TrainConfig(epochs=1, seed=s)) for s in range(3)]
    results = run_trials(trials, workers=2)                           # local worker processes
    results = run_trials(trials, executor="ray", ray_address="auto")  # a running Ray cluster

Experiments and sweeps both hand this module a list of ``Trial``s and read back one
JSON-ready dict per trial. Why it is built this way:
- One seam: the executor is anything with ``concurrent.futures``' interface. ``local`` is a
  ``ProcessPoolExecutor`` of spawned processes, ``ray`` a thin ``RayExecutor`` whose every
  call is a Ray task with ``num_cpus=1`` (Ray is an optional extra, imported only here and
  only when asked for). Everything else — ordering, progress, failures — is shared.
- Same numbers whichever executor ran them: a trial's result depends only on its config
  and seed, provided every worker runs XLA the same way. Workers that share the machine
  run XLA single-threaded (SINGLE_THREAD_XLA); Ray tasks always do, set through the task's
  own environment before JAX starts, so a local run with several workers and a Ray run
  give identical numbers.
- Workers share JAX's persistent compilation cache (under fmnist's cache folder), so the
  second seed of a model loads its compiled programs instead of compiling them.
- A trial that raises is recorded as ``{"failed": "...why..."}`` and the others go on;
  the caller decides what a failure means (experiments stop, sweeps list it).
- Resumable: with a ``TrialStore``, each finished trial's result is written (atomically) as it
  finishes, under a digest of everything that decides it; a rerun after a kill runs only the
  trials that have no result yet, and reads the others back unchanged.
- Only the calling process writes files: workers return numbers (and, for trials that
  keep a run directory, the directory's files), so a Ray task on another host writes
  nothing there.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import itertools
import json
import logging
import math
import multiprocessing
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from fmnist import fit_inputs, runs
from fmnist.data import IMAGE_SHAPE
from fmnist.errors import FmnistError, ModelError, RunError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig

EXECUTORS = ("local", "ray")
# Measured on the 2-core machine, `fmnist experiment all --seeds 3` from a cold compilation cache:
# 1 worker (XLA threads) 335 s; 2 workers, XLA single-threaded each, 303 s; 2 workers with XLA's own
# threads, 302 s. One training runs ~1.75x faster on both cores than on one, so two at once gain only
# ~10%; single-threaded workers are kept so they don't oversubscribe the cores. More workers than
# cores only adds contention.
DEFAULT_WORKERS = min(2, os.cpu_count() or 1)
SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"  # per worker when >1
RAY_TASK_CPUS = 1  # each Ray task is one training on one core (XLA single-threaded to match)
RAY_EXTRA = "pip install 'fmnist[ray]'"
# Passed to every Ray task's environment, where the driver has them: the backend, fmnist's cache
# folder and the import path (a source checkout run with PYTHONPATH).
RAY_FORWARDED_ENV = ("KERAS_BACKEND", "FMNIST_CACHE_DIR", "PYTHONPATH")
CHECK_IMAGES = 1000  # images handed to fit() by a check-only trial (all ten classes occur in them)
TRIALS_DIR = ".trials"  # under an experiment's or sweep's folder: trials finished so far (a rerun continues)
COMPILE_CACHE_DIR = "xla"  # JAX's persistent compilation cache, under fmnist's cache folder (see data.cache_dir)
# Trial cost model (seconds), for longest-first ordering and the time-left estimate only;
# fitted to the seed model (~1 s/epoch) and the 1024-wide one (~10 s/epoch) on the 2-core machine.
COMPILE_S = 2.5  # building and compiling a model, once per trial
EPOCH_S_PER_PARAM = 1.1e-5  # seconds per 60,000-image epoch per trainable parameter (Dense, batch 32)
MIN_EPOCH_S = 0.4  # small models don't get faster than this per full epoch
FULL_TRAIN = 60_000  # images in the full training set, for scaling the cost of train_limit runs
STORE_FORMAT = 1  # bump when a stored result's layout changes: older results are then run again
KEY_HEX = 24  # hex digits of a trial's key (96 bits of SHA-256): its result's file name


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


def held_out(config: TrainConfig, x, y):
    """The validation images ``config`` holds out: the last fraction of its training images, as fit() cuts them."""
    if config.train_limit:
        x, y = x[: config.train_limit], y[: config.train_limit]
    cut = fit_inputs.train_size(len(x), config.validation_split)
    return x[cut:], y[cut:]


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


# --------------------------------------------------------------------------- finished trials, kept
def data_fingerprint(dataset: tuple) -> str:
    """SHA-256 of the arrays a trial trains and tests on: a result is reused only on the same data."""
    digest = hashlib.sha256()
    for array in (a for split in dataset for a in split):
        digest.update(f"{array.dtype}{array.shape}".encode())
        digest.update(memoryview(array).cast("B") if array.flags.c_contiguous else array.tobytes())
    return digest.hexdigest()


class TrialStore:
    """Finished trials' results in ``folder``, one JSON file each, named by the trial's key.

    The key is a digest of everything that decides a result: the full TrainConfig (seed included),
    what the trial measures (test_at, check_only, whether it keeps a run directory) and the data's
    fingerprint. A changed setting is therefore a new trial, never a stale result. A result is
    written to a temporary name and renamed, so a kill leaves either the whole file or none.
    ``hits``/``writes`` count the results this store served and kept.
    """

    def __init__(self, folder: Path, data: str = ""):
        self.folder, self.data = Path(folder), data
        self.hits = self.writes = 0

    def identity(self, trial: Trial) -> dict:
        """What decides ``trial``'s result, JSON-normalised (tuples as lists)."""
        what = {"config": trial.config.to_dict(), "test_at": list(trial.test_at), "check_only": trial.check_only,
                "keeps_run": trial.run_dir is not None, "data": self.data, "format": STORE_FORMAT}  # fmt: skip
        return json.loads(json.dumps(what))

    def key(self, trial: Trial) -> str:
        canonical = json.dumps(self.identity(trial), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:KEY_HEX]

    def path(self, trial: Trial) -> Path:
        return self.folder / f"{self.key(trial)}.json"

    def get(self, trial: Trial) -> dict | None:
        """The kept result of ``trial``; None when there is none (or it is unreadable, or its run directory is gone)."""
        if trial.run_dir is not None and not (Path(trial.run_dir) / runs.CONFIG_FILE).is_file():
            return None
        try:
            saved = json.loads(self.path(trial).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(saved, dict) or saved.get("trial") != self.identity(trial) or "result" not in saved:
            return None
        self.hits += 1
        return saved["result"]

    def put(self, trial: Trial, result: dict) -> Path:
        self.writes += 1
        return runs.write_json(self.path(trial), {"trial": self.identity(trial), "result": result})

    def clear(self) -> None:
        """Forget every kept result: the job is complete (an experiment's report is written), or ``--restart``."""
        shutil.rmtree(self.folder, ignore_errors=True)


# --------------------------------------------------------------------------- worker processes
_worker_dataset: tuple | None = None  # set in each worker process by _init_worker; None in the parent


def _init_worker(xla_flags: str, dataset: tuple | None, data_dir: str | None) -> None:
    """Runs first in each worker: thread settings before XLA starts, then the dataset, once."""
    global _worker_dataset
    if xla_flags and xla_flags not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    from fmnist import data, engine

    # Seeds of one variant compile the same programs: JAX's persistent cache turns a ~3 s compile into
    # a ~0.1 s load. Only in worker processes, which are ours; a caller's own process is left alone.
    engine.enable_compilation_cache(data.cache_dir() / COMPILE_CACHE_DIR)
    _worker_dataset = dataset if dataset is not None else data.load_data(data_dir)


def _run_in_worker(trial: Trial) -> dict:
    return run_trial(trial, _worker_dataset)


def import_ray():
    """The ``ray`` module, or a one-line error naming the extra that installs it."""
    try:
        import ray
    except ImportError as e:
        raise FmnistError(f"the ray executor needs Ray, which is not installed: {RAY_EXTRA}.") from e
    return ray


_ray_setup: object = None  # in a Ray worker process: the setup its initializer last ran with


def _ray_call(setup: tuple, fn: Callable, *args):
    """A Ray task's body: run the executor's initializer once per worker process, then ``fn(*args)``."""
    global _ray_setup
    token, initializer, initargs = setup
    if _ray_setup != token:
        initializer(*initargs)
        _ray_setup = token
    return fn(*args)


class RayExecutor(cf.Executor):
    """``concurrent.futures.Executor`` over Ray: every ``submit`` is one Ray task with ``num_cpus=1``.

    Joins the cluster at ``address`` (``"auto"``: the one ``ray start`` runs on this machine), or
    starts a private local instance of ``num_cpus`` CPUs when there is none; a Ray already
    initialised by the caller is used as it is. ``env`` is every task's environment, set before
    the worker process starts (XLA reads its threading flags once, at start). The initializer's
    arguments (the dataset) go into Ray's object store once, not once per task.
    """

    def __init__(self, initializer, initargs=(), *, env=None, address=None, num_cpus=None):
        ray = import_ray()
        self._ray, self._pending = ray, []
        self._owner = not ray.is_initialized()
        joining = address is not None or bool(os.environ.get("RAY_ADDRESS"))  # a cluster sets its own CPUs
        if self._owner:
            try:
                ray.init(
                    address=address, num_cpus=None if joining else num_cpus, include_dashboard=False,
                    log_to_driver=False, logging_level=logging.ERROR,
                )  # fmt: skip
            except (ConnectionError, RuntimeError, ValueError) as e:
                raise RunError(
                    f"could not join a Ray cluster at {address!r} ({e}): start one with `ray start --head` "
                    "(or leave out --ray-address to start one here)."
                ) from e
        self._setup = ray.put((os.urandom(8).hex(), initializer, tuple(initargs)))
        options = {"num_cpus": RAY_TASK_CPUS, "max_retries": 0}
        self._task = ray.remote(**options)(_ray_call).options(runtime_env={"env_vars": dict(env or {})})

    def submit(self, fn, /, *args, **kwargs):
        ref = self._task.remote(self._setup, fn, *args, **kwargs)
        self._pending.append(ref)
        return ref.future()

    def shutdown(self, wait=True, *, cancel_futures=False):
        if cancel_futures:
            for ref in self._pending:
                self._ray.cancel(ref, force=True)
        self._pending = []
        if self._owner and self._ray.is_initialized():
            self._ray.shutdown()


def ray_env(xla_flags: str) -> dict[str, str]:
    """Environment of every Ray task: XLA single-threaded like the local workers, plus RAY_FORWARDED_ENV."""
    env = {k: os.environ[k] for k in RAY_FORWARDED_ENV if os.environ.get(k)}
    env["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    return env


def make_executor(
    executor: str, workers: int, xla_flags: str, dataset: tuple | None, data_dir: str | None, ray_address=None
) -> cf.Executor:
    """The executor named ``executor`` ('local' or 'ray'), its workers set up to run ``_run_in_worker``."""
    if executor == "local":
        return cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(xla_flags, dataset, data_dir),
        )
    if executor == "ray":
        # Threading comes from the task's environment; the initializer loads the data and the compile cache.
        return RayExecutor(
            _init_worker, ("", dataset, data_dir), env=ray_env(xla_flags), address=ray_address, num_cpus=workers
        )


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
