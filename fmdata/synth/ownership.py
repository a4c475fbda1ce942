"""What ``fmdata synth`` wrote: its outputs are recognised, so that ``--overwrite`` replaces nothing else.

Every MAT file synth writes ends its header text with :data:`SYNTH_NOTE` (MATLAB reads only the
version and byte order that follow the text). An output counts as synth's when it is

* a MAT file with that header (V1, one recording);
* a folder holding only such files named ``batch_NN.mat`` (V1, several recordings; an empty
  folder holds nothing to lose);
* a V2 folder holding exactly ``train.json``, ``test.json``, ``videos/`` with such files
  ``batch_NN.mat``, and ``currents/`` and ``timestamps/`` with ``batch_NN.csv`` files.

Anything else (a user's MAT files, an extra file such as ``notes.txt``, a symbolic link, a
converted store) is refused with one line naming the first entry synth did not write, and
nothing is replaced (docs/reliability.md, "--overwrite replaces only what this command made").
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from fmdata.sources.layouts import V2_CURRENTS, V2_FOLDERS, V2_SPLIT_FILES, V2_TIMESTAMPS, V2_VIDEOS
from fmdata.sources.matinfo import HEADER_TEXT_BYTES
from fmdata.store.outputs import refusal

COMMAND = "fmdata synth"
SYNTH_NOTE = "fmdata synth"  # the end of the header text of every MAT file synth writes
_STEM = re.compile(r"^batch_\d{2}$")


def recording_name(index: int) -> str:
    """Return the file stem of recording ``index`` (0-based): batch_01, batch_02, ..."""
    return f"batch_{index + 1:02d}"


def is_synth_mat(path: str | os.PathLike[str]) -> bool:
    """True for a regular file whose MAT header text ends with :data:`SYNTH_NOTE`."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return False
    try:
        with open(p, "rb") as fh:
            head = fh.read(HEADER_TEXT_BYTES)
    except OSError:
        return False
    return head.startswith(b"MATLAB ") and head.rstrip(b" \x00").endswith(SYNTH_NOTE.encode())


def foreign_part(path: str | os.PathLike[str]) -> str | None:
    """Return None when ``path`` holds only what synth writes (module docstring), else the first
    thing it did not write, described for the message."""
    p = Path(path)
    if p.is_symlink():
        return "a symbolic link"
    if p.is_file():
        return None if is_synth_mat(p) else "a file that it did not write"
    if not p.is_dir():
        return "something that is neither a file nor a folder"
    names = sorted(os.listdir(p))
    if "zarr.json" in names:
        return "a Zarr store"
    if any(n in V2_FOLDERS or n in V2_SPLIT_FILES.values() for n in names):
        return _foreign_in_v2(p, names)
    return _foreign_in(p, names, ".mat")


def _foreign_in(folder: Path, names: list[str], suffix: str) -> str | None:
    """The first entry of ``folder`` that is not a synth file ``batch_NN<suffix>`` (MAT files: with
    synth's header), or None."""
    for name in names:
        entry = folder / name
        stem, ext = os.path.splitext(name)
        ours = (_STEM.match(stem) is not None and ext == suffix and not entry.is_symlink() and entry.is_file()
                and (suffix != ".mat" or is_synth_mat(entry)))
        if not ours:
            return f"{entry}, which it did not write"
    return None


def _foreign_in_v2(folder: Path, names: list[str]) -> str | None:
    expected = {*V2_FOLDERS, *V2_SPLIT_FILES.values()}
    for name in names:
        entry = folder / name
        if name not in expected or entry.is_symlink():
            return f"{entry}, which it did not write"
        if (name in V2_FOLDERS) != entry.is_dir() or not (entry.is_dir() or entry.is_file()):
            return f"{entry}, which it did not write"
    for sub, suffix in ((V2_VIDEOS, ".mat"), (V2_CURRENTS, ".csv"), (V2_TIMESTAMPS, ".csv")):
        if sub in names:
            found = _foreign_in(folder / sub, sorted(os.listdir(folder / sub)), suffix)
            if found:
                return found
    return None


def refuse_foreign(path: str | os.PathLike[str]) -> None:
    """Raise FmDataError when ``path`` exists and holds anything synth did not write (an
    ``--overwrite`` would delete it); nothing is changed."""
    p = Path(path)
    if not os.path.lexists(p):
        return
    found = foreign_part(p)
    if found is not None:
        raise refusal(p, COMMAND, found)
