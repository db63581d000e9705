"""A run's self-contained HTML report, and the run summaries behind `fmnist runs` / `compare`.

    write_run_report(Path("runs/default"))     # -> runs/default/report.html (+ figures/*.png, metrics.json)

``report.html`` is one file that reads offline: every figure is embedded as a base64 PNG
``data:`` URI, the CSS is inline, there is no script and no URL to fetch. It holds the
headline metrics, the per-class table, the top confusions, the confusion matrix, the
mistakes the model makes while confident, its most and least confident predictions, a
reliability diagram, the learning curves with the per-epoch history, and the config.

The predictions come from one ``engine.predict_proba`` pass that feeds both the metrics
(``engine.evaluate(..., probs=...)``) and the figures. JAX, Keras and matplotlib are
imported inside ``write_run_report`` only, so listing and comparing runs stays fast.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
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

CSS = """
:root { --ink:#1d2330; --muted:#5b6472; --line:#dde1e7; --bg:#f5f6f8; --card:#fff; --accent:#2457c5; --bad:#c0392b; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink);
       font:15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; }
main { max-width:1240px; margin:0 auto; padding:28px 24px 48px; }
header h1 { margin:0 0 4px; font-size:26px; }
header p { margin:0; color:var(--muted); }
h2 { font-size:19px; margin:34px 0 10px; padding-bottom:6px; border-bottom:2px solid var(--line); }
.cards { display:grid; grid-template-columns:repeat(4, 1fr); gap:12px; margin-top:20px; }
@media (max-width:700px) { .cards { grid-template-columns:repeat(2, 1fr); } }
.card { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px 14px; }
.card .v { font-size:24px; font-weight:650; font-variant-numeric:tabular-nums; }
.card .k { color:var(--muted); font-size:13px; }
.two { display:grid; grid-template-columns:repeat(auto-fit, minmax(440px, 1fr)); gap:20px; align-items:start; }
table { border-collapse:collapse; background:var(--card); border:1px solid var(--line); border-radius:8px;
        overflow:hidden; font-variant-numeric:tabular-nums; font-size:14px; width:100%; }
th, td { padding:5px 10px; text-align:right; border-bottom:1px solid var(--line); white-space:nowrap; }
th { background:#eef1f5; font-weight:600; }
td.l, th.l { text-align:left; }
table.kv { width:auto; min-width:420px; }
table.kv td:last-child, table.kv th:last-child { text-align:left; }
tr:last-child td { border-bottom:none; }
tr.worst td { color:var(--bad); font-weight:600; }
td.bar { position:relative; min-width:120px; }
td.bar span { position:absolute; left:0; top:4px; bottom:4px; background:#c9d8f5; border-radius:3px; z-index:0; }
td.bar b { position:relative; z-index:1; font-weight:inherit; }
figure { margin:0; background:var(--card); border:1px solid var(--line); border-radius:10px; padding:12px; }
figure img { display:block; max-width:100%; height:auto; margin:0 auto; }
figcaption { color:var(--muted); font-size:13px; margin-top:6px; }
.note { color:var(--muted); font-size:13px; margin:6px 2px; }
footer { margin-top:40px; color:var(--muted); font-size:12px; }
"""


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
def _e(value) -> str:
    return html.escape(str(value))


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value)) or "–"
    return str(value)


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode("ascii")}">'


def _table(head: Sequence[str], rows: Sequence[Sequence], left: int = 1, row_class: Sequence[str] = ()) -> str:
    """An HTML table of already-escaped cells, each a string or ``(css_class, html)``.

    The first ``left`` columns align left.
    """
    th = "".join(f"<th{' class=l' if i < left else ''}>{h}</th>" for i, h in enumerate(head))
    body = []
    for r, row in enumerate(rows):
        tds = []
        for i, cell in enumerate(row):
            cls, content = cell if isinstance(cell, tuple) else ("l" if i < left else "", cell)
            tds.append(f"<td{f' class={cls}' if cls else ''}>{content}</td>")
        tr_class = f' class="{row_class[r]}"' if r < len(row_class) and row_class[r] else ""
        body.append(f"<tr{tr_class}>{''.join(tds)}</tr>")
    return f"<table><thead><tr>{th}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _bar(value: float) -> tuple[str, str]:
    """A number with a proportional bar behind it (0–1), pure CSS."""
    return "bar", f'<span style="width:{100 * max(0.0, min(1.0, value)):.1f}%"></span><b>{value:.3f}</b>'


def _per_class_table(metrics: dict) -> str:
    rows, classes = [], []
    f1s = [c["f1"] for c in metrics["per_class"]]
    never = set(metrics.get("never_predicted", []))
    for c in metrics["per_class"]:
        mark = "*" if c["class"] in never else ""
        rows.append(
            [f"{c['class']} {_e(c['name'])}", f"{c['precision']:.3f}{mark}", f"{c['recall']:.3f}", _bar(c["f1"]),
             f"{c['support']:,}"]
        )  # fmt: skip
        classes.append("worst" if c["f1"] == min(f1s) else "")
    rows.append(
        ["<b>macro average</b>", f"{metrics['macro_precision']:.3f}", f"{metrics['macro_recall']:.3f}",
         _bar(metrics["macro_f1"]), f"{metrics['n']:,}"]
    )  # fmt: skip
    table = _table(["class", "precision", "recall", "F1", "support"], rows, row_class=classes)
    note = (
        "Worst F1 in red. Precision = right / all predicted as the class; recall = right / all of the class. "
        "A class never predicted has undefined precision (0/0), shown as 0.000*."
        if never
        else "Worst F1 in red. Precision = right / all predicted as the class; recall = right / all of the class. "
        "(A class never predicted would show precision 0.000*: undefined, reported as 0.)"
    )
    return table + f'<p class="note">{note}</p>'


def _confusions_table(metrics: dict) -> str:
    rows = [
        [f"{_e(t['true_name'])} → {_e(t['predicted_name'])}", f"{t['count']:,}", f"{100 * t['share']:.1f}%"]
        for t in metrics["top_confusions"][:TOP_CONFUSIONS_SHOWN]
    ]
    if not rows:
        return '<p class="note">No mistakes: nothing is confused.</p>'
    note = "Share: of all test images of the true class, how many were predicted as the other."
    return _table(["true → predicted", "count", "share of true class"], rows) + f'<p class="note">{note}</p>'


def _history_table(history: dict) -> str:
    rows = runs.history_rows(history)
    if not rows:
        return '<p class="note">No training history in this run.</p>'
    keys = [k for k in rows[0] if k != "epoch"]
    body = [[str(r["epoch"]), *(_fmt(r[k], 2 if k == "seconds" else 4) for k in keys)] for r in rows]
    return _table(["epoch", *(_e(k) for k in keys)], body)


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


def _config_table(config: dict) -> str:
    flat = _flatten({k: v for k, v in config.items() if k not in CONFIG_HIDDEN})
    table = _table(["setting", "value"], [[_e(k), _e(_setting(v))] for k, v in flat.items()])
    return table.replace("<table>", '<table class="kv">', 1)


def render_html(name: str, config: dict, history: dict, metrics: dict, figures: dict[str, bytes]) -> str:
    """The report page from the run's config, history, metrics and PNG figures (stem -> bytes)."""
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
    card_html = "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for k, v in cards
    )
    sub = [summary["model"], f"{summary['params']:,} parameters" if summary["params"] else None,
           summary["created"], config.get("device")]  # fmt: skip
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>fmnist run {_e(name)}</title><style>{CSS}</style></head><body><main>",
        f"<header><h1>Fashion-MNIST run <code>{_e(name)}</code></h1>",
        f"<p>{' · '.join(_e(s) for s in sub if s)}</p></header>",
        f'<section class="cards">{card_html}</section>',
        '<h2>Per class</h2><div class="two">',
        f"<div>{_per_class_table(metrics)}</div>",
        f"<div><h3 style='margin:0 0 8px;font-size:16px'>Top confusions</h3>{_confusions_table(metrics)}</div></div>",
    ]
    for stem, heading, caption in FIGURES:
        if stem in figures:
            parts.append(f"<h2>{_e(heading)}</h2><figure>{_img(figures[stem], heading)}")
            if stem == "calibration":
                caption += ECE_CAPTION.format(
                    ece=metrics["expected_calibration_error"], bins=metrics["calibration"]["bins"]
                )
            parts.append(f"<figcaption>{_e(caption)}</figcaption></figure>")
            if stem == "learning_curves":
                parts.append(f'<div style="margin-top:12px">{_history_table(history)}</div>')
    if "learning_curves" not in figures:
        parts.append(f"<h2>Training history</h2>{_history_table(history)}")
    versions = config.get("versions") or {}
    parts += [
        f"<h2>Config</h2>{_config_table(config)}",
        f'<p class="note"><b>Conventions.</b> {_e(metrics["conventions"])}</p>',
        f"<footer>Written by fmnist on {_e(dt.datetime.now(dt.UTC).strftime('%Y-%m-%d %H:%M UTC'))}"
        f"{' · ' + _e(', '.join(f'{k} {v}' for k, v in versions.items())) if versions else ''}. "
        "One self-contained file: figures embedded, no network access needed.</footer>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


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
