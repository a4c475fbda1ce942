"""fmdata: read the FMF benchmark's MATLAB files, convert them to Zarr, derive labels and windows.

The public API is what this face exports (``__all__``; docs/python-api.md): an open store
(:func:`open_store`, :class:`StoreHandle`, :class:`Location`), one call per command returning its
report (:func:`convert`, :func:`labels`, :func:`windows`, :func:`stats`, :func:`synthesize`; where
the Dask work runs: :class:`DaskOptions`), the window parameters and tables, and the errors.
What it exports is what the project promises to keep; the sub-packages are the toolkit's own and
may change.

Importing ``fmdata`` is light: every name but the errors and the version is imported when it
is first used (PEP 562), so processes that need one store module do not pay for Dask, h5py or
OpenCV. ``fmdata.convert`` is the function (``fmdata convert``'s one call, as ``dask.delayed``
is dask's function): the sub-package of the same name is reached by importing its modules
(``from fmdata.convert.verify import verify``), never as an attribute of this module. This package
never imports torch.
"""
from __future__ import annotations

import importlib
import sys
import types

from fmdata.errors import FmDataError
from fmdata.version import __version__

# name on the face: (module, attribute), imported when first used
_EXPORTS = {
    "open_store": ("fmdata.store.handle", "open_store"),
    "StoreHandle": ("fmdata.store.handle", "StoreHandle"),
    "Location": ("fmdata.store.location", "Location"),
    "WindowParams": ("fmdata.store.window_table", "WindowParams"),
    "WindowTable": ("fmdata.store.window_table", "WindowTable"),
    "convert": ("fmdata.convert.run", "run_conversion"),
    "ConvertReport": ("fmdata.convert.driver", "ConvertReport"),
    "DaskOptions": ("fmdata.compute.dask_cluster", "DaskOptions"),
    "labels": ("fmdata.derive.labels", "compute_labels"),
    "LabelsReport": ("fmdata.derive.labels", "LabelsReport"),
    "windows": ("fmdata.derive.windows", "make_windows"),
    "WindowsReport": ("fmdata.derive.windows", "WindowsReport"),
    "stats": ("fmdata.derive.stats", "compute_stats"),
    "StatsReport": ("fmdata.derive.stats", "StatsReport"),
    "synthesize": ("fmdata.synth.writers", "synthesize"),
    "SynthResult": ("fmdata.synth.writers", "SynthResult"),
}

__all__ = ["FmDataError", "__version__", "open_store", "StoreHandle", "Location", "WindowParams", "WindowTable",
           "convert", "ConvertReport", "DaskOptions", "labels", "LabelsReport", "windows", "WindowsReport", "stats",
           "StatsReport", "synthesize", "SynthResult"]

# Type checkers and IDEs see the same names imported eagerly. (TYPE_CHECKING is this module's own
# False, which type checkers read as True: importing typing would cost this light module more
# than everything else it imports.)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from fmdata.compute.dask_cluster import DaskOptions
    from fmdata.convert.driver import ConvertReport
    from fmdata.convert.run import run_conversion as convert
    from fmdata.derive.labels import LabelsReport
    from fmdata.derive.labels import compute_labels as labels
    from fmdata.derive.stats import StatsReport
    from fmdata.derive.stats import compute_stats as stats
    from fmdata.derive.windows import WindowsReport
    from fmdata.derive.windows import make_windows as windows
    from fmdata.store.handle import StoreHandle, open_store
    from fmdata.store.location import Location
    from fmdata.store.window_table import WindowParams, WindowTable
    from fmdata.synth.writers import SynthResult, synthesize


def __getattr__(name: str) -> Any:
    """Import a face name on first use (PEP 562) and keep it, so that later look-ups are plain."""
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, attribute = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attribute)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Face(types.ModuleType):
    """This module's type: importing the sub-package ``fmdata.convert`` binds its name on its parent,
    which would hide the function ``convert``; the binding is dropped (the sub-package stays in
    ``sys.modules``, where every import finds it)."""

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "convert" and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Face
