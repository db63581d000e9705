"""An experiment killed midway continues: the rerun trains only the missing trials and
reports the same numbers as the run never interrupted (the store itself: tests/test_trials.py)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import finish
from fmnist import experiment_report

TIMING = ("second", "time_saved", "started", "wall", "kept")  # keys that measure time, not results


def numbers(tree):
    """A results.json tree without its timings (they differ between any two runs)."""
    if isinstance(tree, dict):
        return {k: numbers(v) for k, v in tree.items() if not any(t in k for t in TIMING)}
    if isinstance(tree, list):
        return [numbers(v) for v in tree]
    return tree


# `fmnist experiment` with a pause after every trial, so that the test can kill it between trials.
SLOW_CLI = """
import sys, time
from fmnist import cli
from fmnist import trials

run_trial = trials.run_trial
def slow(trial, dataset=None):
    result = run_trial(trial, dataset)
    time.sleep(1.0)
    return result
trials.run_trial = slow
sys.argv[0] = "fmnist"
cli.main()
"""
ARGS = ["experiment", "normalization", "--seeds", "2", "--workers", "0", "--epochs-scale", "0.2", "--limit", "300"]


def _run(args, slow=False) -> subprocess.Popen:
    code = ["-c", SLOW_CLI] if slow else ["-m", "fmnist.cli"]
    env = os.environ | {"COLUMNS": "1000"}
    return subprocess.Popen([sys.executable, *code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_sigkill_midway_then_the_same_command_gives_the_same_report(dataset, tmp_path):
    reference, interrupted = tmp_path / "reference", tmp_path / "interrupted"
    rc, _, err = finish(_run([*ARGS, "--out", str(reference)]))
    assert rc == 0, err
    proc = _run([*ARGS, "--out", str(interrupted)], slow=True)
    trials = interrupted / ".trials"
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline:
        if trials.is_dir() and len(list(trials.glob("*.json"))) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    rc, _, _ = finish(proc)
    assert rc == -signal.SIGKILL and not (interrupted / experiment_report.RESULTS_FILE).exists()
    kept = len(list(trials.glob("*.json")))
    assert 2 <= kept < 4
    rc, out, err = finish(_run([*ARGS, "--out", str(interrupted)]))
    assert rc == 0, err
    assert f"{kept} kept from an interrupted run" in out
    assert not trials.exists()  # the report is written: nothing left to resume
    a, b = (json.loads((d / experiment_report.RESULTS_FILE).read_text()) for d in (interrupted, reference))
    assert numbers(a) == numbers(b)
    assert Path(interrupted / experiment_report.MARKDOWN_FILE).is_file()
