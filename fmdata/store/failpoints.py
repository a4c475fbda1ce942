"""Named points where a test stops a real process: ``FMF_PAUSE_AT=<name>[,<name>...]``.

A process that reaches a named point while the environment variable names it stops itself with
SIGSTOP; the test then kills it (SIGKILL), starts a second process against it, or lets it go on
(SIGCONT). The reliability tests (docs/reliability.md) use this to act at exact moments, between
two renames or half-way through a switch, that no timing can hit reliably. Unset (always, outside
tests), a point costs one environment lookup. The points are listed in docs/reliability.md.
"""
from __future__ import annotations

import os
import signal

ENV_PAUSE_AT = "FMF_PAUSE_AT"


def pause_point(name: str) -> None:
    """Stop this process (SIGSTOP) when ``FMF_PAUSE_AT`` names ``name``; otherwise return at once."""
    wanted = os.environ.get(ENV_PAUSE_AT)
    if wanted and name in wanted.split(",") and hasattr(signal, "SIGSTOP"):
        os.kill(os.getpid(), signal.SIGSTOP)
