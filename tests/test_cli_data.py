"""`fmnist data`, `fmnist show` and the fast start of `fmnist --help`.

The happy paths run in-process through Typer's CliRunner on the real data (``dataset``
fixture: the array cache is warm by then). The error paths run the real entry point in a
subprocess, because what matters there is ``main()``: exit code 2, one line on stderr and
no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from fmnist import data
from fmnist.cli import app, main

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
HEAVY = ("jax", "jaxlib", "keras", "tensorflow", "torch")  # what a fast start must not import


def fmnist(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed console script (else ``python -m fmnist.cli``) as a user would."""
    script = Path(sys.executable).with_name("fmnist")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "fmnist.cli"]
    return subprocess.run(
        [*command, *args], cwd=cwd, env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=120
    )


def assert_one_line_error(proc: subprocess.CompletedProcess, *words: str) -> str:
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]
    return lines[0]


def assert_png(path: Path) -> tuple[int, int]:
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as image:
        image.verify()
        return image.size


# --------------------------------------------------------------------------- fmnist data
def test_data_prints_source_verification_and_counts(dataset):
    info = data.locate(download_missing=False)
    result = CliRunner().invoke(app, ["data"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert f"from {info.source.label}: {info.source.directory}" in out
    assert "verified: SHA-256" in out
    for name, path in info.files.items():
        assert name in out and str(path) in out
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in out.splitlines() if "│" in line]
    for c, name in enumerate(data.CLASS_NAMES):
        assert [str(c), name, "6000", "1000"] in rows
    assert ["", "total", "60,000", "10,000"] in rows
    assert "28×28 uint8" in out
    from fmnist import accelerator

    assert f"device: {accelerator.describe('cpu')}" in out.splitlines()  # this CPU-only machine's, named


def test_data_missing_files_is_one_line_error(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = fmnist("data", cwd=tmp_path, env={"FMNIST_DATA_DIR": str(empty)})
    line = assert_one_line_error(proc, "Fashion-MNIST not found", str(empty), "missing there", "FMNIST_DATA_DIR")
    assert all(name in line for name in data.FILES)


# --------------------------------------------------------------------------- fmnist show
def test_show_writes_a_png(dataset, tmp_path):
    target = tmp_path / "x.png"
    result = CliRunner().invoke(app, ["show", "42", "--out", str(target)])
    assert result.exit_code == 0, result.output
    assert f"wrote {target}" in result.output
    width, height = assert_png(target)
    assert width > 28 and height > 28


def test_show_image_matches_the_label(dataset, tmp_path, monkeypatch):
    """The title names the class of image 42 of the chosen split (captured from the figure)."""
    from fmnist import plots

    titles = []
    image = plots.image

    def spy(x, title, *args, **kwargs):
        titles.append((x.copy(), title))
        return image(x, title, *args, **kwargs)

    monkeypatch.setattr(plots, "image", spy)
    (_, _), (x_test, y_test) = dataset
    result = CliRunner().invoke(app, ["show", "42", "--split", "test", "--out", str(tmp_path / "t.png")])
    assert result.exit_code == 0, result.output
    [(pixels, title)] = titles
    np.testing.assert_array_equal(pixels, x_test[42])
    assert data.CLASS_NAMES[int(y_test[42])] in title and "test[42]" in title


def test_show_grid_writes_a_png(dataset, tmp_path):
    single, grid = tmp_path / "one.png", tmp_path / "grid.png"
    assert CliRunner().invoke(app, ["show", "0", "--out", str(single)]).exit_code == 0
    result = CliRunner().invoke(app, ["show", "--grid", "25", "--out", str(grid)])
    assert result.exit_code == 0, result.output
    assert_png(grid)
    assert grid.read_bytes() != single.read_bytes()


def test_show_default_file_name(dataset, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["show", "7", "--split", "test"])
    assert result.exit_code == 0, result.output
    assert_png(tmp_path / "show-test-7.png")


def test_show_out_of_range_is_one_line_exit_2(dataset, tmp_path):
    """Through the installed entry point: exit code 2, one line on stderr, no traceback, no file."""
    proc = fmnist("show", "60000", cwd=tmp_path)
    assert_one_line_error(proc, "index 60000 is out of range for the train split: use 0 to 59999")
    assert not list(tmp_path.glob("*.png"))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["show", "10000", "--split", "test"], ["out of range for the test split", "0 to 9999"]),
        (["show", "59990", "--grid", "25"], ["--grid takes 1 to 10 images from index 59990, got 25"]),
        (["show", "0", "--grid", "101"], ["--grid takes 1 to 100 images from index 0, got 101"]),
    ],
    ids=["test-split", "grid-past-the-end", "grid-too-big"],
)
def test_show_bad_arguments_exit_2_in_process(dataset, tmp_path, monkeypatch, capsys, args, words):
    """The same path through main() in this process (a subprocess costs seconds of imports)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["fmnist", *args])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: "), err
    assert all(word in err for word in words)
    assert not list(tmp_path.glob("*.png"))


# --------------------------------------------------------------------------- fast start
FAST_START = f"""
import json, sys
from fmnist.cli import app, main
for args in (["--help"], ["data", "--help"], ["show", "--help"]):
    try:
        app(args)
    except SystemExit as e:
        assert e.code == 0, (args, e.code)
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r})))
"""


def test_help_does_not_import_jax_or_keras(tmp_path):
    proc = subprocess.run([sys.executable, "-c", FAST_START], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert "Usage" in proc.stdout and "show" in proc.stdout
    assert json.loads(lines[-1]) == []
