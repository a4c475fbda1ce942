"""The store format (versions 2 and 3; version 1 readable): the names, axes, dtypes and metadata of an FMF Zarr store, as code.

Everything that reads or writes a store takes its array names and axis order from here; the
prose version is ``docs/store-format.md``. One Zarr v3 group per dataset:

Frame axis (every array shares axis 0, length ``n_frames``; recordings are concatenated):
    ``video``            (frame, y, x, channel) uint8  RGB in true image orientation (MATLAB (H, W))
    ``mask``             (frame, y, x)          uint8  0 normal, 1 abnormal
    ``split``            (frame,)               int8   SPLIT_TRAIN / SPLIT_TEST / SPLIT_NONE
    ``recording``        (frame,)               int32  recording id 0..R-1
    ``frame_time``       (frame,)               float64 seconds since the recording's origin
    ``frame_current_end``(frame,)               int64  global current row one past the last row
                                                       at or before the frame's time
Current axis (native rate, recordings concatenated):
    ``current``          (sample, phase)        float64 amperes, phases A, B, C
    ``current_time``     (sample,)              float64 seconds since the recording's origin
Recording axis (cumulative boundaries, length R + 1):
    ``recording_frame_offsets``   (recording_edge,) int64  frames of recording r: [o[r], o[r+1])
    ``recording_current_offsets`` (recording_edge,) int64  current rows of recording r
Derived (written by ``fmdata labels``; frame axis):
    ``frame_label``      (frame,) uint8  1 when any mask pixel is 1
    ``abnormal_pixels``  (frame,) int32  number of mask pixels equal to 1
Window tables (written by ``fmdata windows``): ``windows/<name>``, (window, field) int64 with the
column names in the array attribute ``columns`` (WINDOW_COLUMNS followed by ``clip_00`` ...).

Root attributes: ``fmf_store`` (StoreMeta.to_dict()), ``fmf_recordings`` (list of
RecordingInfo.to_dict()), ``fmf_stats`` (normalisation statistics, written by ``fmdata stats``).

Array layouts (``StoreMeta.layouts``): ``video`` and ``mask`` lie either in the plain layout
(blosc chunks of whole frames in shards) or in the source layout (the MAT file's own deflate
chunks, copied: the ``transpose`` codec with ``SOURCE_ORDER``, then bytes, ``numcodecs.zlib``
and ``crc32c``). A store with an array in the source layout is version 3.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from fmdata.errors import FmDataError

FORMAT_NAME = "fmf-store"
# Version 2 adds a CRC-32C to every chunk (Zarr's ``crc32c`` codec, last in each chunk's codec
# chain) and checksums to derived arrays and statistics; version-1 stores stay readable
# (docs/store-format.md says what is checked on read in each). Version 3 is version 2 with video
# or mask in the source layout (MATLAB's chunks copied, their block checksums over the shard
# files' bytes): toolkits that predate it refuse it instead of misreading those checksums. A store
# whose arrays are all plain is written as version 2.
FORMAT_VERSION = 2
SOURCE_LAYOUT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)

# ---- array layouts (docs/store-format.md, "Layouts") ------------------------------------------
LAYOUT_PLAIN = "plain"  # blosc chunks of whole frames (one by default) in shards
LAYOUT_SOURCE = "source"  # the MAT file's deflate chunks copied as they are, read through a transpose
ARRAY_LAYOUTS = (LAYOUT_SOURCE, LAYOUT_PLAIN)

# ---- attribute keys -------------------------------------------------------------------------
ATTR_STORE = "fmf_store"
ATTR_RECORDINGS = "fmf_recordings"
ATTR_STATS = "fmf_stats"
ATTR_PROVENANCE = "fmf_provenance"  # on derived arrays: what they were computed from
ATTR_CHECKSUMS = "fmf_checksums"  # on source and derived arrays: CRC-32C per write block

# ---- array names ----------------------------------------------------------------------------
VIDEO = "video"
MASK = "mask"
SPLIT = "split"
RECORDING = "recording"
FRAME_TIME = "frame_time"
FRAME_CURRENT_END = "frame_current_end"
CURRENT = "current"
CURRENT_TIME = "current_time"
RECORDING_FRAME_OFFSETS = "recording_frame_offsets"
RECORDING_CURRENT_OFFSETS = "recording_current_offsets"
FRAME_LABEL = "frame_label"
ABNORMAL_PIXELS = "abnormal_pixels"
WINDOWS_GROUP = "windows"

# ---- axes (Zarr dimension_names, which xarray reads) ----------------------------------------
DIMS: dict[str, tuple[str, ...]] = {
    VIDEO: ("frame", "y", "x", "channel"),
    MASK: ("frame", "y", "x"),
    SPLIT: ("frame",),
    RECORDING: ("frame",),
    FRAME_TIME: ("frame",),
    FRAME_CURRENT_END: ("frame",),
    CURRENT: ("sample", "phase"),
    CURRENT_TIME: ("sample",),
    RECORDING_FRAME_OFFSETS: ("recording_edge",),
    RECORDING_CURRENT_OFFSETS: ("recording_edge",),
    FRAME_LABEL: ("frame",),
    ABNORMAL_PIXELS: ("frame",),
}

DTYPES: dict[str, str] = {
    VIDEO: "uint8",
    MASK: "uint8",
    SPLIT: "int8",
    RECORDING: "int32",
    FRAME_TIME: "float64",
    FRAME_CURRENT_END: "int64",
    CURRENT: "float64",
    CURRENT_TIME: "float64",
    RECORDING_FRAME_OFFSETS: "int64",
    RECORDING_CURRENT_OFFSETS: "int64",
    FRAME_LABEL: "uint8",
    ABNORMAL_PIXELS: "int32",
}

# The arrays that may lie in the source layout, and the ``transpose`` codec's order that turns a
# chunk in store order into MATLAB's (h5py's) order: (frame, y, x, channel) <-> (frame, channel, x, y).
SOURCE_ORDER: dict[str, tuple[int, ...]] = {VIDEO: (0, 3, 2, 1), MASK: (0, 2, 1)}

FRAME_ARRAYS = (VIDEO, MASK, SPLIT, RECORDING, FRAME_TIME, FRAME_CURRENT_END)
CURRENT_ARRAYS = (CURRENT, CURRENT_TIME)
SOURCE_ARRAYS = FRAME_ARRAYS + CURRENT_ARRAYS + (RECORDING_FRAME_OFFSETS, RECORDING_CURRENT_OFFSETS)
DERIVED_FRAME_ARRAYS = (FRAME_LABEL, ABNORMAL_PIXELS)

# ---- split codes ----------------------------------------------------------------------------
SPLIT_TRAIN = 0
SPLIT_TEST = 1
SPLIT_NONE = -1
SPLIT_NAMES = {SPLIT_TRAIN: "train", SPLIT_TEST: "test", SPLIT_NONE: "none"}

PHASES = ("A", "B", "C")

# ---- window tables --------------------------------------------------------------------------
# Leading columns of every window table; clip frame columns clip_00.. follow (oldest first, the
# labelled frame last). Current rows of a window are [current_start, current_stop) (global rows),
# index-resampled to the table's ``current_rows`` attribute by the reader.
WINDOW_COLUMNS = ("frame", "recording", "split", "label", "current_start", "current_stop")
WINDOW_POLICIES = ("reference", "strict")


def clip_column(i: int) -> str:
    """Return the window-table column name of clip frame ``i`` (0 = oldest)."""
    return f"clip_{i:02d}"


@dataclass(frozen=True)
class StoreMeta:
    """Store-level metadata, kept in the root attribute ``fmf_store``.

    ``complete`` is set last by the writer; readers refuse stores where it is false. ``layouts``
    names the layout of each array not in the plain layout (``{"video": "source"}``; stores
    written before it have none: all plain).
    """

    n_frames: int
    n_current: int
    n_recordings: int
    height: int
    width: int
    fps: float
    complete: bool = False
    format: str = FORMAT_NAME
    version: int = FORMAT_VERSION
    created_by: str = ""
    layouts: dict[str, str] = field(default_factory=dict)

    def layout(self, name: str) -> str:
        """Return the layout of array ``name`` (LAYOUT_PLAIN unless recorded otherwise)."""
        return self.layouts.get(name, LAYOUT_PLAIN)

    def to_dict(self) -> dict[str, Any]:
        """Return the metadata as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StoreMeta:
        """Build from a dict written by :meth:`to_dict`; raise FmDataError on another format."""
        if d.get("format") != FORMAT_NAME:
            raise FmDataError(f"expected store format {FORMAT_NAME!r}, got {d.get('format')!r}")
        if d.get("version") not in READABLE_VERSIONS:
            raise FmDataError(f"expected store format version {' or '.join(map(str, READABLE_VERSIONS))}, "
                              f"got {d.get('version')!r}")
        layouts = d.get("layouts") or {}
        if not isinstance(layouts, dict) or any(v not in ARRAY_LAYOUTS for v in layouts.values()):
            raise FmDataError(f"expected array layouts among {ARRAY_LAYOUTS}, got {layouts!r:.80}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names and k != "layouts"}, layouts=dict(layouts))


def format_version(layouts: dict[str, str]) -> int:
    """Return the format version of a store whose arrays have ``layouts`` (:attr:`StoreMeta.layouts`)."""
    return SOURCE_LAYOUT_VERSION if LAYOUT_SOURCE in layouts.values() else FORMAT_VERSION


@dataclass(frozen=True)
class RecordingInfo:
    """Provenance of one recording: where it came from and how the source stored it.

    ``source_storage`` describes each source variable (class, MATLAB shape, layout, chunks,
    filters), as ``fmdata inspect`` reports it. ``origin`` is the wall-clock time (ISO 8601,
    with the source's UTC offset when it gave one, or "" when the source has none) that
    ``frame_time``/``current_time`` count from. ``mask_nonzero`` says that mask values above 0
    were stored as 1, as the authors' loader reads them (``fmdata convert --mask-nonzero``);
    otherwise every source mask value was 0 or 1.
    """

    name: str
    source_path: str
    source_bytes: int
    layout: str  # "v1" or "v2"
    n_frames: int
    n_current: int
    origin: str = ""
    source_storage: dict[str, Any] = field(default_factory=dict)
    mask_nonzero: bool = False

    def to_dict(self) -> dict[str, Any]:
        """Return the provenance as a JSON-able dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RecordingInfo:
        """Build from a dict written by :meth:`to_dict`."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
