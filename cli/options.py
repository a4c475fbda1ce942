"""Options shared by the commands, declared once: the same idea is spelled the same everywhere.

A store argument or option is parsed into a :class:`fmdata.store.Location` here, at the
boundary, so that the library receives it resolved (fsspec options from the environment
included). Option names are the library's parameter names with dashes, so that a library error
about a parameter (``FmDataError.field``) names the option the user typed (see
:mod:`fmcli.errors`).
"""
from __future__ import annotations

import functools
import json
import os
import sys
from collections.abc import Callable
from typing import Any, TypeVar, cast

import click
from click.core import ParameterSource

from fmdata.errors import FmDataError
from fmdata.store import Location
from fmdata.store.schema import WINDOW_POLICIES
from fmdata.store.window_table import REFERENCE_CURRENT_ROWS, REFERENCE_CURRENT_SECONDS
from fmmodel import protocol
from fmmodel.model.config import SIZES
from fmmodel.protocol import DATA_PATHS, DEVICES, PRECISIONS, PREPROCESSING_REFERENCE, PREPROCESSINGS

F = TypeVar("F", bound=Callable[..., Any])


class LocationType(click.ParamType):
    """A store given as a local path or an fsspec URL (s3://, gs://, memory://, file://)."""

    name = "store"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Location:
        if isinstance(value, Location):
            return value
        try:
            return Location.parse(value)
        except FmDataError as exc:
            self.fail(str(exc), param, ctx)


STORE = LocationType()


MISSING_STORE = "expected a store: give it as the first argument, STORE (or as --store STORE)"


def _same_store(a: Location, b: Location) -> bool:
    """True when two store arguments name the same store (local paths compared as real paths)."""
    if a.local_path is not None and b.local_path is not None:
        return os.path.realpath(a.local_path) == os.path.realpath(b.local_path)
    return a.text.rstrip("/") == b.text.rstrip("/")


def store_argument(help: str = "FMF Zarr store (path or URL).", required: bool = True) -> Callable[[F], F]:
    """The store a command reads, given the same way by every command of ``fmdata`` and ``fmmodel``:
    as its first argument ``STORE``, or as ``--store STORE`` (an alias). The command receives
    ``store``: a Location, or None when the store is not ``required`` and neither was given. Both
    given and naming different stores is a usage error (exit 2) naming both."""
    def one(values: dict[str, Any]) -> Location | None:
        given, option = values["store"], values["store_option"]
        if given is not None and option is not None and not _same_store(given, option):
            raise click.UsageError(f"expected the store once, as STORE or as --store, got STORE {given} and "
                                   f"--store {option}", click.get_current_context(silent=True))
        store = given if given is not None else option
        if store is None and required:
            raise click.UsageError(MISSING_STORE, click.get_current_context(silent=True))
        return store
    return grouped("store", stack(
        click.argument("store", type=STORE, required=False),
        click.option("--store", "store_option", type=STORE, default=None, metavar="STORE",
                     help=f"{help} Also given as the first argument STORE, as every command takes it."),
    ), one)


class CommaList(click.ParamType):
    """A comma-separated list ("vicu_cls,video_cls"; "0,1,2" with ``item=int``), empty items dropped."""

    def __init__(self, item: Callable[[str], Any] = str, name: str = "list") -> None:
        self.item = item
        self.name = name

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> list[Any]:
        if isinstance(value, list):
            return value
        try:
            items = [self.item(v.strip()) for v in str(value).split(",") if v.strip()]
        except ValueError:
            self.fail(f"expected a comma-separated list of {self.name}, got {value!r}", param, ctx)
        if not items:
            self.fail(f"expected a non-empty comma-separated list of {self.name}, got {value!r}", param, ctx)
        return items


class ByteSize(click.ParamType):
    """A size in bytes: a number with an optional unit (``8GiB``, ``500MB``, ``2e9``), parsed by dask."""

    name = "size"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        # dask's parser (the one --memory-limit goes through), imported here: importing dask
        # costs every command ~0.05 s, and only --buffer-memory and --resident-budget need it
        from dask.utils import parse_bytes

        try:
            return int(parse_bytes(str(value)))
        except ValueError:
            self.fail(f"expected a size such as 8GiB or 500MB, got {value!r}", param, ctx)


BYTES = ByteSize()


def stack(*decorators: Callable[[F], F]) -> Callable[[F], F]:
    """Apply several option decorators as one (listed top to bottom as they appear in --help)."""
    def apply(fn: F) -> F:
        for d in reversed(decorators):
            fn = d(fn)
        return fn
    return apply


def grouped(into: str, options: Callable[[F], F], build: Callable[[dict[str, Any]], Any] = dict) -> Callable[[F], F]:
    """Declare ``options`` and hand their values to the command as one keyword argument ``into``:
    ``build`` of a dict keyed by the options' parameter names. So a group of options is read in one
    place, whichever commands declare it. ``build`` runs outside the command's error handling: it
    rearranges values, and refuses a combination of them only with a ``click.UsageError``."""
    def decorate(fn: F) -> F:
        names: list[str] = []

        @functools.wraps(fn)  # also shares the options declared below this one (click keeps them on the function)
        def command(**kw: Any) -> Any:
            values = {name: kw.pop(name) for name in names}
            return fn(**kw, **{into: build(values)})

        before = len(getattr(command, "__click_params__", ()))
        declared = options(cast(F, command))
        names.extend(str(p.name) for p in declared.__click_params__[before:])  # type: ignore[attr-defined]
        return declared
    return decorate


def progress_flag(value: bool | None) -> bool:
    """Resolve ``--progress/--no-progress``: unset means "when stderr is a terminal"."""
    return sys.stderr.isatty() if value is None else value


progress_option = click.option(
    "--progress/--no-progress", default=None,
    help="Show a progress bar with rate and ETA (default: when stderr is a terminal).")
json_option = click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
force_option = click.option("--force", is_flag=True, help="Recompute and replace what is already there.")
overwrite_option = click.option(
    "--overwrite", is_flag=True, help="Replace an existing output (only once the new one is complete).")

# Where Dask work runs: fmdata labels / windows / stats.
dask_options = stack(
    click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                 help="Start a local cluster of N single-threaded worker processes for this command. Without "
                      "--workers or --scheduler, Dask uses threads in this process."),
    click.option("--scheduler", metavar="ADDRESS", default=None,
                 help="Run on an existing dask.distributed cluster (e.g. tcp://host:8786); its workers must reach "
                      "the store by the same path or URL."),
    click.option("--memory-limit", default="auto", show_default=True, metavar="SIZE",
                 help="Memory limit per local worker process (e.g. 2GiB)."),
)

# How windows are built: fmdata windows / preview, fmmodel train. Unset values take the reference
# windows of the model's modality (fmdata.store.window_table.WindowParams.reference).
window_shape_options = stack(
    click.option("--frames", type=int, default=None,
                 help="Frames per clip (default: 10; 8 for video-only models)."),
    click.option("--frame-step", type=int, default=None,
                 help="Frames between clip frames (default: 18; 19 for video-only models)."),
    click.option("--current-seconds", type=float, default=None,
                 help=f"Seconds of current history per window (default: {REFERENCE_CURRENT_SECONDS:g})."),
    click.option("--current-rows", type=int, default=None,
                 help=f"Current rows each window is resampled to (default: {REFERENCE_CURRENT_ROWS})."),
    click.option("--stride", type=int, default=None, help="Keep every N-th window of each split block (default: 1)."),
)
policy_option = click.option(
    "--policy", type=click.Choice(WINDOW_POLICIES), default=None,
    help="Window policy: reference (default): the authors' sampler, deterministic at recording starts; strict: every "
         "frame and current row inside the labelled frame's split block (no leakage).")
# fmdata windows / preview: the command receives ``window``, keyword arguments of WindowParams.reference
window_options = grouped("window", stack(window_shape_options, policy_option))

# Where and how a model runs: fmmodel train / evaluate / predict.
device_options = stack(
    click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                 help="Where the model runs (auto: CUDA when available)."),
    click.option("--precision", type=click.Choice(PRECISIONS), default=None,
                 help="Arithmetic precision (default: bf16 on CUDA, fp32 on the CPU)."),
)
loader_workers_option = click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True,
                                     help="Data-loader worker processes (0: load in the main process).")
batch_size_option = click.option("--batch-size", type=click.IntRange(min=1), default=64, show_default=True,
                                 help="Windows per batch.")

# How batches are made: fmmodel train / evaluate / predict / bench-data (fmmodel.data.paths).
data_option = click.option(
    "--data", type=click.Choice(DATA_PATHS), default="auto", show_default=True,
    help="resident: load the windows' frames onto the device once and gather every batch there; lazy: decode "
         "every batch from the store in --workers processes; auto: resident when it fits --resident-budget.")
resident_budget_option = click.option(
    "--resident-budget", type=BYTES, default=None, metavar="SIZE",
    help="Most memory --data auto may hold resident (e.g. 8GiB; default: half the free GPU memory, or half the "
         "available RAM on the CPU).")
data_options = stack(data_option, resident_budget_option)


def _model_opts(ctx: click.Context, param: click.Parameter, opts: tuple[str, ...]) -> dict[str, Any]:
    """``--model-opt KEY=VALUE`` pairs as a dict; values are JSON where they parse (2, 0.1, true), else text."""
    out: dict[str, Any] = {}
    for item in opts:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", ctx=ctx, param=param)
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _train_config_args(v: dict[str, Any]) -> dict[str, Any]:
    """The training options as keyword arguments of fmmodel.runs.config.TrainConfig."""
    v["hflip"] = not v.pop("no_hflip")
    v["model"] = {"size": v.pop("model_size"), **v.pop("model_opt")}
    return v


# How a model is trained: fmmodel train / benchmark. The command receives ``training`` (TrainConfig
# keyword arguments) and ``window`` (the window shape, unset values None: the model's reference).
training_options = stack(grouped("training", stack(
    batch_size_option,
    click.option("--lr", type=float, default=protocol.LR, show_default=True, help="Learning rate."),
    click.option("--lr-step", "lr_step_epoch", type=int, default=protocol.LR_STEP_EPOCH, show_default=True,
                 help=f"Multiply the learning rate by {protocol.LR_GAMMA:g} every this many epochs."),
    loader_workers_option,
    data_options,
    click.option("--threads", type=int, default=None, help="CPU threads of the training process (torch)."),
    device_options,
    click.option("--preprocessing", type=click.Choice(PREPROCESSINGS), default=PREPROCESSING_REFERENCE,
                 show_default=True, help="reference: raw 0..255 video and amperes, transposed frames as the "
                                         "authors' loader; normalized: training-split statistics (fmdata stats)."),
    click.option("--val-fraction", type=float, default=protocol.VAL_FRACTION, show_default=True,
                 help="Share of each recording's training block (its end) held out for validation."),
    click.option("--model-size", type=click.Choice(sorted(SIZES)), default="reference", show_default=True,
                 help="Named FmFormer size."),
    click.option("--model-opt", multiple=True, metavar="KEY=VALUE", callback=_model_opts,
                 help="Override an FmFormer size (e.g. depth=2), or pass an option to a user's model factory."),
    click.option("--max-steps", "max_steps_per_epoch", type=int, default=None, help="Cap on batches per epoch."),
    click.option("--balanced", is_flag=True, help="Class-balanced sampling."),
    click.option("--no-hflip", is_flag=True, help="Switch off the horizontal-flip augmentation."),
), _train_config_args), grouped("window", window_shape_options))


def typed(name: str) -> bool:
    """True when the current command's parameter ``name`` was given (command line or environment)."""
    source = click.get_current_context().get_parameter_source(name)
    return source in (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def typed_training(training: dict[str, Any]) -> dict[str, Any]:
    """The ``training`` options (TrainConfig keyword arguments, :data:`training_options`) the user
    gave, so that a preset's or a file's settings stand where an option was left at its default.
    ``model`` is the sizes named by --model-size (with --model-opt), or the --model-opt values alone
    (laid over the sizes of a preset or a file)."""
    params = {"hflip": "no_hflip"}
    out = {k: v for k, v in training.items() if k != "model" and typed(params.get(k, k))}
    if typed("model_size"):
        out["model"] = dict(training["model"])
    elif typed("model_opt"):
        out["model"] = {k: v for k, v in training["model"].items() if k != "size"}
    return out
