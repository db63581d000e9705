"""The ``fmnist`` command line: the only package that prints or exits.

Every command maps its flags onto a library call; an ``FmnistError`` becomes one line on
stderr and exit code 2. Keras and JAX are imported inside the commands that need them,
so ``fmnist --help`` starts fast.

This file holds the app, main() and what the commands share; each command module imported at
its end adds its group of commands to ``app``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from fmnist import data
from fmnist.errors import FmnistError, Interrupted

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
        from rich.markup import escape  # a message's own brackets ('fmnist[export]') are text, not markup

        err.print(f"[bold red]error:[/] {escape(str(e))}", soft_wrap=True)
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


# The command modules add their commands to `app` as they are imported: in this order, the order of `fmnist --help`.
# isort: off
from fmnist.cli import dataset  # noqa: E402, F401  (data, show)
from fmnist.cli import train  # noqa: E402, F401  (train, recipes)
from fmnist.cli import runs  # noqa: E402, F401  (evaluate, report, runs, compare)
from fmnist.cli import jobs  # noqa: E402, F401  (experiment, sweep)
from fmnist.cli import predict  # noqa: E402, F401  (predict, serve)
from fmnist.cli import export  # noqa: E402, F401  (export)
# isort: on

# Used by the tests as fmnist.cli.NAME.
from fmnist.cli.jobs import _fixed_flags as _fixed_flags  # noqa: E402
from fmnist.cli.train import parse_duration as parse_duration  # noqa: E402
