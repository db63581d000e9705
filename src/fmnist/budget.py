"""A time budget becomes a number of steps once, at the start of a run.

The run's first steps are a probe, trained at the schedule's starting rate (the schedule's
length is not known yet) and timed chunk by chunk (``run_probe``); ``plan_steps`` turns the pace
it measured, the compilation and the test-set evaluation into the steps that fit the budget.
The run goes on from the probe's state, and config.json records both counts, so a rerun
replays them.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

import numpy as np

from fmnist import augment, batching, engine, parallel
from fmnist._backend import keras
from fmnist.config import TrainConfig
from fmnist.errors import FmnistError, Interrupted
from fmnist.fitting import build, fit, fit_images

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
# What a time budget leaves for finishing after the last training step, beyond the measured
# compilation and test-set evaluation: saving the model, the learning-curve figure, the
# report's figures and page (measured ~3-5 s for the vgg net on the 2-core machine).
FINISH_SECONDS = 8.0


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

    def __init__(
        self,
        chunks_per_epoch: int,
        min_chunks: int,
        *,
        min_seconds: float = 0.0,
        steps: int | None = None,
        should_stop: Callable[[], bool] | None = None,
    ):
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


def run_probe(
    config: TrainConfig,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    callbacks=(),
    distribution=None,
    steps: int | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> PaceProbe:
    """Train the run's first steps with the schedule held at its starting rate, timing each chunk.

    ``steps``: that many (a rerun replaying a recorded probe); None: as many as the time budget's
    probe takes (PROBE_CHUNKS, PROBE_SHARE). Processes of one job probe exactly PROBE_CHUNKS
    chunks each: a clock could stop one process's probe before another's, and their steps are
    collective. ``callbacks``: the run's stateful ones, whose state the run continues with.
    ``should_stop``: see PaceProbe.
    """
    x_fit = fit_images(config, x_train)
    model = build(config, total_steps=None, x_train=x_fit)
    epoch = batching.chunking(model, len(x_fit), config.batch_size)  # as engine.fit chunks it
    share = PROBE_SHARE if parallel.process_count() == 1 and steps is None else 0.0
    probe = PaceProbe(
        epoch.chunks_per_epoch, PROBE_CHUNKS, min_seconds=share * (config.time_budget or 0.0), steps=steps,
        should_stop=should_stop,
    )  # fmt: skip
    bound = steps or int((config.time_budget or 0.0) * 1000) + PROBE_CHUNKS * epoch.chunk_steps  # 1 ms a step
    probe.model, probe.started = model, time.perf_counter()
    with contextlib.suppress(ProbeDone):  # how the probe ends its fit
        fit(model, config, x_train, y_train, epochs=batching.ceil_div(bound, epoch.steps_per_epoch), max_steps=bound,
            callbacks=callbacks, checkpoint=probe, distribution=distribution)  # fmt: skip
    probe.ended = time.perf_counter()
    return probe


def plan_steps(config: TrainConfig, probe: PaceProbe, x_test: np.ndarray, started: float) -> int:
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
    eval_s = _evaluate_seconds(probe.model, x_test, config.eval_views)
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


def _evaluate_seconds(model: keras.Model, x_test: np.ndarray, eval_views) -> float:
    """The test-set evaluation's seconds, compilation included, from one batch timed twice."""
    views = augment.with_identity(eval_views)  # as engine.evaluate computes them
    sample = x_test[: engine.INFER_BATCH]
    t0 = time.perf_counter()
    engine.predict_views(model, sample, views)  # compilation and one batch
    t1 = time.perf_counter()
    engine.predict_views(model, sample, views)  # one batch
    batch_s = time.perf_counter() - t1
    return (t1 - t0 - batch_s) + batch_s * len(x_test) / len(sample)
