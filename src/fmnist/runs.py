"""A run directory: save and load its artifacts, each written to a temporary name and renamed.

    runs/<name>/
      model.keras        opens with plain keras.saving.load_model
      config.json        the TrainConfig that made it (enough to reproduce the run)
      history.json/.csv  per-epoch loss, accuracy, val_loss, val_accuracy, seconds
      metrics.json       test-set evaluation
      figures/*.png      learning curves and the evaluation figures
      report.html        one self-contained page

Nothing here trains or evaluates; it only reads and writes.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from fmnist.errors import RunError

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
REPORT_FILE = "report.html"
DEFAULT_ROOT = Path("runs")


# --------------------------------------------------------------------------- atomic writes
def write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` via a temporary file in the same folder and an atomic rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text("utf-8"))
    except FileNotFoundError as e:
        raise RunError(f"{path} does not exist.") from e
    except (OSError, ValueError) as e:
        raise RunError(f"{path} is not readable JSON ({e}); re-create it (e.g. `fmnist evaluate`).") from e


def save_figure(path: Path, figure) -> Path:
    """Save a matplotlib Figure as PNG atomically."""
    buf = io.BytesIO()
    figure.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return write_bytes(path, buf.getvalue())


def save_model(path: Path, model) -> Path:
    """``model.save`` into a temporary ``.keras`` file, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextmanager
def staged_dir(target: Path) -> Iterator[Path]:
    """Fill a directory under a hidden temporary name; on success it replaces ``target``.

    An interrupted or failed run leaves the previous ``target`` (if any) untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        stage.chmod(0o755)
        yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    os.replace(stage, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- history
def history_rows(history: dict[str, list[float]]) -> list[dict[str, float]]:
    """``{'loss': [..], ...}`` -> ``[{'epoch': 1, 'loss': .., ...}, ...]``."""
    keys = list(history)
    epochs = len(history[keys[0]]) if keys else 0
    return [{"epoch": i + 1, **{k: history[k][i] for k in keys}} for i in range(epochs)]


def save_history(run_dir: Path, history: dict[str, list[float]]) -> None:
    write_json(run_dir / HISTORY_FILE, history)
    rows = history_rows(history)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]) if rows else ["epoch"])
    writer.writeheader()
    writer.writerows(rows)
    write_text(run_dir / HISTORY_CSV, buf.getvalue())


# --------------------------------------------------------------------------- finding and loading
def resolve_model_path(run_or_model: str | os.PathLike) -> Path:
    """A run directory or a ``.keras`` file -> the ``.keras`` file, with an actionable error."""
    p = Path(run_or_model)
    if p.is_dir():
        p = p / MODEL_FILE
        if not p.is_file():
            raise RunError(
                f"{run_or_model} has no {MODEL_FILE}: train into it with `fmnist train --out {run_or_model}`."
            )
        return p
    if not p.exists():
        raise RunError(f"{run_or_model} does not exist: give a run directory (e.g. runs/default) or a .keras file.")
    if p.suffix != ".keras":
        raise RunError(f"{run_or_model} is not a .keras model file or a run directory.")
    return p


def run_dir_of(run_or_model: str | os.PathLike) -> Path | None:
    """The run directory a model belongs to, or None for a bare model file."""
    p = Path(run_or_model)
    if p.is_dir():
        return p
    return p.parent if (p.parent / CONFIG_FILE).is_file() else None


def eval_views(run_or_model: str | os.PathLike) -> tuple[str, ...]:
    """The test-time views a run evaluates with (its config's ``eval_views``); a bare model: the image itself."""
    run_dir = run_dir_of(run_or_model)
    config = read_json(run_dir / CONFIG_FILE) if run_dir is not None and (run_dir / CONFIG_FILE).is_file() else {}
    return tuple(config.get("eval_views") or ("identity",))


def load_model(run_or_model: str | os.PathLike):
    """Open a saved model with plain ``keras.saving.load_model``; a damaged file is a RunError."""
    from fmnist._backend import keras

    path = resolve_model_path(run_or_model)
    try:
        return keras.saving.load_model(path)
    except Exception as e:
        raise RunError(f"{path} could not be loaded as a Keras model ({type(e).__name__}: {e}); retrain it.") from e


def iter_runs(root: Path = DEFAULT_ROOT) -> Iterator[Path]:
    """Run directories under ``root`` (those with a config.json), newest first."""
    if not Path(root).is_dir():
        return iter(())
    runs = [p for p in Path(root).iterdir() if not p.name.startswith(".") and (p / CONFIG_FILE).is_file()]
    return iter(sorted(runs, key=lambda p: (p / CONFIG_FILE).stat().st_mtime, reverse=True))
