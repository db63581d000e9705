"""The tutorial's questions, answered by measurement: ``fmnist experiment NAME``.

Each question is an ``Experiment`` written as data in ``fmnist.experiment_definitions``: named
``TrainConfig`` variants, the tutorial's claim in its own words, and a conclusion function that
turns the measured numbers into a sentence and a verdict. This module runs them.

    results = run_experiments(["hidden-units"], seeds=3)
    experiment_report.write_reports(results, Path("runs/experiments/hidden-units"))  # .md, .html, .json

How trials run, and why:
- Every variant trains once per seed (default 3) and is reported as mean ± std. A
  difference counts only when it is larger than the seed-to-seed spread:
  |mean_a − mean_b| > std_a + std_b, i.e. the two mean ± std intervals do not overlap.
- Identical trainings are run once: the seed model appears in several experiments, and
  variants that differ only in ``epochs`` (and have no stopping rule) are one run of the
  longest, evaluated on the test set after the shorter ones' last epoch. Training is
  deterministic per seed, so "epoch 5 of a 30-epoch run" *is* a 5-epoch run
  (tests/test_experiments.py checks it).
- Trials run through ``fmnist.trials``: in spawned worker processes (default) or as Ray
  tasks, seed by seed and longest first within a seed, so seeds after the first find their
  programs in the shared compilation cache. Workers are spawned, so a script that calls
  run_experiments with workers needs the usual ``if __name__ == "__main__":`` guard.
- Resumable: with a ``TrialStore`` (the CLI keeps one in the report's folder, ``.trials/``, until
  the report is written), each trial's result is kept as it finishes; after a kill the same call
  runs only the missing trials and, since a kept result is read back exactly, reports the same numbers.
- The library reports progress through a callback; only the CLI prints.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from fmnist.errors import FmnistError, RunError

# The definitions live in fmnist.experiment_definitions; their names stay importable from here too.
from fmnist.experiment_definitions import (  # noqa: F401
    CHANCE_MARGIN,
    EARLY_STOP_PATIENCE,
    EXPERIMENT_NAMES,
    LONG_EPOCHS,
    MID_EPOCHS,
    SOURCE,
    STOP_ACCURACY,
    TUTORIAL_EPOCHS,
    TUTORIAL_STOP_LOSS,
    VERDICTS,
    Column,
    Conclusion,
    Experiment,
    Variant,
    build_experiments,
    resolve_names,
)
from fmnist.train import TrainConfig
from fmnist.trials import (  # noqa: F401
    DEFAULT_WORKERS,
    VALIDATION_SPLIT,
    Progress,
    Stat,
    Trial,
    TrialStore,
    aggregate,
    differs,
    run_trials,
    trial_record,
)

DEFAULT_SEEDS = 3  # runs per variant; mean ± std over them (a sweep's default is 2: fmnist.sweep)


# --------------------------------------------------------------------------- trials (see fmnist.trials)
def _share_key(variant: Variant, seed: int) -> tuple[TrainConfig, bool]:
    """Variants with equal keys read one trial: the same training, or the same one cut at fewer epochs."""
    config = replace(variant.config, seed=0 if variant.check_only else seed)
    prefix_safe = config.stop_at_loss is None and config.stop_at_accuracy is None and config.early_stopping is None
    return (replace(config, epochs=1) if prefix_safe or variant.check_only else config), variant.check_only


def plan(experiments: Sequence[Experiment], seeds: Sequence[int]) -> tuple[list[Trial], dict]:
    """The trials to run, in order, and for each (experiment, variant, seed) its (trial index, epochs)."""
    groups: dict[tuple, list[tuple]] = {}
    for exp in experiments:
        for variant in exp.variants:
            for seed in [0] if variant.check_only else seeds:
                groups.setdefault(_share_key(variant, seed), []).append((exp.name, variant.name, seed, variant))
    trials, where = [], {}
    for (config, check_only), members in groups.items():
        epochs = sorted({m[3].config.epochs for m in members})
        trial = Trial(replace(config, epochs=epochs[-1]), tuple(epochs[:-1]), check_only)
        trials.append((trial, members))
    # Seed by seed, longest first within each: the two workers stay balanced, and a program compiled
    # for seed 0 is in the compilation cache long before seed 1 of the same variant needs it.
    trials.sort(key=lambda trial_members: (trial_members[0].config.seed, -trial_members[0].cost))
    for i, (_, members) in enumerate(trials):
        for exp_name, variant_name, seed, variant in members:
            where[exp_name, variant_name, seed] = (i, variant.config.epochs)
    return [t for t, _ in trials], where


# --------------------------------------------------------------------------- records and results
def _record(trial_result: dict, epochs: int) -> dict:
    """One variant's numbers for one seed, read from its trial (cut at ``epochs`` if the trial ran longer)."""
    if "error" in trial_result:  # a check-only trial: the explained error, or None if the model trained
        return {"error": trial_result["error"]}
    return trial_record(trial_result, epochs)


def _against_baseline(records: dict[str, list[dict]], baseline: str) -> None:
    """Add per-seed time saved and accuracy change relative to the baseline variant."""
    for recs in records.values():
        for rec, base in zip(recs, records[baseline], strict=True):
            rec["time_saved"] = 1.0 - rec["train_seconds"] / base["train_seconds"]
            rec["accuracy_change"] = rec["accuracy"] - base["accuracy"]


@dataclass
class ExperimentResult:
    experiment: Experiment
    records: dict[str, list[dict]]  # variant name -> one record per seed (see _record)
    conclusion: Conclusion

    @property
    def stats(self) -> dict[str, dict[str, Stat]]:
        return aggregate(self.records)


@dataclass
class Results:
    experiments: list[ExperimentResult]
    seeds: list[int]
    workers: int
    trials: int  # distinct trainings and checks run
    wall_seconds: float
    epochs_scale: float = 1.0
    limit: int | None = None
    executor: str = "local"  # what ran the trials (fmnist.trials.EXECUTORS)
    kept: int = 0  # trials whose results were kept from an earlier, interrupted run (not run again)
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def run_experiments(
    names: Sequence[str],
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    *,
    workers: int | None = None,
    epochs_scale: float = 1.0,
    limit: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    dataset: tuple | None = None,
    data_dir: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    store: TrialStore | None = None,
) -> Results:
    """Run the named experiments (see EXPERIMENT_NAMES), every variant once per seed, and conclude each.

    ``executor``/``ray_address`` choose where the trials run (see fmnist.trials.run_trials); a trial
    that fails stops the experiment with its reason once the others have finished. With a
    ``store`` (e.g. ``TrialStore(folder, data_fingerprint(dataset))``), finished trials are kept
    there as they finish and a rerun runs only the missing ones.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise FmnistError("at least one seed is needed (--seeds 1 or more).")
    catalogue = build_experiments(epochs_scale, limit)
    experiments = [catalogue[n] for name in names for n in resolve_names(name)]
    workers = DEFAULT_WORKERS if workers is None else workers
    start = time.perf_counter()
    trials, where = plan(experiments, seeds)
    outcomes = run_trials(
        trials, workers, progress, dataset, data_dir, executor=executor, ray_address=ray_address, store=store
    )  # fmt: skip
    failed = [(t, o["failed"]) for t, o in zip(trials, outcomes, strict=True) if "failed" in o]
    if failed:
        trial, why = failed[0]
        raise RunError(f"{len(failed)} of {len(trials)} trials failed, first {trial.describe()}: {why}")
    results = [_result(exp, outcomes, where, seeds) for exp in experiments]
    wall = time.perf_counter() - start
    kept = store.hits if store else 0
    return Results(results, seeds, workers, len(trials), wall, epochs_scale, limit, executor, kept)


def _result(experiment: Experiment, outcomes: list[dict], where: dict, seeds: list[int]) -> ExperimentResult:
    """An experiment's per-seed records, read from the trials ``plan`` placed them in, and its conclusion."""
    records = {}
    for variant in experiment.variants:
        placed = [where[experiment.name, variant.name, seed] for seed in ([0] if variant.check_only else seeds)]
        records[variant.name] = [_record(outcomes[trial], epochs) for trial, epochs in placed]
    if experiment.baseline:
        _against_baseline(records, experiment.baseline)
    return ExperimentResult(experiment, records, experiment.conclude(records))
