"""The console scripts as a user runs them: real processes, their exit codes and their stderr.

``command("fmdata", "stats", store)`` runs the installed script beside this interpreter;
``start`` starts one without waiting (for signals); ``one_line_error`` checks the promise of the
README: a failure is one line on stderr, no traceback, and the given exit code.
"""
from __future__ import annotations

import os
import subprocess
import sys


def script(name: str) -> str:
    """The path of an installed console script (fmdata, fmmodel) of this environment."""
    return os.path.join(os.path.dirname(sys.executable), name)


def command(name: str, *args: object, env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``name args...`` to the end; stdout and stderr captured as text."""
    return subprocess.run([script(name), *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env={**os.environ, **(env or {})}, timeout=timeout)


def start(name: str, *args: object, env: dict[str, str] | None = None) -> subprocess.Popen:
    """Start ``name args...`` without waiting; stdout and stderr are pipes (text)."""
    return subprocess.Popen([script(name), *map(str, args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, **(env or {})})


def one_line_error(result: subprocess.CompletedProcess, code: int, *needles: str) -> str:
    """Assert ``result`` failed with exit ``code`` and one stderr line holding every needle; return it."""
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]
