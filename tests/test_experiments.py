"""fmnist.experiments: every experiment runs end to end on a tiny budget and writes its reports;
trials are shared honestly; conclusions follow the numbers (fabricated both ways); the CLI maps onto it."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from fmnist import experiment_report, trials
from fmnist import experiments as ex
from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig

TINY_TRAIN = 600  # training images in the tiny budget
TINY_TEST = 500  # test images in the tiny budget
TINY_SCALE = 0.1  # epochs 5, 15, 30 -> 1, 2, 3


@pytest.fixture(scope="module")
def tiny_dataset(dataset):
    (x_train, y_train), (x_test, y_test) = dataset
    return (x_train[:TINY_TRAIN], y_train[:TINY_TRAIN]), (x_test[:TINY_TEST], y_test[:TINY_TEST])


@pytest.fixture(scope="module")
def tiny_all(tiny_dataset, tmp_path_factory):
    """`experiment all` with one seed, the tiny budget and two worker processes, reports written."""
    with pytest.MonkeyPatch.context() as mp:  # the workers' compile cache goes where conftest puts fmnist's cache
        mp.setenv("FMNIST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "fmnist-cache"))
        events = []
        results = ex.run_experiments(
            ["all"], seeds=1, workers=2, epochs_scale=TINY_SCALE, dataset=tiny_dataset, progress=events.append
        )
    out = tmp_path_factory.mktemp("experiments")
    return results, experiment_report.write_reports(results, out, command="pytest"), events


# --------------------------------------------------------------------------- end to end, tiny budget
def test_every_experiment_runs_and_writes_its_reports(tiny_all):
    results, paths, events = tiny_all
    assert [r.experiment.name for r in results.experiments] == list(ex.EXPERIMENT_NAMES)
    markdown = paths["markdown"].read_text()
    page = paths["html"].read_text()
    for r in results.experiments:
        assert r.conclusion.verdict in ex.VERDICTS
        assert f"## {r.experiment.name}:" in markdown and f'id="{r.experiment.name}"' in page
        assert r.conclusion.text in markdown  # the computed sentence, beside the quoted claim
        assert r.experiment.claim[:40] in markdown
    # Markdown links its figures, which exist; the HTML embeds the same figures and fetches nothing.
    linked = re.findall(r"\]\((figures/[^)]+\.png)\)", markdown)
    assert len(linked) == 5 and all((paths["markdown"].parent / f).is_file() for f in linked)
    assert page.count('src="data:image/png;base64,') == 5
    assert "<script" not in page and not re.search(r'(src|href)="https?:', page)
    saved = json.loads(paths["results"].read_text())
    assert set(saved["experiments"]) == set(ex.EXPERIMENT_NAMES) and saved["workers"] == 2
    # Progress: from 0 to every trial, one event per finished trial.
    assert [e.done for e in events] == list(range(results.trials + 1)) and events[-1].total == results.trials


def test_tiny_numbers_are_measured_not_canned(tiny_all):
    results, _, _ = tiny_all
    by_name = {r.experiment.name: r for r in results.experiments}
    widths = by_name["hidden-units"].stats
    assert widths["1024 units"]["params"].mean == trials.dense_params(ModelSpec(hidden=(1024,))) == 814_090
    assert all(0.0 <= s["accuracy"].mean <= 1.0 for s in widths.values())
    epochs = by_name["epochs"].stats
    assert [s["epochs_run"].mean for s in epochs.values()] == [1, 2, 3]
    assert all("val_loss" in s and s["best_val_epoch"].mean <= s["epochs_run"].mean for s in epochs.values())
    errors = [recs[0]["error"] for recs in by_name["mistakes"].records.values()]
    assert "Flatten()" in errors[0] and "Dense(10" in errors[1]
    early = by_name["early-stop"].stats
    assert early[by_name["early-stop"].experiment.baseline]["time_saved"].mean == 0.0


def test_epoch_snapshot_equals_a_shorter_run_with_the_same_seed(tiny_dataset):
    """The epochs experiment reads "epoch 1" off a 2-epoch run: that must be what a 1-epoch run gives."""
    config = TrainConfig(epochs=2, validation_split=0.1, seed=3)
    long = trials.run_trial(trials.Trial(config, test_at=(1,)), tiny_dataset)
    short = trials.run_trial(trials.Trial(replace(config, epochs=1)), tiny_dataset)
    assert long["snapshots"]["1"] == short["metrics"]
    assert long["metrics"] != short["metrics"]  # the second epoch did change the model
    cut, alone = ex._record(long, 1), ex._record(short, 1)
    for key in ("accuracy", "loss", "train_loss", "val_loss", "best_val_epoch", "epochs_run"):
        assert cut[key] == alone[key]


# --------------------------------------------------------------------------- planning (no training)
def test_plan_runs_each_distinct_training_once():
    experiments = list(ex.build_experiments().values())
    trials, where = ex.plan(experiments, [0, 1, 2])
    # per seed: 5 widths + 2 deeper models + 1 30-epoch run + raw pixels + 3 stopping rules; checks once.
    assert len(trials) == 3 * 12 + 2
    for seed in (0, 1, 2):
        shared = {where["epochs", v, seed] for v in ("5 epochs", "15 epochs", "30 epochs")}
        assert {i for i, _ in shared} == {where["early-stop", "full 30 epochs", seed][0]}
        (i,) = {i for i, _ in shared}
        assert trials[i].config.epochs == 30 and trials[i].test_at == (5, 15)
        assert where["hidden-units", "128 units", seed] == where["normalization", "÷255 (tutorial)", seed]
        assert where["hidden-units", "512 units", seed] == where["depth", "1 layer: 512", seed]
    assert where["hidden-units", "128 units", 0] != where["hidden-units", "128 units", 1]
    seeds = [t.config.seed for t in trials]
    assert seeds == sorted(seeds)  # seed by seed, so later seeds find their programs compiled


def test_reduced_budget_scales_epochs_and_limits_images():
    exps = ex.build_experiments(epochs_scale=0.2, limit=1000)
    assert [v.config.epochs for v in exps["epochs"].variants] == [1, 3, 6]
    assert all(v.config.train_limit == 1000 for e in exps.values() for v in e.variants)
    with pytest.raises(FmnistError, match="unknown experiment"):
        ex.resolve_names("width")


# --------------------------------------------------------------------------- conclusions follow the numbers
def _seeds(**values: list[float]) -> list[dict]:
    """Per-seed records from per-key value lists."""
    n = len(next(iter(values.values())))
    return [{k: v[i] for k, v in values.items()} for i in range(n)]


def _widths(acc_1024: list[float], s_1024: list[float]) -> dict:
    base = {"accuracy": [0.870, 0.871, 0.869], "seconds_per_epoch": [1.0, 1.1, 0.9]}
    records = {f"{w} units": _seeds(**base) for w in (32, 64, 128, 512)}
    return records | {"1024 units": _seeds(accuracy=acc_1024, seconds_per_epoch=s_1024)}


def test_hidden_units_conclusion_changes_with_the_numbers():
    clear = ex.build_experiments()["hidden-units"].conclude(_widths([0.890, 0.891, 0.889], [10.0, 10.5, 9.5]))
    noisy = ex.build_experiments()["hidden-units"].conclude(_widths([0.875, 0.860, 0.885], [10.0, 10.5, 9.5]))
    neither = ex.build_experiments()["hidden-units"].conclude(_widths([0.860, 0.861, 0.859], [1.0, 1.1, 0.9]))
    assert clear.verdict == "agrees" and "beyond the spread" in clear.text and "10.0×" in clear.text
    assert noisy.verdict == "partly agrees" and "within the spread" in noisy.text
    assert "without a gain beyond the seed-to-seed spread" in noisy.text
    assert neither.verdict == "disagrees" and "(-1.00 points, beyond the spread" in neither.text
    assert "most accurate width is 1024" not in neither.text
    assert len({clear.text, noisy.text, neither.text}) == 3


def test_depth_conclusion_changes_with_the_numbers():
    conclude = ex.build_experiments()["depth"].conclude
    one = _seeds(accuracy=[0.88, 0.882, 0.878])

    def records(two, three):
        return {"1": one, "2": _seeds(accuracy=two), "3": _seeds(accuracy=three)}

    same = conclude(records([0.881, 0.879, 0.883], [0.879, 0.881, 0.877]))
    one_better = conclude(records([0.90, 0.901, 0.899], [0.879, 0.881, 0.877]))
    both = conclude(records([0.90, 0.901, 0.899], [0.86, 0.861, 0.859]))
    assert same.verdict == "agrees" and "No deeper model differs" in same.text
    assert one_better.verdict == "partly agrees" and "1 of 2 deeper models differ" in one_better.text
    assert both.verdict == "disagrees"


def _epoch_records(val_30: list[float], train_15: list[float]) -> dict:
    common = {"gap": [0.1, 0.1, 0.1], "best_val_epoch": [12, 14, 13], "accuracy": [0.88, 0.88, 0.88]}
    return {
        "5": _seeds(epochs_run=[5] * 3, train_loss=[0.30, 0.31, 0.29], val_loss=[0.35, 0.36, 0.34], **common),
        "15": _seeds(epochs_run=[15] * 3, train_loss=train_15, val_loss=[0.32, 0.33, 0.31], **common),
        "30": _seeds(epochs_run=[30] * 3, train_loss=[0.15, 0.16, 0.14], val_loss=val_30, **common),
    }


def test_epochs_conclusion_changes_with_the_numbers():
    conclude = ex.build_experiments()["epochs"].conclude
    overfit = conclude(_epoch_records([0.40, 0.41, 0.39], [0.22, 0.23, 0.21]))
    steady = conclude(_epoch_records([0.30, 0.31, 0.29], [0.22, 0.23, 0.21]))
    nothing = conclude(_epoch_records([0.30, 0.31, 0.29], [0.30, 0.32, 0.28]))
    assert overfit.verdict == "agrees" and "overfitting shows in the validation loss" in overfit.text
    assert steady.verdict == "partly agrees" and "(not higher by more than the spread)" in steady.text
    assert nothing.verdict == "disagrees" and "(not lower by more than the spread)" in nothing.text


def test_normalization_and_early_stop_conclusions_change_with_the_numbers():
    norm = ex.build_experiments()["normalization"].conclude
    scaled = _seeds(accuracy=[0.87, 0.871, 0.869], loss=[0.36, 0.36, 0.36])
    assert norm({"÷255": scaled, "raw": _seeds(accuracy=[0.80, 0.82, 0.78], loss=[0.6, 0.6, 0.6])}).verdict == "agrees"
    same = norm({"÷255": scaled, "raw": _seeds(accuracy=[0.87, 0.86, 0.88], loss=[0.36, 0.37, 0.35])})
    assert same.verdict == "disagrees" and "not worse" in same.text and "chance" not in same.text
    chance = norm({"÷255": scaled, "raw": _seeds(accuracy=[0.1, 0.1, 0.1], loss=[14.5, 14.5, 14.5])})
    assert chance.verdict == "agrees" and "chance level" in chance.text

    stop = ex.build_experiments()["early-stop"].conclude

    def records(tutorial_epochs, saved):
        full = _seeds(epochs_run=[30] * 3, accuracy=[0.89] * 3, time_saved=[0.0] * 3)
        tut = _seeds(epochs_run=tutorial_epochs, accuracy=[0.86, 0.861, 0.859], time_saved=saved)
        return {"full": full, "tutorial": tut}

    early = stop(records([2, 2, 3], [0.93, 0.93, 0.9]))
    never = stop(records([30, 30, 30], [-0.01, 0.0, 0.01]))
    assert early.verdict == "agrees" and "stops before the model is as good as it gets" in early.text
    assert never.verdict == "disagrees"


def test_mistakes_conclusion_depends_on_whether_fit_complained():
    conclude = ex.build_experiments()["mistakes"].conclude
    both = conclude({"no Flatten": [{"error": "shape. more"}], "5 units": [{"error": "labels"}]})
    one = conclude({"no Flatten": [{"error": "shape. more"}], "5 units": [{"error": None}]})
    assert both.verdict == "agrees" and "(“shape”)" in both.text
    assert one.verdict == "partly agrees" and "5 units: trained without any error" in one.text


def test_a_difference_counts_only_beyond_the_spread():
    a, b = ex.Stat.of([0.88, 0.89, 0.87]), ex.Stat.of([0.885, 0.895, 0.875])
    assert not ex.differs(a, b) and not ex.differs(b, a)
    far = ex.Stat.of([0.95, 0.951, 0.949])
    assert ex.differs(a, far) and ex.differs(far, a)
    assert ex.Stat.of([0.5]).fmt() == "0.5000" and a.fmt(3) == "0.880 ± 0.010"


# --------------------------------------------------------------------------- command line
def test_cli_experiment_maps_flags_and_writes_reports(dataset, tmp_path):
    from fmnist.cli import app

    out = tmp_path / "norm"
    args = ["experiment", "normalization", "--seeds", "1", "--workers", "0", "--epochs-scale", "0.1"]
    result = CliRunner().invoke(app, [*args, "--limit", "300", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "normalization" in result.output and "wrote" in result.output
    saved = json.loads((out / experiment_report.RESULTS_FILE).read_text())
    assert saved["limit"] == 300 and saved["epochs_scale"] == 0.1 and saved["seeds"] == [0]
    configs = saved["experiments"]["normalization"]["configs"]
    assert all(c["train_limit"] == 300 and c["epochs"] == 1 for c in configs.values())
    assert (out / experiment_report.HTML_FILE).is_file() and (out / experiment_report.MARKDOWN_FILE).is_file()
    bad = CliRunner().invoke(app, ["experiment", "widths"])
    assert isinstance(bad.exception, FmnistError) and "unknown experiment" in str(bad.exception)
