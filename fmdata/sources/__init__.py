"""The sources layer: the benchmark's files as users hold them (V1 MAT files, V2 folders).

Layout names (:mod:`~fmdata.sources.layouts`), MAT containers (:mod:`~fmdata.sources.matinfo`),
the one validator (:func:`open_sources`), readers that stream recordings in store orientation
(:func:`open_reader`), and ``fmdata inspect``. Depends on the store layer only for its schema.
"""
from fmdata.sources.inspect import format_report, inspect_path
from fmdata.sources.layouts import DEFAULT_FPS, LAYOUT_V1, LAYOUT_V2
from fmdata.sources.readers import FrameStream, RecordingReader, open_reader
from fmdata.sources.validate import (
    RecordingSource,
    VarSpec,
    folder_layout,
    is_source,
    open_sources,
    v2_folder_problems,
)

__all__ = ["format_report", "inspect_path", "DEFAULT_FPS", "LAYOUT_V1", "LAYOUT_V2", "FrameStream",
           "RecordingReader", "open_reader", "RecordingSource", "VarSpec", "folder_layout", "is_source", "open_sources",
           "v2_folder_problems"]
