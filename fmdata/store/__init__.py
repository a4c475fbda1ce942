"""The store layer: the ground floor of fmdata and the one owner of every store concept.

The store format as code (:mod:`~fmdata.store.schema`), where a store lives
(:class:`~fmdata.store.location.Location`), an open store (:func:`~fmdata.store.handle.open_store`
and its :class:`~fmdata.store.handle.StoreHandle`: opened once per command, passed down), how its arrays are laid out
(:mod:`~fmdata.store.layout`) and encoded (the shard codec :mod:`~fmdata.store.shards`, with its
writer and the block and row readers), checksums, provenance, window tables and their
parameters, atomic placement of outputs (:mod:`~fmdata.store.atomic`), where outputs may go and
what they may replace (:mod:`~fmdata.store.outputs`), one writer at a time
(:mod:`~fmdata.store.lock`) and derived arrays switched in whole (:mod:`~fmdata.store.derived`).
Nothing here imports any other part of fmdata but its errors. The facade names what most callers
need; the modules hold the rest.
"""
from fmdata.store import schema
from fmdata.store.access import read_meta, read_offsets, read_recordings
from fmdata.store.block_reader import BlockReader, block_frames, block_ranges
from fmdata.store.handle import StoreHandle, StoreLike, open_store
from fmdata.store.in_memory import RecordingArrays, write_store_from_arrays
from fmdata.store.layout import Chunking, create_arrays
from fmdata.store.location import Location, LocationLike, set_complete
from fmdata.store.row_reader import LocalAxisReader, ZarrAxisReader, open_axis_reader
from fmdata.store.shard_writer import ShardWriter
from fmdata.store.window_table import (
                                       WindowParams,
                                       WindowTable,
                                       current_row_indices,
                                       list_window_tables,
                                       read_window_table,
                                       write_window_table,
)

__all__ = [
    "schema", "open_store", "StoreHandle", "StoreLike", "read_meta", "read_offsets", "read_recordings", "BlockReader",
    "block_frames",
    "block_ranges", "RecordingArrays", "write_store_from_arrays", "Chunking", "create_arrays", "Location",
    "LocationLike", "set_complete", "LocalAxisReader", "ZarrAxisReader", "open_axis_reader", "ShardWriter",
    "WindowParams", "WindowTable", "current_row_indices", "list_window_tables", "read_window_table",
    "write_window_table",
]
