"""The error types of the toolkit: one per package, on one base.

Library code raises :class:`FmDataError` (fmdata) or ``FmModelError`` (fmmodel) for every problem
a user can cause (bad files, bad values, missing stores, bad checkpoints); ``fmcli`` turns any
:class:`FmfError` into one line and an exit code. Messages speak of values, in the pattern
"<where>: expected X, got Y"; when the problem is the value of one parameter, ``field`` names
that parameter (as the library spells it, e.g. ``chunk_frames``), so that the command line can
name its own option (``--chunk-frames``) and exit as a usage error.
"""
from __future__ import annotations

import os


class FmfError(Exception):
    """The base of the toolkit's user-facing errors.

    ``path`` (optional) names the file or store concerned; ``str(err)`` already contains it.
    ``field`` (optional) names the parameter whose value is wrong; ``message`` is the text
    without the path.
    """

    def __init__(self, message: str, path: str | os.PathLike[str] | None = None, *,
                 field: str | None = None) -> None:
        self.path = None if path is None else os.fspath(path)
        self.field = field
        self.message = message
        super().__init__(f"{self.path}: {message}" if self.path else message)


class FmDataError(FmfError):
    """A user-facing data problem: bad input file, bad store, bad parameter value."""


def first_line(error: BaseException | str) -> str:
    """Return the first non-blank line of ``str(error)``, stripped; "" when there is none.

    Errors from other libraries (h5py, scipy, zarr's codecs, torch) often span many lines; the
    toolkit's messages quote only their first. Callers that need a non-empty reason add their own
    fallback, e.g. ``first_line(exc) or type(exc).__name__``.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0] if lines else ""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) during a command that can continue later: what to run to continue.

    A KeyboardInterrupt, so that code which stops on Ctrl-C still stops; ``str(err)`` says what
    was kept and how to resume (e.g. "run again with --resume"). fmcli prints it and exits 130.
    """
