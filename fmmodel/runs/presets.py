"""Named training recipes (``fmmodel train --preset NAME``): one table, each a set of settings.

A preset is data: the :class:`~fmmodel.runs.config.TrainConfig` fields and the window parameters
(:class:`~fmdata.store.window_table.WindowParams`) it sets; everything it leaves out keeps its
default. Settings are layered as defaults < preset < ``--config`` file < command-line options
(:mod:`fmmodel.runs.settings`), and a run's ``config.json`` records the result and the preset's
name. docs/training.md, "Presets", gives each preset's measured figures and the commands.

* ``reference``: the authors' protocol (every default: the reference-size FmFormer, batch 64,
  lr 5e-4 x0.1 at epoch 20, 30 epochs, the reference windows, validation hold-out 0.1). On the
  CPU it takes hours to days.
* ``cpu``: a small cross-modal FmFormer (width 32, one layer) that trains in minutes on two CPU
  cores: the recipe of ``make demo`` (docs/training.md, "The demo recipe"): clips of 10 frames 6
  apart, 30 s of current as 60 rows, every 6th window, normalised inputs (``fmdata stats`` first),
  6 epochs, no validation hold-out (its gap would cost 30 s of each recording).
* ``smoke``: a few batches of every step (training, validation, checkpoints; then ``fmmodel
  evaluate``), as Lightning's ``fast_dev_run``: a one-layer model of width 16, short windows
  (4 frames, 10 s of current) at every 10th window, 2 epochs of 3 batches, read lazily in the
  training process (nothing is loaded up front, whatever the store's size). It checks that a
  store, a model and a machine work together; its scores mean nothing.

A preset's windows are built from its parameters; with a stored table (``--windows NAME``) the
table's parameters must be the preset's (:func:`check_table_fits`).
"""
from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from fmdata.store.window_table import WindowParams
from fmmodel.errors import FmModelError

# the window parameters a preset may set: the shape of a window and which windows are kept
WINDOW_KEYS = tuple(f.name for f in dataclasses.fields(WindowParams))


@dataclass(frozen=True)
class Preset:
    """One named recipe: ``train`` holds TrainConfig fields, ``window`` WindowParams fields (a
    field left out keeps its default; windows: the model's reference windows). ``windows_per_s``
    is the training speed measured for the recipe on two CPU cores with 64x64 frames (None: not
    a CPU recipe): what the trainer quotes when it suggests the preset (docs/training.md, "Presets")."""

    name: str
    summary: str
    train: Mapping[str, Any]
    window: Mapping[str, Any]
    windows_per_s: float | None = None

    def settings(self) -> tuple[dict[str, Any], dict[str, Any]]:
        """Return fresh (train, window) dicts of this preset (nested values copied)."""
        return ({k: dict(v) if isinstance(v, Mapping) else v for k, v in self.train.items()}, dict(self.window))


def _frozen(d: dict[str, Any]) -> Mapping[str, Any]:
    return MappingProxyType({k: MappingProxyType(v) if isinstance(v, dict) else v for k, v in d.items()})


# the demo's small cross-modal FmFormer: one layer of width 32
CPU_MODEL = {"size": "tiny", "width": 32, "heads": 2, "head_dim": 16, "mlp_dim": 64, "depth": 1}

PRESETS: Mapping[str, Preset] = MappingProxyType({
    "reference": Preset(
        name="reference",
        summary="the authors' protocol: reference-size FmFormer, batch 64, lr 5e-4 x0.1 at epoch 20, 30 epochs, "
                "reference windows, validation hold-out 0.1 (hours to days on a CPU)",
        train=_frozen({}), window=_frozen({})),
    "cpu": Preset(
        name="cpu",
        summary="a small cross-modal FmFormer (width 32, one layer) that trains in minutes on two CPU cores: "
                "clips of 10 frames 6 apart, 30 s of current, every 6th window, 6 epochs, no validation hold-out",
        train=_frozen({"model": CPU_MODEL, "preprocessing": "normalized", "batch_size": 32, "lr": 1e-3,
                       "epochs": 6, "lr_step_epoch": 5, "val_fraction": 0.0, "device": "cpu", "workers": 1,
                       "threads": 1}),
        window=_frozen({"frames": 10, "frame_step": 6, "current_seconds": 30.0, "current_rows": 60, "stride": 6}),
        windows_per_s=180.0),
    "smoke": Preset(
        name="smoke",
        summary="a few batches of every step (training, validation, checkpoints), as Lightning's fast_dev_run: "
                "a width-16 model, 4-frame clips, every 10th window, 2 epochs of 3 batches; scores mean nothing",
        train=_frozen({"model": {"size": "tiny"}, "batch_size": 8, "eval_batch_size": 64, "lr": 1e-3, "epochs": 2,
                       "lr_step_epoch": 1, "max_steps_per_epoch": 3, "val_fraction": 0.1, "data": "lazy",
                       "workers": 0}),
        window=_frozen({"frames": 4, "frame_step": 6, "current_seconds": 10.0, "current_rows": 20, "stride": 10})),
})


def get_preset(name: str) -> Preset:
    """Return the preset ``name``; FmModelError (field "preset") naming the presets otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise FmModelError(f"expected a preset from {sorted(PRESETS)}, got {name!r}", field="preset") from None


def check_table_fits(name: str, table_params: Mapping[str, Any], wanted: Mapping[str, Any], *,
                     wanted_by: str, store: str) -> None:
    """Raise FmModelError (field "windows") when the stored table ``name``'s parameters differ from
    ``wanted`` (window parameters a preset, a config file or options set; ``wanted_by`` says which)
    on any key ``wanted`` sets. The one line names both sets of values and the two ways out."""
    differ = {k: (v, table_params.get(k)) for k, v in wanted.items() if _differs(v, table_params.get(k))}
    if not differ:
        return
    want = ", ".join(f"{k} {v[0]:g}" if isinstance(v[0], float) else f"{k} {v[0]}" for k, v in differ.items())
    got = ", ".join(f"{k} {v[1]}" for k, v in differ.items())
    options = " ".join(f"--{k.replace('_', '-')} {v}" for k, v in wanted.items() if k in WINDOW_KEYS)
    raise FmModelError(f"expected the window table {name!r} to have the windows of {wanted_by} ({want}), got {got}; "
                       f"leave out --windows (the windows are then built from those parameters), or build a table "
                       f"with them: fmdata windows {store} --name NAME {options}", field="windows")


def _differs(want: Any, got: Any) -> bool:
    if isinstance(want, (int, float)) and isinstance(got, (int, float)) and not isinstance(want, bool):
        return float(want) != float(got)
    return bool(want != got)
