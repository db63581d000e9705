"""`fmnist train` and `fmnist recipes`: the train command's flags, the TrainConfig they describe
(`fmnist sweep` maps the same flags), and its progress lines."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmnist.cli import DataDir, _load, _StopOnSignals, _use_compilation_cache, app, err, out
from fmnist.errors import FmnistError, Interrupted


def _progress_callback(earlier: str = "trained before this fit"):
    """A Keras callback that prints one line per epoch and a bar inside long epochs.

    A fit that starts after epoch 1 (a resumed run; a time budget whose probe, run before the fit,
    spanned whole epochs) first says which epochs it does not show, and why (``earlier``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fmnist._backend import keras

    class EpochLines(keras.callbacks.Callback):
        BAR_AFTER_S = 1.5  # epochs shorter than this get only their summary line

        def on_train_begin(self, logs=None):
            self._first = True

        def on_epoch_begin(self, epoch, logs=None):
            if self._first and epoch > 0:
                out.print(f"Epochs 1-{epoch}: {earlier} (not shown)")
            self._start, self._bar, self._first = time.perf_counter(), None, False

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
    stop_at_accuracy, early_stopping, seed, limit, data_dir, devices=None, members=None, conv_repeats=None,
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
        "conv_repeats": tuple(conv_repeats) if conv_repeats else None,
        "whiten": whiten, "normalize": normalize, "standardize": standardize, "members": members,
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
    conv_repeats: Annotated[
        list[int] | None,
        Opt("--conv-repeat", help="cnn: convs in each block; repeat, one per block (deeper blocks). [default: 1 each]"),
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
    members: Annotated[
        int | None,
        Opt(
            help="An ensemble of N such nets trained side by side, each on its own loss; it predicts their mean. "
            "[default: 1]"
        ),
    ] = None,
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

    A training checkpoints at epoch ends (at most every 2 s): after a crash or kill, `fmnist train --resume RUN` continues it to the same result. Ctrl-C (or SIGTERM) stops within one compiled chunk and saves a checkpoint there.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    started = time.perf_counter()
    from fmnist import parallel, report
    from fmnist import train as train_mod
    from fmnist.errors import RunError

    flags = dict(
        recipe=recipe, hidden=hidden, activation=activation, arch=arch, conv_filters=conv_filters,
        conv_strides=conv_strides, conv_repeats=conv_repeats, pool_first=pool_first, whiten=whiten, dropout=dropout,
        members=members, normalize=normalize, standardize=standardize, epochs=epochs, batch_size=batch_size,
        optimizer=optimizer, learning_rate=learning_rate, momentum=momentum, nesterov=nesterov,
        weight_decay=weight_decay, schedule=schedule,
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
    # Epochs that this fit does not train itself: a resumed run's, or a time budget's probe that spanned whole epochs.
    earlier = "before the interruption" if resume is not None else "the time budget's probe, timed to plan the steps"
    job = {"callbacks": [_progress_callback(earlier)], "dataset": dataset, "started": started}
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
