"""The console scripts as a user runs them: real ``fmdata``/``fmmodel`` processes, their exit codes
and their stderr; stopped at a named point, then killed, interrupted, raced or let go on.

``run([FMDATA, "stats", store])`` runs an installed script of this environment to the end;
``one_line_error`` checks the README's promise about it: a failure is one line on stderr, no
traceback, and the given exit code. ``start`` runs a command line in a session of its own without
waiting (for signals), with ``FMF_PAUSE_AT`` naming the points where it stops itself
(:mod:`fmdata.store.failpoints`); ``stopped`` waits until it has; ``kill`` and ``resume`` do the
rest. ``blocked_on_lock`` waits until a process waits for a ``flock`` (Linux ``/proc/locks``), to
show that a reader really waited for a writer.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from fmdata.store.failpoints import ENV_PAUSE_AT

BIN = os.path.dirname(sys.executable)


def script(name: str) -> str:
    """The path of an installed console script (fmdata, fmmodel) of this environment."""
    return os.path.join(BIN, name)


FMDATA = script("fmdata")
FMMODEL = script("fmmodel")


def _env(pause_at: str | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != ENV_PAUSE_AT}
    if pause_at:
        env[ENV_PAUSE_AT] = pause_at
    return env


def start(args: Sequence[str], pause_at: str | None = None) -> subprocess.Popen:
    """Start ``args`` (its own session, output captured), stopping itself at ``pause_at``."""
    return subprocess.Popen([str(a) for a in args], env=_env(pause_at), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def stopped(proc: subprocess.Popen) -> None:
    """Wait until ``proc`` stops itself; AssertionError (with its stderr) if it exits instead."""
    _, status = os.waitpid(proc.pid, os.WUNTRACED)
    if os.WIFSTOPPED(status):
        return
    proc.returncode = os.waitstatus_to_exitcode(status)
    _, err = proc.communicate()
    raise AssertionError(f"expected {proc.args} to stop at its pause point, it exited {proc.returncode}: {err}")


def resume(proc: subprocess.Popen, until_stopped: bool = False) -> tuple[int, str, str]:
    """Let a stopped ``proc`` go on; wait until it stops again (then (0, "", "")) or exits (its code and output)."""
    os.killpg(proc.pid, signal.SIGCONT)
    if until_stopped:
        stopped(proc)
        return 0, "", ""
    out, err = proc.communicate(timeout=600)
    return proc.returncode, out, err


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL ``proc`` and everything in its session, and reap it."""
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def run(args: Sequence[object], *, env: dict[str, str] | None = None, cwd: str | None = None,
        timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``args`` to the end (no pause point; ``env`` added to this environment); return its code and output."""
    return subprocess.run([str(a) for a in args], env={**_env(None), **(env or {})}, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def one_line(text: str) -> str:
    """The single line of a one-line error (AssertionError when there is a traceback or more lines)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert ``result`` failed with exit ``code`` and one stderr line ("Error: ...") holding every needle;
    return that line."""
    assert result.returncode == code, (result.returncode, result.stderr)
    line = one_line(result.stderr)
    assert line.startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in line, (needle, line)
    return line


def blocked_on_lock(proc: subprocess.Popen) -> None:
    """Wait until ``proc`` waits for a flock (a ``->`` line of /proc/locks with its pid); AssertionError
    if it exits first (it did not wait)."""
    while True:
        with open("/proc/locks") as f:
            if any("->" in line and f" {proc.pid} " in f" {line} " for line in f):
                return
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"expected {proc.args} to wait for the lock, it exited {proc.returncode}: {err}")
        time.sleep(0.02)  # polling a condition, not timing one


def descendants(pid: int) -> list[int]:
    """The pids of every process below ``pid`` (children, their children...), from Linux ``/proc``."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):  # it ended meanwhile
                continue
            children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        kids = children.get(todo.pop(), [])
        found += kids
        todo += kids
    return found


def running(pids: Sequence[int]) -> list[int]:
    """Those of ``pids`` still running (an ended process not yet reaped, a zombie, has ended)."""
    alive = []
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state not in ("Z", "X"):
            alive.append(pid)
    return alive
