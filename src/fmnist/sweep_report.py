"""A sweep's report: a self-contained HTML page and sweep.json.

    result = sweep.run_sweep(TrainConfig(epochs=1), sweep.parse_grid(["hidden=128,512"]), out=Path("runs/sweep"))
    sweep_report.write_report(result, Path("runs/sweep"))  # report.html and sweep.json

Everything here renders what ``fmnist.sweep`` measured and ranked (its summary sentence
included); nothing is trained or decided here. The page is a Jinja2 template sharing fmnist's
stylesheet, with its figure embedded as a data URI, so it reads offline.
"""

from __future__ import annotations

import itertools
import json
import math
from pathlib import Path
from typing import Any

from fmnist import runs
from fmnist.sweep import CHOOSE_BY, NUMBERS, Point, SweepResult, chosen_on, format_value, summary
from fmnist.train import TrainConfig

REPORT_FILE = "report.html"
RESULTS_FILE = "sweep.json"
MAX_SERIES = 6  # lines per plot panel (one per setting of the other fields); more: the best of them per value


def fixed_settings(base: TrainConfig) -> dict[str, Any]:
    """The settings every trial shares that differ from fmnist train's defaults (model fields by their own name)."""
    default, ours = TrainConfig().to_dict(), base.to_dict()
    spec = {k: v for k, v in ours.pop("model").items() if v != default["model"][k]}
    return spec | {k: v for k, v in ours.items() if k != "model" and v != default[k] and k != "seed"}


TABLE_HEAD = ("rank", "point", "val accuracy", "val loss", "test accuracy", "test loss", "epochs", "train s", "seeds")


def table_rows(result: SweepResult) -> list[list[str]]:
    """The results table: one row per point, ranked; mean ± std over the seeds that trained."""
    rows = []
    for rank, ranked in enumerate(result.points, 1):
        stats = ranked.stats
        digits = (*((k, 4) for k in NUMBERS[:4]), ("train_seconds", 1))
        cell = {k: stats[k].fmt(d) if k in stats else "–" for k, d in digits}
        epochs = stats["epochs_run"].fmt(0) if "epochs_run" in stats else "–"
        good = sum("failed" not in r for r in ranked.records)
        seeds = f"{good}/{len(ranked.records)}" + ("" if ranked.ok else " (failed)")
        scores = [cell[k] for k in ("val_accuracy", "val_loss", "accuracy", "loss")]
        rows.append([str(rank), ranked.point.name, *scores, epochs, cell["train_seconds"], seeds])
    return rows


def _panels(result: SweepResult) -> list[tuple]:
    """Per swept field, the chosen-on number against its values: one line per setting of the other fields."""
    by_point = {ranked.point: ranked for ranked in result.points}
    panels = []
    for name, values in result.grid.items():
        others = {k: v for k, v in result.grid.items() if k != name}
        combos = list(itertools.product(*others.values()))
        series = {}

        def stat(point_values) -> tuple[float, float]:
            chosen_by = by_point[Point(tuple((k, point_values[k]) for k in result.grid))].stats.get(CHOOSE_BY)
            return (chosen_by.mean, chosen_by.std) if chosen_by else (math.nan, math.nan)

        if len(combos) <= MAX_SERIES:
            for combo in combos:
                setting = dict(zip(others, combo, strict=True))
                label = " ".join(f"{k}={format_value(v)}" for k, v in setting.items()) or "mean ± std over seeds"
                mean_std = [stat(setting | {name: v}) for v in values]
                series[label] = ([mean for mean, _ in mean_std], [std for _, std in mean_std])
        else:
            best = [
                max((stat(dict(zip(others, c, strict=True)) | {name: v}) for c in combos), key=lambda ms: ms[0])
                for v in values
            ]  # fmt: skip  (ms: a (mean, std) pair)
            series["the best setting of the other fields"] = ([mean for mean, _ in best], [std for _, std in best])
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
        "chosen_by": f"{CHOOSE_BY}: {chosen_on(result)}",
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
        chosen=f"validation accuracy: the final model on {chosen_on(result)}. The test set is reported, never used "
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
