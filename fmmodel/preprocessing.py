"""What a model is fed: the preprocessings, the frame orientation each gives, and the video dtype.

- ``reference``: video as float 0..255, current as raw amperes, frames in the orientation the
  authors' loader feeds its model (every frame transposed, (W, H); the mask too; the flip
  reverses the last axis, MATLAB's H). The released checkpoint expects exactly this.
- ``normalized``: true orientation (H, W); video and current standardised with the
  training-split statistics that ``fmdata stats`` stores in the store.

:func:`input_format` is the one place that turns a preprocessing (and the device) into the
(orientation, video dtype) pair that datasets deliver and checkpoints record.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.checksums import check_attribute
from fmmodel.errors import FmModelError
from fmmodel.protocol import PREPROCESSING_REFERENCE, PREPROCESSINGS

ORIENTATION_REFERENCE = "reference"  # frames transposed: item axes (..., W, H)
ORIENTATION_TRUE = "true"  # item axes (..., H, W)
ORIENTATIONS = (ORIENTATION_REFERENCE, ORIENTATION_TRUE)
VIDEO_DTYPES = ("float32", "uint8")


@dataclass(frozen=True)
class InputFormat:
    """How clips reach a model: frame ``orientation`` and the ``video_dtype`` a data path delivers.

    ``video_dtype`` "uint8" (reference preprocessing on CUDA) moves 4x fewer bytes; the model
    casts on the device.
    """

    preprocessing: str
    orientation: str
    video_dtype: str


def input_format(preprocessing: str, device: torch.device | str = "cpu") -> InputFormat:
    """Return the :class:`InputFormat` of ``preprocessing`` on ``device``; FmModelError for an unknown one."""
    if preprocessing not in PREPROCESSINGS:
        raise FmModelError(f"expected a preprocessing in {PREPROCESSINGS}, got {preprocessing!r}",
                           field="preprocessing")
    reference = preprocessing == PREPROCESSING_REFERENCE
    on_cuda = torch.device(device).type == "cuda"
    return InputFormat(preprocessing, ORIENTATION_REFERENCE if reference else ORIENTATION_TRUE,
                       "uint8" if reference and on_cuda else "float32")


def read_normalization(attrs: dict[str, Any], where: str) -> dict[str, np.ndarray]:
    """Return {video_mean, video_std, current_mean, current_std} (float64, 3 each) from store attributes.

    Reads the attribute ``schema.ATTR_STATS`` written by ``fmdata stats``; FmModelError when it is
    absent, lacks a key or does not match its stored CRC-32C.
    """
    stats = attrs.get(schema.ATTR_STATS)
    if not isinstance(stats, dict):
        raise FmModelError("expected normalisation statistics (run `fmdata stats STORE`), got none", where)
    try:
        check_attribute(stats, schema.ATTR_STATS, where)
    except FmDataError as exc:
        raise FmModelError(exc.message, where) from None
    norm = stats.get("normalization", stats)
    out = {}
    for key in ("video_mean", "video_std", "current_mean", "current_std"):
        value = norm.get(key)
        arr = None if value is None else np.asarray(value, dtype=np.float64).reshape(-1)
        if arr is None or arr.size != 3 or not np.all(np.isfinite(arr)):
            raise FmModelError(f"expected statistic {key!r} with 3 finite values, got {value!r}", where)
        if key.endswith("_std") and np.any(arr <= 0):
            raise FmModelError(f"expected a positive {key!r}, got {value!r}", where)
        out[key] = arr
    return out
