"""`fmnist evaluate`, `report`, `runs` and `compare`: what saved runs measured, as tables and reports."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from fmnist.cli import DataDir, _load, _use_compilation_cache, app, out


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory or .keras model file.")],
    data_dir: DataDir = None,
) -> None:
    """Evaluate a saved model on the test set; writes metrics.json into its run directory."""
    from fmnist import engine, runs

    _use_compilation_cache()
    model = runs.load_model(run)
    _, (x_test, y_test) = _load(data_dir)
    metrics = engine.evaluate(model, x_test, y_test, views=runs.eval_views(run))
    _print_evaluation(metrics)
    run_dir = runs.run_dir_of(run)
    if run_dir is not None:
        runs.write_json(run_dir / runs.METRICS_FILE, metrics)
        out.print(f"wrote {run_dir / runs.METRICS_FILE}")


TOP_CONFUSIONS_PRINTED = 5  # rows of the confusions table `fmnist evaluate` prints


def _print_evaluation(m: dict) -> None:
    """The compact evaluation: headline, per-class table, top confusions."""
    out.print(
        f"[bold]test accuracy {m['accuracy']:.4f}[/], loss {m['loss']:.4f}, top-2 accuracy {m['top2_accuracy']:.4f}, "
        f"ECE {m['expected_calibration_error']:.4f} ({m['n']:,} images)"
    )
    never = set(m.get("never_predicted", []))
    table = Table("class", *(Column(h, justify="right") for h in ("precision", "recall", "F1", "support")))
    worst = min(c["f1"] for c in m["per_class"])
    for c in m["per_class"]:
        mark = "*" if c["class"] in never else ""
        table.add_row(
            f"{c['class']} {c['name']}", f"{c['precision']:.3f}{mark}", f"{c['recall']:.3f}", f"{c['f1']:.3f}",
            f"{c['support']:,}", style="red" if c["f1"] == worst else None,
        )  # fmt: skip
    table.add_row("macro average", f"{m['macro_precision']:.3f}", f"{m['macro_recall']:.3f}", f"{m['macro_f1']:.3f}",
                  f"{m['n']:,}", style="bold")  # fmt: skip
    out.print(table)
    if never:
        out.print("* never predicted: precision is undefined (0/0) and reported as 0.")
    confusions = Table("top confusions: true → predicted", Column("count", justify="right"),
                       Column("share of true class", justify="right"))  # fmt: skip
    for t in m["top_confusions"][:TOP_CONFUSIONS_PRINTED]:
        confusions.add_row(f"{t['true_name']} → {t['predicted_name']}", f"{t['count']:,}", f"{100 * t['share']:.1f}%")
    out.print(confusions)


@app.command("report")
def report_cmd(
    run: Annotated[Path, typer.Argument(help="Run directory.")],
    open_it: Annotated[bool, typer.Option("--open", help="Open the report in a web browser.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Write the run's report.html (one self-contained file) and its figures."""
    import os
    import webbrowser

    from fmnist import report, runs
    from fmnist.errors import RunError

    run_dir = runs.run_dir_of(run)
    if run_dir is None:
        raise RunError(f"{run} is a model file outside a run directory: a report needs the run's config.json.")
    runs.resolve_model_path(run_dir)  # a clear error for a folder that holds no model
    page = report.write_run_report(run_dir, dataset=_load(data_dir) if data_dir else None)
    out.print(f"wrote {page}")
    if open_it:
        # Without a display, webbrowser would fall back to a text browser that takes over the terminal.
        display = os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
        headless = sys.platform.startswith("linux") and not display
        if headless or not webbrowser.open(page.resolve().as_uri()):
            out.print(f"no browser to open it here: open {page.resolve().as_uri()}")


def _num(value, fmt: str = ".4f") -> str:
    """A table cell: floats to ``fmt``, ints with thousands separators, None as a dash."""
    if value is None:
        return "–"
    if isinstance(value, float):
        return format(value, fmt)
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


@app.command("runs")
def runs_cmd(
    root: Annotated[Path, typer.Option(help="Folder holding run directories.")] = Path("runs"),
) -> None:
    """List runs, newest first: name, date, model, epochs, test accuracy, training time."""
    from fmnist import report

    rows = report.list_runs(root)
    if not rows:
        out.print(f"no runs under {root}: train one with `fmnist train --out {root}/NAME`.")
        return
    flagged = [r for r in rows if r["status"] != "ok"]
    table = Table(
        *(Column(h, no_wrap=True) for h in ("name", "date", "model")),
        *(Column(h, justify="right", no_wrap=True) for h in ("epochs", "test accuracy", "train time")),
        *(["status"] if flagged else []),
    )  # fmt: skip
    for r in rows:
        seconds = f"{r['train_seconds']:.1f} s" if isinstance(r["train_seconds"], int | float) else "–"
        cells = [r["name"], r["created"] or "–", str(r["model"]), _num(r["epochs"]), _num(r["accuracy"]), seconds]
        if flagged:
            cells.append({"ok": "", "interrupted": "[yellow]interrupted[/]"}.get(r["status"], "[red]damaged[/]"))
        table.add_row(*cells)
    out.print(table)
    for r in flagged:  # below the table, where a narrow terminal cannot cut them off
        interrupted = r["status"] == "interrupted"
        what = f"interrupted: continue it with `fmnist train --resume {r['path']}`" if interrupted else r["status"]
        out.print(f"{r['path']}: {what}")
    if any(r["status"].startswith("damaged") for r in flagged):
        out.print("`fmnist evaluate RUN` re-creates a missing metrics.json; a damaged model or config needs a retrain.")


@app.command()
def compare(
    run_dirs: Annotated[list[Path], typer.Argument(help="Two or more run directories.")],
) -> None:
    """Runs side by side: the settings that differ, results, and F1 per class."""
    from fmnist import report

    c = report.compare_runs(run_dirs)
    table = Table("", *(Column(name, justify="right") for name in c["names"]))
    section = None
    for sec, label, values in c["rows"]:
        if sec != section and section is not None:
            table.add_section()
        section = sec
        best = None  # the best of a higher-is-better row, when the runs differ
        present = [v for v in values if v is not None]
        if (sec == "F1" or label in ("test accuracy", "macro F1", "top-2 accuracy")) and len(set(present)) > 1:
            best = max(present)
        fmt = ".1f" if label == "training seconds" else ".4f"
        cells = [f"[bold green]{_num(v, fmt)}[/]" if v == best else _num(v, fmt) for v in values]
        table.add_row(f"{label}" if sec != "F1" else f"F1 {label}", *cells)
    out.print(table)
