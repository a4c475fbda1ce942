"""Atomic placement of local files and folders: readers see the old version or the new one, never half.

Every local output of the toolkit that a reader could open while it is being written (run
configs, checkpoints, reports, synthetic recordings, shards, prediction stores) goes through
here: it is written under a hidden temporary name beside its final path (same folder, so the
rename never crosses file systems), optionally fsync'ed, and moved into place with
``os.replace``. A crash or kill leaves at most a hidden ``.<name>.partial-*`` / ``.tmp`` file
that no reader opens.

``durable=True`` (the default) fsyncs the data before the rename, so that after a power loss
the path holds the old or the complete new content. Writers of many small pieces that commit
a whole later (store shards, whose store only counts once its ``complete`` flag is written)
pass ``durable=False``: a kill cannot tear a rename, and an fsync per shard costs more than
the shard's encoding.

Pictures are placed here too: :func:`new_figure` makes the matplotlib figure (loading matplotlib
only then) that :func:`save_figure` writes.
"""
from __future__ import annotations

import contextlib
import ctypes
import errno
import functools
import os
import re
import secrets
import shutil
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fmdata.store.failpoints import pause_point

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # Linux <fcntl.h>, <linux/fs.h>
_IOV_MAX = 512  # pieces per writev call: safely below every platform's IOV_MAX
# the PNG text keyword naming the command that wrote a picture (read by fmdata.store.outputs)
MADE_BY_KEY = "fmf-made-by"
_TEMP_NAME = re.compile(r"^\..+\.(tmp|partial|old)-\d+-[0-9a-f]{8}(\.\w+)?$")


def temp_sibling(path: str | os.PathLike[str], tag: str = "partial", suffix: str = "") -> Path:
    """Return an unused hidden name beside ``path`` (``.<name>.<tag>-<pid>-<random><suffix>``); nothing
    is created. ``suffix`` keeps an extension for writers that choose a format by it (video files)."""
    p = Path(path)
    return p.with_name(f".{p.name}.{tag}-{os.getpid()}-{secrets.token_hex(4)}{suffix}")


def is_temporary(name: str) -> bool:
    """True for a file name that :func:`temp_sibling` makes (left behind only by a killed writer)."""
    return bool(_TEMP_NAME.match(name))


def write_pieces(path: str | os.PathLike[str], pieces: Iterable[bytes | memoryview], *, durable: bool = False) -> None:
    """Write ``pieces`` back to back into a new file at ``path`` (gathered writes, no joined copy)."""
    parts = list(pieces)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        for i in range(0, len(parts), _IOV_MAX):
            group = parts[i:i + _IOV_MAX]
            done, total = os.writev(fd, group), sum(len(p) for p in group)
            if done < total:  # a short write: finish the rest plainly
                rest = b"".join(group)[done:]
                while rest:
                    rest = rest[os.write(fd, rest):]
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)


def replace_file(path: str | os.PathLike[str], pieces: Iterable[bytes | memoryview], *, durable: bool = True) -> Path:
    """Atomically replace (or create) the file ``path`` with the concatenation of ``pieces``; return it."""
    target = Path(path)
    tmp = temp_sibling(target, "tmp")
    try:
        write_pieces(tmp, pieces, durable=durable)
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return target


def replace_text(path: str | os.PathLike[str], text: str, *, durable: bool = True) -> Path:
    """Atomically replace (or create) the text file ``path`` (UTF-8); return it."""
    return replace_file(path, [text.encode("utf-8")], durable=durable)


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, durable: bool = True, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path`` for a writer that needs a file name (h5py, torch.save,
    OpenCV; ``suffix`` ends the temporary name); on a clean exit it is fsync'ed (``durable``) and
    moved onto ``path``, on an error removed."""
    target = Path(path)
    tmp = temp_sibling(target, "tmp", suffix)
    try:
        yield tmp
        if durable:
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def new_figure(**kwargs: Any) -> Figure:
    """Return a new matplotlib ``Figure(**kwargs)`` (figsize, dpi, layout...), drawn without pyplot:
    no backend switch, no global state, no window. Every picture of the toolkit starts here."""
    # imported here, not at the top: matplotlib takes 0.4-0.8 s of CPU to import, which every
    # process that imports a drawing module would pay, though most commands never draw
    from matplotlib.figure import Figure

    return Figure(**kwargs)


def save_figure(fig: Any, path: str | os.PathLike[str], *, made_by: str | None = None, **savefig: Any) -> Path:
    """Save a matplotlib figure to ``path`` atomically (its format from the suffix); return the path.
    ``made_by`` names the command in a PNG's text chunk :data:`MADE_BY_KEY` (what lets its
    ``--overwrite`` recognise its own picture, :mod:`fmdata.store.outputs`). ``savefig`` are
    keyword arguments of ``Figure.savefig`` (dpi...)."""
    target = Path(path)
    fmt = target.suffix.lstrip(".").lower() or "png"
    if made_by is not None and fmt == "png":
        savefig["metadata"] = {**savefig.get("metadata", {}), MADE_BY_KEY: made_by}
    with atomic_file(target, suffix=target.suffix) as tmp:
        fig.savefig(tmp, format=fmt, **savefig)
    return target


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove a file, a link or a folder tree at ``path`` (nothing there is fine).

    Callers remove only what nobody opens any more: a store or partial store is first renamed
    aside (:func:`discard`), so a removal killed half-way leaves a hidden ``.old-`` name that no
    reader or ``--resume`` takes for a store.
    """
    p = Path(path)
    if p.is_dir() and not p.is_symlink():
        for i, entry in enumerate(sorted(os.listdir(p))):
            child = p / entry
            if child.is_dir() and not child.is_symlink():
                shutil.rmtree(child, ignore_errors=True)
            else:
                child.unlink(missing_ok=True)
            if i == 0:
                pause_point("remove:partway")
        shutil.rmtree(p, ignore_errors=True)
    else:
        p.unlink(missing_ok=True)


def discard(path: str | os.PathLike[str]) -> None:
    """Remove the file or folder at ``path``: renamed aside first (one atomic step), then deleted."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        return
    trash = temp_sibling(p, "old")
    os.replace(p, trash)
    remove_tree(trash)


def leftovers(path: str | os.PathLike[str], tags: tuple[str, ...] = ("old", "tmp")) -> list[Path]:
    """Return the hidden siblings that killed writers of ``path`` left (``.<name>.<tag>-<pid>-<hex>``),
    newest first. Only a writer that holds the output's lock may remove them."""
    p = Path(path)
    pattern = re.compile(rf"^\.{re.escape(p.name)}\.({'|'.join(tags)})-\d+-[0-9a-f]{{8}}(\.\w+)?$")
    try:
        found = [p.parent / n for n in os.listdir(p.parent) if pattern.match(n)]
    except OSError:
        return []

    def mtime(q: Path) -> float:
        try:
            return q.lstat().st_mtime
        except OSError:
            return 0.0

    return sorted(found, key=mtime, reverse=True)


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc 2.28+), or None where there is none."""
    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:
        return None
    if fn is not None:
        fn.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint)
        fn.restype = ctypes.c_int
    return fn


def exchange(a: str | os.PathLike[str], b: str | os.PathLike[str]) -> bool:
    """Swap the existing paths ``a`` and ``b`` (files or folders, same file system) in one atomic
    step, so that ``b`` is never missing: Linux's ``renameat2(RENAME_EXCHANGE)``. Returns False,
    with nothing changed, where the platform or the file system cannot (then rename in two steps);
    raises OSError for other failures."""
    fn = _renameat2()
    if fn is None:
        return False
    if fn(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP):
        return False
    raise OSError(err, os.strerror(err), os.fspath(b))


def place(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Move the finished file or folder ``tmp`` onto ``path``; what ``path`` held is removed only after.

    The old content is first renamed aside (``.<name>.old-*``), so that at every moment ``path``
    holds the old or the new output (or, for the instant between the two renames, the old one
    sits complete beside it), and the old one is deleted last.
    """
    target = Path(path)
    trash = None
    if target.exists() or target.is_symlink():
        trash = temp_sibling(target, "old")
        os.replace(target, trash)
        pause_point("place:old-aside")
    os.replace(tmp, target)
    if trash is not None:
        pause_point("place:new-in")
        remove_tree(trash)
