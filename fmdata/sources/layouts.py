"""The two source layouts users hold, as names: one home for every file and variable name.

* **V1**: one MATLAB v7.3 file per recording with ``video`` (H, W, 3, N) uint8, ``label``
  (H, W, N), ``current`` (3, N) and ``train_test_index`` (1, N); one current sample per frame,
  frame ``i`` at ``i / fps`` seconds.
* **V2**: a folder with ``videos/<name>.mat`` (``data``, ``label``), ``currents/<name>.csv``
  (2 Hz rows: timestamp, A, B, C), ``timestamps/<name>.csv`` (one row per frame) and
  ``train.json`` / ``test.json``; one recording per video, in name order.

docs/store-format.md ("Sources") and docs/reference-protocol.md ("Data") describe both.
The validator (:mod:`fmdata.sources.validate`), the readers, ``fmdata inspect`` and the
synthetic writers all take their names from here.
"""
from __future__ import annotations

import math
import os

from fmdata.errors import FmDataError

LAYOUT_V1 = "v1"
LAYOUT_V2 = "v2"
LAYOUTS = (LAYOUT_V1, LAYOUT_V2)
# role -> MATLAB variable name
V1_VARIABLES = {"video": "video", "mask": "label", "current": "current", "split": "train_test_index"}
V2_VARIABLES = {"video": "data", "mask": "label"}
V2_VIDEOS, V2_CURRENTS, V2_TIMESTAMPS = "videos", "currents", "timestamps"
V2_FOLDERS = (V2_VIDEOS, V2_CURRENTS, V2_TIMESTAMPS)
V2_SPLIT_FILES = {"train": "train.json", "test": "test.json"}
V2_CURRENT_HEADER = "timestamp,phase_A,phase_B,phase_C"  # what the synthetic writer puts first
V2_TIMESTAMP_HEADER = "timestamp,frame"
DEFAULT_FPS = 25.0  # V1 files carry no timestamps: frame i is at i / fps seconds
# frame rates a recording may have: a camera's, from a frame every 10 s to a high-speed 1,000 fps
MIN_FPS, MAX_FPS = 0.1, 1000.0
# MATLAB classes accepted for masks and splits (any whole or real number type) and for currents
MASK_CLASSES = ("logical", "uint8", "int8", "uint16", "int16", "uint32", "int32", "double", "single")
CURRENT_CLASSES = ("double", "single")


def check_fps(fps: float) -> float:
    """Return ``fps`` as a float when it is a frame rate in ``MIN_FPS``..``MAX_FPS``; FmDataError (field
    ``fps``) otherwise."""
    try:
        value = float(fps)
    except (TypeError, ValueError):
        value = math.nan
    if not MIN_FPS <= value <= MAX_FPS or isinstance(fps, bool):
        raise FmDataError(f"expected a frame rate in {MIN_FPS:g}..{MAX_FPS:g} fps, got {fps!r}", field="fps")
    return value


def v2_key(name: str) -> str:
    """Return the key of recording ``name`` in train.json / test.json (its video file name)."""
    return f"{name}.mat"


def v2_files(folder: str | os.PathLike[str], name: str) -> tuple[str, str, str]:
    """Return (video MAT file, currents CSV, timestamps CSV) of recording ``name`` of a V2 folder."""
    folder = os.fspath(folder)
    return (os.path.join(folder, V2_VIDEOS, f"{name}.mat"), os.path.join(folder, V2_CURRENTS, f"{name}.csv"),
            os.path.join(folder, V2_TIMESTAMPS, f"{name}.csv"))
