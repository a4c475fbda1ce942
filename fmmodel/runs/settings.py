"""Where a run's settings come from: defaults < preset < config file < command-line options.

``fmmodel train --config FILE`` (and ``fmmodel benchmark --config FILE``) reads a YAML or JSON
file whose keys are :class:`~fmmodel.runs.config.TrainConfig`'s fields (``window`` a mapping of
window parameters, ``model`` of model sizes or a factory's options, ``preset`` a preset's name):
:func:`read_config_file`. A run's ``config.json`` is such a file as it is: the fields the trainer
fills in (``validation``, ``runtime``, ``trained_on``) are accepted and left out (the run that
reads them recomputes them). A key that is no field is refused in one line naming it, so a typo
is never silently ignored. YAML is read with ``yaml.safe_load``: a file is data, it never
chooses code to run, and so a user's model (a factory ``module:name`` / ``file.py:name``) that a
file names is refused unless ``--model`` names it (an installed model needs no naming).

:func:`layer` merges the layers (a preset's :mod:`fmmodel.runs.presets` entry, the file, the
options typed) into TrainConfig keyword arguments and window parameters; a ``model`` mapping with
a ``size`` replaces the one below, one without merges into it (``--model-opt depth=2`` on top of
a preset changes one size). :func:`resolve_train_config` makes the run's TrainConfig from them,
as ``fmmodel train`` does; ``config.json`` records the result (the effective settings).
"""
from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import yaml

from fmdata.errors import FmDataError
from fmdata.store.handle import StoreLike, location_of, open_store
from fmdata.store.window_table import WindowParams
from fmmodel.errors import FmModelError
from fmmodel.model.registry import VARIANTS, Variant, choose_variant, model_source, resolve_variant
from fmmodel.runs.benchmark import BenchmarkSettings
from fmmodel.runs.config import TrainConfig
from fmmodel.runs.presets import WINDOW_KEYS, check_table_fits, get_preset
from fmmodel.runs.train import default_run_folder

CONFIG_FIELDS = tuple(f.name for f in dataclasses.fields(TrainConfig))
# what the trainer fills in: a run's config.json holds them; a run reading it recomputes them
FILLED_BY_TRAINER = ("validation", "runtime", "trained_on")
# what names the run rather than how it trains: the command line's choice
RUN_KEYS = ("store", "out", "windows", "variant", "task", "modality")
# the bottom layer: TrainConfig's defaults, with the model's size named (as --model-size says it)
DEFAULTS: tuple[str, Mapping[str, Any], Mapping[str, Any]] = ("the defaults", {"model": {"size": "reference"}}, {})


def read_config_file(path: str | os.PathLike[str], extra: Sequence[str] = ()) -> dict[str, Any]:
    """Read the settings file ``path`` (``.json``: JSON; anything else: YAML, which JSON also is).

    Returns its keys (TrainConfig fields, and the ``extra`` keys a command adds) without the
    trainer's (:data:`FILLED_BY_TRAINER`). FmModelError (about ``path``, field "config") for a file
    that does not parse, is no mapping, holds an unknown key (named), or a ``window``/``model``
    that is no mapping or a window key that is none.
    """
    where = os.fspath(path)
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text) if where.endswith(".json") else yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise FmModelError(f"expected a JSON settings file, got invalid JSON ({exc.msg} at line {exc.lineno})",
                           where, field="config") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise FmModelError(f"expected a YAML settings file, got invalid YAML ({getattr(exc, 'problem', None) or exc}"
                           f"{at})", where, field="config") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise FmModelError(f"expected a mapping of training settings, got a {type(data).__name__}", where,
                           field="config")
    known = (*CONFIG_FIELDS, *extra)
    for key in data:
        if key not in known:
            raise FmModelError(f"expected settings named as the training config's fields ({', '.join(known)}), got "
                               f"unknown key {key!r}", where, field="config")
    for key in ("window", "model"):
        if key in data and not isinstance(data[key], dict):
            raise FmModelError(f"expected {key!r} to be a mapping, got {data[key]!r}", where, field="config")
    for key in data.get("window", {}):
        if key not in WINDOW_KEYS:
            raise FmModelError(f"expected window settings from {', '.join(WINDOW_KEYS)}, got unknown key "
                               f"'window.{key}'", where, field="config")
    return {k: v for k, v in data.items() if k not in FILLED_BY_TRAINER}


def layer(layers: Sequence[tuple[str, Mapping[str, Any], Mapping[str, Any]]]) -> tuple[
        dict[str, Any], dict[str, Any], dict[str, str]]:
    """Merge ``layers`` (lowest first), each (what it is, TrainConfig keyword arguments, window
    parameters): return (keyword arguments, window parameters, which layer set each window key)."""
    merged: dict[str, Any] = {}
    window: dict[str, Any] = {}
    window_from: dict[str, str] = {}
    for what, train, win in layers:
        for key, value in train.items():
            if key == "model" and isinstance(value, Mapping) and "size" not in value:
                merged["model"] = {**merged.get("model", {}), **value}  # options on top of the sizes below
            else:
                merged[key] = dict(value) if isinstance(value, Mapping) else value
        for key, value in win.items():
            if value is not None:
                window[key] = value
                window_from[key] = what
    return merged, window, window_from


def resolve_train_config(*, preset: str | None = None, config: str | os.PathLike[str] | None = None,
                         store: StoreLike | None = None, out: str | None = None, model: str | None = None,
                         windows: str | None = None, settings: Mapping[str, Any] | None = None,
                         window: Mapping[str, Any] | None = None) -> TrainConfig:
    """The TrainConfig of a new run: defaults < ``preset`` < the ``config`` file < the rest.

    ``settings`` holds TrainConfig keyword arguments given as options (task, modality, epochs,
    lr...; only those the user set), ``window`` window parameters given as options; ``store``,
    ``out``, ``model`` (any model name) and ``windows`` (a stored table) those options; ``store``
    may be the open store (its handle is then the one read for a stored table's parameters: pass
    the same handle on to :func:`fmmodel.runs.train.train`, and the command opens its store once). The
    file's ``preset`` is the base when ``preset`` is None. With a stored table and window
    parameters from any layer, the table must have them (:func:`fmmodel.runs.presets.check_table_fits`).
    FmModelError for unknown presets, bad files, a missing store, a model a file may not choose.
    """
    file = read_config_file(config) if config is not None else {}
    file_window = file.pop("window", {})
    name = preset if preset is not None else file.get("preset")
    layers: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [DEFAULTS]
    if name is not None:
        p = get_preset(name)
        train, win = p.settings()
        layers.append((f"preset {name!r}", {**train, "preset": name}, win))
    where = os.path.basename(os.fspath(config)) if config is not None else ""
    layers.append((where, {k: v for k, v in file.items() if k not in RUN_KEYS}, file_window))
    given = dict(settings or {})
    layers.append(("the options", given, window or {}))
    kw, win, window_from = layer(layers)
    kw["preset"] = name
    if store is None:
        store = file.get("store")
    if not store:
        raise FmModelError("expected a store (--store, or `store` in the --config file), got none", field="store")
    task, modality = given.pop("task", None), given.pop("modality", None)
    kw.pop("task", None)
    kw.pop("modality", None)
    variant = _variant(model, file, task=task, modality=modality, where=os.fspath(config or ""))
    windows = windows or file.get("windows")
    if windows and win:
        by = " and ".join(dict.fromkeys(window_from[k] for k in win))
        check_table_fits(windows, _table_params(store, windows), win, wanted_by=by, store=str(location_of(store)))
    try:
        params = WindowParams.reference(variant.modality, **win)
    except FmDataError as exc:
        raise FmModelError(exc.message, field=exc.field) from None
    return TrainConfig(store=str(location_of(store)), out=out or file.get("out") or default_run_folder(variant.name),
                       windows=windows, variant=variant.name, task=variant.task, modality=variant.modality,
                       window=params, **kw)


def _variant(model: str | None, file: Mapping[str, Any], *, task: str | None, modality: str | None,
             where: str) -> Variant:
    """The run's model: ``model`` when named (with the ``task`` and ``modality`` options); else the
    file's ``variant`` (a built-in, or an installed model: a file never chooses a factory's code),
    replaced by the built-in of the task and modality when the options give either; else the
    built-in of the options' (or the file's) task and modality."""
    if model is not None:
        return choose_variant(model, task=task, modality=modality)
    recorded = file.get("variant")
    task_or_file, modality_or_file = task or file.get("task"), modality or file.get("modality")
    if not recorded or (recorded in VARIANTS and (task is not None or modality is not None)):
        return choose_variant(None, task=task_or_file, modality=modality_or_file)
    if recorded in VARIANTS:
        return resolve_variant(str(recorded))
    source = model_source(str(recorded))
    if source is None or not source.entry_point:
        raise FmModelError(f"refused: the settings file names the model {recorded!r}, a factory; a file cannot "
                           "choose code to import: if you trust that code, name it with --model", where,
                           field="model")
    return resolve_variant(str(recorded), modality=modality_or_file, task=task_or_file)


def _table_params(store: StoreLike, name: str) -> dict[str, Any]:
    """The parameters of the stored window table ``name`` of ``store`` (an open store is read as
    it is; a location is opened), its clip length included."""
    try:
        table = open_store(store).window_table(name)
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(location_of(store)), field="windows" if "window table" in exc.message
                           else None) from None
    return {**table.params, "frames": int(table.clip.shape[1])}


# a benchmark settings file may also hold the benchmark's own choices
BENCHMARK_KEYS = ("variants", "seeds", "policy")


def resolve_benchmark_settings(*, preset: str | None = None, config: str | os.PathLike[str] | None = None,
                               settings: Mapping[str, Any] | None = None,
                               window: Mapping[str, Any] | None = None) -> tuple[BenchmarkSettings, dict[str, Any]]:
    """The settings every benchmark cell shares: defaults < ``preset`` < the ``config`` file < the
    options (``settings``: TrainConfig keyword arguments the user set; ``window``: window shape).
    Returns them and the file's benchmark choices (``store``, ``variants``, ``seeds``, ``policy``:
    what the options do not set). What names one run (out, windows, variant, task, modality, seed)
    is each cell's own: such keys of a file (a run's config.json) are left out, and so is the
    window policy (``--policy`` / ``policy``). A factory named in the file's ``variants`` is
    refused (a file cannot choose code to import: name it with --variants)."""
    file = read_config_file(config, extra=BENCHMARK_KEYS) if config is not None else {}
    where = os.fspath(config or "")
    name = preset if preset is not None else file.get("preset")
    layers: list[tuple[str, Mapping[str, Any], Mapping[str, Any]]] = [DEFAULTS]
    if name is not None:
        train, win = get_preset(name).settings()
        layers.append((f"preset {name!r}", {**train, "preset": name}, win))
    own = {k: v for k, v in file.items() if k not in (*RUN_KEYS, *BENCHMARK_KEYS, "window", "seed")}
    layers.append((where, own, file.get("window") or {}))
    layers.append(("the options", settings or {}, window or {}))
    kw, win, _ = layer(layers)
    kw["preset"] = name
    win.pop("policy", None)
    extras = {k: file[k] for k in ("store", *BENCHMARK_KEYS) if k in file}
    variants = extras.get("variants")
    if isinstance(variants, str):
        variants = extras["variants"] = [v.strip() for v in variants.split(",") if v.strip()]
    for v in variants or []:
        source = model_source(str(v))
        if source is not None and not source.entry_point:
            raise FmModelError(f"refused: the settings file names the model {v!r}, a factory; a file cannot choose "
                               "code to import: if you trust that code, name it with --variants", where,
                               field="models")
    return BenchmarkSettings(train=kw, window=win), extras
