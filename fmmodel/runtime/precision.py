"""Numeric precision of a run: which one a device gets by default, and the autocast context for it."""
from __future__ import annotations

import contextlib

import torch

from fmmodel.errors import FmModelError
from fmmodel.protocol import PRECISIONS


def resolve_precision(precision: str | None, device: torch.device) -> str:
    """Return "bf16" or "fp32": the default is bf16 on CUDA and fp32 on the CPU."""
    if precision is None:
        return "bf16" if device.type == "cuda" else "fp32"
    if precision not in PRECISIONS:
        raise FmModelError(f"expected a precision in {PRECISIONS}, got {precision!r}", field="precision")
    return precision


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """Return the autocast context of ``precision`` on ``device`` (a no-op for fp32)."""
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


__all__ = ["resolve_precision", "autocast"]
