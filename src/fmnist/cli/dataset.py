"""`fmnist data` and `fmnist show`: where the dataset is and what it holds, and its images drawn to PNGs."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from fmnist import data
from fmnist.cli import DataDir, _load, app, out
from fmnist.errors import FmnistError


class Split(StrEnum):
    train = "train"
    test = "test"


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
    from fmnist import accelerator  # starts JAX: after the dataset's lines

    out.print(f"device: {accelerator.describe(accelerator.select(None))}")


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
