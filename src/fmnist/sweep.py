"""Hyperparameter grids over TrainConfig fields: ``fmnist sweep``.

    grid = parse_grid(["learning_rate=1e-4,1e-3,1e-2", "hidden=128,512x256"])
    result = run_sweep(TrainConfig(epochs=1), grid, seeds=2, out=Path("runs/sweep"))
    result.best.point.name        # 'learning_rate=0.001 hidden=128': highest mean validation accuracy
    sweep_report.write_report(result, Path("runs/sweep"))      # report.html and sweep.json

How a sweep works, and why:
- ``FIELD=V1,V2,...`` names any TrainConfig field or model field (hidden, arch, activation, dropout,
  conv_filters, conv_strides, conv_repeats, pool_first, whiten, members, normalize, standardize), with
  dashes or underscores. Commas separate the grid's values; a multi-layer value joins its layers with ``x``:
  ``hidden=128,512x256`` is two values, one layer of 128 and two layers of 512 then 256. Test-time
  views join with ``+`` (``eval_views=identity,identity+flip``); ``none`` is None (or no layers)
  where a field allows it.
- Choose on validation, report on test. Every trial holds out the last VALIDATION_SPLIT of
  its training images (unless the config holds some out already); the best point is the one
  whose final models score the highest mean accuracy on those held-out images. The test set
  is reported beside it and decides nothing.
- Each trial is an ordinary run directory under the sweep's folder, named after its point and
  seed (``learning_rate=0.001_hidden=128_seed=0``), so ``fmnist runs --root DIR``, ``report``,
  ``compare`` and ``predict`` work on it as on any run.
- Trials run through ``fmnist.trials`` (local worker processes or Ray tasks) and are kept in
  the folder's ``.trials/`` as they finish, and stay there with the run directories: after a
  kill the same sweep runs only the missing trials, and a grid given more values trains only the new points.
- A failed trial — an exception, or a loss that became NaN or infinite — is recorded with its
  reason and the sweep goes on. A point with a failed seed is ranked after the points whose
  seeds all trained, and cannot be the best.
- A time budget is refused: its trials' length would depend on the machine's speed that day.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig
from fmnist.trials import (
    DEFAULT_WORKERS,
    TRIALS_DIR,
    VALIDATION_SPLIT,
    Progress,
    Stat,
    Trial,
    TrialStore,
    data_fingerprint,
    differs,
    run_trials,
    trial_record,
)

DEFAULT_SEEDS = 2  # trials per grid point; mean ± std over them (an experiment's default is 3: fmnist.experiments)
# VALIDATION_SPLIT (fmnist.trials): held out of every trial's training images when its config holds none out
CHOOSE_BY = "val_accuracy"  # the number the best point is chosen by (higher is better): held-out images
LAYER_JOIN = "x"  # hidden=512x256: one value, two layers
VIEW_JOIN = "+"  # eval_views=identity+flip: one value, two views
NOT_SWEPT = {  # fields a grid may not vary, and what to do instead
    "model": "sweep its fields instead (hidden, arch, activation, dropout, conv_filters, conv_strides, conv_repeats, "
    "pool_first, whiten, members, normalize, standardize)",
    "seed": "use --seeds N: every point runs with seeds 0..N-1",
    "data_dir": "give --data-dir once",
    "recipe": "give --recipe once: it fixes the starting point of every trial",
    "time_budget": "a trial's length would depend on the machine's speed; sweep epochs or steps",
    "devices": "each trial trains on one device; --workers or --executor ray spread the trials",
    "platform": "a sweep's trials train on the best device there is",
}
# Per trial, the numbers the table and sweep.json report (see _record).
NUMBERS = ("val_accuracy", "val_loss", "accuracy", "loss", "train_loss", "epochs_run", "train_seconds", "params")


# --------------------------------------------------------------------------- the grid
def sweepable() -> dict[str, Any]:
    """Every field a grid may vary -> its type: TrainConfig's and ModelSpec's, less NOT_SWEPT."""
    hints = typing.get_type_hints(TrainConfig) | typing.get_type_hints(ModelSpec)
    names = [f.name for f in (*fields(TrainConfig), *fields(ModelSpec))]
    return {name: hints[name] for name in names if name not in NOT_SWEPT}


def _parse_value(text: str, hint: Any, name: str) -> Any:
    """``text`` as a value of type ``hint`` (int, float, bool, str, a tuple of them, or any of these | None)."""
    t = text.strip()
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if t.lower() == "none" and type(None) in args:
            return None
        hint = next(a for a in args if a is not type(None))
        origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        join = LAYER_JOIN if args[0] is int else VIEW_JOIN
        return () if t.lower() == "none" else tuple(_parse_value(p, args[0], name) for p in t.split(join))
    try:
        if hint is bool:
            return {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}[t.lower()]
        if hint is int:
            return int(t)
        if hint is float:
            return float(t)
    except (KeyError, ValueError):
        kind = {bool: "true or false", int: "a whole number", float: "a number"}[hint]
        raise FmnistError(f"--set {name}: {text!r} is not {kind}.") from None
    if not t:
        raise FmnistError(f"--set {name}: an empty value; give values like {name}=a,b.")
    return t


def parse_grid(sets: Sequence[str]) -> dict[str, tuple]:
    """``["learning_rate=1e-4,1e-3", "hidden=128,512x256"]`` -> ``{field: (values...)}``, in the order given."""
    allowed, grid = sweepable(), {}
    for item in sets:
        name, eq, values = item.partition("=")
        name = name.strip().replace("-", "_")
        if not eq or not values.strip():
            raise FmnistError(f"--set {item!r}: write FIELD=V1,V2,... (e.g. learning_rate=1e-4,1e-3).")
        if name in NOT_SWEPT:
            raise FmnistError(f"--set {name}: not a grid field: {NOT_SWEPT[name]}.")
        if name not in allowed:
            raise FmnistError(f"--set {name}: no such field; sweepable fields: {', '.join(sorted(allowed))}.")
        if name in grid:
            raise FmnistError(f"--set {name} is given twice: list all its values in one --set {name}=a,b,c.")
        parsed = tuple(_parse_value(v, allowed[name], name) for v in values.split(","))
        if len(set(parsed)) != len(parsed):
            raise FmnistError(f"--set {name}: a value is listed twice ({values}).")
        grid[name] = parsed
    if not grid:
        raise FmnistError("a sweep needs at least one --set FIELD=V1,V2,... (see `fmnist sweep --help`).")
    return grid


def format_value(value: Any) -> str:
    """A grid value as written on the command line: 512x256, identity+flip, none, 0.001, true."""
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple):
        return (LAYER_JOIN if all(isinstance(v, int) for v in value) else VIEW_JOIN).join(map(str, value))
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value) if isinstance(value, float) else str(value)  # repr: the shortest form that reads back equal


@dataclass(frozen=True)
class Point:
    """One setting of every swept field."""

    values: tuple[tuple[str, Any], ...]  # (field, value), in the grid's order

    @property
    def name(self) -> str:
        return " ".join(f"{k}={format_value(v)}" for k, v in self.values)

    def run_name(self, seed: int) -> str:
        """The trial's run directory name: its point and seed, in characters safe in any file name."""
        text = "_".join([*(f"{k}={format_value(v)}" for k, v in self.values), f"seed={seed}"])
        return re.sub(r"[^A-Za-z0-9._=+-]", "-", text)

    def config(self, base: TrainConfig, seed: int) -> TrainConfig:
        """``base`` with this point's values and ``seed``; a value the config rejects names its point."""
        model_fields = {f.name for f in fields(ModelSpec)}
        on_model = {k: v for k, v in self.values if k in model_fields}
        on_config = {k: v for k, v in self.values if k not in model_fields}
        try:
            return replace(base, model=replace(base.model, **on_model), seed=seed, **on_config)
        except FmnistError as e:
            raise FmnistError(f"grid point {self.name}: {e}") from e


def points(grid: dict[str, tuple]) -> list[Point]:
    """Every combination of the grid's values, the first field varying slowest."""
    return [Point(tuple(zip(grid, combo, strict=True))) for combo in itertools.product(*grid.values())]


def sweep_base(base: TrainConfig, grid: dict[str, tuple]) -> TrainConfig:
    """The config every trial starts from: checked, and holding out images to choose on."""
    if base.time_budget is not None and base.steps is None:
        raise FmnistError(
            f"this sweep's trials would train for a {base.time_budget:.0f} s time budget (from the recipe?): "
            "a trial's length would then depend on the machine's speed. Give --epochs N or --steps N."
        )
    if "validation_split" in grid and min(grid["validation_split"]) <= 0:
        raise FmnistError("--set validation_split: every value must be above 0: the best point is chosen on it.")
    if base.validation_split == 0:
        base = replace(base, validation_split=VALIDATION_SPLIT)
    return base


# --------------------------------------------------------------------------- results
@dataclass
class PointResult:
    point: Point
    records: list[dict]  # one per seed: seed, run (directory name), NUMBERS, or "failed" and why

    @property
    def ok(self) -> bool:
        return all("failed" not in r for r in self.records)

    @property
    def stats(self) -> dict[str, Stat]:
        good = [r for r in self.records if "failed" not in r]
        return {k: Stat.of([r[k] for r in good]) for k in NUMBERS if good and all(k in r for r in good)}


@dataclass
class SweepResult:
    base: TrainConfig  # what every trial starts from (the grid's fields then vary)
    grid: dict[str, tuple]
    seeds: list[int]
    points: list[PointResult]  # ranked: best first, then the points with a failed seed
    trials: int
    kept: int  # trials whose results were kept from an earlier, interrupted run
    wall_seconds: float
    executor: str = "local"
    workers: int = DEFAULT_WORKERS
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))

    @property
    def best(self) -> PointResult | None:
        """The point with the highest mean validation accuracy among those whose every seed trained."""
        return self.points[0] if self.points and self.points[0].ok and self.points[0].stats else None

    @property
    def failures(self) -> list[tuple[str, int, str, str]]:
        """(point, seed, run directory name, why) of every failed trial."""
        return [
            (p.point.name, r["seed"], r["run"], r["failed"]) for p in self.points for r in p.records if "failed" in r
        ]


def _record(point: Point, seed: int, outcome: dict) -> dict:
    """One trial's numbers (or why it failed), as the table and sweep.json show them."""
    record = {"seed": seed, "run": point.run_name(seed)}
    if "failed" in outcome:
        return record | {"failed": outcome["failed"]}
    history, metrics, validation = outcome["history"], outcome["metrics"], outcome.get("validation", {})
    for key in ("loss", "val_loss"):
        bad = next((i for i, v in enumerate(history.get(key, [])) if not math.isfinite(v)), None)
        if bad is not None:
            return record | {"failed": f"diverged: {key} became {history[key][bad]} in epoch {bad + 1}"}
    if not all(math.isfinite(x) for x in (metrics["loss"], validation.get("loss", 0.0))):
        return record | {"failed": f"diverged: the trained model's loss is {metrics['loss']}"}
    numbers = trial_record(outcome)
    # Chosen on the final model as evaluate scores it (test-time views, best weights restored), not on the
    # history's last epoch; timed by the whole training, as its run directory records it.
    numbers |= {"val_accuracy": validation["accuracy"], "val_loss": validation["loss"]}
    numbers["train_seconds"] = outcome["fit_seconds"]
    return record | {k: numbers[k] for k in NUMBERS}


def _rank(results: list[PointResult]) -> list[PointResult]:
    """Highest mean validation accuracy first (lower validation loss breaks ties); points with failures last."""

    def key(p: PointResult):
        s = p.stats
        return (not p.ok, not s, -s[CHOOSE_BY].mean if s else 0.0, s["val_loss"].mean if s else 0.0)

    return sorted(results, key=key)


def run_sweep(
    base: TrainConfig,
    grid: dict[str, tuple],
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    out: Path = Path("runs/sweep"),
    *,
    workers: int | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    progress: Callable[[Progress], None] | None = None,
    dataset: tuple | None = None,
    data_dir: str | None = None,
    store: TrialStore | None = None,
) -> SweepResult:
    """Train every point of ``grid`` once per seed into ``out/<point>_seed=<k>/``, and rank the points.

    Finished trials are kept in ``out/.trials/``: a rerun runs only the missing ones.
    ``dataset`` (as ``load_data()`` returns it) is handed to the workers instead of their loading it.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise FmnistError("at least one seed is needed (--seeds 1 or more).")
    base = sweep_base(base, grid)
    out = Path(out)
    grid_points = points(grid)
    planned = [
        (point, seed, Trial(point.config(base, seed), run_dir=str(out / point.run_name(seed))))
        for seed in seeds
        for point in grid_points
    ]
    # Seed by seed, longest first within a seed: workers stay balanced, and seed 1 finds seed 0's programs compiled.
    planned.sort(key=lambda point_seed_trial: (point_seed_trial[1], -point_seed_trial[2].cost))
    if store is None:
        from fmnist import data

        store = TrialStore(out / TRIALS_DIR, data_fingerprint(dataset or data.load_data(data_dir)))
    workers = DEFAULT_WORKERS if workers is None else workers
    start = time.perf_counter()
    outcomes = run_trials(
        [trial for _, _, trial in planned], workers, progress, dataset, data_dir,
        executor=executor, ray_address=ray_address, store=store,
    )  # fmt: skip
    records: dict[Point, list[dict]] = {point: [] for point in grid_points}
    by_seed = sorted(zip(planned, outcomes, strict=True), key=lambda planned_outcome: planned_outcome[0][1])
    for (point, seed, _), outcome in by_seed:
        records[point].append(_record(point, seed, outcome))
    ranked = _rank([PointResult(point, point_records) for point, point_records in records.items()])
    wall = time.perf_counter() - start
    return SweepResult(base, grid, seeds, ranked, len(planned), store.hits, wall, executor, workers)


# --------------------------------------------------------------------------- the conclusion
def chosen_on(result: SweepResult) -> str:
    """Which images chose the best point, in words."""
    if "validation_split" in result.grid:
        return "the validation split each trial held out of its training images"
    return f"the last {result.base.validation_split:.0%} of each trial's training images, held out of its training"


def summary(result: SweepResult) -> str:
    """One sentence naming the best point, the number that chose it, and whether it beats the runner-up."""
    best = result.best
    if best is None:
        return "No point trained cleanly on every seed: there is no best point (see the failed trials)."
    s = best.stats
    text = (
        f"Best point: {best.point.name} — validation accuracy {s[CHOOSE_BY].fmt()} (chosen on {chosen_on(result)}), "
        f"test accuracy {s['accuracy'].fmt()}."
    )
    runner = next((p for p in result.points[1:] if p.ok and p.stats), None)
    if len(result.seeds) == 1:
        text += " One seed: there is no spread to compare against, so the ranking is provisional."
    elif runner is not None:
        beyond = differs(s[CHOOSE_BY], runner.stats[CHOOSE_BY])
        text += (
            f" The runner-up, {runner.point.name}, is {'beyond' if beyond else 'within'} the seed-to-seed spread"
            f" ({runner.stats[CHOOSE_BY].fmt()})."
        )
    return text


# --------------------------------------------------------------------------- the report (fmnist.sweep_report)
REPORT_NAMES = ("REPORT_FILE", "RESULTS_FILE", "MAX_SERIES", "fixed_settings", "TABLE_HEAD", "table_rows",
                "figure", "results_json", "write_report")  # fmt: skip


def __getattr__(name: str):
    """The report's names, importable from here as well for callers outside fmnist (fmnist's own import
    sweep_report); sweep_report imports this module, so they are looked up when first asked for."""
    if name in REPORT_NAMES:
        from fmnist import sweep_report

        return getattr(sweep_report, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
