"""The experiments' reports: Markdown, a self-contained HTML page and results.json.

    results = experiments.run_experiments(["hidden-units"], seeds=3)
    experiment_report.write_reports(results, Path("runs/experiments/hidden-units"))

Everything here renders numbers that ``experiments`` measured and concluded; nothing is
trained or decided here. The HTML embeds its figures as data URIs and has no scripts or
links, so it reads offline.
"""

from __future__ import annotations

import base64
import html
import io
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
    pngs = {}
    for name, fig in result.experiment.figures(result.records).items():
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        pngs[f"{result.experiment.name}-{name}.png"] = buf.getvalue()
    return pngs


def _setup_line(results: Results, command: str | None) -> str:
    scaled = results.epochs_scale != 1.0 or results.limit is not None
    parts = [
        f"{len(results.seeds)} seed{'s' * (len(results.seeds) > 1)} ({', '.join(map(str, results.seeds))})",
        f"{results.trials} distinct trainings/checks",
        f"{results.workers} worker process{'es' * (results.workers != 1)}" if results.workers else "in-process",
        f"{results.wall_seconds:.0f} s wall-clock ({results.wall_seconds / 60:.1f} min) on {os.cpu_count()} CPU cores",
    ]
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


CSS = """
body { margin:0; background:#f5f6f8; color:#1d2330; font:15px/1.5 system-ui, "DejaVu Sans", sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 24px 48px; }
h1 { font-size:25px; margin:0 0 6px; } h2 { font-size:19px; margin:36px 0 8px; border-bottom:2px solid #dde1e7; }
.muted { color:#5b6472; font-size:13px; }
blockquote { margin:10px 0; padding:8px 14px; border-left:4px solid #9aa6b8; background:#fff; font-style:italic; }
.answer { background:#fff; border:1px solid #dde1e7; border-radius:8px; padding:10px 14px; }
.verdict { display:inline-block; padding:1px 8px; border-radius:10px; font-weight:600; font-size:13px; color:#fff; }
.agrees { background:#2e7d32; } .partly { background:#b7791f; } .disagrees { background:#c0392b; }
table { border-collapse:collapse; background:#fff; border:1px solid #dde1e7; margin:12px 0;
        font-variant-numeric:tabular-nums; font-size:14px; }
th, td { padding:5px 10px; border-bottom:1px solid #dde1e7; text-align:right; vertical-align:top; }
th { background:#eef1f5; } td:first-child, th:first-child { text-align:left; white-space:nowrap; }
td.text, th.text { text-align:left; white-space:normal; } .verdict { white-space:nowrap; }
pre { background:#fff; border:1px solid #dde1e7; padding:10px; white-space:pre-wrap; }
img { max-width:100%; background:#fff; border:1px solid #dde1e7; border-radius:8px; margin-top:12px; }
"""


def _badge(verdict: str) -> str:
    cls = {"agrees": "agrees", "partly agrees": "partly"}.get(verdict, "disagrees")
    return f'<span class="verdict {cls}">{html.escape(verdict)}</span>'


def _html_table(head: Sequence[str], rows: Sequence[Sequence[str]], text_cols: Sequence[int] = ()) -> str:
    e = html.escape
    out = [
        "<table><tr>"
        + "".join(f'<th class="{"text" if i in text_cols else ""}">{e(h)}</th>' for i, h in enumerate(head))
        + "</tr>"
    ]
    for row in rows:
        cells = "".join(
            f'<td class="text">{cell}</td>' if i in text_cols else f"<td>{e(cell)}</td>" for i, cell in enumerate(row)
        )
        out.append(f"<tr>{cells}</tr>")
    return "\n".join(out) + "</table>"


def render_html(results: Results, command: str | None = None, pngs: dict[str, bytes] | None = None) -> str:
    """One self-contained page: inline CSS, figures as base64 ``data:`` URIs, no scripts or links."""
    e = html.escape
    pngs = pngs if pngs is not None else {k: v for r in results.experiments for k, v in _figure_pngs(r).items()}
    summary = _html_table(
        ["experiment", "verdict", "measured answer"],
        [[e(r.experiment.name), _badge(r.conclusion.verdict), e(r.conclusion.text)] for r in results.experiments],
        text_cols=(0, 1, 2),
    )
    body = [
        "<h1>fmnist experiments: the tutorial's questions, measured</h1>",
        f'<p class="muted">{e(_setup_line(results, command))}</p>',
        f'<p class="muted">{e(SPREAD_RULE)}</p>',
        summary,
    ]
    for r in results.experiments:
        exp = r.experiment
        body += [
            f'<h2 id="{e(exp.name)}">{e(exp.name)}: {e(exp.title)}</h2>',
            f"<p>{e(exp.question)}</p>",
            f"<blockquote>“{e(exp.claim)}”<br><span class='muted'>— {e(SOURCE)}</span></blockquote>",
            f'<div class="answer">{_badge(r.conclusion.verdict)} with the tutorial. {e(r.conclusion.text)}</div>',
        ]
        head, rows = _table_rows(r)
        if exp.columns:
            body.append(_html_table(head, rows))
        else:
            for name, message in rows:
                body += [f"<p><b>{e(name)}</b></p>", f"<pre>{e(message)}</pre>"]
        if exp.note:
            body.append(f'<p class="muted">{e(exp.note)}</p>')
        for name, png in pngs.items():
            if name.startswith(f"{exp.name}-"):
                body.append(f'<img alt="{e(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">')
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>fmnist experiments</title><style>{CSS}</style></head>\n<body><main>\n"
        + "\n".join(body)
        + "\n</main></body></html>\n"
    )


def results_json(results: Results) -> dict:
    """Everything measured, JSON-ready: setup, per-variant per-seed records (with histories), stats, conclusions."""
    return {
        "started": results.started,
        "seeds": results.seeds,
        "workers": results.workers,
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
