"""A run's self-contained HTML report, and the run summaries behind `fmnist runs` / `compare`.

    write_run_report(Path("runs/default"))     # -> runs/default/report.html (+ figures/*.png, metrics.json)

``report.html`` is one file that reads offline: every figure is embedded as a base64 PNG
``data:`` URI, the shared stylesheet is inline (``templates/run_report.html`` lays the page
out; ``pages`` renders it), there is no script and no URL to fetch. It holds the
headline metrics, the per-class table, the top confusions, the confusion matrix, the
mistakes the model makes while confident, its most and least confident predictions, a
reliability diagram, the learning curves with the per-epoch history, and the config.

The predictions come from one forward pass (``engine.evaluate(..., return_probs=True)``,
or the probabilities the train job already computed) that feeds the metrics and the figures.
JAX, Keras and matplotlib are imported inside ``write_run_report`` only, so listing and
comparing runs stays fast.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

from fmnist import data, runs
from fmnist.errors import FmnistError, RunError

FIGURES = (  # file stem in figures/, heading in the report, caption
    ("confusion_matrix", "Confusion matrix", "Rows: true class, columns: predicted class."),
    (
        "misclassified",
        "Confident mistakes",
        "Titles read “predicted NN% (true)”; blue is right, red wrong. Beside each image its ten "
        "probabilities (class 0–9): red bar the prediction, blue bar the true class.",
    ),
    (
        "confidence",
        "Most and least confident",
        "The same layout: top, the surest right answers; bottom, the least sure.",
    ),
    (
        "calibration",
        "Calibration",
        "Each bar: accuracy of the test images whose top probability fell in that bin. "
        "A calibrated model's bars reach the diagonal.",
    ),
    ("learning_curves", "Learning curves", "Loss and accuracy per epoch, training and validation."),
)
ECE_CAPTION = (
    " Expected calibration error {ece:.4f}: the top probability is the confidence; {bins} equal-width bins; "
    "ECE = Σ over bins of (share of images in the bin) × |accuracy − mean confidence|."
)
TOP_CONFUSIONS_SHOWN = 10  # rows of the confusions table (metrics keeps as many)
CONFIG_HIDDEN = {"created", "versions", "device", "model_description"}  # shown elsewhere or not a setting


# --------------------------------------------------------------------------- writing a run's report
def write_run_report(run_dir: Path, model=None, dataset: tuple | None = None, evaluation=None) -> Path:
    """Predict the test set once (with the run's test-time views), write metrics.json, figures/*.png
    and report.html; return its path.

    ``model``, ``dataset`` (as ``load_data()`` returns it) and ``evaluation`` (``(metrics,
    probs)`` from ``engine.evaluate(..., return_probs=True)``) skip recomputing them, as after training.
    """
    from fmnist import engine, plots  # JAX/Keras and matplotlib: only when a report is made

    run_dir = Path(run_dir)
    config = runs.read_object(run_dir / runs.CONFIG_FILE)
    history_path = run_dir / runs.HISTORY_FILE
    history = runs.read_object(history_path) if history_path.is_file() else {}
    model = model if model is not None else runs.load_model(run_dir)
    _, (x_test, y_test) = dataset or data.load_data(config.get("data_dir"))
    views = runs.eval_views(run_dir)
    metrics, probs = evaluation or engine.evaluate(model, x_test, y_test, views=views, return_probs=True)
    runs.write_json(run_dir / runs.METRICS_FILE, metrics)
    figures = {
        "confusion_matrix": plots.confusion_matrices(metrics["confusion_matrix"]),
        "misclassified": plots.misclassified(x_test, y_test, probs),
        "confidence": plots.confidence_extremes(x_test, y_test, probs),
        "calibration": plots.reliability_diagram(metrics["calibration"]),
    }
    if history.get("loss"):
        figures["learning_curves"] = plots.learning_curves(history)
    pngs = {}
    for name, fig in figures.items():
        pngs[name] = runs.save_figure(run_dir / runs.FIGURES_DIR / f"{name}.png", fig).read_bytes()
    page = render_html(run_dir.name, config, history, metrics, pngs)
    return runs.write_text(run_dir / runs.REPORT_FILE, page)


# --------------------------------------------------------------------------- the page
PER_CLASS_NOTE = "Worst F1 in red. Precision = right / all predicted as the class; recall = right / all of the class. "
NEVER_PREDICTED_NOTE = {
    True: "A class never predicted has undefined precision (0/0), shown as 0.000*.",
    False: "(A class never predicted would show precision 0.000*: undefined, reported as 0.)",
}


def _device(record) -> str | None:
    """The run's device line: 'trained on gpu: NVIDIA H200, float32' (config.json's "device" record; older
    runs recorded JAX's device kind alone, shown as it is, or nothing)."""
    if isinstance(record, dict):
        return f"trained on {record.get('device', record.get('platform'))}, {record.get('precision', 'float32')}"
    return record


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def _per_class(metrics: dict) -> list[dict]:
    """The per-class table's rows: worst F1 flagged, never-predicted precision starred."""
    worst = min(c["f1"] for c in metrics["per_class"])
    never = set(metrics.get("never_predicted", []))
    return [
        {"label": f"{c['class']} {c['name']}", "precision": f"{c['precision']:.3f}{'*' if c['class'] in never else ''}",
         "recall": f"{c['recall']:.3f}", "f1": c["f1"], "support": f"{c['support']:,}", "worst": c["f1"] == worst}
        for c in metrics["per_class"]
    ]  # fmt: skip


def _macro(metrics: dict) -> dict:
    """The per-class table's last row: macro averages over the classes."""
    return {"precision": f"{metrics['macro_precision']:.3f}", "recall": f"{metrics['macro_recall']:.3f}",
            "f1": metrics["macro_f1"], "support": f"{metrics['n']:,}"}  # fmt: skip


def _confusions(metrics: dict) -> list[dict]:
    return [
        {"pair": f"{t['true_name']} → {t['predicted_name']}", "count": f"{t['count']:,}",
         "share": f"{100 * t['share']:.1f}%"}
        for t in metrics["top_confusions"][:TOP_CONFUSIONS_SHOWN]
    ]  # fmt: skip


def _history(history: dict) -> dict:
    """The per-epoch table: column names and formatted rows (seconds to 2 places, the rest to 4)."""
    rows = runs.history_rows(history)
    keys = [k for k in rows[0] if k != "epoch"] if rows else []
    return {
        "columns": keys,
        "rows": [{"epoch": r["epoch"], "cells": [_fmt(r[k], 2 if k == "seconds" else 4) for k in keys]} for r in rows],
    }


def _flatten(d: dict, prefix: str = "") -> dict:
    flat = {}
    for k, v in d.items():
        if isinstance(v, dict):
            flat |= _flatten(v, f"{prefix}{k}.")
        else:
            flat[f"{prefix}{k}"] = v
    return flat


def _setting(value) -> str:
    """A config value as typed on the command line: None as a dash, sequences comma-separated."""
    if value is None:
        return "–"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def _shown_settings(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in CONFIG_HIDDEN}


def _figures(metrics: dict, figures: dict[str, bytes]) -> list[dict]:
    """The figure sections in report order, each with its caption (calibration's names its ECE)."""
    shown = []
    for stem, heading, caption in FIGURES:
        if stem not in figures:
            continue
        if stem == "calibration":
            ece, bins = metrics["expected_calibration_error"], metrics["calibration"]["bins"]
            caption += ECE_CAPTION.format(ece=ece, bins=bins)
        shown.append({"stem": stem, "heading": heading, "caption": caption, "png": figures[stem]})
    return shown


def render_html(name: str, config: dict, history: dict, metrics: dict, figures: dict[str, bytes]) -> str:
    """The report page from the run's config, history, metrics and PNG figures (stem -> bytes)."""
    from fmnist import pages

    summary = summarize_config(config)
    mistakes = metrics["n"] - round(metrics["accuracy"] * metrics["n"])
    cards = [
        ("test accuracy", f"{100 * metrics['accuracy']:.2f}%"),
        ("test loss", f"{metrics['loss']:.4f}"),
        ("top-2 accuracy", f"{100 * metrics['top2_accuracy']:.2f}%"),
        ("macro F1", f"{metrics['macro_f1']:.4f}"),
        (
            f"calibration error (ECE, {metrics['calibration']['bins']} bins)",
            f"{metrics['expected_calibration_error']:.4f}",
        ),
        ("mistakes", f"{mistakes:,} of {metrics['n']:,}"),
        ("epochs", _fmt(summary["epochs"])),
        ("training time", f"{summary['train_seconds']:.1f} s" if summary["train_seconds"] is not None else "–"),
    ]
    subtitle = [summary["model"], f"{summary['params']:,} parameters" if summary["params"] else None,
                summary["created"], _device(config.get("device"))]  # fmt: skip
    versions = config.get("versions") or {}
    return pages.render(
        "run_report.html",
        name=name,
        subtitle=[s for s in subtitle if s],
        cards=cards,
        per_class=_per_class(metrics),
        macro=_macro(metrics),
        per_class_note=PER_CLASS_NOTE + NEVER_PREDICTED_NOTE[bool(metrics.get("never_predicted"))],
        confusions=_confusions(metrics),
        figures=_figures(metrics, figures),
        has_learning_curves="learning_curves" in figures,
        history=_history(history),
        config_rows=[(k, _setting(v)) for k, v in _flatten(_shown_settings(config)).items()],
        conventions=metrics["conventions"],
        written=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        versions=", ".join(f"{k} {v}" for k, v in versions.items()),
    )


# --------------------------------------------------------------------------- listing and comparing runs
def _describe(model: dict | None) -> str:
    """The ModelSpec's short name. Imports Keras only for runs saved without a stored description."""
    from fmnist import models

    try:
        return models.spec_from_dict(dict(model or {})).describe()
    except Exception:
        return "?"


def _when(created: str | None) -> str | None:
    """ISO time from config.json -> '2026-11-27 23:29 UTC' (unparseable text is returned as is)."""
    if not created:
        return None
    try:
        return dt.datetime.fromisoformat(created).astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    except (TypeError, ValueError):
        return created


def summarize_config(config: dict) -> dict:
    """The headline facts of a run's config.json: model, epochs, parameters, creation time, training time."""
    return {
        "model": config.get("model_description") or (_describe(config["model"]) if "model" in config else "?"),
        "epochs": config.get("epochs_run", config.get("epochs")),
        "params": config.get("params"),
        "created": _when(config.get("created")),
        "train_seconds": config.get("train_seconds"),
    }


def run_summary(run_dir: Path) -> dict:
    """One row of `fmnist runs`: name, date, model, epochs, test accuracy and loss, training time.

    ``status``: 'ok', 'damaged: <what>' (the rest of the row is what could still be read) or,
    for a run whose training was interrupted, 'interrupted'.
    """
    run_dir = Path(run_dir)
    problems = runs.run_problems(run_dir)
    try:
        config = runs.read_object(run_dir / runs.CONFIG_FILE)
    except FmnistError:
        config = {}
    try:
        metrics = runs.read_object(run_dir / runs.METRICS_FILE)
    except FmnistError:
        metrics = {}
    return {"name": run_dir.name, "path": str(run_dir), **summarize_config(config), "created_at": config.get("created"),
            "accuracy": metrics.get("accuracy"), "loss": metrics.get("loss"),
            "status": f"damaged: {', '.join(problems)}" if problems else "ok"}  # fmt: skip


def list_runs(root: Path = runs.DEFAULT_ROOT) -> list[dict]:
    """Summaries of the runs under ``root``, newest first (by creation time, else file time).

    A damaged run is listed with its status rather than failing the list; interrupted trainings
    (``runs.iter_interrupted``) come last, with status 'interrupted'.
    """
    rows = [run_summary(p) for p in runs.iter_runs(root)]  # already newest first by file time
    rows.sort(key=lambda r: r["created_at"] or "", reverse=True)  # stable: ties keep file-time order
    for run in runs.iter_interrupted(root):
        try:
            config = runs.read_object(runs.partial_dir(run) / runs.CONFIG_FILE)
        except FmnistError:
            config = {}
        rows.append({"name": run.name, "path": str(run), **summarize_config(config), "epochs": None,
                     "created_at": None, "accuracy": None, "loss": None, "status": "interrupted"})  # fmt: skip
    return rows


def compare_runs(run_dirs: Sequence[Path]) -> dict:
    """Runs side by side: ``{'names': [...], 'rows': [(section, label, [value per run]), ...]}``.

    Sections: 'config' (only the settings that differ), 'result' (epochs, time, accuracy,
    loss, top-2, ECE, macro F1) and 'F1' (one row per class). Missing values are None.
    """
    if len(run_dirs) < 1:
        raise RunError("give at least one run directory to compare.")
    configs, metrics = [], []
    for d in map(Path, run_dirs):
        if not (d / runs.CONFIG_FILE).is_file():
            raise RunError(
                f"{d} is not a run directory (no {runs.CONFIG_FILE}): see `fmnist runs` for the runs there are."
            )
        configs.append(
            _flatten({k: v for k, v in runs.read_object(d / runs.CONFIG_FILE).items() if k not in CONFIG_HIDDEN})
        )
        mp = d / runs.METRICS_FILE
        if not mp.is_file():
            raise RunError(f"{d} has no {runs.METRICS_FILE}: re-create it with `fmnist evaluate {d}`.")
        metrics.append(runs.read_object(mp))
    rows = []
    keys = list(dict.fromkeys(k for c in configs for k in c))
    for k in keys:
        values = [c.get(k) for c in configs]
        if k not in ("train_seconds", "epochs_run", "params") and any(v != values[0] for v in values):
            rows.append(("config", k, values))
    summaries = [summarize_config(runs.read_object(Path(d) / runs.CONFIG_FILE)) for d in run_dirs]
    rows.append(("result", "model", [s["model"] for s in summaries]))
    rows.append(("result", "params", [s["params"] for s in summaries]))
    rows.append(("result", "epochs run", [s["epochs"] for s in summaries]))
    rows.append(("result", "training seconds", [s["train_seconds"] for s in summaries]))
    for key, label in (("accuracy", "test accuracy"), ("loss", "test loss"), ("top2_accuracy", "top-2 accuracy"),
                       ("expected_calibration_error", "ECE"), ("macro_f1", "macro F1")):  # fmt: skip
        rows.append(("result", label, [m.get(key) for m in metrics]))
    for c, cname in enumerate(data.CLASS_NAMES):
        values = [m["per_class"][c]["f1"] if len(m.get("per_class", [])) > c else None for m in metrics]
        rows.append(("F1", f"{c} {cname}", values))
    return {"names": [Path(d).name for d in run_dirs], "rows": rows}
