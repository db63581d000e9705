"""The ``fmnist`` command line: the only module that prints or exits.

Every command maps its flags onto a library call; an ``FmnistError`` becomes one line on
stderr and exit code 2. Keras and JAX are imported inside the commands that need them,
so ``fmnist --help`` starts fast.
"""

from __future__ import annotations

import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Column, Table

from fmnist import data
from fmnist.errors import FmnistError, Interrupted
from fmnist.serve import config as serve_config

app = typer.Typer(
    help="Train, evaluate, explain and serve a Fashion-MNIST clothing classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDir = Annotated[
    Path | None,
    typer.Option("--data-dir", help="Folder with the four dataset files (default: search, see `fmnist data`)."),
]


class Split(StrEnum):
    train = "train"
    test = "test"


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


class _CtrlC(BaseException):
    """Ctrl-C that the command did not handle itself. Not a KeyboardInterrupt: Typer turns those
    into a silent exit 130 before main() could say what was kept."""


def _raise_ctrl_c(signum, frame) -> None:
    raise _CtrlC


def main() -> None:
    """Entry point: run the app, turning expected errors into one actionable line."""
    import signal

    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:  # not where SIGINT is ignored (nohup, &)
        signal.signal(signal.SIGINT, _raise_ctrl_c)
    try:
        app()
    except Interrupted as e:  # a training stopped on request (the train command exits 130/143 itself)
        err.print(f"interrupted: {e}")
        sys.exit(130)
    except FmnistError as e:
        err.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        sys.exit(2)
    except _CtrlC:
        err.print(
            "interrupted: nothing half-written was left behind (files are renamed into place when complete); "
            "a training continues from its last checkpoint with `fmnist train --resume RUN`."
        )
        sys.exit(130)


class _StopOnSignals:
    """While training: Ctrl-C or SIGTERM asks it to stop at the next chunk boundary, where it
    writes a checkpoint and raises Interrupted; a second signal interrupts at once.

    Passed to the train job as ``should_stop``; the previous handlers come back on exit.
    """

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict = {}

    def __call__(self) -> bool:
        return self.signum is not None

    def _handle(self, signum, frame) -> None:
        if self.signum is not None:
            raise _CtrlC
        self.signum = signum

    def __enter__(self) -> _StopOnSignals:
        import signal

        for name in self.SIGNALS:
            number = getattr(signal, name)
            self._previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        import signal

        for number, handler in self._previous.items():
            signal.signal(number, handler)

    @property
    def exit_code(self) -> int:
        """128 + the signal's number, as a shell reports it: 130 for Ctrl-C, 143 for SIGTERM."""
        import signal

        return 128 + (self.signum or signal.SIGINT)


def _use_compilation_cache() -> None:
    """Reuse compiled XLA programs across runs (~/.cache/fmnist/xla): later commands start seconds faster."""
    from fmnist import engine
    from fmnist.trials import COMPILE_CACHE_DIR

    engine.enable_compilation_cache(data.cache_dir() / COMPILE_CACHE_DIR)


def _load(data_dir: Path | None):
    """load_data with a download progress bar on stderr if a download is needed."""
    return data.load_data(data_dir, progressbar=_DownloadBar())


class _DownloadBar:
    """A tqdm-like object for pooch, drawn with Rich."""

    def __init__(self):
        self.total, self._progress, self._task = 0, None, None

    def update(self, n):
        if self._progress is None:
            from rich.progress import DownloadColumn, Progress, TransferSpeedColumn

            columns = (*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn())
            self._progress = Progress(*columns, console=err)
            self._progress.start()
            self._task = self._progress.add_task("downloading", total=self.total or None)
        self._progress.update(self._task, advance=n)

    def reset(self):
        if self._progress is not None:
            self._progress.reset(self._task, total=self.total or None)

    def close(self):
        if self._progress is not None:
            self._progress.stop()
            self._progress = None


# --------------------------------------------------------------------------- data
@app.command("data")
def data_cmd(data_dir: DataDir = None) -> None:
    """Where the dataset was found, whether it verified, and what it holds."""
    (x_train, y_train), (_, y_test) = _load(data_dir)  # verifies (or trusts its checked cache)
    info = data.locate(data_dir)
    out.print(f"[bold]Fashion-MNIST[/] from {info.source.label}: {info.source.directory}")
    out.print("verified: SHA-256 of each decompressed file matches")
    for name, path in info.files.items():
        out.print(f"  {name:26} {path}")
    table = Table("class", "name", "train", "test")
    for c, name in enumerate(data.CLASS_NAMES):
        table.add_row(str(c), name, str(data.class_counts(y_train)[c]), str(data.class_counts(y_test)[c]))
    table.add_row("", "total", f"{len(y_train):,}", f"{len(y_test):,}", style="bold")
    out.print(table)
    out.print(f"images: {x_train.shape[1]}×{x_train.shape[2]} uint8, pixel values {x_train.min()}–{x_train.max()}")


@app.command()
def show(
    index: Annotated[int, typer.Argument(help="Image index within the split.")] = 0,
    split: Annotated[Split, typer.Option(help="Which split to read from.")] = Split.train,
    grid: Annotated[int, typer.Option(help="Draw the first N images as a labelled grid instead.")] = 0,
    out_file: Annotated[
        Path | None, typer.Option("--out", help="PNG to write (default: show-<split>-<index>.png).")
    ] = None,
    data_dir: DataDir = None,
) -> None:
    """Draw one image with its class name (or a labelled grid) to a PNG."""
    (x_train, y_train), (x_test, y_test) = _load(data_dir)
    x, y = (x_train, y_train) if split is Split.train else (x_test, y_test)
    data.check_index(index, len(x), split.value)
    if grid and not 1 <= grid <= min(100, len(x) - index):
        raise FmnistError(f"--grid takes 1 to {min(100, len(x) - index)} images from index {index}, got {grid}.")
    from fmnist import plots, runs  # matplotlib: only once the arguments are known to be good

    if grid:
        fig = plots.labelled_grid(x[index : index + grid], y[index : index + grid])
        target = out_file or Path(f"show-{split.value}-grid{grid}.png")
    else:
        label = int(y[index])
        fig = plots.image(x[index], f"{split.value}[{index}]: {data.CLASS_NAMES[label]} (label {label})")
        target = out_file or Path(f"show-{split.value}-{index}.png")
    runs.save_figure(target, fig)
    out.print(f"wrote {target}")


# --------------------------------------------------------------------------- train and evaluate
def _progress_callback():
    """A Keras callback that prints one line per epoch and a bar inside long epochs."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fmnist._backend import keras

    class EpochLines(keras.callbacks.Callback):
        BAR_AFTER_S = 1.5  # epochs shorter than this get only their summary line

        def on_epoch_begin(self, epoch, logs=None):
            self._start, self._bar = time.perf_counter(), None

        def on_train_batch_end(self, step, logs=None):
            total = self.params.get("steps")
            if self._bar is None and time.perf_counter() - self._start > self.BAR_AFTER_S and total:
                self._bar = Progress(
                    TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=err, transient=True,
                )  # fmt: skip
                self._bar.start()
                self._task = self._bar.add_task("steps", total=total, loss=0.0)
            if self._bar is not None:
                self._bar.update(self._task, completed=step + 1, loss=(logs or {}).get("loss", 0.0))

        def on_epoch_end(self, epoch, logs=None):
            if self._bar is not None:
                self._bar.stop()
            seconds = time.perf_counter() - self._start
            parts = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
            out.print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {seconds:.1f}s - {parts}")

    return EpochLines()


def parse_duration(text: str) -> float:
    """'300', '300s', '5m', '1.5h' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        seconds = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise FmnistError(f"--time-budget {text!r}: give a positive duration such as 300, 300s, 5m or 1.5h.")
    return seconds


def _train_config(
    recipe, hidden, activation, arch, conv_filters, conv_strides, pool_first, whiten, dropout, normalize, standardize,
    epochs, batch_size, optimizer, learning_rate, momentum, nesterov, weight_decay, schedule, label_smoothing,
    augment_shift, augment_flip, augment_erase, ema, eval_views, time_budget, steps, validation_split, stop_at_loss,
    stop_at_accuracy, early_stopping, seed, limit, data_dir, devices=None,
):  # fmt: skip
    """The TrainConfig that `fmnist train`'s flags describe (None: not typed): the recipe's, or the
    defaults, with every typed flag overriding its field. `fmnist sweep` maps the same flags."""
    import dataclasses

    from fmnist import recipes
    from fmnist.train import TrainConfig

    base = recipes.get(recipe).config if recipe else TrainConfig()
    spec_fields = {
        "hidden": tuple(hidden) if hidden else None, "activation": activation, "arch": arch, "dropout": dropout,
        "conv_filters": tuple(conv_filters) if conv_filters else None,
        "conv_strides": tuple(conv_strides) if conv_strides else None, "pool_first": pool_first,
        "whiten": whiten, "normalize": normalize, "standardize": standardize,
    }  # fmt: skip
    fields = {
        "epochs": epochs, "batch_size": batch_size, "optimizer": optimizer, "learning_rate": learning_rate,
        "momentum": momentum, "nesterov": nesterov, "weight_decay": weight_decay, "schedule": schedule,
        "label_smoothing": label_smoothing, "augment_shift": augment_shift, "augment_flip": augment_flip,
        "augment_erase": augment_erase, "ema": ema, "eval_views": tuple(eval_views) if eval_views else None,
        "steps": steps,
        "time_budget": parse_duration(time_budget) if time_budget is not None else None,
        "validation_split": validation_split, "stop_at_loss": stop_at_loss, "stop_at_accuracy": stop_at_accuracy,
        "early_stopping": early_stopping, "seed": seed, "train_limit": limit, "devices": devices,
        "data_dir": str(data_dir) if data_dir else None,
    }  # fmt: skip
    typed = {k: v for k, v in fields.items() if v is not None}
    if epochs is not None or steps is not None:
        typed.setdefault("time_budget", None)  # an explicit length replaces a recipe's time budget
    if limit is not None and time_budget is None and base.time_budget is not None:
        typed["time_budget"] = None  # --limit is a quick trial: one pass over N images, not the recipe's minutes
        typed.setdefault("epochs", 1)
    spec = dataclasses.replace(base.model, **{k: v for k, v in spec_fields.items() if v is not None})
    return dataclasses.replace(base, model=spec, **typed)


Opt = typer.Option  # every training flag defaults to None: only flags the user typed override the recipe


@app.command()
def train(
    recipe: Annotated[
        str | None, Opt(help="Start from a named recipe (see `fmnist recipes`); flags override it.")
    ] = None,
    hidden: Annotated[list[int] | None, Opt(help="Hidden layer width; repeat for more layers. [default: 128]")] = None,
    activation: Annotated[str | None, Opt(help="Hidden layer activation. [default: relu]")] = None,
    arch: Annotated[str | None, Opt(help="mlp (the tutorial's), cnn or vgg. [default: mlp]")] = None,
    conv_filters: Annotated[
        list[int] | None, Opt(help="cnn/vgg: filters per conv block; repeat. [default: 32 64]")
    ] = None,
    conv_strides: Annotated[
        list[int] | None,
        Opt("--conv-stride", help="cnn: each block's conv stride; repeat, one per block. [default: 1 each, pooled]"),
    ] = None,
    pool_first: Annotated[
        bool | None,
        Opt("--pool-first/--no-pool-first", help="cnn: max-pool each conv before BatchNorm+relu. [default: no]"),
    ] = None,
    whiten: Annotated[
        bool | None,
        Opt("--whiten/--no-whiten", help="cnn: a fixed (untrained) patch-whitening first conv. [default: no]"),
    ] = None,
    dropout: Annotated[float | None, Opt(help="Dropout after each hidden layer. [default: 0]")] = None,
    normalize: Annotated[
        bool | None,
        Opt("--normalize/--no-normalize", help="Divide pixels by 255 inside the model. [default: normalize]"),
    ] = None,
    standardize: Annotated[
        bool | None,
        Opt(
            "--standardize/--no-standardize",
            help="Then standardize each pixel with the training images' mean and std. [default: no]",
        ),
    ] = None,
    epochs: Annotated[int | None, Opt(help="Passes over the training set. [default: 5]")] = None,
    batch_size: Annotated[int | None, Opt(help="Images per gradient step. [default: 32]")] = None,
    optimizer: Annotated[str | None, Opt(help="adam, adamw, sgd, rmsprop or nadam. [default: adam]")] = None,
    learning_rate: Annotated[
        float | None, Opt(help="Learning rate (one-cycle: the peak). [default: the optimizer's]")
    ] = None,
    momentum: Annotated[float | None, Opt(help="sgd: momentum. [default: 0]")] = None,
    nesterov: Annotated[bool | None, Opt("--nesterov/--no-nesterov", help="sgd: Nesterov momentum.")] = None,
    weight_decay: Annotated[float | None, Opt(help="Decoupled weight decay. [default: none]")] = None,
    schedule: Annotated[
        str | None, Opt(help="Learning rate schedule: constant or one-cycle. [default: constant]")
    ] = None,
    label_smoothing: Annotated[float | None, Opt(help="Label smoothing of the training loss. [default: 0]")] = None,
    augment_shift: Annotated[int | None, Opt(help="Augment: random shifts up to N px. [default: 0]")] = None,
    augment_flip: Annotated[
        bool | None, Opt("--augment-flip/--no-augment-flip", help="Augment: random left-right mirroring.")
    ] = None,
    augment_erase: Annotated[
        float | None, Opt(help="Augment: blank a random rectangle of this fraction of the images. [default: 0]")
    ] = None,
    ema: Annotated[float | None, Opt(help="Average the weights (EMA momentum, e.g. 0.99). [default: off]")] = None,
    eval_views: Annotated[
        list[str] | None,
        Opt(
            "--eval-view",
            help="Test-time view, repeat to average: identity, flip, a 1 px shift (left, right, up, down, up-left, "
            "up-right, down-left, down-right) or a mirrored one (flip-left, ..., flip-down-right).",
        ),
    ] = None,
    time_budget: Annotated[
        str | None, Opt(help="Whole-command budget (300, 300s, 5m): sets the number of steps.")
    ] = None,
    steps: Annotated[int | None, Opt(help="Optimizer steps in all, instead of epochs.")] = None,
    validation_split: Annotated[float | None, Opt(help="Fraction of training data held out. [default: 0]")] = None,
    stop_at_loss: Annotated[float | None, Opt(help="Stop once training loss is below this.")] = None,
    stop_at_accuracy: Annotated[float | None, Opt(help="Stop once training accuracy is above this.")] = None,
    early_stopping: Annotated[int | None, Opt(help="Patience (epochs) on val_loss.")] = None,
    seed: Annotated[
        int | None, Opt(help="Random seed: weights, batch order, augmentation, dropout. [default: 0]")
    ] = None,
    limit: Annotated[int | None, Opt(help="Train on the first N images only (quick trials, smoke tests).")] = None,
    devices: Annotated[
        int | None,
        Opt(
            min=1,
            help="Split each batch over N devices of this process (data-parallel, same result; a CPU simulates "
            "N devices). Several processes: KERAS_DISTRIBUTION_* variables, README 'Scaling out'. [default: 1]",
        ),
    ] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run directory to write. [default: runs/default]")] = None,
    resume: Annotated[
        Path | None, Opt(help="Continue the interrupted training of this run from its last checkpoint.")
    ] = None,
    restart: Annotated[bool, Opt("--restart", help="Discard an interrupted training in --out and start over.")] = False,
    data_dir: DataDir = None,
) -> None:
    """Train a model (default: the tutorial's), evaluate it on the test set, and save the run with its report.

    A training checkpoints at every epoch end: after a crash or kill, `fmnist train --resume RUN` continues it to the same result. Ctrl-C (or SIGTERM) stops at the next checkpoint.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    started = time.perf_counter()
    from fmnist import parallel, report
    from fmnist import train as train_mod
    from fmnist.errors import RunError

    flags = dict(
        recipe=recipe, hidden=hidden, activation=activation, arch=arch, conv_filters=conv_filters,
        conv_strides=conv_strides, pool_first=pool_first, whiten=whiten, dropout=dropout, normalize=normalize,
        standardize=standardize, epochs=epochs, batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate,
        momentum=momentum, nesterov=nesterov, weight_decay=weight_decay, schedule=schedule,
        label_smoothing=label_smoothing, augment_shift=augment_shift, augment_flip=augment_flip,
        augment_erase=augment_erase, ema=ema, eval_views=eval_views, time_budget=time_budget, steps=steps,
        validation_split=validation_split,
        stop_at_loss=stop_at_loss, stop_at_accuracy=stop_at_accuracy, early_stopping=early_stopping, seed=seed,
        limit=limit, devices=devices,
    )  # fmt: skip
    if resume is not None:
        given = [k for k, v in flags.items() if v is not None]
        if given or restart or (out_dir is not None and out_dir != resume):
            raise FmnistError(
                f"--resume continues {resume} with the settings it was started with: give it no other training "
                f"flags (got {', '.join(given) or '--restart/--out'})."
            )
        status = train_mod.resume_status(resume)
        if status == "finished":
            out.print(f"{resume} is finished: nothing to resume (its report: {resume / 'report.html'}).")
            return
        if status == "none":
            raise RunError(
                f"{resume} has no interrupted training to resume: start one with `fmnist train --out {resume}`."
            )
        config, out_dir = train_mod.resume_config(resume), resume
    else:
        config = _train_config(**flags, data_dir=data_dir)
        out_dir = out_dir or Path("runs/default")
    parallel.setup(config.devices)  # before any JAX computation: devices, and joining a multi-process job
    dataset = _load(data_dir or (Path(config.data_dir) if config.data_dir else None))
    _use_compilation_cache()
    length = (
        f"a {config.time_budget:.0f} s budget" if config.time_budget and config.steps is None
        else f"{config.steps} steps" if config.steps else f"{config.epochs} epochs"
    )  # fmt: skip
    named = f"recipe {config.recipe}: " if config.recipe else ""
    rank = parallel.process_index()
    where = f" on {config.devices} devices" if config.devices > 1 else ""
    if parallel.multi_process():
        where = f"{where or ' on 1 device'} of process {rank} (of {parallel.process_count()})"
    doing = f"resuming {out_dir}: " if resume is not None else "training "
    out.print(
        f"{doing}{named}{config.model.describe()} for {length}, batch {config.batch_size}, seed {config.seed}{where}"
    )
    job = {"callbacks": [_progress_callback()], "dataset": dataset, "started": started}
    with _StopOnSignals() as stop:
        try:
            if resume is not None:
                result = train_mod.resume(resume, should_stop=stop, **job)
            else:
                result = train_mod.train(config, out_dir, restart=restart, should_stop=stop, **job)
        except Interrupted as e:
            err.print(f"interrupted: {e}")
            raise typer.Exit(stop.exit_code) from None
    if rank != 0:
        out.print(f"process {rank} done: process 0 writes the run in {out_dir}")
        return
    if stop():  # the signal came after the last step: the run is saved, only its report is left
        err.print(f"interrupted: the run is complete in {out_dir}; write its report with `fmnist report {out_dir}`.")
        raise typer.Exit(stop.exit_code)
    m = result.metrics
    if "views" in m:  # name a few views; count many
        named = " + ".join(m["views"]) if len(m["views"]) <= 3 else f"{len(m['views'])}"
        views = f" ({named} test-time views; one view {m['accuracy_single_view']:.4f})"
    else:
        views = ""
    out.print(
        f"[bold]test accuracy {m['accuracy']:.4f}[/]{views}, loss {m['loss']:.4f} "
        f"(trained {len(result.history['loss'])} epochs"
        f"{f', {result.config.steps} steps' if result.config.steps else ''} in {result.train_seconds:.1f}s)"
    )
    if result.plan:  # what the time budget's plan measured, beside what the run then took
        p = result.plan
        out.print(
            f"the budget's plan: its first {result.config.probe_steps} steps timed {p['step_ms']:.3g} ms a step "
            f"(margin included), so {result.config.steps} steps in all, {p['train_s']:.0f} s of them after the probe"
        )
    evaluation = (result.metrics, result.probs)
    page = report.write_run_report(out_dir, model=result.model, dataset=dataset, evaluation=evaluation)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result.phases.items())
    out.print(f"run saved in [bold]{out_dir}[/]; report: {page}")
    out.print(f"{time.perf_counter() - started:.0f} s in all ({phases}, saving and report the rest)")


@app.command("recipes")
def recipes_cmd() -> None:
    """The named training recipes, with what each measured on the 2-core CPU machine."""
    from fmnist import recipes

    table = Table("recipe", "what", "measured", show_lines=True)
    for r in recipes.RECIPES.values():
        table.add_row(f"[bold]{r.name}[/]", r.summary, r.measured)
    out.print(table)
    out.print("use one: fmnist train --recipe NAME [--out runs/NAME]; any flag beside it overrides that setting.")


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


# --------------------------------------------------------------------------- evaluation, report and runs
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
    "seed": "use --seeds N",
    "out_dir": "it has its own --out",
    "devices": "each trial trains on one device (--workers or Ray spread the trials)",
    "resume": "a sweep continues from its .trials/ by itself: run the same command again",
}


def _fixed_flags(args: list[str]):
    """`fmnist train` flags given to `fmnist sweep` -> the TrainConfig every trial starts from."""
    import inspect

    train_command = typer.main.get_command(app).get_command(None, "train")
    params = train_command.make_context("fmnist sweep", list(args)).params
    defaults = {p.name: p.default for p in train_command.params}
    for name, instead in NOT_FIXED_BY_SWEEP.items():
        if name in defaults and params.get(name) != defaults[name]:
            raise FmnistError(f"a sweep does not take --{name.split('_')[0]}: {instead}.")
    return _train_config(**{k: params[k] for k in inspect.signature(_train_config).parameters})


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
    paths = sw.write_report(result, out_dir, command=command)
    table = Table(*(Column(h) if h == "point" else Column(h, justify="right", no_wrap=True) for h in sw.TABLE_HEAD))
    for row in sw.table_rows(result):
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


# ---- predict
@app.command()
def predict(
    run: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL", help="Run directory or .keras model file.")],
    inputs: Annotated[
        list[Path],
        typer.Argument(metavar="IMAGE", help="Image files (PNG, JPEG, WebP, GIF, BMP, TIFF) or folders of them."),
    ],
    top_k: Annotated[int, typer.Option("--top-k", min=1, max=10, help="Classes shown per image.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per line instead of tables.")] = False,
    save_preprocessed: Annotated[
        Path | None, typer.Option(help="Folder to write the 28×28 image the model saw for each input.")
    ] = None,
) -> None:
    """Classify your own images: each is converted by Fashion-MNIST's recipe, then predicted.

    A folder means every image in it. A file that cannot be read gets one error line on stderr, the others are still predicted, and the exit code is 1.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    import json

    from rich.markup import escape

    from fmnist.predict import Predictor
    from fmnist.predict import save_preprocessed as save_inputs

    predictor = Predictor.load(run)
    predictions, errors = predictor.predict_files(inputs)
    for e in errors:
        err.print(f"[bold red]error:[/] {escape(str(e))}")
    saved = save_inputs(predictions, save_preprocessed) if save_preprocessed else [None] * len(predictions)
    for p, path in zip(predictions, saved, strict=True):
        if as_json:  # plain print: exactly one object per line, never wrapped, for pipes and `jq`
            print(json.dumps({**p.to_dict(top_k), "preprocessed": str(path) if path else None}), flush=True)
            continue
        table = Table(
            Column("#", justify="right"), "class", Column("probability", justify="right"), "",
            title=f"{escape(p.source or '')}: [bold]{p.class_name}[/] ({p.probability:.1%})",
            title_justify="left", box=None, pad_edge=False,
        )  # fmt: skip
        for rank, (label, name, prob) in enumerate(p.top(top_k), 1):
            table.add_row(str(rank), f"{name} ({label})", f"{prob:.1%}", "█" * round(prob * 20))
        out.print(table)
        if path:
            out.print(f"  model input saved as {escape(str(path))}")
    if not as_json:
        out.print(f"{len(predictions)} image{'s' * (len(predictions) != 1)} predicted, {len(errors)} failed")
    if errors:
        raise typer.Exit(1)


# ---- serve
@app.command()
def serve(
    run: Annotated[Path, typer.Argument(metavar="RUN_OR_MODEL", help="Run directory or .keras model file.")],
    host: Annotated[
        str, typer.Option(help="Address to listen on: 127.0.0.1 is this machine only; 0.0.0.0 every network.")
    ] = serve_config.DEFAULT_HOST,
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="TCP port (0: any free one).")
    ] = serve_config.DEFAULT_PORT,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="FMNIST_API_KEY", help="Require 'Authorization: Bearer KEY' on the API (not the page or health)."
        ),
    ] = None,
    cors_origin: Annotated[
        list[str] | None,
        typer.Option(help="A browser origin allowed to call the API, e.g. https://shop.example (repeatable)."),
    ] = None,
    max_upload_mb: Annotated[
        float, typer.Option(min=0.001, help="Refuse request bodies larger than this (413), unread.")
    ] = serve_config.DEFAULT_MAX_UPLOAD_MB,
    max_pixels: Annotated[
        int, typer.Option(min=1, help="Refuse photos with more pixels (413), undecoded.")
    ] = serve_config.DEFAULT_MAX_PIXELS,
    max_batch: Annotated[
        int, typer.Option(min=1, help="Most images in one request (413 above it).")
    ] = serve_config.DEFAULT_MAX_BATCH,
    max_queue: Annotated[
        int, typer.Option(min=1, help="Images waiting for the model before 503 (overloaded).")
    ] = serve_config.DEFAULT_MAX_QUEUE,
    batch_requests: Annotated[
        bool, typer.Option(help="Let concurrent requests share one forward pass (up to --max-batch images).")
    ] = True,
) -> None:
    """Serve a model over HTTP: KServe V2, TensorFlow Serving REST, /api/classify, /metrics, and a page at /.

    The model loads and compiles in the background: /v2/health/ready answers 503 until it is ready. Ctrl-C stops.
    """
    from rich.markup import escape

    from fmnist import runs
    from fmnist import serve as serving

    runs.resolve_model_path(run)  # a missing or wrong path is one line now, not an error page later
    _use_compilation_cache()
    config = serving.ServeConfig(
        host=host, port=port, api_key=api_key or None, cors_origins=tuple(cors_origin or ()),
        max_upload_mb=max_upload_mb, max_pixels=max_pixels, max_batch=max_batch, max_queue=max_queue,
        batch_requests=batch_requests,
    )  # fmt: skip
    sock = serving.bind(config)
    url = serving.url(sock)

    def loaded(error: str | None) -> None:
        if error is None:
            out.print(f"model ready: open {url}")
        else:
            err.print(f"[bold red]error:[/] {escape(error)}; /v2/health/ready answers 503 until it is fixed.")

    application = serving.create_app(run, config, on_loaded=loaded)
    out.print(f"serving {run} at {url} (the page; API: /v2, /v1/models, /api/classify, /metrics). Ctrl-C stops.")
    if api_key:
        out.print("the API needs 'Authorization: Bearer <key>'; the page and /v2/health/* do not.")
    serving.run(application, sock)


if __name__ == "__main__":
    main()
