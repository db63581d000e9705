"""A run's settings as data: ModelSpec (what to build) and TrainConfig (how to train it), and config.json's schema.

    config = TrainConfig(epochs=5)            # the tutorial's program, as data
    config.to_json()                          # what the run directory stores as config.json
    load_config(Path("runs/default"))         # ... and reads back, older schemas migrated

Each field carries its help text (``setting``): `fmnist train` derives its flags, their types and
their help from these fields, so a setting is declared once. That is also why this module does
not import Keras or JAX: `fmnist --help` reads the fields and must start fast.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from fmnist import accelerator, runs
from fmnist.data import NUM_CLASSES
from fmnist.errors import FmnistError, ModelError, RunError

ACTIVATIONS = ("relu", "gelu", "tanh", "sigmoid", "elu", "selu", "swish", "linear")
WHITEN_MAX_FILTERS = 2 * 9  # whiten: each direction of a 3x3, 1-channel patch and its negative
SCHEDULES = ("constant", "one-cycle")
# config.json's layout. 1: a "schema" key, and every TrainConfig field present; 2 to 4: the same,
# with the fields of FIELDS_SINCE[2], then [3], [4]. Older files are migrated: fields added after their schema take
# their defaults, which is how those runs were trained (each field was added with a neutral
# default); files without the key (schema 0, written before it existed) may lack any field. The
# model spec's fields (pool_first, conv_strides, standardize...) likewise: one missing from an older
# file takes its default, the neutral one it was added with (an unknown one is an error).
CONFIG_SCHEMA = 4
FIELDS_SINCE = {2: ("augment_erase",), 3: ("probe_steps",), 4: ("platform", "precision")}
# What config.json records about a run beside its TrainConfig (written by train.save_run).
RUN_RECORD_KEYS = frozenset(
    {"schema", "created", "train_seconds", "phase_seconds", "epochs_run", "steps_run", "params",
     "model_description", "versions", "device", "processes", "plan"}
)  # fmt: skip


def setting(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = dataclasses.MISSING,
            shown: str | None = None) -> Any:  # fmt: skip
    """A dataclass field with its help text, as `fmnist train --help` and the docs show it.

    The help page adds ``[default: ...]`` from the default value (False reads "no"); ``shown``
    words it otherwise ("" shows none).
    """
    metadata = {"help": help} | ({} if shown is None else {"shown": shown})
    return field(default=default, default_factory=factory, metadata=metadata)


def shown_default(f: dataclasses.Field) -> str:
    """How the help page words a field's default ("" for none)."""
    if "shown" in f.metadata:
        return f.metadata["shown"]
    value = f.default
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, tuple):
        return " ".join(map(str, value))
    return "" if value is None or value is dataclasses.MISSING else str(value)


@dataclass(frozen=True)
class ModelSpec:
    """What to build. Defaults are the tutorial's seed model (see models.build_model)."""

    # mlp: Dense layers on the flat image; cnn, vgg: see build_model
    arch: Literal["mlp", "cnn", "vgg"] = setting("mlp", "mlp (the tutorial's), cnn or vgg.")
    hidden: tuple[int, ...] = setting((128,), "Hidden layer width; repeat for more layers.")  # in order
    activation: str = setting("relu", "Hidden layer activation.")  # of every hidden layer
    # start with Rescaling(1/255), so the model takes raw 0–255 pixels
    normalize: bool = setting(True, "Divide pixels by 255 inside the model.", shown="normalize")
    # then per-pixel (x - mean) / std of the training images (build_model's x_train)
    standardize: bool = setting(False, "Then standardize each pixel with the training images' mean and std.")
    dropout: float = setting(0.0, "Dropout after each hidden layer.")  # 0: none, as in the tutorial
    conv_filters: tuple[int, ...] = setting((32, 64), "cnn/vgg: filters per conv block; repeat.")  # of 3×3 convs
    # cnn: pooling each conv's output before BatchNorm and relu does 4x less work after it
    pool_first: bool = setting(False, "cnn: max-pool each conv before BatchNorm+relu.")
    # cnn: empty is all 1; a strided block is not pooled
    conv_strides: tuple[int, ...] = setting(
        (), "cnn: each block's conv stride; repeat, one per block.", shown="1 each, pooled"
    )
    # cnn: empty is 1 each; a block's other convs follow at its output size
    conv_repeats: tuple[int, ...] = setting(
        (), "cnn: convs in each block; repeat, one per block (deeper blocks).", shown="1 each"
    )
    # cnn: the first conv is fixed, not trained: patch-whitening filters of the training images
    whiten: bool = setting(False, "cnn: a fixed (untrained) patch-whitening first conv.")
    # each member has its own weights; the output is their mean
    members: int = setting(
        1, "An ensemble of N such nets trained side by side, each on its own loss; it predicts their mean."
    )
    flatten: bool = setting(True, "False reproduces the tutorial's missing-Flatten mistake.")
    output_units: int = setting(NUM_CLASSES, "Not 10 reproduces the tutorial's wrong-output-width mistake.")

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "conv_filters", tuple(int(f) for f in self.conv_filters))
        object.__setattr__(self, "conv_strides", tuple(int(s) for s in self.conv_strides))
        object.__setattr__(self, "conv_repeats", tuple(int(r) for r in self.conv_repeats))
        if self.arch not in ("mlp", "cnn", "vgg"):
            raise ModelError(f"unknown architecture {self.arch!r}: use 'mlp', 'cnn' or 'vgg'.")
        if self.arch != "mlp" and (not self.conv_filters or min(self.conv_filters) < 1):
            raise ModelError(f"conv filters must be positive, got {list(self.conv_filters)}.")
        if self.conv_strides and (len(self.conv_strides) != len(self.conv_filters) or min(self.conv_strides) < 1):
            raise ModelError(
                f"conv strides {list(self.conv_strides)} need one positive stride per conv block "
                f"({len(self.conv_filters)} blocks: {list(self.conv_filters)})."
            )
        if self.conv_repeats and (len(self.conv_repeats) != len(self.conv_filters) or min(self.conv_repeats) < 1):
            raise ModelError(
                f"conv repeats {list(self.conv_repeats)} need one count of at least 1 per conv block "
                f"({len(self.conv_filters)} blocks: {list(self.conv_filters)})."
            )
        first = self.conv_filters[0] if self.conv_filters else 0
        if self.whiten and (self.arch != "cnn" or first % 2 or first > WHITEN_MAX_FILTERS):
            raise ModelError(
                f"whiten needs arch 'cnn' with an even first conv width of at most {WHITEN_MAX_FILTERS} (each of the 9 "
                f"directions of a 3x3 patch and its negative), got arch {self.arch!r} with {list(self.conv_filters)}."
            )
        if any(h < 1 for h in self.hidden):
            raise ModelError(f"hidden layer widths must be positive, got {list(self.hidden)}.")
        if self.activation not in ACTIVATIONS:
            raise ModelError(f"unknown activation {self.activation!r}: use one of {', '.join(ACTIVATIONS)}.")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1), got {self.dropout}.")
        if self.output_units < 1:
            raise ModelError(f"output_units must be positive, got {self.output_units}.")
        if self.members < 1:
            raise ModelError(f"an ensemble needs at least 1 member, got {self.members}.")

    def describe(self) -> str:
        """A short human name, e.g. 'mlp 128' or 'cnn 32-64 / 128'."""
        widths = "-".join(map(str, self.hidden)) or "none"
        filters = "-".join(map(str, self.conv_filters))
        body = {"mlp": f"mlp {widths}", "cnn": f"cnn {filters} / {widths}", "vgg": f"vgg {filters}"}[self.arch]
        flags = (
            ("pool first", self.pool_first and self.arch == "cnn"),
            ("strides " + "-".join(map(str, self.conv_strides)), any(s > 1 for s in self.conv_strides)),
            ("repeats " + "-".join(map(str, self.conv_repeats)), any(r > 1 for r in self.conv_repeats)),
            ("raw pixels", not self.normalize),
            ("whitened", self.whiten),
            ("standardized", self.standardize),
            (f"dropout {self.dropout}", self.dropout),
            (f"ensemble of {self.members}", self.members > 1),
        )
        extras = [e for e, on in flags if on]
        return body + (f" ({', '.join(extras)})" if extras else "")


def spec_from_dict(d: dict) -> ModelSpec:
    """Inverse of ``dataclasses.asdict`` for a spec read from JSON."""
    known = {f for f in ModelSpec.__dataclass_fields__}
    unknown = set(d) - known
    if unknown:
        raise ModelError(f"unknown model spec fields {sorted(unknown)}; known: {sorted(known)}.")
    return ModelSpec(**d)


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run. Defaults reproduce the tutorial."""

    model: ModelSpec = field(default_factory=ModelSpec, metadata={"help": "What to build (see ModelSpec)."})
    epochs: int = setting(5, "Passes over the training set.")  # when ``steps`` is None
    batch_size: int = setting(32, "Images per gradient step.")  # Keras' default
    optimizer: str = setting("adam", "adam, adamw, sgd, rmsprop or nadam.")
    # None keeps the optimizer's default (0.001 for Adam)
    learning_rate: float | None = setting(None, "Learning rate (one-cycle: the peak).", shown="the optimizer's")
    momentum: float = setting(0.0, "sgd: momentum.")
    nesterov: bool = setting(False, "sgd: Nesterov momentum.", shown="")
    # decoupled weight decay per step, scaled by the learning rate
    weight_decay: float | None = setting(None, "Decoupled weight decay.", shown="none")
    # one-cycle: linear warm-up, then cosine to 0
    schedule: str = setting("constant", "Learning rate schedule: constant or one-cycle.")
    warmup: float = setting(0.2, "One-cycle: fraction of the steps spent warming up from learning_rate / 10.")
    # train on targets (1 - s) one-hot + s / 10; the reported loss is plain
    label_smoothing: float = setting(0.0, "Label smoothing of the training loss.")
    augment_shift: int = setting(0, "Augment: random shifts up to N px.")  # 0-padded
    augment_flip: bool = setting(False, "Augment: random left-right mirroring.", shown="")  # half the images
    augment_erase: float = setting(0.0, "Augment: blank a random rectangle of this fraction of the images.")
    # weight averaging: the momentum of an exponential moving average of the weights
    ema: float | None = setting(None, "Average the weights (EMA momentum, e.g. 0.99).", shown="off")
    # averaged by evaluate/predict (fmnist.augment)
    eval_views: tuple[str, ...] = setting(
        ("identity",),
        "Test-time view, repeat to average: identity, flip, a 1 px shift (left, right, up, down, up-left, "
        "up-right, down-left, down-right) or a mirrored one (flip-left, ..., flip-down-right).",
        shown="",
    )
    # seconds for the whole run (compile, train, evaluate): plans ``steps``
    time_budget: float | None = setting(None, "Whole-command budget (300, 300s, 5m): sets the number of steps.")
    # overriding epochs (planned from time_budget, recorded)
    steps: int | None = setting(None, "Optimizer steps in all, instead of epochs.")
    # trained at the schedule's starting rate (recorded)
    probe_steps: int | None = setting(None, "The first steps: the time budget's probe.")
    # the last fraction of the training set, for val_loss/val_accuracy
    validation_split: float = setting(0.0, "Fraction of training data held out.")
    stop_at_loss: float | None = setting(None, "Stop once training loss is below this.")  # the tutorial's callback
    stop_at_accuracy: float | None = setting(None, "Stop once training accuracy is above this.")
    early_stopping: int | None = setting(None, "Patience (epochs) on val_loss.")  # loss without validation
    # same seed -> same run on the CPU
    seed: int = setting(0, "Random seed: weights, batch order, augmentation, dropout.")
    # data-parallel over this process's devices: the same result to rounding
    devices: int = setting(
        1,
        "Split each batch over N devices of this process (data-parallel, same result; a CPU simulates "
        "N devices). Several processes: KERAS_DISTRIBUTION_* variables, docs/scaling.md.",
    )
    # the device kind: applied by `fmnist train` before JAX starts (accelerator.select); not part of what a
    # run computes, so a run resumes on either kind (config.json's "device" records where it ran)
    platform: Literal["cpu", "gpu"] | None = setting(
        None, "Device kind to train on: cpu or gpu.", shown="the best there is: a GPU where JAX sees one"
    )
    # Keras dtype policy while the model is built (accelerator.precision_scope); variables stay float32
    precision: Literal["float32", "bf16", "mixed"] | None = setting(
        None,
        "float32, or bf16 = mixed: bfloat16 maths with float32 weights (Keras' mixed_bfloat16; the output layer "
        "stays float32). Pure bfloat16 weights are not offered: small updates round away.",
        shown="the device kind's: float32",
    )
    train_limit: int | None = setting(None, "Train on the first N images only (quick trials, smoke tests).")
    data_dir: str | None = setting(None, "Where the dataset is (None: the usual search, see fmnist.data).")
    recipe: str | None = setting(None, "The named recipe this config started from (fmnist.recipes), if any.")

    def __post_init__(self):
        from fmnist import augment  # here, not at the top: augment imports JAX, and the CLI reads these fields

        if isinstance(self.model, dict):
            object.__setattr__(self, "model", spec_from_dict(self.model))
        object.__setattr__(self, "eval_views", augment.check_views(self.eval_views))
        self._check()

    def _check(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise FmnistError(f"epochs and batch size must be at least 1 (got {self.epochs}, {self.batch_size}).")
        if not 0.0 <= self.validation_split < 1.0:
            raise FmnistError(f"validation split must be in [0, 1), got {self.validation_split}.")
        if self.train_limit is not None and self.train_limit < 1:
            raise FmnistError(f"train_limit must be at least 1, got {self.train_limit}.")
        if self.schedule not in SCHEDULES:
            raise FmnistError(f"unknown schedule {self.schedule!r}: use {' or '.join(SCHEDULES)}.")
        if not 0.0 <= self.label_smoothing < 1.0 or not 0.0 <= self.warmup < 1.0:
            raise FmnistError("label smoothing and warm-up fraction must be in [0, 1).")
        if self.augment_shift < 0 or (self.ema is not None and not 0.0 < self.ema < 1.0):
            raise FmnistError("augment_shift must be >= 0 and ema a momentum in (0, 1).")
        if not 0.0 <= self.augment_erase <= 1.0:
            raise FmnistError(f"augment_erase is a probability in [0, 1], got {self.augment_erase}.")
        if self.steps is not None and self.steps < 1:
            raise FmnistError(f"steps must be at least 1, got {self.steps}.")
        if self.probe_steps is not None and not (self.steps is not None and 1 <= self.probe_steps <= self.steps):
            raise FmnistError(f"probe_steps must be within the run's steps, got {self.probe_steps} of {self.steps}.")
        if self.devices < 1 or self.batch_size % self.devices:
            raise FmnistError(
                f"devices must be at least 1 and divide the batch size (got {self.devices} for a batch of "
                f"{self.batch_size}): each device takes an equal share of every batch."
            )
        if self.platform is not None and self.platform not in accelerator.KINDS:
            raise FmnistError(
                f"unknown platform {self.platform!r}: use {' or '.join(accelerator.KINDS)} (None: the best)."
            )
        if self.precision is not None:
            accelerator.dtype_policy(self.precision)  # a DeviceError naming the precisions
        if self.time_budget is not None and self.time_budget <= 0:
            raise FmnistError(f"the time budget must be positive, got {self.time_budget} s.")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """A config from its fields (missing ones take their defaults); an unknown field is an error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise FmnistError(f"unknown TrainConfig fields {unknown}: known fields are {sorted(known)}.")
        try:
            return cls(**d)
        except TypeError as e:  # e.g. a model spec that is not a dict
            raise FmnistError(f"invalid TrainConfig: {e}") from e

    def to_json(self) -> dict:
        """What config.json holds for this config: its fields and the schema version."""
        return {"schema": CONFIG_SCHEMA, **self.to_dict()}


def load_config(run_dir: Path) -> TrainConfig:
    """The TrainConfig a run directory records (see CONFIG_SCHEMA); a damaged or foreign file is a RunError."""
    path = Path(run_dir) / runs.CONFIG_FILE
    return config_from_json(runs.read_json(path), path)


def config_from_json(record: dict, where: Path | str = runs.CONFIG_FILE) -> TrainConfig:
    """A config.json's content -> TrainConfig: schema checked, older schemas migrated, nothing dropped silently."""
    if not isinstance(record, dict):
        raise RunError(f"{where} does not hold a JSON object: it is not an fmnist config.")
    schema = record.get("schema", 0)
    if not isinstance(schema, int) or not 0 <= schema <= CONFIG_SCHEMA:
        raise RunError(
            f"{where} has config schema {schema!r}; this fmnist reads schemas 0-{CONFIG_SCHEMA}: upgrade it."
        )
    fields = {k: v for k, v in record.items() if k not in RUN_RECORD_KEYS}
    newer = {name for since, names in FIELDS_SINCE.items() if since > schema for name in names}
    missing = sorted({f.name for f in dataclasses.fields(TrainConfig)} - set(fields) - newer)
    if schema >= 1 and missing:
        raise RunError(f"{where} lacks the config fields {missing}: it was not written whole; retrain the run.")
    try:
        return TrainConfig.from_dict(fields)  # fields newer than the file take their defaults (see CONFIG_SCHEMA)
    except FmnistError as e:
        raise RunError(f"{where}: {e}") from e
