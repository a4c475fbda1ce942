"""Where a command may write its output, and what its ``--overwrite`` may replace.

Three rules every command that writes an output follows (docs/reliability.md), after the first
of all: an existing output is refused unless ``--overwrite`` is given, in one wording for every
command (:func:`output_exists`; :func:`prepare_target`, :func:`atomic_output`).

* **An output apart from its inputs** (:func:`check_apart`). An output that is an input, lies
  inside one or holds one is refused before anything is written: written into a store, a picture
  or a predictions store becomes part of what later readers take for the store (a V2 folder with
  an extra file in ``videos/`` is no longer a valid source), and a replaced folder that holds an
  input deletes it.
* **--overwrite replaces only what this command made** (:func:`check_replaceable`). Before
  anything is written, an existing output is checked to be the same command's own output;
  anything else (a user's file or folder, another command's output) is refused in one line and
  left as it was. Each output kind says how it is recognised: a Zarr store by its root
  attributes (``fmdata convert``: an FMF store; ``fmmodel predict``: a predictions store),
  ``fmdata synth``'s MAT files by their header (:mod:`fmdata.synth.ownership`), and the
  pictures and videos of ``preview``, ``synth --preview`` and ``predict --video`` by a mark
  written into the file: a PNG carries a text chunk ``fmf-made-by``
  (:func:`fmdata.store.atomic.save_figure`), an MP4 a last top-level ``free`` box (which every
  player skips) holding ``fmf-made-by:<command>`` (:func:`mark_mp4`), and a Markdown file (a
  run's model card) a first line ``<!-- fmf-made-by:<command> -->`` (:func:`text_mark`; an HTML
  comment, which no Markdown viewer shows).
* **A failed command leaves no folder it created** (:func:`folders_made_for`): the output's
  folders that a command made and left empty are removed when it fails.
"""
from __future__ import annotations

import contextlib
import os
import struct
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from fmdata.errors import FmDataError, FmfError
from fmdata.store.atomic import MADE_BY_KEY, place, remove_tree, temp_sibling
from fmdata.store.location import Location, LocationLike

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MP4_PREFIX = f"{MADE_BY_KEY}:".encode()
_TEXT_PREFIX = f"<!-- {MADE_BY_KEY}:".encode()


# ---- an output apart from its inputs -----------------------------------------------------------
def check_apart(out: LocationLike, inputs: Iterable[LocationLike], *, field: str,
                what: str = "the store it reads") -> None:
    """Raise FmDataError (``field``: the output's parameter) when the local output ``out`` is one of
    ``inputs``, lies inside one, or holds one. ``what`` names the inputs in the message. URLs are
    compared only with URLs of the same text."""
    out_loc = Location.parse(out)
    out_path = out_loc.local_path
    for given in inputs:
        loc = Location.parse(given)
        path = loc.local_path
        if out_path is None or path is None:
            if out_loc.text.rstrip("/") == loc.text.rstrip("/"):
                raise FmDataError(f"expected an output apart from {what}, got {loc} itself", str(out), field=field)
            continue
        a, b = os.path.realpath(out_path), os.path.realpath(path)
        if a == b:
            got = f"{loc} itself"
        elif a.startswith(b.rstrip(os.sep) + os.sep):
            got = f"one inside {loc}"
        elif b.startswith(a.rstrip(os.sep) + os.sep):
            got = f"one that holds {loc}"
        else:
            continue
        raise FmDataError(f"expected an output apart from {what}, got {got}", str(out), field=field)


@contextlib.contextmanager
def folders_made_for(*outs: str | os.PathLike[str]) -> Iterator[None]:
    """Run the block; when it fails, remove the folders it made for the outputs ``outs`` (each output
    and its missing parents, as they were when the block began), deepest first, each only if it
    is empty: a failed command leaves no folder it created, and never removes anything else."""
    made: list[list[Path]] = []
    for out in outs:
        path = Path(os.path.abspath(out))
        missing = []
        while not os.path.lexists(path) and path != path.parent:
            missing.append(path)
            path = path.parent
        made.append(missing)
    try:
        yield
    except BaseException:
        for missing in made:
            for folder in missing:
                if not os.path.lexists(folder):
                    continue  # removed already (by the command's own cleanup, or for another output)
                try:
                    os.rmdir(folder)  # only an empty folder: anything written since stays
                except OSError:
                    break
        raise


# ---- a new output, or one that may be replaced --------------------------------------------------
def output_exists(path: str | os.PathLike[str], *, option: str = "--overwrite",
                  error: type[FmfError] = FmDataError) -> FmfError:
    """The one-line error of every command whose output ``path`` exists and whose ``option`` was not
    given (one wording everywhere; ``error`` is the raising package's type)."""
    return error(f"expected a new output path, got one that exists ({option} replaces it)", path)


def prepare_target(path: str | os.PathLike[str], overwrite: bool) -> Path:
    """Check that an output can be written at ``path``: new (or ``overwrite``), parent creatable and
    writable. Creates missing parent folders; returns the path. FmDataError otherwise."""
    out = Path(path)
    if (out.exists() or out.is_symlink()) and not overwrite:
        raise output_exists(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise FmDataError("expected a folder to write into, got a path through a file", out) from None
    except OSError as exc:
        raise FmDataError(f"cannot create the parent folder: {exc.strerror or exc}", out) from None
    if not os.access(out.parent, os.W_OK | os.X_OK):
        raise FmDataError(f"expected a writable folder, got {out.parent} without write permission", out)
    return out


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, folder: bool, overwrite: bool = False) -> Iterator[Path]:
    """Yield a hidden temporary file or folder beside ``path``; on a clean exit it replaces ``path``.

    An existing ``path`` is refused unless ``overwrite`` (and then kept until the new output is
    complete, see :func:`fmdata.store.atomic.place`). On any error the temporary output is
    removed; OSErrors become one-line FmDataErrors naming ``path``.
    """
    out = prepare_target(path, overwrite)
    tmp = temp_sibling(out)
    try:
        if folder:
            tmp.mkdir()
        else:
            tmp.touch(exist_ok=False)
    except OSError as exc:
        raise FmDataError(f"cannot write here: {exc.strerror or exc}", out) from None
    try:
        yield tmp
        place(tmp, out)
    except OSError as exc:
        remove_tree(tmp)
        raise FmDataError(f"cannot write: {exc.strerror or exc}", out) from None
    except BaseException:
        remove_tree(tmp)
        raise


# ---- what a command made -----------------------------------------------------------------------
def refusal(path: str | os.PathLike[str], command: str, got: str, option: str = "--overwrite") -> FmDataError:
    """The one-line error of an ``option`` (``--overwrite``, ``--force``) that would replace ``got``
    (what is at ``path``, described), which ``command`` did not make."""
    return FmDataError(f"expected an output that {command} wrote to replace ({option} replaces only what this "
                       f"command made), got {got}; nothing was replaced", path)


def check_replaceable(path: str | os.PathLike[str], *, overwrite: bool, command: str) -> Path:
    """Check that the single-file output ``path`` (a picture or a video) may be written: new, or
    with ``overwrite`` a file that ``command`` wrote (its mark, see the module docstring). Creates
    missing parent folders; returns the path. FmDataError otherwise, with nothing changed."""
    out = prepare_target(path, overwrite)
    if os.path.lexists(out):
        maker = made_by(out)
        if maker != command:
            raise refusal(out, command, _describe(out, maker))
    return out


def _describe(path: Path, maker: str | None) -> str:
    if path.is_symlink():
        return "a symbolic link"
    if path.is_dir():
        return "a folder"
    if maker is not None:
        return f"a file that {maker} wrote"
    return "a file that it did not write"


def made_by(path: str | os.PathLike[str]) -> str | None:
    """Return the command whose mark the file at ``path`` carries (a PNG or MP4 the toolkit wrote),
    None for anything else (other files, folders, links, unreadable paths)."""
    p = Path(path)
    if p.is_symlink() or not p.is_file():
        return None
    try:
        with open(p, "rb") as fh:
            head = fh.read(12)
            if head[:8] == _PNG_SIGNATURE:
                return _png_made_by(fh)
            if head[4:8] == b"ftyp":
                return _mp4_made_by(fh, p.stat().st_size)
            if head == _TEXT_PREFIX[:12]:
                fh.seek(0)
                return _text_made_by(fh.readline(256))
    except OSError:
        return None
    return None


def _png_made_by(fh: BinaryIO) -> str | None:
    """Read a PNG's chunks up to its image data; return the value of our text chunk, if any."""
    fh.seek(8)
    while True:
        header = fh.read(8)
        if len(header) < 8:
            return None
        size, kind = struct.unpack(">I4s", header)
        if kind == b"tEXt" and size <= 4096:
            keyword, _, value = fh.read(size).partition(b"\x00")
            if keyword == MADE_BY_KEY.encode():
                return value.decode("latin-1")
            fh.seek(4, os.SEEK_CUR)  # the chunk's CRC
            continue
        if kind in (b"IDAT", b"IEND"):  # text chunks that matter come before the image data
            return None
        fh.seek(size + 4, os.SEEK_CUR)


def text_mark(command: str) -> str:
    """The first line that marks a text file (Markdown) as ``command``'s output."""
    return f"<!-- {MADE_BY_KEY}:{command} -->"


def _text_made_by(line: bytes) -> str | None:
    """The command a text file's first ``line`` names (:func:`text_mark`), if it is such a line."""
    text = line.rstrip(b"\r\n")
    if not (text.startswith(_TEXT_PREFIX) and text.endswith(b" -->")):
        return None
    return text[len(_TEXT_PREFIX):-4].decode("utf-8", "replace").strip() or None


def mark_mp4(path: str | os.PathLike[str], command: str) -> None:
    """Append a top-level ``free`` box naming ``command`` to the finished MP4 at ``path`` (players
    skip ``free`` boxes; the container stays valid)."""
    payload = _MP4_PREFIX + command.encode()
    with open(path, "ab") as fh:
        fh.write(struct.pack(">I4s", 8 + len(payload), b"free") + payload)


def _mp4_made_by(fh: BinaryIO, size: int) -> str | None:
    """Walk the top-level boxes of an MP4 and return the command of our ``free`` box, if any."""
    pos, found = 0, None
    while pos + 8 <= size:
        fh.seek(pos)
        box, kind = struct.unpack(">I4s", fh.read(8))
        header = 8
        if box == 1:  # a 64-bit size follows
            box, header = struct.unpack(">Q", fh.read(8))[0], 16
        elif box == 0:  # the box runs to the end of the file
            box = size - pos
        if box < header:
            return None  # not a box structure we can walk: no mark
        if kind == b"free" and box - header <= 4096:
            payload = fh.read(box - header)
            if payload.startswith(_MP4_PREFIX):
                found = payload[len(_MP4_PREFIX):].decode("utf-8", "replace")
        pos += box
    return found
