"""The tutorial's questions, written as data: what ``fmnist experiment NAME`` trains and how it concludes.

The tutorial ends with exercises and answers them with assertions: more hidden units are
slower but more accurate; another layer makes no significant difference; 15 epochs beat 5
and 30 overfit; unnormalised inputs train worse; a model without Flatten or with 5 output
units fails; a callback can stop training once it is good enough. Each is an ``Experiment``
here: named ``TrainConfig`` variants, the tutorial's claim in its own words, the table's
columns, and a conclusion function that turns the measured numbers into a sentence and a
verdict (agrees / partly agrees / disagrees) — never a canned sentence.

    build_experiments()["depth"].variants  # the three models it trains, one TrainConfig each

One screen per experiment below: its definition and its conclusion (its plots are in
``fmnist.experiment_figures``). Running them (every variant once per seed, identical trainings
once) is ``fmnist.experiments``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from fmnist import experiment_figures
from fmnist.data import NUM_CLASSES
from fmnist.errors import FmnistError
from fmnist.models import ModelSpec
from fmnist.train import TrainConfig
from fmnist.trials import VALIDATION_SPLIT, Stat, aggregate, differs

TUTORIAL_EPOCHS = 5  # the tutorial's model.fit(..., epochs=5)
LONG_EPOCHS = 30  # the tutorial's "try 30 epochs"
MID_EPOCHS = 15  # the tutorial's "try 15 epochs"
# VALIDATION_SPLIT (fmnist.trials): epochs and early-stop hold out the last 10% of the training images
TUTORIAL_STOP_LOSS = 0.4  # the tutorial's callback: stop when loss < 0.4
STOP_ACCURACY = 0.9  # "good enough" training accuracy for the stop-at-accuracy variant
EARLY_STOP_PATIENCE = 2  # epochs without a better val_loss before EarlyStopping stops
CHANCE_MARGIN = 1.5  # accuracy below 1.5 × 1/10 is reported as chance level (a model that learned nothing)
VERDICTS = ("agrees", "partly agrees", "disagrees")
SOURCE = "TensorFlow in Practice, course 1 week 2: the Fashion-MNIST “Beyond Hello World” exercises"


# --------------------------------------------------------------------------- experiments as data
@dataclass(frozen=True)
class Variant:
    name: str  # row label in the report
    config: TrainConfig  # the training (its seed is replaced by each trial's)
    check_only: bool = False  # build the model and run fit()'s pre-training check; don't train


@dataclass(frozen=True)
class Column:
    header: str
    key: str  # a number in the per-seed records (see fmnist.trials.trial_record)
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


@dataclass(frozen=True)
class TrialSize:
    """The training every experiment starts from, shrunk for quick trials by ``scale`` and ``limit``."""

    scale: float  # every epoch count is multiplied by it (at least 1 epoch)
    limit: int | None  # train on the first ``limit`` training images (None: all)

    def epochs(self, n: int) -> int:
        return max(1, round(n * self.scale))

    @property
    def base(self) -> TrainConfig:
        """The tutorial's training: the seed model for 5 epochs."""
        return TrainConfig(epochs=self.epochs(TUTORIAL_EPOCHS), train_limit=self.limit)

    @property
    def long(self) -> TrainConfig:
        """The tutorial's 30 epochs, holding out VALIDATION_SPLIT to watch for overfitting."""
        return replace(self.base, epochs=self.epochs(LONG_EPOCHS), validation_split=VALIDATION_SPLIT)


def build_experiments(epochs_scale: float = 1.0, limit: int | None = None) -> dict[str, Experiment]:
    """Every experiment, in report order. ``epochs_scale``/``limit`` shrink them for quick trials."""
    if not epochs_scale > 0:
        raise FmnistError(f"epochs scale must be positive, got {epochs_scale}.")
    size = TrialSize(epochs_scale, limit)
    return {name: define(size) for name, define in DEFINITIONS.items()}


def resolve_names(name: str) -> list[str]:
    """``'all'`` or one experiment name -> the names to run, with an actionable error."""
    if name == "all":
        return list(EXPERIMENT_NAMES)
    if name not in EXPERIMENT_NAMES:
        raise FmnistError(f"unknown experiment {name!r}: use one of {', '.join(EXPERIMENT_NAMES)} or all.")
    return [name]


# --------------------------------------------------------------------------- numbers shared by the conclusions
def _points(a: Stat, b: Stat) -> str:
    """``a - b`` in accuracy percentage points, with whether it exceeds the spread."""
    beyond = "beyond" if differs(a, b) else "within"
    return f"{100 * (a.mean - b.mean):+.2f} points, {beyond} the spread of {100 * (a.std + b.std):.2f}"


def _agreement(parts: Sequence[bool]) -> str:
    return "agrees" if all(parts) else "disagrees" if not any(parts) else "partly agrees"


def _nearest(names: Sequence[str], wanted: str) -> str:
    return wanted if wanted in names else names[0]


# --------------------------------------------------------------------------- hidden-units
def hidden_units(size: TrialSize) -> Experiment:
    return Experiment(
        name="hidden-units",
        title="How many hidden units?",
        question="The tutorial's Dense(128) against 32, 64, 512 and 1024 units, 5 epochs each.",
        claim="By adding more Neurons we have to do more calculations, slowing down the process, but in this "
        "case they have a good impact -- we do get more accurate. That doesn't mean it's always a case of "
        "'more is better', you can hit the law of diminishing returns very quickly!",
        variants=tuple(
            Variant(f"{w} units", replace(size.base, model=ModelSpec(hidden=(w,)))) for w in (32, 64, 128, 512, 1024)
        ),
        columns=(
            Column("params", "params", 0),
            Column("test accuracy", "accuracy"),
            Column("test loss", "loss"),
            Column("s / epoch", "seconds_per_epoch", 2),
        ),
        conclude=_conclude_hidden_units,
        figures=experiment_figures.hidden_units,
        note="s / epoch: median wall-clock of epochs 2 onwards (epoch 1 includes compiling). With 2 workers "
        "each training has one core, with 1 worker all cores, so compare rows, not runs.",
    )


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


# --------------------------------------------------------------------------- depth
def depth(size: TrialSize) -> Experiment:
    return Experiment(
        name="depth",
        title="Another hidden layer?",
        question="One hidden layer of 512 against 512 → 256 (the tutorial's extra layer) and 512 → 256 → 128.",
        claim="There isn't a significant impact -- because this is relatively simple data.",
        variants=tuple(
            Variant(name, replace(size.base, model=ModelSpec(hidden=h)))
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
        figures=experiment_figures.depth,
    )


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


# --------------------------------------------------------------------------- epochs
def _epoch_name(n: int, actual: int) -> str:
    return f"{n} epochs" if n == actual else f"{n} epochs (scaled to {actual})"


def epochs(size: TrialSize) -> Experiment:
    return Experiment(
        name="epochs",
        title="5, 15 or 30 epochs?",
        question=f"The seed model trained with {VALIDATION_SPLIT:.0%} of the training images held out for "
        "validation: training vs validation loss per epoch, and where validation loss bottoms out.",
        claim="Try 15 epochs -- you'll probably get a model with a much better loss than the one with 5. "
        "Try 30 epochs -- you might see the loss value stops decreasing, and sometimes increases. This is a "
        "side effect of something called 'overfitting'.",
        variants=tuple(
            Variant(_epoch_name(n, size.epochs(n)), replace(size.long, epochs=size.epochs(n)))
            for n in (TUTORIAL_EPOCHS, MID_EPOCHS, LONG_EPOCHS)
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
        figures=experiment_figures.epochs,
        note="One run per seed: the shorter rows are the longest run evaluated on the test set after their "
        "last epoch, which is exactly what a separate shorter run with the same seed gives (training is "
        "deterministic per seed). Losses are the last epoch's.",
    )


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


# --------------------------------------------------------------------------- normalization
def normalization(size: TrialSize) -> Experiment:
    return Experiment(
        name="normalization",
        title="Normalise the pixels?",
        question="The seed model with inputs divided by 255 (a Rescaling layer) against raw 0–255 pixels.",
        claim="Before you trained, you normalized the data, going from values that were 0-255 to values that "
        "were 0-1. What would be the impact of removing that? [...] Why do you think you get different results?",
        variants=(
            Variant("÷255 (tutorial)", size.base),
            Variant("raw 0–255", replace(size.base, model=ModelSpec(normalize=False))),
        ),
        columns=(
            Column("test accuracy", "accuracy"),
            Column("test loss", "loss"),
            Column("train loss", "train_loss"),
            Column("train accuracy", "train_accuracy"),
        ),
        conclude=_conclude_normalization,
        figures=experiment_figures.normalization,
    )


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


# --------------------------------------------------------------------------- early-stop
def early_stop(size: TrialSize) -> Experiment:
    long, e30 = size.long, size.long.epochs
    return Experiment(
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
        figures=experiment_figures.early_stop,
        baseline=f"full {e30} epochs",
        note="time saved: 1 − training seconds / the full run's, per seed.",
    )


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


# --------------------------------------------------------------------------- mistakes
def mistakes(size: TrialSize) -> Experiment:
    return Experiment(
        name="mistakes",
        title="The tutorial's two mistakes",
        question="The seed model without its Flatten layer, and with 5 output units for 10 classes.",
        claim="What would happen if you remove the Flatten() layer? [...] You get an error about the shape of "
        "the data. [...] What would happen if you had a different amount than 10? For example, try training "
        "the network with 5. You get an error as soon as it finds an unexpected value.",
        variants=(
            Variant("no Flatten", replace(size.base, model=ModelSpec(flatten=False)), check_only=True),
            Variant("5 output units", replace(size.base, model=ModelSpec(output_units=5)), check_only=True),
        ),
        columns=(),
        conclude=_conclude_mistakes,
        figures=lambda records: {},
        note="No training: fmnist.fit checks the model against the data before its first step.",
    )


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


# --------------------------------------------------------------------------- the catalogue, in report order
DEFINITIONS: dict[str, Callable[[TrialSize], Experiment]] = {
    "hidden-units": hidden_units,
    "depth": depth,
    "epochs": epochs,
    "normalization": normalization,
    "early-stop": early_stop,
    "mistakes": mistakes,
}
EXPERIMENT_NAMES = tuple(DEFINITIONS)
