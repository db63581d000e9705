"""Where trials run: spawned worker processes on this machine, or Ray tasks on a cluster.

    pool = make_executor("local", workers=2, xla_flags=SINGLE_THREAD_XLA, dataset=None, data_dir=None)
    future = pool.submit(fn, trial)  # fn reads worker_dataset(), loaded once per worker

``fmnist.trials`` hands this module nothing but a function and its arguments; why it is built so:
- One seam: an executor is anything with ``concurrent.futures``' interface. ``local`` is a
  ``ProcessPoolExecutor`` of spawned processes, ``ray`` a thin ``RayExecutor`` whose every call is
  a Ray task with ``num_cpus=1`` (Ray is an optional extra, imported only here and only when asked
  for). Ordering, progress and failures are ``fmnist.trials``' and shared by both.
- Same numbers whichever executor ran them, provided every worker runs XLA the same way: workers
  that share the machine run XLA single-threaded (SINGLE_THREAD_XLA); Ray tasks always do, set
  through the task's own environment before JAX starts. One training alone uses the cores well,
  so two single-threaded trials at once gain little over one, but they don't oversubscribe the
  cores (BENCHMARKS.md, "fmnist experiment workers", has the measurement).
- Workers share JAX's persistent compilation cache (under fmnist's cache folder), so the second
  seed of a model loads its compiled programs instead of compiling them.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import multiprocessing
import os
from collections.abc import Callable

from fmnist.errors import FmnistError, RunError

SINGLE_THREAD_XLA = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"  # per worker when >1
RAY_TASK_CPUS = 1  # each Ray task is one training on one core (XLA single-threaded to match)
RAY_EXTRA = "pip install 'fmnist[ray]'"
# Passed to every Ray task's environment, where the driver has them: the backend, fmnist's cache
# folder and the import path (a source checkout run with PYTHONPATH).
RAY_FORWARDED_ENV = ("KERAS_BACKEND", "FMNIST_CACHE_DIR", "PYTHONPATH")
COMPILE_CACHE_DIR = "xla"  # JAX's persistent compilation cache, under fmnist's cache folder (see data.cache_dir)

_worker_dataset: tuple | None = None  # set in each worker process by _init_worker; None in the parent


def _init_worker(xla_flags: str, dataset: tuple | None, data_dir: str | None, shared: bool = False) -> None:
    """Runs first in each worker: thread settings before XLA starts, then the dataset, once.

    ``shared``: other workers share this machine. On a GPU, JAX otherwise takes 75% of its memory in
    every process at its start, so a second worker would find too little left; each then takes
    what it uses (no effect on the CPU). A setting of the caller's own is kept.
    """
    global _worker_dataset
    if xla_flags and xla_flags not in os.environ.get("XLA_FLAGS", ""):
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {xla_flags}".strip()
    if shared:
        os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")
    from fmnist import data, engine

    # Seeds of one variant compile the same programs: JAX's persistent cache loads them instead.
    # Only in worker processes, which are ours; a caller's own process is left alone.
    engine.enable_compilation_cache(data.cache_dir() / COMPILE_CACHE_DIR)
    _worker_dataset = dataset if dataset is not None else data.load_data(data_dir)


def worker_dataset() -> tuple | None:
    """The dataset this worker process loaded at its start (None outside a worker)."""
    return _worker_dataset


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
    """The executor named ``executor`` ('local' or 'ray'), each worker set up with the dataset (worker_dataset)."""
    if executor == "local":
        return cf.ProcessPoolExecutor(
            max_workers=workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(xla_flags, dataset, data_dir, workers > 1),
        )
    if executor == "ray":
        # Threading comes from the task's environment; the initializer loads the data and the compile cache.
        return RayExecutor(
            _init_worker, ("", dataset, data_dir, workers > 1), env=ray_env(xla_flags), address=ray_address,
            num_cpus=workers,
        )  # fmt: skip
