"""fmnist.sweep: the grid's syntax, the CLI's fixed flags, and a tiny sweep end to end — ordinary run
directories, a ranking chosen on validation, a diverged trial listed as failed, a report page, a resumed rerun."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from fmnist import sweep as sw
from fmnist.errors import FmnistError
from fmnist.train import TrainConfig

LIMIT = 300  # training images per trial in the tiny sweep
DIVERGES = 1e30  # a learning rate whose first step turns the loss into NaN


# --------------------------------------------------------------------------- the grid
def test_grid_values_follow_each_fields_type():
    grid = sw.parse_grid(
        [
            "learning-rate=1e-4,1e-3,none",
            "hidden=128,512,512x256",
            "eval_views=identity,identity+flip",
            "normalize=true,false",
            "dropout=0,0.2",
            "arch=mlp,cnn",
        ]
    )
    assert grid["learning_rate"] == (1e-4, 1e-3, None)
    assert grid["hidden"] == ((128,), (512,), (512, 256))  # two one-layer widths, then one two-layer model
    assert grid["eval_views"] == (("identity",), ("identity", "flip"))
    assert grid["normalize"] == (True, False) and grid["dropout"] == (0.0, 0.2) and grid["arch"] == ("mlp", "cnn")
    assert list(grid) == ["learning_rate", "hidden", "eval_views", "normalize", "dropout", "arch"]  # as given


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (["widths=1,2"], "no such field"),
        (["seed=0,1"], "--seeds"),
        (["time_budget=60,120"], "epochs or steps"),
        (["model=a,b"], "sweep its fields"),
        (["epochs=1,x"], "'x' is not a whole number"),
        (["hidden=128x"], "is not a whole number"),
        (["epochs=1", "epochs=2"], "given twice"),
        (["epochs=1,1"], "listed twice"),
        (["epochs"], "FIELD=V1,V2"),
        ([], "at least one --set"),
    ],
)
def test_a_bad_grid_says_what_to_write(sets, message):
    with pytest.raises(FmnistError, match=re.escape(message)):
        sw.parse_grid(sets)


def test_points_name_their_runs_and_set_their_fields():
    grid = sw.parse_grid(["learning_rate=1e-3,1e-2", "hidden=128,512x256"])
    points = sw.points(grid)
    assert [p.name for p in points] == [
        "learning_rate=0.001 hidden=128",
        "learning_rate=0.001 hidden=512x256",
        "learning_rate=0.01 hidden=128",
        "learning_rate=0.01 hidden=512x256",
    ]
    assert points[1].run_name(3) == "learning_rate=0.001_hidden=512x256_seed=3"
    config = points[1].config(TrainConfig(epochs=2), seed=3)
    assert (
        config.learning_rate == 1e-3 and config.model.hidden == (512, 256) and config.seed == 3 and config.epochs == 2
    )
    with pytest.raises(FmnistError, match=r"grid point dropout=1\.5"):
        sw.points(sw.parse_grid(["dropout=1.5"]))[0].config(TrainConfig(), 0)


def test_every_trial_holds_out_images_to_choose_on_and_has_a_fixed_length():
    grid = sw.parse_grid(["learning_rate=1e-3,1e-2"])
    assert sw.sweep_base(TrainConfig(), grid).validation_split == sw.VALIDATION_SPLIT
    assert sw.sweep_base(TrainConfig(validation_split=0.2), grid).validation_split == 0.2
    with pytest.raises(FmnistError, match="--epochs N or --steps N"):
        sw.sweep_base(TrainConfig(time_budget=60.0), grid)
    with pytest.raises(FmnistError, match="above 0"):
        sw.sweep_base(TrainConfig(), sw.parse_grid(["validation_split=0,0.1"]))


def test_train_flags_given_to_sweep_fix_every_trial():
    from fmnist import cli

    config = cli._fixed_flags(["--recipe", "mlp", "--epochs", "1", "--limit", "500", "--no-normalize"])
    assert config.recipe == "mlp" and config.epochs == 1 and config.train_limit == 500 and not config.model.normalize
    assert cli._fixed_flags([]) == TrainConfig()
    with pytest.raises(FmnistError, match="--seeds N"):
        cli._fixed_flags(["--seed", "3"])


def test_the_sweep_figure_has_a_panel_per_swept_field():
    from fmnist import plots

    series = {"hidden=128": ([0.8, 0.85, float("nan")], [0.01, 0.0, float("nan")])}
    fig = plots.metric_vs_fields(
        [("learning_rate", ["0.0001", "0.001", "0.01"], [1e-4, 1e-3, 1e-2], True, series),
         ("hidden", ["128", "512x256"], None, False, {"lr": ([0.8, 0.82], [0.0, 0.01])})],
        "validation accuracy",
    )  # fmt: skip
    assert len(fig.axes) == 2 and fig.axes[0].get_xscale() == "log"
    assert [t.get_text() for t in fig.axes[1].get_xticklabels()] == ["128", "512x256"]


# --------------------------------------------------------------------------- a tiny sweep, end to end
def test_a_tiny_sweep_ranks_on_validation_lists_its_failure_and_resumes(dataset, tmp_path):
    from fmnist.cli import app

    out = tmp_path / "sweep"
    args = ["sweep", "--set", f"learning_rate=1e-3,{DIVERGES:g}", "--seeds", "2", "--workers", "0"]
    args += ["--epochs", "1", "--limit", str(LIMIT), "--out", str(out)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    saved = json.loads((out / sw.RESULTS_FILE).read_text())
    assert saved["best"] == "learning_rate=0.001" and saved["chosen_by"].startswith("val_accuracy: the last 10%")
    good, bad = saved["points"]
    assert good["ok"] and not bad["ok"] and good["stats"]["val_accuracy"][2] == 2
    assert all(r["failed"].startswith("diverged: loss became nan") for r in bad["records"])
    # Each trial is an ordinary run directory: its config fixed by the flags, its point's value, its seed.
    for rec in good["records"] + bad["records"]:
        run = out / rec["run"]
        config = json.loads((run / "config.json").read_text())
        assert (run / "model.keras").is_file() and (run / "metrics.json").is_file()
        assert config["epochs"] == 1 and config["train_limit"] == LIMIT and config["validation_split"] == 0.1
        assert config["seed"] == rec["seed"]
    assert json.loads((out / good["records"][1]["run"] / "config.json").read_text())["learning_rate"] == 1e-3
    page = (out / sw.REPORT_FILE).read_text()
    assert "<b>learning_rate=0.001</b> (best)" in page and "on the last 10% of each trial" in page
    assert page.count('src="data:image/png;base64,') == 1 and "diverged: loss became nan" in page
    assert "failed: learning_rate=1e+30 seed 0" in result.output and "Best point: learning_rate=0.001" in result.output

    from fmnist import report

    assert sorted(r["name"] for r in report.list_runs(out)) == sorted(
        r["run"] for r in good["records"] + bad["records"]
    )

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0 and "4 trials" in again.output and "4 kept from an earlier run" in again.output
    resaved = json.loads((out / sw.RESULTS_FILE).read_text())
    assert resaved["points"] == saved["points"] and resaved["trials_kept"] == 4

    # One kept result lost (as if killed before it was written): only that trial runs again, to the same numbers.
    next((out / sw.TRIALS_DIR).glob("*.json")).unlink()
    third = CliRunner().invoke(app, args)
    assert third.exit_code == 0 and "3 kept from an earlier run" in third.output
    rerun = json.loads((out / sw.RESULTS_FILE).read_text())
    timeless = [[{k: v for k, v in r.items() if k != "train_seconds"} for r in p["records"]] for p in rerun["points"]]
    assert timeless == [
        [{k: v for k, v in r.items() if k != "train_seconds"} for r in p["records"]] for p in saved["points"]
    ]


@pytest.mark.parametrize("seeds", [[0], [0, 1]])
def test_the_summary_compares_with_the_runner_up_only_when_there_is_a_spread(seeds, monkeypatch):
    from types import SimpleNamespace

    from fmnist.trials import Stat

    def point(name, accuracy):
        stat = Stat(accuracy, 0.01 if len(seeds) > 1 else 0.0, len(seeds))
        return SimpleNamespace(point=SimpleNamespace(name=name), ok=True, stats={sw.CHOOSE_BY: stat, "accuracy": stat})

    monkeypatch.setattr(sw, "chosen_on", lambda result: "the held-out images")
    points = [point("lr=0.001", 0.85), point("lr=0.01", 0.80)]
    text = sw.summary(SimpleNamespace(best=points[0], points=points, seeds=seeds))
    assert text.startswith("Best point: lr=0.001")
    if len(seeds) == 1:
        assert "provisional" in text and "spread (" not in text
    else:
        assert "The runner-up, lr=0.01, is beyond the seed-to-seed spread" in text
