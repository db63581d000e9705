"""The experiments' reports: Markdown, a self-contained HTML page and results.json.

    results = experiments.run_experiments(["hidden-units"], seeds=3)
    experiment_report.write_reports(results, Path("runs/experiments/hidden-units"))

Everything here renders numbers that ``experiments`` measured and concluded; nothing is
trained or decided here. The HTML page is a Jinja2 template sharing fmnist's stylesheet; it
embeds its figures as data URIs and has no scripts or links, so it reads offline.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from fmnist import runs
from fmnist.experiments import SOURCE, ExperimentResult, Results


def _table_rows(result: ExperimentResult) -> tuple[list[str], list[list[str]]]:
    exp = result.experiment
    if not exp.columns:  # the checks: the message is the result
        return ["variant", "what happened"], [
            [name, recs[0]["error"] or "no error: it trained"] for name, recs in result.records.items()
        ]
    stats = result.stats
    head = ["variant", *(c.header for c in exp.columns)]
    rows = [
        [
            name,
            *(stats[name][c.key].fmt(c.digits, c.scale, c.unit) if c.key in stats[name] else "–" for c in exp.columns),
        ]
        for name in result.records
    ]
    return head, rows


def _figure_pngs(result: ExperimentResult) -> dict[str, bytes]:
    from fmnist.plots import png_bytes

    figures = result.experiment.figures(result.records)
    return {f"{result.experiment.name}-{name}.png": png_bytes(fig) for name, fig in figures.items()}


def _setup_line(results: Results, command: str | None) -> str:
    scaled = results.epochs_scale != 1.0 or results.limit is not None
    parts = [
        f"{len(results.seeds)} seed{'s' * (len(results.seeds) > 1)} ({', '.join(map(str, results.seeds))})",
        f"{results.trials} distinct trainings/checks",
        "Ray tasks"
        if results.executor == "ray"
        else f"{results.workers} worker process{'es' * (results.workers != 1)}"
        if results.workers
        else "in-process",
        f"{results.wall_seconds:.0f} s wall-clock ({results.wall_seconds / 60:.1f} min) on {os.cpu_count()} CPU cores",
    ]
    if results.kept:
        parts.append(f"{results.kept} of {results.trials} trials kept from an earlier, interrupted run")
    text = "; ".join(parts) + "."
    if len(results.seeds) == 1:
        text += " With one seed there is no spread to compare against, so every difference counts: provisional."
    if scaled:
        text += (
            f" Reduced budget: epochs × {results.epochs_scale}"
            + (f", first {results.limit:,} training images" if results.limit else "")
            + " — not the tutorial's settings."
        )
    if command:
        text += f" Command: `{command}`."
    return text


SPREAD_RULE = (
    "Numbers are mean ± standard deviation over seeds. A difference counts only when it is larger than the "
    "seed-to-seed spread: |mean₁ − mean₂| > std₁ + std₂ (the two intervals do not overlap)."
)


def render_markdown(results: Results, command: str | None = None, figures: Sequence[str] | None = None) -> str:
    """The report as Markdown; figures are linked as figures/<name>.png (write_reports saves them)."""
    if figures is None:
        figures = [k for r in results.experiments for k in _figure_pngs(r)]
    lines = [
        "# fmnist experiments: the tutorial's questions, measured",
        "",
        _setup_line(results, command),
        "",
        SPREAD_RULE,
        "",
    ]
    lines += ["| experiment | verdict | measured answer |", "|---|---|---|"]
    lines += [f"| {r.experiment.name} | {r.conclusion.verdict} | {r.conclusion.text} |" for r in results.experiments]
    for r in results.experiments:
        lines += ["", experiment_markdown(r, [png for png in figures if png.startswith(f"{r.experiment.name}-")])]
    return "\n".join(lines) + "\n"


def experiment_markdown(result: ExperimentResult, figures: Sequence[str] = ()) -> str:
    """One experiment's section: question, the tutorial's claim, the measured answer and verdict, the table.

    ``figures`` are PNG names linked as figures/<name> (a notebook displays the Figures instead).
    """
    exp = result.experiment
    lines = [f"## {exp.name}: {exp.title}", "", exp.question, "", f"> “{exp.claim}” — {SOURCE}", ""]
    lines += [f"**Measured ({result.conclusion.verdict} with the tutorial):** {result.conclusion.text}", ""]
    head, rows = _table_rows(result)
    if exp.columns:
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
    else:
        for name, message in rows:
            lines += [f"**{name}**", "", "```", message, "```", ""]
    if exp.note:
        lines += ["", f"_{exp.note}_"]
    for png in figures:
        lines += ["", f"![{exp.name}](figures/{png})"]
    return "\n".join(lines)


def render_html(results: Results, command: str | None = None, pngs: dict[str, bytes] | None = None) -> str:
    """One self-contained page (``templates/experiments_report.html``): inline CSS, figures as base64
    ``data:`` URIs, no scripts or links."""
    from fmnist import pages

    pngs = pngs if pngs is not None else {k: v for r in results.experiments for k, v in _figure_pngs(r).items()}
    experiments = []
    for r in results.experiments:
        exp = r.experiment
        head, rows = _table_rows(r)
        experiments.append(
            {"name": exp.name, "title": exp.title, "question": exp.question, "claim": exp.claim,
             "verdict": r.conclusion.verdict, "conclusion": r.conclusion.text, "note": exp.note,
             "columns": bool(exp.columns), "head": head, "rows": rows,
             "pngs": [(name, png) for name, png in pngs.items() if name.startswith(f"{exp.name}-")]}
        )  # fmt: skip
    return pages.render(
        "experiments_report.html",
        setup=_setup_line(results, command),
        spread_rule=SPREAD_RULE,
        source=SOURCE,
        experiments=experiments,
    )


def results_json(results: Results) -> dict:
    """Everything measured, JSON-ready: setup, per-variant per-seed records (with histories), stats, conclusions."""
    return {
        "started": results.started,
        "seeds": results.seeds,
        "workers": results.workers,
        "executor": results.executor,
        "trials_kept": results.kept,
        "trials": results.trials,
        "wall_seconds": round(results.wall_seconds, 2),
        "epochs_scale": results.epochs_scale,
        "limit": results.limit,
        "cpu_count": os.cpu_count(),
        "experiments": {
            r.experiment.name: {
                "claim": r.experiment.claim,
                "verdict": r.conclusion.verdict,
                "conclusion": r.conclusion.text,
                "configs": {v.name: v.config.to_dict() for v in r.experiment.variants},
                "stats": {v: {k: [s.mean, s.std, s.n] for k, s in st.items()} for v, st in r.stats.items()},
                "records": r.records,
            }
            for r in results.experiments
        },
    }


MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"
RESULTS_FILE = "results.json"


def write_reports(results: Results, out: Path, command: str | None = None) -> dict[str, Path]:
    """Write report.md (+ figures/*.png), report.html (self-contained) and results.json into ``out``."""
    out = Path(out)
    pngs = {k: v for r in results.experiments for k, v in _figure_pngs(r).items()}
    for name, png in pngs.items():
        runs.write_bytes(out / runs.FIGURES_DIR / name, png)
    return {
        "markdown": runs.write_text(out / MARKDOWN_FILE, render_markdown(results, command, list(pngs))),
        "html": runs.write_text(out / HTML_FILE, render_html(results, command, pngs)),
        "results": runs.write_text(out / RESULTS_FILE, json.dumps(results_json(results), indent=1) + "\n"),
    }
