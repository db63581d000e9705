"""An experiment killed midway continues: the rerun trains only the missing trials and
reports the same numbers as the run never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from fmnist import experiment_report, runs
from fmnist import experiments as ex

TIMING = ("second", "time_saved", "started", "wall", "kept")  # keys that measure time, not results


def numbers(tree):
    """A results.json tree without its timings (they differ between any two runs)."""
    if isinstance(tree, dict):
        return {k: numbers(v) for k, v in tree.items() if not any(t in k for t in TIMING)}
    if isinstance(tree, list):
        return [numbers(v) for v in tree]
    return tree


@pytest.fixture(scope="module")
def tiny_dataset(dataset):
    (x_train, y_train), (x_test, y_test) = dataset
    return (x_train[:300], y_train[:300]), (x_test[:500], y_test[:500])


RUN = {"seeds": 2, "workers": 0, "epochs_scale": 0.2}  # normalization: 2 variants x 2 seeds = 4 trials


class Killed(Exception):
    pass


def test_a_rerun_takes_finished_trials_from_the_store(tiny_dataset, tmp_path, monkeypatch):
    reference = ex.run_experiments(["normalization"], dataset=tiny_dataset, **RUN)
    store = runs.ResultStore(tmp_path / ".trials")

    def die_after_two(progress):
        if progress.done == 2:
            raise Killed

    with pytest.raises(Killed):
        ex.run_experiments(["normalization"], dataset=tiny_dataset, store=store, progress=die_after_two, **RUN)
    assert len(list(store.folder.iterdir())) == 2
    ran = []
    real_run_trial = ex.run_trial
    monkeypatch.setattr(
        ex, "run_trial", lambda trial, dataset=None: ran.append(trial) or real_run_trial(trial, dataset)
    )
    resumed = ex.run_experiments(["normalization"], dataset=tiny_dataset, store=store, **RUN)
    assert len(ran) == reference.trials - 2 and resumed.kept == 2
    assert numbers(experiment_report.results_json(resumed)) == numbers(experiment_report.results_json(reference))


def test_a_damaged_or_foreign_stored_result_is_run_again(tmp_path):
    store = runs.ResultStore(tmp_path)
    key = {"config": {"seed": 1}}
    store.put(key, {"accuracy": 0.5})
    assert store.get(key) == {"accuracy": 0.5} and store.get({"config": {"seed": 2}}) is None
    next(tmp_path.iterdir()).write_text("{truncated")
    assert store.get(key) is None


# `fmnist experiment` with a pause after every trial, so that the test can kill it between trials.
SLOW_CLI = """
import sys, time
from fmnist import cli
from fmnist import experiments as ex

run_trial = ex.run_trial
def slow(trial, dataset=None):
    result = run_trial(trial, dataset)
    time.sleep(1.0)
    return result
ex.run_trial = slow
sys.argv[0] = "fmnist"
cli.main()
"""
ARGS = ["experiment", "normalization", "--seeds", "2", "--workers", "0", "--epochs-scale", "0.2", "--limit", "300"]


def _run(args, slow=False) -> subprocess.Popen:
    code = ["-c", SLOW_CLI] if slow else ["-m", "fmnist.cli"]
    env = os.environ | {"COLUMNS": "1000"}
    return subprocess.Popen([sys.executable, *code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def _finish(proc: subprocess.Popen, timeout: float = 300) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return proc.returncode, out.decode(), err.decode()


def test_sigkill_midway_then_the_same_command_gives_the_same_report(dataset, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    rc, _, err = _finish(_run([*ARGS, "--out", str(reference)]))
    assert rc == 0, err
    proc = _run([*ARGS, "--out", str(interrupted)], slow=True)
    trials = interrupted / ".trials"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if trials.is_dir() and len(list(trials.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    rc, _, _ = _finish(proc)
    assert rc == -signal.SIGKILL and not (interrupted / experiment_report.RESULTS_FILE).exists()
    kept = len(list(trials.glob("*.json")))
    assert 2 <= kept < 4
    rc, out, err = _finish(_run([*ARGS, "--out", str(interrupted)]))
    assert rc == 0, err
    assert f"{kept} kept from an interrupted run" in out
    assert not trials.exists()  # the report is written: nothing left to resume
    a, b = (json.loads((d / experiment_report.RESULTS_FILE).read_text()) for d in (interrupted, reference))
    assert numbers(a) == numbers(b)
    assert Path(interrupted / experiment_report.MARKDOWN_FILE).is_file()
