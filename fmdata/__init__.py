"""fmdata: read the FMF benchmark's MATLAB files, convert them to Zarr, derive labels and windows.

This package never imports torch. The public facade is deliberately small; submodules hold the
details (``fmdata.store.schema`` is the store contract).
"""
from fmdata.errors import FmDataError
from fmdata.version import __version__

__all__ = ["FmDataError", "__version__"]
