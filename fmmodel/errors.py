"""The single error type of fmmodel; fmcli turns it into one line and an exit code.

It shares its base (``path``, ``field``, "expected X, got Y" messages) with fmdata's error:
see :mod:`fmdata.errors`.
"""
from __future__ import annotations

from fmdata.errors import FmfError


class FmModelError(FmfError):
    """A user-facing model problem: bad checkpoint, bad configuration, unusable device."""
