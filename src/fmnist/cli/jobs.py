"""`fmnist experiment` and `fmnist sweep`: many trainings as trials (local processes or Ray), kept as they finish,
with a progress bar and a report."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Column, Table

from fmnist.cli import DataDir, _load, _use_compilation_cache, app, err, out
from fmnist.cli.train import train_config
from fmnist.errors import FmnistError


class Executor(StrEnum):
    local = "local"
    ray = "ray"


ExecutorOpt = Annotated[
    Executor,
    typer.Option(help="Where trials run: local worker processes, or Ray tasks (pip install 'fmnist\\[ray]')."),
]
RestartOpt = Annotated[
    bool, typer.Option("--restart", help="Forget the trials kept in the output folder and run every one again.")
]
Workers = Annotated[
    int | None,
    typer.Option(help="Worker processes (default: one per core, at most 2; 0: in this process; ray: its CPUs)."),
]
RayAddress = Annotated[
    str | None,
    typer.Option(
        help="--executor ray: the cluster to join ('auto': the one `ray start` runs here); without it, a new local Ray."
    ),
]


# --------------------------------------------------------------------------- experiments
class _TrialsBar:
    """Rich progress for run_experiments: trials done / total, elapsed, and time left.

    Time left scales the elapsed time by the estimated work still to do (trials.Trial.cost),
    which tracks long and short trials better than a trials-per-second rate.
    """

    def __init__(self, title: str, workers: int):
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.workers, self.start = max(1, workers), time.perf_counter()
        self.bar = Progress(
            TextColumn("{task.description}"), BarColumn(), TextColumn("{task.fields[trials]} trials"),
            TimeElapsedColumn(), TextColumn("{task.fields[left]}"), console=err,
        )  # fmt: skip
        self.task = self.bar.add_task(title, total=None, trials="0/?", left="")

    def __call__(self, p) -> None:
        elapsed = time.perf_counter() - self.start
        # Before the first trial finishes, the cost model's own estimate.
        left = elapsed * (p.work_total / p.work_done - 1) if p.work_done > 0 else p.work_total / self.workers
        text = f"~{int(left // 60)}:{int(left % 60):02d} left" if p.done < p.total else ""
        trials = f"{p.done}/{p.total}" + (f" (+{p.kept} kept)" if p.kept else "")
        self.bar.update(self.task, total=p.work_total, completed=p.work_done, trials=trials, left=text)


@app.command()
def experiment(
    name: Annotated[
        str, typer.Argument(help="hidden-units, depth, epochs, normalization, early-stop, mistakes, or all.")
    ],
    seeds: Annotated[int, typer.Option(help="Runs per variant, reported as mean ± std.")] = 3,
    out_dir: Annotated[
        Path | None, typer.Option("--out", help="Folder for the reports (default: runs/experiments/NAME).")
    ] = None,
    epochs_scale: Annotated[float, typer.Option(help="Multiply every epoch count (e.g. 0.2 for a quick look).")] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Train on the first N images only (quick trials).")] = None,
    workers: Workers = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
    data_dir: DataDir = None,
) -> None:
    """Answer the tutorial's questions by measurement: Markdown + HTML report with tables, plots, conclusions.

    Finished trials are kept (in OUT/.trials) until the report is written: after a kill, the same command runs only the missing ones and writes the same report.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    from fmnist import experiment_report, trials
    from fmnist import experiments as ex

    names = ex.resolve_names(name)
    if seeds < 1:
        raise FmnistError(f"--seeds must be at least 1, got {seeds}.")
    workers = trials.DEFAULT_WORKERS if workers is None else workers
    target = out_dir or Path("runs") / "experiments" / name
    dataset = _load(data_dir)  # verifies (or downloads) once here
    in_process = executor is Executor.local and workers == 0
    if in_process:
        _use_compilation_cache()  # worker processes turn it on themselves
    command = f"fmnist experiment {name} --seeds {seeds}" + "".join(
        f" {flag} {value}"
        for flag, value in (
            ("--epochs-scale", epochs_scale), ("--limit", limit), ("--workers", workers),
            ("--executor", executor.value if executor is Executor.ray else None), ("--ray-address", ray_address),
        )
        if value is not None and not (flag == "--epochs-scale" and value == 1.0)
    )  # fmt: skip
    store = trials.TrialStore(target / trials.TRIALS_DIR, trials.data_fingerprint(dataset))  # kept until the report
    bar = _TrialsBar(f"experiment {name}", workers)
    with bar.bar:
        results = ex.run_experiments(
            names, seeds, workers=workers, epochs_scale=epochs_scale, limit=limit, progress=bar,
            # Local workers read the array cache themselves; Ray tasks (maybe on other hosts) get the arrays.
            dataset=dataset if in_process or executor is Executor.ray else None,
            data_dir=str(data_dir) if data_dir else None, executor=executor.value, ray_address=ray_address,
            store=store,
        )  # fmt: skip
    paths = experiment_report.write_reports(results, target, command=command)
    store.clear()
    table = Table("experiment", "verdict", "measured answer", show_lines=True)
    colors = {"agrees": "green", "partly agrees": "yellow", "disagrees": "red"}
    for r in results.experiments:
        verdict = r.conclusion.verdict
        table.add_row(r.experiment.name, f"[{colors.get(verdict, 'red')}]{verdict}[/]", r.conclusion.text)
    out.print(table)
    out.print(
        f"{results.trials} trainings/checks in {results.wall_seconds:.0f} s ({results.wall_seconds / 60:.1f} min) "
        + (
            "as Ray tasks"
            if executor is Executor.ray
            else f"with {workers or 'no'} worker process{'es' * (workers != 1)}"
        )
        + (f"; {results.kept} kept from an interrupted run" if results.kept else "")
    )
    out.print(f"wrote [bold]{paths['markdown']}[/], {paths['html']} and {paths['results']}")


# --------------------------------------------------------------------------- sweeps
NOT_FIXED_BY_SWEEP = {  # train flags a sweep replaces or cannot take
    "out_dir": "it has its own --out",
    "resume": "a sweep continues from its .trials/ by itself: run the same command again",
}
SWEEP_DECIDES = ("seed", "devices", "platform")  # train flags a grid may not vary either: sweep.NOT_SWEPT says why


def _fixed_flags(args: list[str]):
    """`fmnist train` flags given to `fmnist sweep` -> the TrainConfig every trial starts from."""
    from fmnist.sweep import NOT_SWEPT

    train_command = typer.main.get_command(app).get_command(None, "train")
    params = train_command.make_context("fmnist sweep", list(args)).params
    defaults = {p.name: p.default for p in train_command.params}
    refused = NOT_FIXED_BY_SWEEP | {field: NOT_SWEPT[field] for field in SWEEP_DECIDES}
    for name, instead in refused.items():
        if name in defaults and params.get(name) != defaults[name]:
            raise FmnistError(f"a sweep does not take --{name.split('_')[0]} ({instead}).")
    return train_config(params)  # as `fmnist train` maps them


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def sweep(
    ctx: typer.Context,
    sets: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="FIELD=V1,V2,...: a TrainConfig or model field and its values; repeat for a grid. "
            "hidden=128,512x256 is one layer of 128, then two layers (512, 256).",
        ),
    ] = None,
    seeds: Annotated[int, typer.Option(help="Trials per grid point (seeds 0..N-1), reported as mean ± std.")] = 2,
    out_dir: Annotated[Path, typer.Option("--out", help="The sweep's folder: one run directory per trial.")] = Path(
        "runs/sweep"
    ),
    workers: Workers = None,
    executor: ExecutorOpt = Executor.local,
    ray_address: RayAddress = None,
    restart: RestartOpt = False,
) -> None:
    """A hyperparameter grid: every point trained once per seed, ranked on validation accuracy, with a report.

    Any `fmnist train` flag fixes that setting for every trial (e.g. --epochs 1, --recipe mlp, --limit 3000). The best point is chosen on the held-out validation images (10% unless --validation-split says otherwise); test accuracy is reported beside it. Finished trials are kept in the folder's .trials/: after an interruption the same command runs only the missing ones, and a grid given more values trains only the new points. A failed trial (an error, or a loss that became NaN) is listed and the sweep goes on.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    from rich.markup import escape

    from fmnist import sweep as sw
    from fmnist import sweep_report

    grid = sw.parse_grid(sets or [])
    if seeds < 1:
        raise FmnistError(f"--seeds must be at least 1, got {seeds}.")
    base = sw.sweep_base(_fixed_flags(ctx.args), grid)
    for p in sw.points(grid):  # a value the config rejects is an error now, not a failed trial later
        p.config(base, 0)
    workers = sw.DEFAULT_WORKERS if workers is None else workers
    dataset = _load(base.data_dir)
    in_process = executor is Executor.local and workers == 0
    if in_process:
        _use_compilation_cache()
    store = sw.TrialStore(out_dir / sw.TRIALS_DIR, sw.data_fingerprint(dataset))  # kept with the runs
    if restart:
        store.clear()
    command = " ".join(["fmnist sweep", *(f"--set {s}" for s in sets or []), f"--seeds {seeds}", *ctx.args])
    bar = _TrialsBar("sweep", workers)
    with bar.bar:
        result = sw.run_sweep(
            base, grid, seeds, out_dir, workers=workers, executor=executor.value, ray_address=ray_address,
            progress=bar, dataset=dataset if in_process or executor is Executor.ray else None,
            data_dir=base.data_dir, store=store,
        )  # fmt: skip
    paths = sweep_report.write_report(result, out_dir, command=command)
    head = sweep_report.TABLE_HEAD
    table = Table(*(Column(h) if h == "point" else Column(h, justify="right", no_wrap=True) for h in head))
    for row in sweep_report.table_rows(result):
        best = result.best is not None and row[0] == "1"
        table.add_row(*map(escape, row), style="bold green" if best else "red" if "failed" in row[-1] else None)
    out.print(table)
    out.print(escape(sw.summary(result)))
    for point, seed, run, why in result.failures:
        out.print(f"[red]failed:[/] {escape(point)} seed {seed} ({escape(run)}): {escape(why)}")
    how = (
        "as Ray tasks" if executor is Executor.ray else f"with {workers or 'no'} worker process{'es' * (workers != 1)}"
    )
    kept = f", {result.kept} kept from an earlier run (--restart runs them all)" if result.kept else ""
    out.print(f"{result.trials} trials in {result.wall_seconds:.0f} s {how}{kept}")
    out.print(f"run directories in [bold]{out_dir}[/]; wrote {paths['html']} and {paths['results']}")
