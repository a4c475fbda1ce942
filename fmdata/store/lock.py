"""One writer at a time per store and per run folder, and readers that never see a switch half done.

**Writer lock** (:func:`writer_lock`): an exclusive ``flock(2)`` on a lock file beside the output,
``<parent>/.<name>.lock``, for a store (its real path: every symbolic link to one store shares
its lock) and for a training run folder. The kernel releases a flock when its holder exits,
however it exits (SIGKILL included), so a killed writer never blocks the next one. The holder
writes its pid, host, start time and command into the file; a second writer reads them and fails
at once with one line naming the holder. The holder removes the file when it is done; one left
by a killed writer is unlocked and simply reused. Re-entrant within a process (``fmdata stats``
may compute labels under the lock it already holds).

Why flock and not the ``filelock`` package: the second writer must read the holder's identity
from the lock file, which ``filelock`` owns (and truncates); readers need *shared* locks
(below), which its ``FileLock`` does not offer; and ``flock`` is one call in the standard library
on every POSIX system.

**Switch lock** (:func:`reading`, :func:`switching`): a flock on the store folder itself (no file
to create, so read-only users can take it), shared by readers of derived arrays for the few
milliseconds they read one, exclusive while a writer moves new versions into place
(:mod:`fmdata.store.derived`). A reader thus sees the old version or the new one, never half.

Locks are taken on local paths only. Object stores (``s3://``...) offer no such lock: there one
writer per store is the user's responsibility (docs/reliability.md). Where the file system
refuses flock (some network mounts) the switch lock is skipped and the writer lock refused.
"""
from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # Windows: no flock; locks are not taken there
    fcntl = None  # type: ignore[assignment]

import zarr
import zarr.storage

from fmdata.errors import FmDataError
from fmdata.store.failpoints import pause_point
from fmdata.store.location import Location

LOCK_SUFFIX = ".lock"


@dataclass(frozen=True)
class Holder:
    """Who holds a writer lock: process id, host, since when (local time), which command."""

    pid: int
    host: str
    since: str
    command: str

    def describe(self) -> str:
        """Return the holder as the second writer's message shows it."""
        return f"{self.command} (pid {self.pid} on {self.host}, since {self.since})"

    @classmethod
    def parse(cls, raw: bytes) -> Holder | None:
        """Return the holder recorded in a lock file's bytes, or None when there is none yet."""
        try:
            d = json.loads(raw.decode())
            return cls(int(d["pid"]), str(d["host"]), str(d["since"]), str(d["command"]))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError):
            return None


def lock_file(path: str | os.PathLike[str]) -> Path:
    """Return the lock file of the output at ``path``: ``.<name>.lock`` beside its real path."""
    real = Path(os.path.realpath(os.fspath(path)))
    return real.with_name(f".{real.name}{LOCK_SUFFIX}")


@dataclass
class _Held:
    fd: int
    depth: int
    pid: int


_HELD: dict[str, _Held] = {}


def _refused(target: str, what: str, fd: int) -> FmDataError:
    try:
        holder = Holder.parse(os.pread(fd, 4096, 0))
    except OSError:
        holder = None
    who = holder.describe() if holder else "a process that has not recorded itself yet"
    return FmDataError(f"expected no other writer of this {what}, got one: {who}; wait for it to finish "
                       f"(or stop it) and run again", target)


def _acquire(path: Path, target: str, what: str, command: str) -> None:
    key = str(path)
    held = _HELD.get(key)
    if held is not None and held.pid == os.getpid():
        held.depth += 1
        return
    _HELD.pop(key, None)  # inherited across fork: that lock is the parent's
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
        except OSError as exc:
            raise FmDataError(f"expected to create the lock file {path.name} beside the {what}, got "
                              f"{exc.strerror or exc} (writers need a writable folder beside it)", target) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            err = _refused(target, what, fd)
            os.close(fd)
            raise err from None
        except OSError as exc:
            os.close(fd)
            raise FmDataError(f"expected a file system that supports locks, got {exc.strerror or exc} on "
                              f"{path}", target) from None
        # The holder removes the file as it releases: a lock taken on a removed file is no lock.
        try:
            same = os.stat(path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    record = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S %z"),
              "command": command}
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(record).encode(), 0)
    _HELD[key] = _Held(fd, 1, os.getpid())
    pause_point("writer-locked")


def _release(path: Path) -> None:
    held = _HELD.get(str(path))
    if held is None:
        return
    held.depth -= 1
    if held.depth:
        return
    del _HELD[str(path)]
    with contextlib.suppress(OSError):
        os.unlink(path)  # while still holding it: see _acquire
    os.close(held.fd)


@contextlib.contextmanager
def writer_lock(target: Location | str | os.PathLike[str], command: str, what: str = "store", *,
                parents: bool = False) -> Iterator[None]:
    """Hold the writer lock of ``target`` (a store Location or path, or a run folder) while the block runs.

    ``parents`` first creates the missing folders above a local ``target`` (an output that does
    not exist yet: its lock file lies beside it). Raises FmDataError (one line naming the holder:
    command, pid, host, since when) when another process holds it. Nothing is locked for URLs or
    where the platform has no flock.
    """
    loc = target if isinstance(target, Location) else Location.parse(target)
    local = loc.local_path
    if local is None or fcntl is None:
        yield
        return
    if parents:
        try:
            os.makedirs(os.path.dirname(os.path.abspath(local)), exist_ok=True)
        except OSError as exc:
            raise FmDataError(f"cannot create the folder of the {what}: {exc.strerror or exc}", str(loc)) from None
    path = lock_file(local)
    _acquire(path, str(loc), what, command)
    try:
        yield
    finally:
        _release(path)


def store_folder(root: Any) -> str | None:
    """Return the local folder of an open root group (or a path), None for URL stores."""
    if isinstance(root, zarr.Group):
        store = root.store
        if isinstance(store, zarr.storage.LocalStore) and root.path in ("", "/"):
            return str(store.root)
        return None
    loc = root if isinstance(root, Location) else Location.parse(root)
    return loc.local_path


@contextlib.contextmanager
def _folder_lock(root: Any, mode: int) -> Iterator[None]:
    folder = store_folder(root)
    if folder is None or fcntl is None:
        yield
        return
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # no folder (yet): nothing to switch or read
        yield
        return
    try:
        try:
            fcntl.flock(fd, mode)
        except OSError:  # a file system without flock on folders: go on unlocked
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def reading(root: Any) -> contextlib.AbstractContextManager[None]:
    """Hold the store's switch lock shared while a reader reads derived arrays (waits for a switch)."""
    return _folder_lock(root, fcntl.LOCK_SH if fcntl is not None else 0)


def switching(root: Any) -> contextlib.AbstractContextManager[None]:
    """Hold the store's switch lock exclusive while a writer moves derived arrays into place."""
    return _folder_lock(root, fcntl.LOCK_EX if fcntl is not None else 0)
