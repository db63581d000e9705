"""A damaged run directory is one line and exit 2 from every command that reads it, and
`fmnist runs` lists the healthy runs beside the damaged ones (marked) instead of failing."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import run_cli
from fmnist import runs


def _truncate_model(run: Path) -> None:
    data = (run / runs.MODEL_FILE).read_bytes()
    (run / runs.MODEL_FILE).write_bytes(data[: len(data) // 3])


DAMAGES = {
    "truncated model.keras": _truncate_model,
    "invalid config.json": lambda run: (run / runs.CONFIG_FILE).write_text('{"epochs": 3,'),
    "config.json not an object": lambda run: (run / runs.CONFIG_FILE).write_text("[1, 2]"),
    "missing metrics.json": lambda run: (run / runs.METRICS_FILE).unlink(missing_ok=True),
}
# What each command does with each damage: 2 (one line saying what to do) or 0. evaluate and
# report re-create a missing metrics.json (what the error of compare tells the user to run);
# compare does not read the model.
OUTCOME = {
    "truncated model.keras": {"evaluate": 2, "report": 2, "predict": 2, "compare": 0},
    "invalid config.json": {"evaluate": 2, "report": 2, "predict": 2, "compare": 2},
    "config.json not an object": {"evaluate": 2, "report": 2, "predict": 2, "compare": 2},
    "missing metrics.json": {"evaluate": 0, "report": 0, "predict": 0, "compare": 2},
}


@pytest.fixture
def image(tmp_path) -> Path:
    path = tmp_path / "shirt.png"
    pixels = np.zeros((40, 30), np.uint8)
    pixels[5:35, 8:22] = 200  # a bright garment on black
    Image.fromarray(pixels).save(path)
    return path


@pytest.mark.parametrize("damage", DAMAGES)
def test_every_command_that_reads_a_damaged_run_says_so_in_one_line(damage, tiny_run, image, tmp_path, capsys):
    root = tmp_path / "runs"
    run = root / "broken"
    shutil.copytree(tiny_run, run)
    shutil.copytree(tiny_run, root / "good")
    commands = {
        "evaluate": ["evaluate", str(run)],
        "report": ["report", str(run)],
        "predict": ["predict", str(run), str(image)],
        "compare": ["compare", str(root / "good"), str(run)],
    }
    for name, args in commands.items():
        DAMAGES[damage](run)  # again: evaluate and report re-create a missing metrics.json
        code, _, err = run_cli(args, capsys)
        assert code == OUTCOME[damage][name], (name, err)
        if code:
            assert err.startswith("error: ") and len(err.strip().splitlines()) == 1, (name, err)
            assert "Traceback" not in err
    DAMAGES[damage](run)
    code, out, err = run_cli(["runs", "--root", str(root)], capsys)
    assert code == 0, err
    assert f"{run}: damaged: " in out and f"{root / 'good'}: " not in out  # the table lists both


def test_runs_lists_interrupted_trainings(tiny_run, tmp_path, capsys):
    root = tmp_path / "runs"
    shutil.copytree(tiny_run, root / "good")
    stage = runs.partial_dir(root / "halfway")
    stage.mkdir()
    shutil.copy(tiny_run / runs.CONFIG_FILE, stage / runs.CONFIG_FILE)
    code, out, _ = run_cli(["runs", "--root", str(root)], capsys)
    halfway = root / "halfway"
    assert code == 0 and f"{halfway}: interrupted: continue it with `fmnist train --resume {halfway}`" in out


def test_a_model_of_another_shape_is_a_run_error(tmp_path):
    from fmnist._backend import keras

    for inputs, outputs in (((32, 32, 3), 10), ((28, 28), 5)):
        model = keras.Sequential([keras.Input(inputs), keras.layers.Flatten(), keras.layers.Dense(outputs)])
        path = tmp_path / f"m{outputs}.keras"
        model.save(path)
        with pytest.raises(runs.RunError, match="not a Fashion-MNIST classifier"):
            runs.load_model(path)
