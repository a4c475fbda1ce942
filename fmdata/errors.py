"""The single error type of fmdata.

Library code raises :class:`FmDataError` for every problem a user can cause (bad files, bad
options, missing stores); ``fmcli`` turns it into one line and a non-zero exit code. Messages
follow the pattern "<where>: expected X, got Y".
"""
from __future__ import annotations

import os


class FmDataError(Exception):
    """A user-facing data problem: bad input file, bad store, bad option value.

    ``path`` (optional) names the file or store concerned; ``str(err)`` already contains it.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        super().__init__(f"{self.path}: {message}" if self.path else message)
