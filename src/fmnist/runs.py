"""A run directory: save and load its artifacts, each written to a temporary name and renamed.

    runs/<name>/
      model.keras        opens with plain keras.saving.load_model
      config.json        the TrainConfig that made it (enough to reproduce the run)
      history.json/.csv  per-epoch loss, accuracy, val_loss, val_accuracy, seconds
      metrics.json       test-set evaluation
      figures/*.png      learning curves and the evaluation figures
      report.html        one self-contained page

    runs/.<name>.partial/  while it trains: the stage the run is written into, with
                           checkpoint.npz (see save_checkpoint); renamed to runs/<name> when done
    runs/.<name>.lock      held (flock) by the process training into runs/<name>

Nothing here trains or evaluates; it only reads and writes.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from fmnist.errors import CheckpointError, RunError

MODEL_FILE = "model.keras"
CONFIG_FILE = "config.json"
HISTORY_FILE = "history.json"
HISTORY_CSV = "history.csv"
METRICS_FILE = "metrics.json"
FIGURES_DIR = "figures"
REPORT_FILE = "report.html"
CHECKPOINT_FILE = "checkpoint.npz"
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
            f.flush()
            os.fsync(f.fileno())  # the bytes are on disk before the name points at them
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)
    return path


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a crash right after it cannot undo it)."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


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


def read_object(path: Path) -> dict:
    """A JSON file that must hold an object (config.json, metrics.json): anything else is a RunError."""
    value = read_json(path)
    if not isinstance(value, dict):
        raise RunError(f"{path} holds a JSON {type(value).__name__}, not the object fmnist wrote: it is damaged.")
    return value


def save_figure(path: Path, figure) -> Path:
    """Save a matplotlib Figure as PNG atomically."""
    from fmnist.plots import png_bytes

    return write_bytes(path, png_bytes(figure))


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


def partial_dir(target: Path) -> Path:
    """The stage a resumable training writes ``target`` through: kept when it is interrupted."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


@contextmanager
def staged_dir(target: Path, stage: Path | None = None) -> Iterator[Path]:
    """Fill a directory under a hidden name; on success it replaces ``target``.

    ``stage`` (a training's ``partial_dir``) is a fixed stage that already exists and is kept
    when the block fails, so its checkpoint survives for ``--resume``; without one, a fresh
    temporary stage is made and removed on failure. Either way, an interrupted or failed run
    leaves the previous ``target`` (if any) untouched.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    keep = stage is not None
    if stage is None:
        stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        stage.chmod(0o755)
        yield stage
    except BaseException:
        if not keep:
            shutil.rmtree(stage, ignore_errors=True)
        raise
    old = target.with_name(f".{target.name}.old-{os.getpid()}") if target.exists() else None
    if old is not None:
        os.replace(target, old)
    os.replace(stage, target)
    _fsync_dir(target.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextmanager
def run_lock(target: Path) -> Iterator[None]:
    """Hold ``target``'s lock while writing it; a second writer gets a RunError at once.

    An advisory ``flock`` on a hidden file beside the run: the system releases it when the
    holder exits, however it exits (a SIGKILL leaves no stale lock). The file itself stays.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    path = target.with_name(f".{target.name}.lock")
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise RunError(
                f"{target} is being written by another fmnist process (pid {holder}): wait for it to finish "
                "or train into another --out."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------------- checkpoints
def save_checkpoint(path: Path, tree: dict) -> Path:
    """Write a tree of dicts, lists, JSON values and numpy arrays as one ``.npz``, atomically.

    The arrays are stored as they are (bit for bit); everything else goes into one JSON
    document inside the same file, so a checkpoint is either wholly old or wholly new.
    """
    arrays: dict[str, np.ndarray] = {}

    def encode(value):
        if isinstance(value, dict):
            return {str(k): encode(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [encode(v) for v in value]
        if isinstance(value, np.generic):
            return value.item()
        if hasattr(value, "__array__"):
            name = f"a{len(arrays)}"
            arrays[name] = np.asarray(value)
            return {"__array__": name}
        return value

    meta = json.dumps(encode(tree)).encode("utf-8")
    buf = io.BytesIO()
    np.savez(buf, __meta__=np.frombuffer(meta, np.uint8), **arrays)
    return write_bytes(path, buf.getvalue())


def load_checkpoint(path: Path) -> dict:
    """Read what save_checkpoint wrote; anything unreadable is a CheckpointError."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            files = {name: npz[name] for name in npz.files}
        meta = json.loads(files.pop("__meta__").tobytes().decode("utf-8"))

        def decode(value):
            if isinstance(value, dict):
                if set(value) == {"__array__"}:
                    return files[value["__array__"]]
                return {k: decode(v) for k, v in value.items()}
            if isinstance(value, list):
                return [decode(v) for v in value]
            return value

        return decode(meta)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
        raise CheckpointError(f"{path} is damaged ({type(e).__name__}: {e})") from e


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
    config = read_object(run_dir / CONFIG_FILE) if run_dir is not None and (run_dir / CONFIG_FILE).is_file() else {}
    views = config.get("eval_views") or ("identity",)
    if not isinstance(views, list | tuple) or not all(isinstance(v, str) for v in views):
        raise RunError(f"{run_dir / CONFIG_FILE}: eval_views {views!r} is not a list of view names: it is damaged.")
    return tuple(views)


IMAGE_SHAPE, NUM_CLASSES = (28, 28), 10  # what every fmnist model takes and gives (as fmnist.data)


def load_model(run_or_model: str | os.PathLike):
    """Open a saved model with plain ``keras.saving.load_model``; a damaged file is a RunError.

    Every command that reads a run's model comes here (evaluate, report, predict, serve), so a
    truncated file, or a model that is not a 28×28 -> 10-class classifier, is one clear error.
    """
    from fmnist._backend import keras

    path = resolve_model_path(run_or_model)
    try:
        model = keras.saving.load_model(path)
    except Exception as e:
        raise RunError(f"{path} could not be loaded as a Keras model ({type(e).__name__}: {e}); retrain it.") from e
    try:
        spec = model.compute_output_spec(keras.KerasTensor((None, *IMAGE_SHAPE), dtype="float32"))
        shape = tuple(spec.shape)
    except Exception as e:
        raise RunError(f"{path} is a model that cannot take 28×28 images: not a Fashion-MNIST classifier.") from e
    if shape != (None, NUM_CLASSES):
        raise RunError(
            f"{path} outputs shape {shape}, not one score per class (None, {NUM_CLASSES}): "
            "it is not a Fashion-MNIST classifier."
        )
    return model


def run_problems(run_dir: Path) -> list[str]:
    """What is wrong with a run directory, cheaply (no Keras): [] for a healthy run.

    Checks that config.json and metrics.json are readable JSON objects and that model.keras
    is a whole ``.keras`` archive (a truncated zip has no central directory).
    """
    run_dir, problems = Path(run_dir), []
    for name in (CONFIG_FILE, METRICS_FILE):
        try:
            read_object(run_dir / name)
        except RunError:
            problems.append(f"{name} missing" if not (run_dir / name).is_file() else f"{name} unreadable")
    model = run_dir / MODEL_FILE
    try:
        with zipfile.ZipFile(model) as archive:
            if "config.json" not in archive.namelist():
                raise zipfile.BadZipFile
    except FileNotFoundError:
        problems.append(f"{MODEL_FILE} missing")
    except (OSError, zipfile.BadZipFile):
        problems.append(f"{MODEL_FILE} damaged")
    return problems


def iter_runs(root: Path = DEFAULT_ROOT) -> Iterator[Path]:
    """Run directories under ``root`` (those with a config.json or a model.keras), newest first."""
    if not Path(root).is_dir():
        return iter(())
    runs = [
        p for p in Path(root).iterdir()
        if not p.name.startswith(".") and ((p / CONFIG_FILE).is_file() or (p / MODEL_FILE).is_file())
    ]  # fmt: skip
    return iter(sorted(runs, key=_mtime, reverse=True))


def _mtime(run_dir: Path) -> float:
    """When a run was written: its config.json's time, else its model's."""
    return next((f.stat().st_mtime for f in (run_dir / CONFIG_FILE, run_dir / MODEL_FILE) if f.is_file()), 0.0)


def iter_interrupted(root: Path = DEFAULT_ROOT) -> Iterator[Path]:
    """Runs under ``root`` whose training was interrupted (they have a partial_dir): the run paths."""
    if not Path(root).is_dir():
        return iter(())
    stages = sorted(
        p for p in Path(root).iterdir() if p.is_dir() and p.name.startswith(".") and p.name.endswith(".partial")
    )
    return iter(p.with_name(p.name[1 : -len(".partial")]) for p in stages)
