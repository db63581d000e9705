"""Hyperparameter grids over TrainConfig fields: ``fmnist sweep``.

    grid = parse_grid(["learning_rate=1e-4,1e-3,1e-2", "hidden=128,512x256"])
    result = run_sweep(TrainConfig(epochs=1), grid, seeds=2, out=Path("runs/sweep"))
    result.best.point.name        # 'learning_rate=0.001 hidden=128': highest mean validation accuracy
    write_report(result, Path("runs/sweep"))                   # report.html and sweep.json

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
import json
import math
import re
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from fmnist import runs
from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig
from fmnist.trials import (
    DEFAULT_WORKERS,
    TRIALS_DIR,
    Progress,
    Stat,
    Trial,
    TrialStore,
    data_fingerprint,
    differs,
    run_trials,
)  # fmt: skip

DEFAULT_SEEDS = 2  # trials per grid point; mean ± std over them
VALIDATION_SPLIT = 0.1  # held out of every trial's training images when its config holds none out
CHOOSE_BY = "val_accuracy"  # the number the best point is chosen by (higher is better): held-out images
LAYER_JOIN = "x"  # hidden=512x256: one value, two layers
VIEW_JOIN = "+"  # eval_views=identity+flip: one value, two views
REPORT_FILE = "report.html"
RESULTS_FILE = "sweep.json"
MAX_SERIES = 6  # lines per plot panel (one per setting of the other fields); more: the best of them per value
NOT_SWEPT = {  # fields a grid may not vary, and what to do instead
    "model": "sweep its fields instead (hidden, arch, activation, dropout, conv_filters, conv_strides, conv_repeats, "
    "pool_first, whiten, members, normalize, standardize)",
    "seed": "use --seeds N: every point runs with seeds 0..N-1",
    "data_dir": "give --data-dir once",
    "recipe": "give --recipe once: it fixes the starting point of every trial",
    "time_budget": "a trial's length would depend on the machine's speed; sweep epochs or steps",
    "devices": "each trial trains on one device; --workers or --executor ray spread the trials",
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
    rec = {"seed": seed, "run": point.run_name(seed)}
    if "failed" in outcome:
        return rec | {"failed": outcome["failed"]}
    h, metrics, val = outcome["history"], outcome["metrics"], outcome.get("validation", {})
    for key in ("loss", "val_loss"):
        bad = next((i for i, v in enumerate(h.get(key, [])) if not math.isfinite(v)), None)
        if bad is not None:
            return rec | {"failed": f"diverged: {key} became {h[key][bad]} in epoch {bad + 1}"}
    if not all(math.isfinite(x) for x in (metrics["loss"], val.get("loss", 0.0))):
        return rec | {"failed": f"diverged: the trained model's loss is {metrics['loss']}"}
    return rec | {
        "val_accuracy": val["accuracy"],
        "val_loss": val["loss"],
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "train_loss": h["loss"][-1],
        "epochs_run": len(h["loss"]),
        "train_seconds": outcome["fit_seconds"],
        "params": outcome["params"],
    }


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
    planned = [(p, s, Trial(p.config(base, s), run_dir=str(out / p.run_name(s)))) for s in seeds for p in grid_points]
    # Seed by seed, longest first within a seed: workers stay balanced, and seed 1 finds seed 0's programs compiled.
    planned.sort(key=lambda pst: (pst[1], -pst[2].cost))
    if store is None:
        from fmnist import data

        store = TrialStore(out / TRIALS_DIR, data_fingerprint(dataset or data.load_data(data_dir)))
    workers = DEFAULT_WORKERS if workers is None else workers
    start = time.perf_counter()
    outcomes = run_trials(
        [t for _, _, t in planned], workers, progress, dataset, data_dir,
        executor=executor, ray_address=ray_address, store=store,
    )  # fmt: skip
    records: dict[Point, list[dict]] = {p: [] for p in grid_points}
    for (p, seed, _), outcome in sorted(zip(planned, outcomes, strict=True), key=lambda po: po[0][1]):
        records[p].append(_record(p, seed, outcome))
    ranked = _rank([PointResult(p, recs) for p, recs in records.items()])
    wall = time.perf_counter() - start
    return SweepResult(base, grid, seeds, ranked, len(planned), store.hits, wall, executor, workers)


# --------------------------------------------------------------------------- the report
def fixed_settings(base: TrainConfig) -> dict[str, Any]:
    """The settings every trial shares that differ from fmnist train's defaults (model fields by their own name)."""
    default, ours = TrainConfig().to_dict(), base.to_dict()
    spec = {k: v for k, v in ours.pop("model").items() if v != default["model"][k]}
    return spec | {k: v for k, v in ours.items() if k != "model" and v != default[k] and k != "seed"}


def held_out(result: SweepResult) -> str:
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
        f"Best point: {best.point.name} — validation accuracy {s[CHOOSE_BY].fmt()} (chosen on {held_out(result)}), "
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


TABLE_HEAD = ("rank", "point", "val accuracy", "val loss", "test accuracy", "test loss", "epochs", "train s", "seeds")


def table_rows(result: SweepResult) -> list[list[str]]:
    """The results table: one row per point, ranked; mean ± std over the seeds that trained."""
    rows = []
    for i, p in enumerate(result.points, 1):
        s = p.stats
        cell = {k: s[k].fmt(d) if k in s else "–" for k, d in (*((k, 4) for k in NUMBERS[:4]), ("train_seconds", 1))}
        epochs = s["epochs_run"].fmt(0) if "epochs_run" in s else "–"
        good = sum("failed" not in r for r in p.records)
        seeds = f"{good}/{len(p.records)}" + ("" if p.ok else " (failed)")
        rows.append([str(i), p.point.name, cell["val_accuracy"], cell["val_loss"], cell["accuracy"], cell["loss"],
                     epochs, cell["train_seconds"], seeds])  # fmt: skip
    return rows


def _panels(result: SweepResult) -> list[tuple]:
    """Per swept field, the chosen-on number against its values: one line per setting of the other fields."""
    by_point = {p.point: p for p in result.points}
    panels = []
    for name, values in result.grid.items():
        others = {k: v for k, v in result.grid.items() if k != name}
        combos = list(itertools.product(*others.values()))
        series = {}

        def stat(point_values) -> tuple[float, float]:
            s = by_point[Point(tuple((k, point_values[k]) for k in result.grid))].stats.get(CHOOSE_BY)
            return (s.mean, s.std) if s else (math.nan, math.nan)

        if len(combos) <= MAX_SERIES:
            for combo in combos:
                setting = dict(zip(others, combo, strict=True))
                label = " ".join(f"{k}={format_value(v)}" for k, v in setting.items()) or "mean ± std over seeds"
                ms = [stat(setting | {name: v}) for v in values]
                series[label] = ([m for m, _ in ms], [s for _, s in ms])
        else:
            best = [max((stat(dict(zip(others, c, strict=True)) | {name: v}) for c in combos), key=lambda ms: ms[0])
                    for v in values]  # fmt: skip
            series["the best setting of the other fields"] = ([m for m, _ in best], [s for _, s in best])
        numeric = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        log = numeric and min(values) > 0 and max(values) / min(values) >= 10
        panels.append((name, [format_value(v) for v in values], list(values) if numeric else None, log, series))
    return panels


def figure(result: SweepResult):
    """The plot of the report: validation accuracy against each swept field (plots.metric_vs_fields)."""
    from fmnist import plots

    return plots.metric_vs_fields(_panels(result), "validation accuracy")


def results_json(result: SweepResult) -> dict:
    """Everything the sweep measured, JSON-ready (NaN and infinities as null)."""

    def clean(x):
        if isinstance(x, float) and not math.isfinite(x):
            return None
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return [clean(v) for v in x] if isinstance(x, list | tuple) else x

    return clean({
        "started": result.started, "seeds": result.seeds, "executor": result.executor, "workers": result.workers,
        "trials": result.trials, "trials_kept": result.kept, "wall_seconds": round(result.wall_seconds, 2),
        "chosen_by": f"{CHOOSE_BY}: {held_out(result)}",
        "grid": {k: [format_value(v) for v in vs] for k, vs in result.grid.items()},
        "base_config": result.base.to_dict(),
        "best": result.best.point.name if result.best else None,
        "points": [
            {"point": p.point.name, "values": {k: format_value(v) for k, v in p.point.values}, "ok": p.ok,
             "stats": {k: [s.mean, s.std, s.n] for k, s in p.stats.items()}, "records": p.records}
            for p in result.points
        ],
    })  # fmt: skip


def write_report(result: SweepResult, out: Path, command: str | None = None) -> dict[str, Path]:
    """Write report.html (self-contained, ``templates/sweep_report.html``) and sweep.json into ``out``."""
    from fmnist import pages
    from fmnist.plots import png_bytes

    fixed = ", ".join(f"{k}={format_value(tuple(v) if isinstance(v, list) else v)}" for k, v in
                      fixed_settings(result.base).items())  # fmt: skip
    setup = (
        f"{len(result.points)} points × {len(result.seeds)} seed{'s' * (len(result.seeds) > 1)} = {result.trials} "
        f"trials ({'Ray tasks' if result.executor == 'ray' else f'{result.workers} worker processes'}"
        f"{f'; {result.kept} kept from an earlier run' if result.kept else ''}), {result.wall_seconds:.0f} s. "
        f"Every trial: {fixed or 'fmnist train defaults'}."
    )
    page = pages.render(
        "sweep_report.html",
        setup=setup,
        command=command,
        chosen=f"validation accuracy: the final model on {held_out(result)}. The test set is reported, never used "
        "to choose.",
        summary=summary(result),
        head=TABLE_HEAD,
        rows=table_rows(result),
        best_rank=1 if result.best else None,
        failures=result.failures,
        png=png_bytes(figure(result)),
    )
    out = Path(out)
    return {
        "html": runs.write_text(out / REPORT_FILE, page),
        "results": runs.write_text(out / RESULTS_FILE, json.dumps(results_json(result), indent=1) + "\n"),
    }
