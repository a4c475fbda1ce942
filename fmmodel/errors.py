"""The single error type of fmmodel ("<where>: expected X, got Y"); fmcli turns it into an exit code."""
from __future__ import annotations

import os


class FmModelError(Exception):
    """A user-facing model problem: bad checkpoint, bad configuration, unusable device."""

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
