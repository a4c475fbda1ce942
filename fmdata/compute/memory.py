"""How much memory work may take, and sizes as people read them.

A command that is about to allocate something whose size a user chose (a shard the converter
fills, a window table, a model's weights) first asks :func:`require_memory`, so that an absurd
size is one line naming the option and the bound, before anything is written, rather than a
MemoryError half-way. :func:`format_bytes` is the one size formatter of the toolkit's messages
and logs.
"""
from __future__ import annotations

import psutil

from fmdata.errors import FmDataError

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB")


def format_bytes(n: int | float) -> str:
    """Return ``n`` bytes in the largest binary unit (B up to EiB) that keeps the number at least
    1, with two decimals: ``format_bytes(1536)`` is "1.50 KiB", ``format_bytes(1e30)`` "867361737988.40 EiB"."""
    value = float(n)
    unit = 0
    while abs(value) >= 1024 and unit < len(_UNITS) - 1:
        value /= 1024
        unit += 1
    return f"{int(value)} B" if unit == 0 else f"{value:.2f} {_UNITS[unit]}"


def total_memory() -> int:
    """Return the bytes of RAM this machine has."""
    return int(psutil.virtual_memory().total)


def available_memory() -> int:
    """Return the bytes of RAM this machine can give a new allocation now (psutil's ``available``)."""
    return int(psutil.virtual_memory().available)


def require_memory(need: int | float, what: str, *, field: str | None) -> None:
    """Raise FmDataError (``field``: the parameter that asked for them, if one did) when ``need`` bytes
    exceed :func:`available_memory`.

    ``what`` says what would take them, in the message's terms ("a write block of 1,000,000 frames
    of 16x16"); the line says both sizes.
    """
    available = available_memory()
    if need > available:
        raise FmDataError(f"expected sizes that fit in memory, got {what}, which needs {format_bytes(need)} "
                          f"({format_bytes(available)} available)", field=field)
