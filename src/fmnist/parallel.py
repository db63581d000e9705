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

``Placement`` is where a data-parallel fit keeps its arrays: weights and optimizer state
replicated over the device mesh, each step's global batch split over the devices on its batch
axis, and XLA all-reducing the gradients (and BatchNorm's batch statistics) inside the compiled
chunk. The maths is the one-device maths: the same seed gives the same weights on any number of
devices, to float rounding (sums are reduced in another order). A conv net's max-pooling and
ReLUs amplify rounding-size differences within tens of steps, as a nudge of one part in 10^7 to
the initial weights does on one device (benchmarks/scaling.py), so long runs agree in accuracy
rather than bit for bit.
"""

from __future__ import annotations

import contextlib
import os

import jax
import numpy as np
from jax.sharding import NamedSharding, PartitionSpec

from fmnist import accelerator
from fmnist._backend import keras
from fmnist.errors import DistributionError, ModelError

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
    missing = [name for name in (ENV_ADDRESSES, ENV_PROCESS_ID) if not os.environ.get(name)]
    if missing:
        raise DistributionError(
            f"{ENV_PROCESSES}={os.environ[ENV_PROCESSES]} asks for several processes, but {' and '.join(missing)} "
            f"is not set: set {ENV_ADDRESSES}=HOST:PORT (process 0's address) and {ENV_PROCESS_ID}=0, 1, … "
            "in each process (docs/scaling.md)."
        )
    try:
        keras.distribution.initialize()
    except Exception as e:  # JAX's own error: an unreachable coordinator, a port in use, a timeout
        raise DistributionError(
            f"could not join the job at {os.environ[ENV_ADDRESSES]} as process {os.environ[ENV_PROCESS_ID]} of "
            f"{os.environ[ENV_PROCESSES]}: {e}. Start process 0 first, on the address's host, with a free port."
        ) from e


def data_parallel(devices: int = 1):
    """A ``keras.distribution.DataParallel`` over the first ``devices`` devices of every process, of the kind
    this process trains on (fmnist.accelerator.select: ``--platform cpu`` on a GPU machine counts CPU devices).

    None for one device in one process: fmnist's single-device programs are the fastest there.
    """
    kind = accelerator.current_kind()
    local = jax.local_devices(backend=kind)
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
    chosen = [d for p in range(jax.process_count()) for d in jax.local_devices(process_index=p, backend=kind)[:devices]]
    return keras.distribution.DataParallel(devices=[f"{d.platform}:{d.id}" for d in chosen])


def process_index() -> int:
    """This process's number in the job (0 when alone): process 0 writes the run directory."""
    return jax.process_index()


def process_count() -> int:
    """Processes in the job (1 when alone)."""
    return jax.process_count()


def agree(value: int) -> int:
    """Process 0's ``value`` in every process (e.g. steps planned from a time budget, measured per process)."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    return int(multihost_utils.broadcast_one_to_all(value))


def shared_seed(seed: int | None) -> int | None:
    """Processes of one job must draw the same batches: without a seed, process 0's random one for all."""
    if seed is not None or jax.process_count() == 1:
        return seed
    return agree(int(np.random.default_rng().integers(2**31)))


class Placement:
    """Where a data-parallel fit keeps its arrays: state replicated over the mesh, batches split.

    Every process holds the same training arrays and draws the same batch order (same seed), so
    each epoch's permuted batches are laid out ``[step, global_batch, ...]`` and every device
    builds only its own share of every batch (``make_array_from_callback``: no process gathers
    rows for another's devices, and no step gathers rows across devices inside the program).
    A chunk's batches are placed just before it runs, so the devices hold one chunk at a time.
    Arrays are global ``jax.Array``s, so the same code runs one process with N devices and N
    processes over the network (``jax.distributed``).
    """

    def __init__(self, distribution, batch_size: int):
        if not isinstance(distribution, keras.distribution.DataParallel):
            raise ModelError(
                f"fmnist.fit trains data-parallel only; got a {type(distribution).__name__}: pass "
                "keras.distribution.DataParallel(devices=...) (weights replicated, each batch split over the devices)."
            )
        mesh = distribution.device_mesh.backend_mesh
        self.devices = int(mesh.devices.size)
        if batch_size % self.devices:
            raise ModelError(
                f"a batch of {batch_size} images does not split evenly over {self.devices} devices: "
                f"use a batch size that is a multiple of {self.devices}."
            )
        self.replicated = NamedSharding(mesh, PartitionSpec())
        self.split = NamedSharding(mesh, PartitionSpec(None, distribution.batch_dim_name))  # [step, batch, ...]

    def replicate(self, tree):
        """Every leaf of ``tree`` (the same on every process) as a global array replicated over the mesh."""

        def place(value):
            value = np.asarray(value)
            return jax.make_array_from_callback(value.shape, self.replicated, lambda index: value[index])

        return jax.tree.map(place, tree)

    def batches(self, a: np.ndarray, rows: np.ndarray) -> jax.Array:
        """``a[rows]`` for ``rows`` of shape (steps, batch), split on the batch axis; each device gathers its share."""
        shape = (*rows.shape, *a.shape[1:])
        return jax.make_array_from_callback(shape, self.split, lambda index: a[rows[index[:2]]])

    def rows(self, w: np.ndarray) -> jax.Array:
        """Per-image values of shape (steps, batch), split as the batches are."""
        return jax.make_array_from_callback(w.shape, self.split, lambda index: w[index])

    def chunk(self, x, y, idx, w, count, n_steps: int, start: int) -> tuple:
        """A chunk's arguments after the state: its batches laid out and split, its scalars replicated."""
        scalars = self.replicate((count, np.int32(n_steps), np.int32(start)))
        return self.batches(x, idx), self.batches(y, idx), None, self.rows(w), *scalars

    @staticmethod
    def local(tree):
        """This process's copy of replicated global arrays (one local device): what the model keeps between fits."""
        return jax.tree.map(lambda a: a.addressable_data(0), tree)


def placement(distribution, batch_size: int) -> Placement | None:
    """The explicit ``distribution``, else the one set with keras.distribution.set_distribution (as Model.fit)."""
    distribution = distribution if distribution is not None else keras.distribution.distribution()
    return None if distribution is None else Placement(distribution, batch_size)
