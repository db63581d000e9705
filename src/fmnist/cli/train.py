"""`fmnist train` and `fmnist recipes`: the train command's flags, the TrainConfig they describe
(`fmnist sweep` maps the same flags), and its progress lines."""

from __future__ import annotations

import dataclasses
import inspect
import time
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from fmnist.cli import DataDir, _load, _StopOnSignals, _use_compilation_cache, app, err, out
from fmnist.config import ModelSpec, TrainConfig, shown_default
from fmnist.errors import FmnistError, Interrupted


def _progress_callback(earlier: str = "trained before this fit"):
    """A Keras callback that prints one line per epoch and a bar inside long epochs.

    A fit that starts after epoch 1 (a resumed run; a time budget whose probe, run before the fit,
    spanned whole epochs) first says which epochs it does not show, and why (``earlier``).
    """
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from fmnist._backend import keras

    class EpochLines(keras.callbacks.Callback):
        BAR_AFTER_S = 1.5  # epochs shorter than this get only their summary line

        def on_train_begin(self, logs=None):
            self._first = True

        def on_epoch_begin(self, epoch, logs=None):
            if self._first and epoch > 0:
                out.print(f"Epochs 1-{epoch}: {earlier} (not shown)")
            self._start, self._bar, self._first = time.perf_counter(), None, False

        def on_train_batch_end(self, step, logs=None):
            total = self.params.get("steps")
            if self._bar is None and time.perf_counter() - self._start > self.BAR_AFTER_S and total:
                self._bar = Progress(
                    TextColumn("  {task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}"), TimeRemainingColumn(), console=err, transient=True,
                )  # fmt: skip
                self._bar.start()
                self._task = self._bar.add_task("steps", total=total, loss=0.0)
            if self._bar is not None:
                self._bar.update(self._task, completed=step + 1, loss=(logs or {}).get("loss", 0.0))

        def on_epoch_end(self, epoch, logs=None):
            if self._bar is not None:
                self._bar.stop()
            seconds = time.perf_counter() - self._start
            parts = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
            out.print(f"Epoch {epoch + 1}/{self.params.get('epochs')} - {seconds:.1f}s - {parts}")

    return EpochLines()


def parse_duration(text: str) -> float:
    """'300', '300s', '5m', '1.5h' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    t = text.strip().lower()
    try:
        seconds = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise FmnistError(f"--time-budget {text!r}: give a positive duration such as 300, 300s, 5m or 1.5h.")
    return seconds


# --------------------------------------------------------------------------- flags from the settings
# Each ModelSpec and TrainConfig field is a flag of `fmnist train` (and `fmnist sweep`): its name, type
# and help come from the field (fmnist.config.setting). What differs from the field is said here.
#
# Fields with no flag of their own: --recipe and --data-dir are the command's own (below); recipes,
# experiments and the time budget's plan set the others.
NOT_FLAGS = frozenset({"model", "recipe", "data_dir", "warmup", "probe_steps", "flatten", "output_units"})
# Flags not named after their field: a list flag given once per item is singular (--conv-stride 1
# --conv-stride 2), and --limit sets train_limit (its parameter is `limit`).
FLAG_NAMES = {"conv_strides": "--conv-stride", "conv_repeats": "--conv-repeat", "eval_views": "--eval-view",
              "train_limit": "--limit"}  # fmt: skip
PARAM_NAMES = {"train_limit": "limit"}
# Flags whose text is not the field's value: the type the flag takes, and its parser to the field's value.
PARSERS = {"time_budget": (str, parse_duration)}
OPTION_ARGS = {"devices": {"min": 1}}  # more for typer.Option
# The help page's order: what to build, then how to train it. A field not named here simply goes last
# (after the others of its dataclass), so adding a setting need not touch this list.
HELP_ORDER = (
    "hidden", "activation", "arch", "conv_filters", "conv_strides", "conv_repeats", "pool_first", "whiten", "dropout",
    "members", "normalize", "standardize",
    "epochs", "batch_size", "optimizer", "learning_rate", "momentum", "nesterov", "weight_decay", "schedule",
    "label_smoothing", "augment_shift", "augment_flip", "augment_erase", "ema", "eval_views", "time_budget", "steps",
    "validation_split", "stop_at_loss", "stop_at_accuracy", "early_stopping", "seed", "train_limit", "devices",
    "platform", "precision",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class SettingFlag:
    """A flag of `fmnist train` that sets one ModelSpec or TrainConfig field."""

    field: str
    param: str  # the command's parameter name (click's)
    in_model: bool  # a ModelSpec field, else a TrainConfig one
    parse: Callable[[Any], Any]  # the flag's value -> the field's (None: not typed)
    parameter: inspect.Parameter  # for the command's signature: Annotated[type | None, typer.Option(...)]


def _flag_type(hint) -> tuple[Any, Callable[[Any], Any]]:
    """A field's type -> the flag's type, and the parser from the flag's value to the field's."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):  # X | None: the flag's None is "not typed"
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    if typing.get_origin(hint) is tuple:  # a repeated flag: one item each time
        return list[typing.get_args(hint)[0]], lambda items: tuple(items) if items else None
    if typing.get_origin(hint) is typing.Literal:
        return str, lambda text: text  # the dataclass names the choices in its error
    return hint, lambda value: value


def _choices(hint) -> tuple[str, ...]:
    """A Literal field's values (of ``Literal[...] | None`` too), else ()."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    return typing.get_args(hint) if typing.get_origin(hint) is typing.Literal else ()


def _setting_flag(f: dataclasses.Field, hint, in_model: bool) -> SettingFlag:
    param = PARAM_NAMES.get(f.name, f.name)
    flag_type, parse = PARSERS.get(f.name) or _flag_type(hint)
    name = FLAG_NAMES.get(f.name, "--" + param.replace("_", "-"))
    decls = (f"{name}/--no-{name[2:]}",) if flag_type is bool else (name,) if f.name in FLAG_NAMES else ()
    shown = shown_default(f)
    help_text = f.metadata["help"] + (f" [default: {shown}]" if shown else "")
    choices = _choices(hint)  # shown as the flag's metavar; the dataclass checks the value and names them
    option_args = {"metavar": "[" + "|".join(choices) + "]"} if choices else {}
    option = typer.Option(*decls, help=help_text, **option_args, **OPTION_ARGS.get(f.name, {}))
    parameter = inspect.Parameter(
        param, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=Annotated[flag_type | None, option]
    )
    return SettingFlag(f.name, param, in_model, parse, parameter)


def _setting_flags() -> tuple[SettingFlag, ...]:
    """Every ModelSpec, then TrainConfig, field that is a flag, in HELP_ORDER."""
    flags = []
    for cls in (ModelSpec, TrainConfig):
        hints = typing.get_type_hints(cls)
        fields = [f for f in dataclasses.fields(cls) if f.name not in NOT_FLAGS]
        fields.sort(key=lambda f: HELP_ORDER.index(f.name) if f.name in HELP_ORDER else len(HELP_ORDER))
        flags += [_setting_flag(f, hints[f.name], in_model=cls is ModelSpec) for f in fields]
    return tuple(flags)


SETTING_FLAGS = _setting_flags()


def train_config(values: Mapping[str, Any]) -> TrainConfig:
    """The TrainConfig that `fmnist train`'s flags describe, by parameter name (None: not typed): the
    recipe's, or the defaults, with every typed flag overriding its field. `fmnist sweep` maps the same flags."""
    from fmnist import recipes

    recipe = values.get("recipe")
    base = recipes.get(recipe).config if recipe else TrainConfig()
    typed, spec_typed = {}, {}
    for flag in SETTING_FLAGS:
        value = values.get(flag.param)
        value = None if value is None else flag.parse(value)
        if value is not None:
            (spec_typed if flag.in_model else typed)[flag.field] = value
    if values.get("data_dir"):
        typed["data_dir"] = str(values["data_dir"])
    length_typed = "epochs" in typed or "steps" in typed
    if "train_limit" in typed and "time_budget" not in typed and base.time_budget is not None:
        typed["time_budget"] = None  # --limit is a quick trial: one pass over N images, not the recipe's minutes
        typed.setdefault("epochs", 1)
    if length_typed:
        typed.setdefault("time_budget", None)  # an explicit length replaces a recipe's time budget
    return dataclasses.replace(base, model=dataclasses.replace(base.model, **spec_typed), **typed)


def _with_setting_flags(command: Callable) -> Callable:
    """``command``'s signature for Typer: its ``**settings`` become SETTING_FLAGS, after its first option."""
    signature = inspect.signature(command, eval_str=True)
    own = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_KEYWORD]
    command.__signature__ = signature.replace(parameters=[own[0], *(f.parameter for f in SETTING_FLAGS), *own[1:]])
    return command


Opt = typer.Option  # every training flag defaults to None: only flags the user typed override the recipe


@app.command()
@_with_setting_flags
def train(
    *,
    recipe: Annotated[
        str | None, Opt(help="Start from a named recipe (see `fmnist recipes`); flags override it.")
    ] = None,
    out_dir: Annotated[Path | None, Opt("--out", help="Run directory to write. [default: runs/default]")] = None,
    resume: Annotated[
        Path | None, Opt(help="Continue the interrupted training of this run from its last checkpoint.")
    ] = None,
    restart: Annotated[bool, Opt("--restart", help="Discard an interrupted training in --out and start over.")] = False,
    data_dir: DataDir = None,
    **settings,  # SETTING_FLAGS: one per ModelSpec and TrainConfig field
) -> None:
    """Train a model (default: the tutorial's), evaluate it on the test set, and save the run with its report.

    A training checkpoints at epoch ends (at most every few seconds): after a crash or kill, `fmnist train --resume RUN` continues it to the same result, on either platform (`--platform` may go beside `--resume`). Ctrl-C (or SIGTERM) stops within one compiled chunk and saves a checkpoint there.
    """  # noqa: E501 (one paragraph: Typer keeps line breaks)
    started = time.perf_counter()
    from fmnist import accelerator, fitting, parallel, report
    from fmnist import train as train_mod
    from fmnist.errors import RunError

    flags = {"recipe": recipe} | {f.param: settings[f.param] for f in SETTING_FLAGS}  # in the help's order
    platform = flags["platform"]  # a resumed run: where it continues (None: the best there is), not its config's
    if resume is not None:
        given = [k for k, v in flags.items() if v is not None and k != "platform"]
        if given or restart or (out_dir is not None and out_dir != resume):
            raise FmnistError(
                f"--resume continues {resume} with the settings it was started with: give it no other training "
                f"flags (got {', '.join(given) or '--restart/--out'})."
            )
        status = train_mod.resume_status(resume)
        if status == "finished":
            out.print(f"{resume} is finished: nothing to resume (its report: {resume / 'report.html'}).")
            return
        if status == "none":
            raise RunError(
                f"{resume} has no interrupted training to resume: start one with `fmnist train --out {resume}`."
            )
        config, out_dir = train_mod.resume_config(resume), resume
    else:
        config = train_config(flags | {"data_dir": data_dir})
        out_dir, platform = out_dir or Path("runs/default"), config.platform
    parallel.setup(config.devices)  # before any JAX computation: devices, and joining a multi-process job
    kind = accelerator.select(platform)  # before any JAX computation too; --devices counts devices of this kind
    dataset = _load(data_dir or (Path(config.data_dir) if config.data_dir else None))
    _use_compilation_cache()
    length = (
        f"a {config.time_budget:.0f} s budget" if config.time_budget and config.steps is None
        else f"{config.steps} steps" if config.steps else f"{config.epochs} epochs"
    )  # fmt: skip
    named = f"recipe {config.recipe}: " if config.recipe else ""
    rank = parallel.process_index()
    where = f" on {config.devices} devices" if config.devices > 1 else ""
    if parallel.multi_process():
        where = f"{where or ' on 1 device'} of process {rank} (of {parallel.process_count()})"
    doing = f"resuming {out_dir}: " if resume is not None else "training "
    out.print(
        f"{doing}{named}{config.model.describe()} for {length}, batch {config.batch_size}, seed {config.seed}{where}"
    )
    out.print(f"device: {accelerator.describe(kind)}, precision {fitting.train_precision(config)}")
    # Epochs that this fit does not train itself: a resumed run's, or a time budget's probe that spanned whole epochs.
    earlier = "before the interruption" if resume is not None else "the time budget's probe, timed to plan the steps"
    job = {"callbacks": [_progress_callback(earlier)], "dataset": dataset, "started": started}
    with _StopOnSignals() as stop:
        try:
            if resume is not None:
                result = train_mod.resume(resume, should_stop=stop, **job)
            else:
                result = train_mod.train(config, out_dir, restart=restart, should_stop=stop, **job)
        except Interrupted as e:
            err.print(f"interrupted: {e}")
            raise typer.Exit(stop.exit_code) from None
    if rank != 0:
        out.print(f"process {rank} done: process 0 writes the run in {out_dir}")
        return
    if stop():  # the signal came after the last step: the run is saved, only its report is left
        err.print(f"interrupted: the run is complete in {out_dir}; write its report with `fmnist report {out_dir}`.")
        raise typer.Exit(stop.exit_code)
    _print_scores(result)
    evaluation = (result.metrics, result.probs)
    page = report.write_run_report(out_dir, model=result.model, dataset=dataset, evaluation=evaluation)
    phases = ", ".join(f"{k} {v:.0f} s" for k, v in result.phases.items())
    out.print(f"run saved in [bold]{out_dir}[/]; report: {page}")
    out.print(f"{time.perf_counter() - started:.0f} s in all ({phases}, saving and report the rest)")


def _print_scores(result) -> None:
    """The run's test accuracy, and what its time budget's plan measured."""
    m = result.metrics
    if "views" in m:  # name a few views; count many
        named = " + ".join(m["views"]) if len(m["views"]) <= 3 else f"{len(m['views'])}"
        views = f" ({named} test-time views; one view {m['accuracy_single_view']:.4f})"
    else:
        views = ""
    out.print(
        f"[bold]test accuracy {m['accuracy']:.4f}[/]{views}, loss {m['loss']:.4f} "
        f"(trained {len(result.history['loss'])} epochs"
        f"{f', {result.config.steps} steps' if result.config.steps else ''} in {result.train_seconds:.1f}s)"
    )
    if result.plan:  # what the time budget's plan measured, beside what the run then took
        p = result.plan
        out.print(
            f"the budget's plan: its first {result.config.probe_steps} steps timed {p['step_ms']:.3g} ms a step "
            f"(margin included), so {result.config.steps} steps in all, {p['train_s']:.0f} s of them after the probe"
        )


@app.command("recipes")
def recipes_cmd() -> None:
    """The named training recipes, with what each measured on the 2-core CPU machine."""
    from fmnist import recipes

    table = Table("recipe", "what", "measured", show_lines=True)
    for r in recipes.RECIPES.values():
        table.add_row(f"[bold]{r.name}[/]", r.summary, r.measured)
    out.print(table)
    out.print("use one: fmnist train --recipe NAME [--out runs/NAME]; any flag beside it overrides that setting.")
