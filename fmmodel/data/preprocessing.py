"""What a model is fed: the preprocessings, the frame orientation each gives, and the video dtype.

- ``reference``: video as float 0..255, current as raw amperes, frames in the orientation the
  authors' loader feeds its model (every frame transposed, (W, H); the mask too; the flip
  reverses the last axis, MATLAB's H). The released checkpoint expects exactly this.
- ``normalized``: true orientation (H, W); video and current standardised with the
  training-split statistics that ``fmdata stats`` stores in the store.

:func:`input_format` is the one place that turns a preprocessing (and the device) into the
(orientation, video dtype) pair that datasets deliver and checkpoints record. The arithmetic both
data paths (:mod:`fmmodel.data.dataset`, :mod:`fmmodel.data.resident`) apply lives here too:
:func:`item_axes` (orientation), :func:`clip_values`, :func:`video_scale_shift` and
:func:`current_values` (scaling).
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
from fmmodel.protocol import ORIENTATION_REFERENCE, ORIENTATION_TRUE, PREPROCESSING_REFERENCE, PREPROCESSINGS

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
    return checked_normalization(stats.get("normalization", stats), where)


def checked_normalization(norm: Any, where: str) -> dict[str, np.ndarray]:
    """Return {video_mean, video_std, current_mean, current_std} (float64, 3 each) from a dict of
    lists: the statistics a store holds, or those a checkpoint recorded in its preprocessing
    (``preprocessing["normalization"]``, what ``fmmodel watch`` feeds a model with when no store is
    read). FmModelError about ``where`` when a value is missing, not finite, or a std is not positive."""
    if not isinstance(norm, dict):
        raise FmModelError(f"expected normalisation statistics, got {type(norm).__name__}", where)
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


def item_axes(orientation: str, first: int) -> tuple[int, int]:
    """Return the frame axes of a store-order array in the order an item in ``orientation`` has them.

    The array holds a frame's rows (H) at axis ``first`` and its columns (W) at ``first + 1``;
    the reference orientation (frames transposed) puts the columns first.
    """
    return (first + 1, first) if orientation == ORIENTATION_REFERENCE else (first, first + 1)


def orient_masks(masks: np.ndarray, orientation: str) -> np.ndarray:
    """View store-order masks (N, H, W) in the item ``orientation`` ((N, W, H) under reference)."""
    return masks.transpose(0, *item_axes(orientation, 1))


def video_scale_shift(norm: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Return the per-channel float32 (scale, shift), 3 each, that standardise 0..255 video.

    ``norm`` is :func:`read_normalization`'s result; a normalised clip is ``x * scale + shift``,
    computed in float32 (two roundings), identically on both data paths.
    """
    scale = 1.0 / norm["video_std"]
    shift = -norm["video_mean"] * scale
    return scale.astype(np.float32), shift.astype(np.float32)


def clip_values(raw: np.ndarray, orientation: str, norm: dict[str, np.ndarray] | None, out: np.ndarray) -> np.ndarray:
    """Write clips of store-order frames ``raw`` (B, T, H, W, 3) uint8 into ``out`` (B, 3, T, H', W')
    as a model reads them, and return ``out``: cast to its dtype (float32 or uint8) without ``norm``,
    else standardised (:func:`video_scale_shift`). One strided, casting copy for the whole batch;
    the lazy dataset and ``fmmodel watch`` both call this, so their inputs are bit-identical."""
    src = raw.transpose(0, 4, 1, *item_axes(orientation, 2))
    if norm is None:
        np.copyto(out, src, casting="unsafe")
        return out
    scale, shift = video_scale_shift(norm)
    for c in range(3):
        np.multiply(src[:, c], scale[c], out=out[:, c], dtype=np.float32)
        out[:, c] += shift[c]
    return out


def current_values(values: np.ndarray, norm: dict[str, np.ndarray] | None) -> np.ndarray:
    """Return current rows (..., 3) as a model reads them (float32): raw amperes without ``norm``,
    else standardised with its ``current_mean`` and ``current_std`` (in float64, then cast)."""
    if norm is not None:
        values = (values - norm["current_mean"]) / norm["current_std"]
    return values.astype(np.float32, copy=False)
