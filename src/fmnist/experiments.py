"""The tutorial's questions, answered by measurement: ``fmnist experiment NAME``.

The tutorial ends with exercises and answers them with assertions: more hidden units are
slower but more accurate; another layer makes no significant difference; 15 epochs beat 5
and 30 overfit; unnormalised inputs train worse; a model without Flatten or with 5 output
units fails; a callback can stop training once it is good enough. Each is an ``Experiment``
here, written as data: named ``TrainConfig`` variants, the tutorial's claim in its own
words, and a conclusion function that turns the measured numbers into a sentence and a
verdict (agrees / partly agrees / disagrees) — never a canned sentence.

    results = run_experiments(["hidden-units"], seeds=3)
    experiment_report.write_reports(results, Path("runs/experiments/hidden-units"))  # .md, .html, .json

How trials run, and why:
- Every variant trains once per seed (default 3) and is reported as mean ± std. A
  difference counts only when it is larger than the seed-to-seed spread:
  |mean_a − mean_b| > std_a + std_b, i.e. the two mean ± std intervals do not overlap.
- Identical trainings are run once: the seed model appears in several experiments, and
  variants that differ only in ``epochs`` (and have no stopping rule) are one run of the
  longest, evaluated on the test set after the shorter ones' last epoch. Training is
  deterministic per seed, so "epoch 5 of a 30-epoch run" *is* a 5-epoch run
  (tests/test_experiments.py checks it).
- Trials run through ``fmnist.trials``: in spawned worker processes (default) or as Ray
  tasks, seed by seed and longest first within a seed, so seeds after the first find their
  programs in the shared compilation cache. Workers are spawned, so a script that calls
  run_experiments with workers needs the usual ``if __name__ == "__main__":`` guard.
- Resumable: with a ``TrialStore`` (the CLI keeps one in the report's folder, ``.trials/``, until
  the report is written), each trial's result is kept as it finishes; after a kill the same call
  runs only the missing trials and, since a kept result is read back exactly, reports the same numbers.
- The library reports progress through a callback; only the CLI prints.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from fmnist.data import NUM_CLASSES
from fmnist.errors import FmnistError, RunError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig
from fmnist.trials import DEFAULT_WORKERS, Progress, Stat, Trial, TrialStore, differs, run_trials

DEFAULT_SEEDS = 3  # runs per variant; mean ± std over them
TUTORIAL_EPOCHS = 5  # the tutorial's model.fit(..., epochs=5)
LONG_EPOCHS = 30  # the tutorial's "try 30 epochs"
MID_EPOCHS = 15  # the tutorial's "try 15 epochs"
VALIDATION_SPLIT = 0.1  # epochs and early-stop hold out the last 10% of the training images
TUTORIAL_STOP_LOSS = 0.4  # the tutorial's callback: stop when loss < 0.4
STOP_ACCURACY = 0.9  # "good enough" training accuracy for the stop-at-accuracy variant
EARLY_STOP_PATIENCE = 2  # epochs without a better val_loss before EarlyStopping stops
CHANCE_MARGIN = 1.5  # accuracy below 1.5 × 1/10 is reported as chance level (a model that learned nothing)
VERDICTS = ("agrees", "partly agrees", "disagrees")
SOURCE = "TensorFlow in Practice, course 1 week 2: the Fashion-MNIST “Beyond Hello World” exercises"


# --------------------------------------------------------------------------- numbers
def _points(a: Stat, b: Stat) -> str:
    """``a - b`` in accuracy percentage points, with whether it exceeds the spread."""
    beyond = "beyond" if differs(a, b) else "within"
    return f"{100 * (a.mean - b.mean):+.2f} points, {beyond} the spread of {100 * (a.std + b.std):.2f}"


def aggregate(records: dict[str, list[dict]]) -> dict[str, dict[str, Stat]]:
    """Per variant, a Stat for every number that all its per-seed records have."""
    out = {}
    for name, recs in records.items():
        keys = [k for k, v in recs[0].items() if isinstance(v, int | float) and not isinstance(v, bool)] if recs else []
        out[name] = {k: Stat.of([r[k] for r in recs]) for k in keys if all(k in r for r in recs)}
    return out


# --------------------------------------------------------------------------- experiments as data
@dataclass(frozen=True)
class Variant:
    name: str  # row label in the report
    config: TrainConfig  # the training (its seed is replaced by each trial's)
    check_only: bool = False  # build the model and run fit()'s pre-training check; don't train


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # a number in the per-seed records (see _record)
    digits: int = 4
    scale: float = 1.0  # e.g. 100 for percent
    unit: str = ""


@dataclass(frozen=True)
class Conclusion:
    text: str  # the measured answer, computed from the numbers
    verdict: str  # one of VERDICTS: does the measurement support the tutorial's claim?


@dataclass(frozen=True)
class Experiment:
    name: str
    title: str
    question: str
    claim: str  # the tutorial's words, quoted beside the measured answer
    variants: tuple[Variant, ...]
    columns: tuple[Column, ...]
    conclude: Callable[[dict[str, list[dict]]], Conclusion]  # per-seed records -> conclusion
    figures: Callable[[dict[str, list[dict]]], dict]  # per-seed records -> {name: matplotlib Figure}
    baseline: str | None = None  # variant that others are compared with per seed (time_saved, accuracy_change)
    note: str = ""  # how it was measured, printed under the table


def _epochs(n: int, scale: float) -> int:
    return max(1, round(n * scale))


def _epoch_name(n: int, actual: int) -> str:
    return f"{n} epochs" if n == actual else f"{n} epochs (scaled to {actual})"


def build_experiments(epochs_scale: float = 1.0, limit: int | None = None) -> dict[str, Experiment]:
    """Every experiment, in report order. ``epochs_scale``/``limit`` shrink them for quick trials."""
    if not epochs_scale > 0:
        raise FmnistError(f"epochs scale must be positive, got {epochs_scale}.")
    base = TrainConfig(epochs=_epochs(TUTORIAL_EPOCHS, epochs_scale), train_limit=limit)
    e5, e15, e30 = (_epochs(n, epochs_scale) for n in (TUTORIAL_EPOCHS, MID_EPOCHS, LONG_EPOCHS))
    long = replace(base, epochs=e30, validation_split=VALIDATION_SPLIT)
    return {
        "hidden-units": Experiment(
            name="hidden-units",
            title="How many hidden units?",
            question="The tutorial's Dense(128) against 32, 64, 512 and 1024 units, 5 epochs each.",
            claim="By adding more Neurons we have to do more calculations, slowing down the process, but in this "
            "case they have a good impact -- we do get more accurate. That doesn't mean it's always a case of "
            "'more is better', you can hit the law of diminishing returns very quickly!",
            variants=tuple(
                Variant(f"{w} units", replace(base, model=ModelSpec(hidden=(w,)))) for w in (32, 64, 128, 512, 1024)
            ),
            columns=(
                Column("params", "params", 0),
                Column("test accuracy", "accuracy"),
                Column("test loss", "loss"),
                Column("s / epoch", "seconds_per_epoch", 2),
            ),
            conclude=_conclude_hidden_units,
            figures=_figures_hidden_units,
            note="s / epoch: median wall-clock of epochs 2 onwards (epoch 1 includes compiling). With 2 workers "
            "each training has one core, with 1 worker all cores, so compare rows, not runs.",
        ),
        "depth": Experiment(
            name="depth",
            title="Another hidden layer?",
            question="One hidden layer of 512 against 512 → 256 (the tutorial's extra layer) and 512 → 256 → 128.",
            claim="There isn't a significant impact -- because this is relatively simple data.",
            variants=tuple(
                Variant(name, replace(base, model=ModelSpec(hidden=h)))
                for name, h in (
                    ("1 layer: 512", (512,)),
                    ("2 layers: 512 → 256", (512, 256)),
                    ("3 layers: 512 → 256 → 128", (512, 256, 128)),
                )
            ),
            columns=(
                Column("params", "params", 0),
                Column("test accuracy", "accuracy"),
                Column("test loss", "loss"),
                Column("train loss", "train_loss"),
                Column("s / epoch", "seconds_per_epoch", 2),
            ),
            conclude=_conclude_depth,
            figures=_figures_depth,
        ),
        "epochs": Experiment(
            name="epochs",
            title="5, 15 or 30 epochs?",
            question=f"The seed model trained with {VALIDATION_SPLIT:.0%} of the training images held out for "
            "validation: training vs validation loss per epoch, and where validation loss bottoms out.",
            claim="Try 15 epochs -- you'll probably get a model with a much better loss than the one with 5. "
            "Try 30 epochs -- you might see the loss value stops decreasing, and sometimes increases. This is a "
            "side effect of something called 'overfitting'.",
            variants=tuple(
                Variant(_epoch_name(n, e), replace(long, epochs=e))
                for n, e in ((TUTORIAL_EPOCHS, e5), (MID_EPOCHS, e15), (LONG_EPOCHS, e30))
            ),
            columns=(
                Column("epochs", "epochs_run", 0),
                Column("train loss", "train_loss"),
                Column("val loss", "val_loss"),
                Column("val − train loss", "gap"),
                Column("lowest val loss at epoch", "best_val_epoch", 1),
                Column("test accuracy", "accuracy"),
            ),
            conclude=_conclude_epochs,
            figures=_figures_epochs,
            note="One run per seed: the shorter rows are the longest run evaluated on the test set after their "
            "last epoch, which is exactly what a separate shorter run with the same seed gives (training is "
            "deterministic per seed). Losses are the last epoch's.",
        ),
        "normalization": Experiment(
            name="normalization",
            title="Normalise the pixels?",
            question="The seed model with inputs divided by 255 (a Rescaling layer) against raw 0–255 pixels.",
            claim="Before you trained, you normalized the data, going from values that were 0-255 to values that "
            "were 0-1. What would be the impact of removing that? [...] Why do you think you get different results?",
            variants=(
                Variant("÷255 (tutorial)", base),
                Variant("raw 0–255", replace(base, model=ModelSpec(normalize=False))),
            ),
            columns=(
                Column("test accuracy", "accuracy"),
                Column("test loss", "loss"),
                Column("train loss", "train_loss"),
                Column("train accuracy", "train_accuracy"),
            ),
            conclude=_conclude_normalization,
            figures=_figures_normalization,
        ),
        "early-stop": Experiment(
            name="early-stop",
            title="Stop when good enough?",
            question=f"The seed model for up to {e30} epochs ({VALIDATION_SPLIT:.0%} held out): the full run against "
            f"the tutorial's callback (stop when loss < {TUTORIAL_STOP_LOSS}), stop when training accuracy > "
            f"{STOP_ACCURACY}, and EarlyStopping on val_loss (patience {EARLY_STOP_PATIENCE}, best weights restored).",
            claim="Wouldn't it be nice if I could stop the training when I reach a desired value? -- i.e. 95% "
            "accuracy might be enough for you, and if you reach that after 3 epochs, why sit around waiting for "
            "it to finish a lot more epochs.",
            variants=(
                Variant(f"full {e30} epochs", long),
                Variant(f"loss < {TUTORIAL_STOP_LOSS} (tutorial)", replace(long, stop_at_loss=TUTORIAL_STOP_LOSS)),
                Variant(f"accuracy > {STOP_ACCURACY}", replace(long, stop_at_accuracy=STOP_ACCURACY)),
                Variant("EarlyStopping(val_loss)", replace(long, early_stopping=EARLY_STOP_PATIENCE)),
            ),
            columns=(
                Column("epochs trained", "epochs_run", 1),
                Column("train s", "train_seconds", 1),
                Column("time saved", "time_saved", 0, 100, "%"),
                Column("test accuracy", "accuracy"),
                Column("Δ accuracy vs full", "accuracy_change", 2, 100, " pts"),
            ),
            conclude=_conclude_early_stop,
            figures=_figures_early_stop,
            baseline=f"full {e30} epochs",
            note="time saved: 1 − training seconds / the full run's, per seed.",
        ),
        "mistakes": Experiment(
            name="mistakes",
            title="The tutorial's two mistakes",
            question="The seed model without its Flatten layer, and with 5 output units for 10 classes.",
            claim="What would happen if you remove the Flatten() layer? [...] You get an error about the shape of "
            "the data. [...] What would happen if you had a different amount than 10? For example, try training "
            "the network with 5. You get an error as soon as it finds an unexpected value.",
            variants=(
                Variant("no Flatten", replace(base, model=ModelSpec(flatten=False)), check_only=True),
                Variant("5 output units", replace(base, model=ModelSpec(output_units=5)), check_only=True),
            ),
            columns=(),
            conclude=_conclude_mistakes,
            figures=lambda records: {},
            note="No training: fmnist.fit checks the model against the data before its first step.",
        ),
    }


EXPERIMENT_NAMES = ("hidden-units", "depth", "epochs", "normalization", "early-stop", "mistakes")


def resolve_names(name: str) -> list[str]:
    """``'all'`` or one experiment name -> the names to run, with an actionable error."""
    if name == "all":
        return list(EXPERIMENT_NAMES)
    if name not in EXPERIMENT_NAMES:
        raise FmnistError(f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENT_NAMES)} or all.")
    return [name]


# --------------------------------------------------------------------------- conclusions (numbers -> sentence)
def _agreement(parts: Sequence[bool]) -> str:
    return "agrees" if all(parts) else "disagrees" if not any(parts) else "partly agrees"


def _conclude_hidden_units(records: dict[str, list[dict]]) -> Conclusion:
    s = aggregate(records)
    names = list(s)
    small, big = s[_nearest(names, "128 units")], s[names[-1]]
    acc_gain = differs(big["accuracy"], small["accuracy"]) and big["accuracy"].mean > small["accuracy"].mean
    ratio = big["seconds_per_epoch"].mean / small["seconds_per_epoch"].mean
    slower = differs(big["seconds_per_epoch"], small["seconds_per_epoch"]) and ratio > 1
    best = max(names, key=lambda n: s[n]["accuracy"].mean)
    ties = [n for n in names if n != best and not differs(s[n]["accuracy"], s[best]["accuracy"])]
    text = (
        f"{names[-1]} reach {big['accuracy'].fmt()} test accuracy against {small['accuracy'].fmt()} for "
        f"{_nearest(names, '128 units')} ({_points(big['accuracy'], small['accuracy'])}), and an epoch takes "
        f"{ratio:.1f}× as long ({big['seconds_per_epoch'].fmt(2)} s vs {small['seconds_per_epoch'].fmt(2)} s). "
        f"The most accurate width is {best}"
        + (f", tied within the spread with {', '.join(ties)}." if ties else ", ahead of every other width.")
    )
    if slower and not acc_gain:
        text += " More units cost time here without a gain beyond the seed-to-seed spread."
    elif acc_gain and not slower:
        text += " The wider model is more accurate but not measurably slower."
    return Conclusion(text, _agreement([slower, acc_gain]))


def _nearest(names: Sequence[str], wanted: str) -> str:
    return wanted if wanted in names else names[0]


def _conclude_depth(records: dict[str, list[dict]]) -> Conclusion:
    s = aggregate(records)
    names = list(s)
    one = s[names[0]]
    parts, clauses = [], []
    for name in names[1:]:
        other = s[name]
        same = not differs(other["accuracy"], one["accuracy"])
        parts.append(same)
        clauses.append(f"{name}: {other['accuracy'].fmt()} ({_points(other['accuracy'], one['accuracy'])})")
    n_diff = parts.count(False)
    verdict = _agreement(parts)
    summary = (
        "No deeper model differs from one layer by more than the seed-to-seed spread"
        if n_diff == 0
        else f"{n_diff} of {len(parts)} deeper models differ from one layer by more than the spread"
    )
    text = f"{names[0]}: {one['accuracy'].fmt()} test accuracy; " + "; ".join(clauses) + f". {summary}."
    return Conclusion(text, verdict)


def _conclude_epochs(records: dict[str, list[dict]]) -> Conclusion:
    s = aggregate(records)
    short, mid, long = (s[n] for n in records)
    e = [round(x["epochs_run"].mean) for x in (short, mid, long)]
    better_loss = differs(mid["train_loss"], short["train_loss"]) and mid["train_loss"].mean < short["train_loss"].mean
    val_rises = differs(long["val_loss"], mid["val_loss"]) and long["val_loss"].mean > mid["val_loss"].mean
    train_still_falls = long["train_loss"].mean < mid["train_loss"].mean
    text = (
        f"Training loss is {short['train_loss'].fmt()} at epoch {e[0]}, {mid['train_loss'].fmt()} at epoch {e[1]} "
        f"({'lower' if better_loss else 'not lower'} by more than the spread) and {long['train_loss'].fmt()} at "
        f"epoch {e[2]}. Validation loss is lowest at epoch {long['best_val_epoch'].fmt(1)} and is "
        f"{long['val_loss'].fmt()} at epoch {e[2]} against {mid['val_loss'].fmt()} at epoch {e[1]} "
        f"({'higher' if val_rises else 'not higher'} by more than the spread); "
        f"the validation − training gap grows from {short['gap'].fmt()} to {long['gap'].fmt()}. Test accuracy: "
        f"{short['accuracy'].fmt()}, {mid['accuracy'].fmt()}, {long['accuracy'].fmt()}."
    )
    if val_rises and train_still_falls:
        text += " The overfitting shows in the validation loss; the training loss the tutorial prints keeps falling."
    return Conclusion(text, _agreement([better_loss, val_rises]))


def _conclude_normalization(records: dict[str, list[dict]]) -> Conclusion:
    s = aggregate(records)
    norm, raw = (s[n] for n in records)
    worse = differs(raw["accuracy"], norm["accuracy"]) and raw["accuracy"].mean < norm["accuracy"].mean
    text = (
        f"Raw 0–255 pixels reach {raw['accuracy'].fmt()} test accuracy (loss {raw['loss'].fmt()}) against "
        f"{norm['accuracy'].fmt()} (loss {norm['loss'].fmt()}) with ÷255: {_points(raw['accuracy'], norm['accuracy'])}."
    )
    if raw["accuracy"].mean < CHANCE_MARGIN / NUM_CLASSES:
        text += f" That is chance level (1 in {NUM_CLASSES}): on raw pixels the model did not learn at all."
    if not worse:
        text += " Without normalisation the result is not worse beyond the seed-to-seed spread."
    return Conclusion(text, "agrees" if worse else "disagrees")


def _conclude_early_stop(records: dict[str, list[dict]]) -> Conclusion:
    s = aggregate(records)
    names = list(s)
    full, tutorial = s[names[0]], s[names[1]]
    clauses = []
    for name in names[1:]:
        v = s[name]
        clauses.append(
            f"{name} stopped after {v['epochs_run'].fmt(1)} epochs, saving {v['time_saved'].fmt(0, 100, '%')} of the "
            f"training time, at {v['accuracy'].fmt()} test accuracy ({_points(v['accuracy'], full['accuracy'])})"
        )
    stopped_early = tutorial["epochs_run"].mean < full["epochs_run"].mean and tutorial["time_saved"].mean > 0
    cost = differs(tutorial["accuracy"], full["accuracy"]) and tutorial["accuracy"].mean < full["accuracy"].mean
    text = f"The full run reaches {full['accuracy'].fmt()} test accuracy after {full['epochs_run'].fmt(0)} epochs. " + (
        "; ".join(clauses) + "."
    )
    best = max(names, key=lambda n: s[n]["accuracy"].mean)
    text += f" Most accurate: {best}."
    if stopped_early and cost:
        text += " The tutorial's callback saves time but stops before the model is as good as it gets."
    return Conclusion(text, "agrees" if stopped_early else "disagrees")


def _conclude_mistakes(records: dict[str, list[dict]]) -> Conclusion:
    errors = {name: recs[0].get("error") for name, recs in records.items()}
    parts = [e is not None for e in errors.values()]
    text = "; ".join(
        f"{name}: stopped before training with an explained error (“{e.split('. ')[0].rstrip('.')}”)"
        if e
        else f"{name}: trained without any error"
        for name, e in errors.items()
    )
    return Conclusion(text + ".", _agreement(parts))


# --------------------------------------------------------------------------- figures
def _means(s, names, key):
    return [s[n][key].mean for n in names], [s[n][key].std for n in names]


def _figures_hidden_units(records):
    from fmnist import plots

    s, names = aggregate(records), list(records)
    widths = [int(n.split()[0]) for n in names]
    panels = [
        (label, *_means(s, names, key))
        for label, key in (("test accuracy", "accuracy"), ("seconds per epoch", "seconds_per_epoch"))
    ]
    return {"accuracy_vs_width": plots.mean_std_vs_x(widths, panels, "hidden units", logx=True)}


def _figures_depth(records):
    from fmnist import plots

    s, names = aggregate(records), list(records)
    panels = [
        (label, *_means(s, names, key))
        for label, key in (("test accuracy", "accuracy"), ("seconds per epoch", "seconds_per_epoch"))
    ]
    return {"depth": plots.mean_std_bars(names, panels)}


def _curve(recs: list[dict], key: str):
    """Mean and std per epoch of ``history[key]`` over seeds (cut to the shortest run)."""
    import numpy as np

    curves = [r["history"][key] for r in recs if key in r.get("history", {})]
    n = min(map(len, curves))
    arr = np.array([c[:n] for c in curves])
    return arr.mean(axis=0), arr.std(axis=0, ddof=1) if len(arr) > 1 else np.zeros(n)


def _figures_epochs(records):
    from fmnist import plots

    names = list(records)
    recs = records[names[-1]]
    marks = [round(statistics.fmean(r["epochs_run"] for r in records[n])) for n in names[:-1]]
    panels = [
        (metric, {"training": _curve(recs, metric), "validation": _curve(recs, f"val_{metric}")})
        for metric in ("loss", "accuracy")
    ]
    return {"learning_curves": plots.mean_std_curves(panels, marks=marks)}


def _figures_normalization(records):
    from fmnist import plots

    panels = [
        (f"training {metric}", {name: _curve(recs, metric) for name, recs in records.items()})
        for metric in ("loss", "accuracy")
    ]
    return {"curves": plots.mean_std_curves(panels)}


def _figures_early_stop(records):
    from fmnist import plots

    s, names = aggregate(records), list(records)
    panels = [
        (label, *_means(s, names, key))
        for label, key in (
            ("epochs trained", "epochs_run"),
            ("training seconds", "train_seconds"),
            ("test accuracy", "accuracy"),
        )
    ]
    return {"early_stop": plots.mean_std_bars(names, panels)}


# --------------------------------------------------------------------------- trials (see fmnist.trials)
def _share_key(variant: Variant, seed: int) -> tuple[TrainConfig, bool]:
    """Variants with equal keys read one trial: the same training, or the same one cut at fewer epochs."""
    config = replace(variant.config, seed=0 if variant.check_only else seed)
    prefix_safe = config.stop_at_loss is None and config.stop_at_accuracy is None and config.early_stopping is None
    return (replace(config, epochs=1) if prefix_safe or variant.check_only else config), variant.check_only


def plan(experiments: Sequence[Experiment], seeds: Sequence[int]) -> tuple[list[Trial], dict]:
    """The trials to run, in order, and for each (experiment, variant, seed) its (trial index, epochs)."""
    groups: dict[tuple, list[tuple]] = {}
    for exp in experiments:
        for variant in exp.variants:
            for seed in [0] if variant.check_only else seeds:
                groups.setdefault(_share_key(variant, seed), []).append((exp.name, variant.name, seed, variant))
    trials, where = [], {}
    for (config, check_only), members in groups.items():
        epochs = sorted({m[3].config.epochs for m in members})
        trial = Trial(replace(config, epochs=epochs[-1]), tuple(epochs[:-1]), check_only)
        trials.append((trial, members))
    # Seed by seed, longest first within each: the two workers stay balanced, and a program compiled
    # for seed 0 is in the compilation cache long before seed 1 of the same variant needs it.
    trials.sort(key=lambda tm: (tm[0].config.seed, -tm[0].cost))
    for i, (_, members) in enumerate(trials):
        for exp_name, variant_name, seed, variant in members:
            where[exp_name, variant_name, seed] = (i, variant.config.epochs)
    return [t for t, _ in trials], where


# --------------------------------------------------------------------------- records and results
def _record(trial_result: dict, epochs: int) -> dict:
    """One variant's numbers for one seed, read from its trial (cut at ``epochs`` if the trial ran longer)."""
    if "error" in trial_result:
        return {"error": trial_result["error"]}
    full = trial_result["history"]
    h = {k: v[:epochs] for k, v in full.items()}
    n = len(h["loss"])
    metrics = trial_result["metrics"] if n == len(full["loss"]) else trial_result["snapshots"][str(n)]
    seconds = h["seconds"]
    steady = statistics.median(seconds[1:]) if n > 1 else seconds[0]
    rec = {
        "accuracy": metrics["accuracy"],
        "loss": metrics["loss"],
        "epochs_run": n,
        "train_loss": h["loss"][-1],
        "train_accuracy": h["accuracy"][-1],
        "seconds_per_epoch": steady,
        "compile_seconds": max(0.0, seconds[0] - steady),
        "train_seconds": sum(seconds),
        "params": trial_result["params"],
    }
    if h.get("val_loss"):
        best = min(range(n), key=h["val_loss"].__getitem__)
        rec |= {
            "val_loss": h["val_loss"][-1],
            "val_accuracy": h["val_accuracy"][-1],
            "best_val_epoch": best + 1,
            "best_val_loss": h["val_loss"][best],
            "gap": h["val_loss"][-1] - h["loss"][-1],
        }
    return rec | {"history": h}


def _against_baseline(records: dict[str, list[dict]], baseline: str) -> None:
    """Add per-seed time saved and accuracy change relative to the baseline variant."""
    for recs in records.values():
        for rec, base in zip(recs, records[baseline], strict=True):
            rec["time_saved"] = 1.0 - rec["train_seconds"] / base["train_seconds"]
            rec["accuracy_change"] = rec["accuracy"] - base["accuracy"]


@dataclass
class ExperimentResult:
    experiment: Experiment
    records: dict[str, list[dict]]  # variant name -> one record per seed (see _record)
    conclusion: Conclusion

    @property
    def stats(self) -> dict[str, dict[str, Stat]]:
        return aggregate(self.records)


@dataclass
class Results:
    experiments: list[ExperimentResult]
    seeds: list[int]
    workers: int
    trials: int  # distinct trainings and checks run
    wall_seconds: float
    epochs_scale: float = 1.0
    limit: int | None = None
    executor: str = "local"  # what ran the trials (fmnist.trials.EXECUTORS)
    kept: int = 0  # trials whose results were kept from an earlier, interrupted run (not run again)
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))


def run_experiments(
    names: Sequence[str],
    seeds: int | Sequence[int] = DEFAULT_SEEDS,
    *,
    workers: int | None = None,
    epochs_scale: float = 1.0,
    limit: int | None = None,
    progress: Callable[[Progress], None] | None = None,
    dataset: tuple | None = None,
    data_dir: str | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    store: TrialStore | None = None,
) -> Results:
    """Run the named experiments (see EXPERIMENT_NAMES), every variant once per seed, and conclude each.

    ``executor``/``ray_address`` choose where the trials run (see fmnist.trials.run_trials); a trial
    that fails stops the experiment with its reason once the others have finished. With a
    ``store`` (e.g. ``TrialStore(folder, data_fingerprint(dataset))``), finished trials are kept
    there as they finish and a rerun runs only the missing ones.
    """
    seeds = list(range(seeds)) if isinstance(seeds, int) else list(seeds)
    if not seeds:
        raise FmnistError("at least one seed is needed (--seeds 1 or more).")
    catalogue = build_experiments(epochs_scale, limit)
    experiments = [catalogue[n] for name in names for n in resolve_names(name)]
    workers = DEFAULT_WORKERS if workers is None else workers
    start = time.perf_counter()
    trials, where = plan(experiments, seeds)
    outcomes = run_trials(
        trials, workers, progress, dataset, data_dir, executor=executor, ray_address=ray_address, store=store
    )  # fmt: skip
    failed = [(t, o["failed"]) for t, o in zip(trials, outcomes, strict=True) if "failed" in o]
    if failed:
        trial, why = failed[0]
        raise RunError(f"{len(failed)} of {len(trials)} trials failed, first {trial.describe()}: {why}")
    results = []
    for exp in experiments:
        records = {
            v.name: [
                _record(outcomes[where[exp.name, v.name, seed][0]], where[exp.name, v.name, seed][1])
                for seed in ([0] if v.check_only else seeds)
            ]
            for v in exp.variants
        }
        if exp.baseline:
            _against_baseline(records, exp.baseline)
        results.append(ExperimentResult(exp, records, exp.conclude(records)))
    wall = time.perf_counter() - start
    kept = store.hits if store else 0
    return Results(results, seeds, workers, len(trials), wall, epochs_scale, limit, executor, kept)
