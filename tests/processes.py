"""Real ``fmdata``/``fmmodel`` processes for the reliability tests: stopped at a named point, then
killed, raced or let go on.

``start`` runs a command line in a session of its own with ``FMF_PAUSE_AT`` naming the points
where it stops itself (:mod:`fmdata.store.failpoints`); ``stopped`` waits until it has; ``kill``,
``resume`` and ``run`` do the rest. ``blocked_on_lock`` waits until a process waits for a
``flock`` (Linux ``/proc/locks``), to show that a reader really waited for a writer.
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
FMDATA = os.path.join(BIN, "fmdata")
FMMODEL = os.path.join(BIN, "fmmodel")


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


def run(args: Sequence[str]) -> subprocess.CompletedProcess:
    """Run ``args`` to the end (no pause point); return its code and output."""
    return subprocess.run([str(a) for a in args], env=_env(None), capture_output=True, text=True, timeout=600)


def one_line(text: str) -> str:
    """The single line of a one-line error (AssertionError when there is a traceback or more lines)."""
    lines = text.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


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
