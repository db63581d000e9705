"""The ``fmnist`` command line: the only module that prints or exits.

Every command maps its flags onto a library call; an ``FmnistError`` becomes one line on
stderr and exit code 2. Keras and JAX are imported inside the commands that need them,
so ``fmnist --help`` starts fast.
"""

from __future__ import annotations

import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from fmnist import data
from fmnist.errors import FmnistError

app = typer.Typer(
    help="Train, evaluate, explain and serve a Fashion-MNIST clothing classifier.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False, soft_wrap=True)

DataDir = Annotated[
    Path | None, typer.Option("--data-dir", help="Folder with the four dataset files (default: search, see `fmnist data`).")
]


class Split(str, Enum):
    train = "train"
    test = "test"


def main() -> None:
    """Entry point: run the app, turning expected errors into one actionable line."""
    try:
        app()
    except FmnistError as e:
        err.print(f"[bold red]error:[/] {e}", soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        err.print("interrupted: nothing half-written was left behind (files are renamed into place when complete).")
        sys.exit(130)


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

            self._progress = Progress(*Progress.get_default_columns(), DownloadColumn(), TransferSpeedColumn(), console=err)
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
    info = data.locate(data_dir, progressbar=_DownloadBar())
    (x_train, y_train), (x_test, y_test) = data.load_data(data_dir)
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
    out_file: Annotated[Path | None, typer.Option("--out", help="PNG to write (default: show-<split>-<index>.png).")] = None,
    data_dir: DataDir = None,
) -> None:
    """Draw one image with its class name (or a labelled grid) to a PNG."""
    from fmnist import plots, runs

    (x_train, y_train), (x_test, y_test) = _load(data_dir)
    x, y = (x_train, y_train) if split is Split.train else (x_test, y_test)
    if grid:
        if not 1 <= grid <= 100:
            raise FmnistError(f"--grid takes 1 to 100 images, got {grid}.")
        data.check_index(index + grid - 1, len(x), split.value)
        fig = plots.labelled_grid(x[index : index + grid], y[index : index + grid])
        target = out_file or Path(f"show-{split.value}-grid{grid}.png")
    else:
        data.check_index(index, len(x), split.value)
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


@app.command()
def train(
    hidden: Annotated[list[int] | None, typer.Option(help="Hidden layer width; repeat for more layers.")] = None,
    activation: Annotated[str, typer.Option(help="Hidden layer activation.")] = "relu",
    arch: Annotated[str, typer.Option(help="mlp (the tutorial's) or cnn.")] = "mlp",
    dropout: Annotated[float, typer.Option(help="Dropout after each hidden layer.")] = 0.0,
    epochs: Annotated[int, typer.Option(help="Passes over the training set.")] = 5,
    batch_size: Annotated[int, typer.Option(help="Images per gradient step.")] = 32,
    learning_rate: Annotated[float | None, typer.Option(help="Optimizer learning rate (default: its own).")] = None,
    optimizer: Annotated[str, typer.Option(help="adam, adamw, sgd, rmsprop or nadam.")] = "adam",
    normalize: Annotated[bool, typer.Option(help="Divide pixels by 255 inside the model.")] = True,
    validation_split: Annotated[float, typer.Option(help="Fraction of training data held out.")] = 0.0,
    stop_at_loss: Annotated[float | None, typer.Option(help="Stop once training loss is below this.")] = None,
    stop_at_accuracy: Annotated[float | None, typer.Option(help="Stop once training accuracy is above this.")] = None,
    early_stopping: Annotated[int | None, typer.Option(help="Patience (epochs) on val_loss.")] = None,
    seed: Annotated[int, typer.Option(help="Random seed: weights, batch order, dropout.")] = 0,
    limit: Annotated[int | None, typer.Option(help="Train on the first N images only (quick trials).")] = None,
    out_dir: Annotated[Path, typer.Option("--out", help="Run directory to write.")] = Path("runs/default"),
    data_dir: DataDir = None,
) -> None:
    """Train a model (default: the tutorial's), evaluate it on the test set, and save the run."""
    from fmnist.models import ModelSpec
    from fmnist.train import TrainConfig
    from fmnist.train import train as train_job

    spec = ModelSpec(
        arch=arch, hidden=tuple(hidden or (128,)), activation=activation, normalize=normalize, dropout=dropout
    )
    config = TrainConfig(
        model=spec, epochs=epochs, batch_size=batch_size, optimizer=optimizer, learning_rate=learning_rate,
        validation_split=validation_split, stop_at_loss=stop_at_loss, stop_at_accuracy=stop_at_accuracy,
        early_stopping=early_stopping, seed=seed, train_limit=limit,
        data_dir=str(data_dir) if data_dir else None,
    )  # fmt: skip
    dataset = _load(data_dir)
    out.print(f"training {spec.describe()} for {epochs} epochs, batch {batch_size}, seed {seed}")
    result = train_job(config, out_dir, callbacks=[_progress_callback()], dataset=dataset)
    m = result.metrics
    out.print(
        f"[bold]test accuracy {m['accuracy']:.4f}[/], loss {m['loss']:.4f} "
        f"(trained {len(result.history['loss'])} epochs in {result.train_seconds:.1f}s)"
    )
    out.print(f"run saved in [bold]{out_dir}[/]")


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="Run directory or .keras model file.")],
    data_dir: DataDir = None,
) -> None:
    """Evaluate a saved model on the test set; writes metrics.json into its run directory."""
    from fmnist import engine, runs

    model = runs.load_model(run)
    _, (x_test, y_test) = _load(data_dir)
    metrics = engine.evaluate(model, x_test, y_test)
    out.print(f"test accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f} ({len(y_test):,} images)")
    run_dir = runs.run_dir_of(run)
    if run_dir is not None:
        runs.write_json(run_dir / runs.METRICS_FILE, metrics)
        out.print(f"wrote {run_dir / runs.METRICS_FILE}")


if __name__ == "__main__":
    main()
