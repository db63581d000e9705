"""One training over several devices and processes: joining the job and choosing the devices.

``engine.fit`` trains data-parallel under a ``keras.distribution.DataParallel``; this module
builds one for ``fmnist train --devices N`` and joins a multi-process job the way Keras does,
from its environment variables (the same on every host but the process id)::

    KERAS_DISTRIBUTION_JOB_ADDRESSES=10.0.0.1:1234   # process 0's address and a free port
    KERAS_DISTRIBUTION_NUM_PROCESSES=2
    KERAS_DISTRIBUTION_PROCESS_ID=0                  # 1 on the other host

``--devices N`` counts the devices of each process: two processes with ``--devices 2`` train
on four. On a CPU, N devices are simulated (``jax_num_cpu_devices``); they share the
machine's cores, so they show that the maths is right, not a speed-up. CPU processes
all-reduce over gloo (TCP).
"""

from __future__ import annotations

import contextlib
import os

from fmnist.errors import DistributionError

ENV_ADDRESSES = "KERAS_DISTRIBUTION_JOB_ADDRESSES"
ENV_PROCESSES = "KERAS_DISTRIBUTION_NUM_PROCESSES"
ENV_PROCESS_ID = "KERAS_DISTRIBUTION_PROCESS_ID"
ENV_CPU_DEVICES = "JAX_NUM_CPU_DEVICES"  # JAX's own: simulated CPU devices per process
CPU_COLLECTIVES = "gloo"  # cross-process all-reduce on CPUs (JAX's other choice, MPI, needs an MPI launcher)


def multi_process() -> bool:
    """Whether Keras' environment variables describe a job of more than one process."""
    value = os.environ.get(ENV_PROCESSES, "").strip() or "1"
    if not value.isdigit() or int(value) < 1:
        raise DistributionError(f"{ENV_PROCESSES}={value!r}: give the number of processes in the job (1, 2, …).")
    return int(value) > 1


def setup(devices: int = 1) -> None:
    """Prepare this process for ``devices`` local devices and join a multi-process job if one is described.

    Process-wide and before any JAX computation, as JAX requires: applications (the CLI) call
    it, the library never does. Without a GPU or TPU, ``devices`` CPU devices are simulated
    (unless ``JAX_NUM_CPU_DEVICES`` already says how many).
    """
    import jax

    if devices < 1:
        raise DistributionError(f"--devices {devices}: give a number of devices of at least 1.")
    if devices > 1 and ENV_CPU_DEVICES not in os.environ:
        # JAX already started in this process (a notebook, a test) keeps what it has: data_parallel()
        # says what to do if that is too few.
        with contextlib.suppress(RuntimeError):
            jax.config.update("jax_num_cpu_devices", devices)
    if multi_process() and not jax.distributed.is_initialized():
        jax.config.update("jax_cpu_collectives_implementation", CPU_COLLECTIVES)
        _join()


def _join() -> None:
    from fmnist._backend import keras

    missing = [name for name in (ENV_ADDRESSES, ENV_PROCESS_ID) if not os.environ.get(name)]
    if missing:
        raise DistributionError(
            f"{ENV_PROCESSES}={os.environ[ENV_PROCESSES]} asks for several processes, but {' and '.join(missing)} "
            f"is not set: set {ENV_ADDRESSES}=HOST:PORT (process 0's address) and {ENV_PROCESS_ID}=0, 1, … "
            "in each process (README, 'Scaling out')."
        )
    try:
        keras.distribution.initialize()
    except Exception as e:  # JAX's own error: an unreachable coordinator, a port in use, a timeout
        raise DistributionError(
            f"could not join the job at {os.environ[ENV_ADDRESSES]} as process {os.environ[ENV_PROCESS_ID]} of "
            f"{os.environ[ENV_PROCESSES]}: {e}. Start process 0 first, on the address's host, with a free port."
        ) from e


def data_parallel(devices: int = 1):
    """A ``keras.distribution.DataParallel`` over the first ``devices`` devices of every process.

    None for one device in one process: fmnist's single-device programs are the fastest there.
    """
    import jax

    from fmnist._backend import keras

    local = jax.local_devices()
    if devices > len(local):
        hint = (
            f"set {ENV_CPU_DEVICES}={devices} (or call fmnist.parallel.setup first)"
            if local[0].platform == "cpu"
            else "give fewer"
        )
        raise DistributionError(
            f"--devices {devices}: this process has {len(local)} {local[0].platform} device(s): {hint}."
        )
    if devices == 1 and jax.process_count() == 1:
        return None
    chosen = [d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p)[:devices]]
    return keras.distribution.DataParallel(devices=[f"{d.platform}:{d.id}" for d in chosen])


def process_index() -> int:
    """This process's number in the job (0 when alone): process 0 writes the run directory."""
    import jax

    return jax.process_index()


def process_count() -> int:
    """Processes in the job (1 when alone)."""
    import jax

    return jax.process_count()


def agree(value: int) -> int:
    """Process 0's ``value`` in every process (e.g. steps planned from a time budget, measured per process)."""
    import jax

    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(value))
