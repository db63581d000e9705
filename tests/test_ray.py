"""The Ray executor: an experiment and a sweep run as Ray tasks give the local executor's numbers.

Kept few and small: one local Ray for the session (conftest's ``ray_instance``), tiny budgets.
"""

from __future__ import annotations

import json

from typer.testing import CliRunner

from fmnist import experiment_report

LIMIT = 300  # training images per trial
# Numbers that are measured, not timed: identical whichever executor ran the trial.
MEASURED = ("accuracy", "loss", "train_loss", "train_accuracy", "epochs_run", "params")


def _measured(results: dict) -> dict:
    return {
        name: {v: [{k: r[k] for k in MEASURED} for r in recs] for v, recs in exp["records"].items()}
        for name, exp in results["experiments"].items()
    }


def test_an_experiment_on_ray_gives_the_local_report(ray_instance, dataset, tmp_path):
    from fmnist.cli import app

    args = ["experiment", "normalization", "--seeds", "1", "--epochs-scale", "0.1", "--limit", str(LIMIT)]
    saved = {}
    for name, how in (("local", ["--workers", "2"]), ("ray", ["--executor", "ray"])):
        result = CliRunner().invoke(app, [*args, *how, "--out", str(tmp_path / name)])
        assert result.exit_code == 0, result.output
        saved[name] = json.loads((tmp_path / name / experiment_report.RESULTS_FILE).read_text())
    assert saved["ray"]["executor"] == "ray" and ray_instance.is_initialized()  # joined the session's Ray
    assert "Ray tasks" in (tmp_path / "ray" / experiment_report.MARKDOWN_FILE).read_text()
    assert _measured(saved["ray"]) == _measured(saved["local"])
    conclusions = [{n: e["conclusion"] for n, e in s["experiments"].items()} for s in saved.values()]
    assert conclusions[0] == conclusions[1]


def test_a_sweep_on_ray_equals_the_local_executor(ray_instance, dataset, tmp_path):
    from fmnist import sweep as sw
    from fmnist.train import TrainConfig

    (x_train, y_train), (x_test, y_test) = dataset
    tiny = (x_train[:LIMIT], y_train[:LIMIT]), (x_test[:LIMIT], y_test[:LIMIT])
    grid = sw.parse_grid(["learning_rate=1e-3,1e-2"])
    results = {
        executor: sw.run_sweep(
            TrainConfig(epochs=1), grid, 1, tmp_path / executor, workers=2, executor=executor, dataset=tiny
        )
        for executor in ("local", "ray")
    }
    numbers = {
        executor: [{k: v for k, v in rec.items() if k != "train_seconds"} for p in r.points for rec in p.records]
        for executor, r in results.items()
    }
    assert numbers["ray"] == numbers["local"] and results["ray"].best.point == results["local"].best.point
    assert all((tmp_path / "ray" / rec["run"] / "model.keras").is_file() for rec in numbers["ray"])  # written here
