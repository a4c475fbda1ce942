"""Where and how a command runs: its device and processes (:mod:`~fmmodel.runtime.distributed`:
single process or ``torchrun``, rank 0 logs and writes, unpadded sharding and gathers) and its
numeric precision (:mod:`~fmmodel.runtime.precision`)."""
from fmmodel.runtime.distributed import DistContext, resolve_device
from fmmodel.runtime.precision import autocast, resolve_precision

__all__ = ["DistContext", "resolve_device", "autocast", "resolve_precision"]
