"""How a new store lays out its arrays: chunking, codecs, and the empty arrays of the store format.

Defaults suit random reads of short frame windows: a chunk is one frame (a 10-frame clip with
step 18 touches 10 different frames anyway), shards group many frames into one file (one write
unit each). The codecs were chosen by measurement (docs/store-format.md); every one is stock
blosc, readable with zarr + numcodecs. Format 2 ends every chunk's codec chain with Zarr's
``crc32c`` codec: each chunk carries the CRC-32C of its encoded bytes, which stock zarr and the
toolkit's shard codec check on every read (``chunk_crc=False`` gives format 1's chains, for
tests of stores written before it).

The source layout (:func:`create_source_array`) keeps video or mask in the MAT file's own chunk
grid, so that MATLAB's deflate chunks are copied into the shards without being decoded: inner
chunks of MATLAB's chunk shape (in store order), shards of whole chunk rows spanning the frame,
and the codecs ``transpose`` (store order to MATLAB's), ``bytes``, ``numcodecs.zlib`` (zarr's
core ``gzip`` cannot read a zlib stream) and ``crc32c``.
"""
from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import zarr
from zarr.codecs import BloscCodec, BloscShuffle, BytesCodec, Crc32cCodec, TransposeCodec
from zarr.codecs.numcodecs import Zlib

from fmdata.errors import FmDataError
from fmdata.store import schema

# What a plain `fmdata convert` writes, chosen by measurement (docs/performance.md, "Choosing the layout").
DEFAULT_LAYOUT = schema.LAYOUT_PLAIN
DEFAULT_CHUNK_FRAMES = 1
DEFAULT_SHARD_FRAMES = 256
DEFAULT_CURRENT_CHUNK = 65536
SHARD_BYTES_MAX = 4 << 20  # default shard: at most this much uncompressed video
SOURCE_SHARD_FRAMES = 1024  # default shard of the source layout (before rounding to whole chunk rows)
SOURCE_SHARD_BYTES_MAX = 16 << 20

# zarr warns about every array whose metadata names a numcodecs codec ("not in the Zarr version 3
# specification"), each time it is opened: the source layout's zlib is one, chosen knowingly
# (zarr's core gzip cannot read MATLAB's zlib streams), and a warning on every command helps nobody.
warnings.filterwarnings("ignore", message="Numcodecs codecs are not in the Zarr version 3 specification")

# Video codec (docs/store-format.md, benchmarks/bench_convert.py layout): bit-shuffling whole RGB
# pixels (typesize 3) before zstd makes one-frame chunks smaller than MATLAB's deflate-3 source
# (0.97 x) at about 250 MB/s encode and ~35 us decode per 64x64 frame.
VIDEO_CLEVEL = 1
VIDEO_TYPESIZE = 3


def _compressor(shuffle: BloscShuffle, level: int = 3, typesize: int | None = None) -> BloscCodec:
    return BloscCodec(cname="zstd", clevel=level, shuffle=shuffle, typesize=typesize)


def codecs_for(name: str, chunk_crc: bool = True) -> dict[str, Any]:
    """Return ``create_array`` keyword arguments (compressors) for array ``name``.

    Masks (0/1 bytes) are bit-shuffled, which packs eight pixels per byte before zstd; numeric
    series are byte-shuffled; video is bit-shuffled per RGB pixel (blosc typesize 3), which
    measured smaller than plain zstd and than MATLAB's deflate (see docs/store-format.md); the
    recording offsets (a few bytes) are stored uncompressed in format 2 and with zarr's default
    in format 1. ``chunk_crc`` appends the ``crc32c`` codec (format 2).
    """
    if not chunk_crc and name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        return {}
    if name == schema.MASK:
        chain: list[Any] = [_compressor(BloscShuffle.bitshuffle)]
    elif name == schema.VIDEO:
        chain = [_compressor(BloscShuffle.bitshuffle, VIDEO_CLEVEL, VIDEO_TYPESIZE)]
    elif name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        chain = []
    else:
        chain = [_compressor(BloscShuffle.shuffle)]
    return {"compressors": chain + [Crc32cCodec()] if chunk_crc else chain}


@dataclass(frozen=True)
class Chunking:
    """Chunk and shard lengths along the frame axis (and the chunk length of the current axis)."""

    chunk_frames: int = DEFAULT_CHUNK_FRAMES
    shard_frames: int | None = DEFAULT_SHARD_FRAMES
    current_chunk: int = DEFAULT_CURRENT_CHUNK

    def __post_init__(self) -> None:
        if self.chunk_frames < 1:
            raise FmDataError(f"expected frames per chunk >= 1, got {self.chunk_frames}", field="chunk_frames")
        if self.shard_frames is not None and (self.shard_frames < self.chunk_frames
                                              or self.shard_frames % self.chunk_frames):
            raise FmDataError(f"expected frames per shard to be a multiple of the frames per chunk "
                              f"({self.chunk_frames}), got {self.shard_frames}", field="shard_frames")
        if self.current_chunk < 1:
            raise FmDataError(f"expected current rows per chunk >= 1, got {self.current_chunk}",
                              field="current_chunk")

    @property
    def write_block(self) -> int:
        """Frames per independent write unit (a whole shard, or a whole chunk if unsharded)."""
        return self.shard_frames or self.chunk_frames

    def to_dict(self) -> dict[str, Any]:
        """Return the chunking as a JSON-able dict."""
        return {"chunk_frames": self.chunk_frames, "shard_frames": self.shard_frames,
                "current_chunk": self.current_chunk}


def default_chunking(height: int, width: int, layout: str = schema.LAYOUT_PLAIN) -> Chunking:
    """Return the default chunking for frames of ``height`` x ``width`` in ``layout``.

    One frame per chunk (random windows read only the frames they need) and shards of
    ``DEFAULT_SHARD_FRAMES`` frames, halved until a shard holds at most 4 MiB of video (so a
    writer holds little memory at high resolutions). In the source layout, where a shard of copied
    chunks costs a fixed few milliseconds to write whatever it holds, shards of
    ``SOURCE_SHARD_FRAMES`` and at most 16 MiB of video (the converter then rounds them to whole
    chunk rows of the source). See docs/store-format.md.
    """
    shard, most = ((SOURCE_SHARD_FRAMES, SOURCE_SHARD_BYTES_MAX) if layout == schema.LAYOUT_SOURCE
                   else (DEFAULT_SHARD_FRAMES, SHARD_BYTES_MAX))
    while shard > 1 and shard * height * width * 3 > most:
        shard //= 2
    return Chunking(chunk_frames=DEFAULT_CHUNK_FRAMES, shard_frames=shard, current_chunk=DEFAULT_CURRENT_CHUNK)


# the most frames a chunk or shard may span: far beyond any recording, and inside every index type
MAX_AXIS_FRAMES = 2**31 - 1


def override_chunking(base: Chunking, chunk_frames: int | None = None, shard_frames: int | None = None) -> Chunking:
    """Return ``base`` with the given frame-axis lengths replaced.

    A chunk length alone keeps the shard length when it is a multiple, else rounds the shard
    up to the next multiple. Raises FmDataError for lengths below one or inconsistent pairs.
    """
    if chunk_frames is None and shard_frames is None:
        return base
    for name, v in (("chunk_frames", chunk_frames), ("shard_frames", shard_frames)):
        if v is not None and not 1 <= v <= MAX_AXIS_FRAMES:
            raise FmDataError(f"expected a positive number of frames up to {MAX_AXIS_FRAMES}, got {v}", field=name)
    chunk = chunk_frames or base.chunk_frames
    shard = shard_frames if shard_frames is not None else -(-(base.shard_frames or chunk) // chunk) * chunk
    return Chunking(chunk_frames=chunk, shard_frames=shard, current_chunk=base.current_chunk)


def create_frame_array(root: zarr.Group, name: str, n_frames: int, frame_shape: Sequence[int],
                       chunking: Chunking, overwrite: bool = False, chunk_crc: bool = True) -> zarr.Array:
    """Create frame-axis array ``name`` (dtype and dims from the schema) and return it."""
    shape = (n_frames, *frame_shape)
    chunks = (chunking.chunk_frames, *frame_shape)
    shards = None if chunking.shard_frames is None else (chunking.shard_frames, *frame_shape)
    return root.create_array(
        name, shape=shape, dtype=schema.DTYPES[name], chunks=chunks, shards=shards,
        dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite, **codecs_for(name, chunk_crc))


@dataclass(frozen=True)
class CopiedChunks:
    """An array in the source layout: ``chunk`` is its inner chunk shape in store order (MATLAB's
    chunk shape, reversed and transposed as the array is), ``level`` the source's deflate level
    (recorded in the zlib codec's configuration; reading does not need it)."""

    chunk: tuple[int, ...]
    level: int = 3

    def to_dict(self) -> dict[str, Any]:
        """Return the chunk shape and level as a JSON-able dict."""
        return {"chunk": list(self.chunk), "level": self.level}


def create_source_array(root: zarr.Group, name: str, n_frames: int, frame_shape: Sequence[int],
                        copied: CopiedChunks, shard_frames: int, overwrite: bool = False) -> zarr.Array:
    """Create frame-axis array ``name`` (video or mask) in the source layout and return it.

    Inner chunks of ``copied.chunk`` (a chunk may hold several frames, or part of one); shards of
    ``shard_frames`` frames (a multiple of the chunk's frames) spanning the whole frame, rounded up
    to whole chunks (edge chunks are stored full size, as HDF5 stores them); the chain transpose
    (:data:`schema.SOURCE_ORDER`), bytes, numcodecs.zlib, crc32c.
    """
    chunk = tuple(int(c) for c in copied.chunk)
    if shard_frames % chunk[0]:
        raise FmDataError(f"expected frames per shard to be a multiple of the copied chunks' {chunk[0]} frames, "
                          f"got {shard_frames}", field="shard_frames")
    span = tuple(-(-int(s) // c) * c for s, c in zip(frame_shape, chunk[1:]))
    return root.create_array(
        name, shape=(n_frames, *frame_shape), dtype=schema.DTYPES[name], chunks=chunk,
        shards=(shard_frames, *span), filters=[TransposeCodec(order=schema.SOURCE_ORDER[name])],
        serializer=BytesCodec(), compressors=[Zlib(level=copied.level), Crc32cCodec()],
        dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite)


def create_arrays(root: zarr.Group, n_frames: int, n_current: int, height: int, width: int,
                  n_recordings: int, chunking: Chunking = Chunking(), overwrite: bool = False,
                  chunk_crc: bool = True, copied: Mapping[str, CopiedChunks] | None = None) -> None:
    """Create every source array of the store format (empty) in ``root``.

    Per-frame 1-D arrays use the video's shard length as their chunk, so that a writer that
    covers whole video shards also covers whole chunks of every other frame array. ``chunk_crc``
    False gives format 1's codec chains (no per-chunk CRC-32C). ``copied`` names the arrays (video,
    mask) in the source layout and their chunks; the others get the plain layout.
    """
    copied = copied or {}
    for name, frame in ((schema.VIDEO, (height, width, 3)), (schema.MASK, (height, width))):
        if name in copied:
            create_source_array(root, name, n_frames, frame, copied[name], chunking.write_block, overwrite)
        else:
            create_frame_array(root, name, n_frames, frame, chunking, overwrite, chunk_crc)
    block = chunking.write_block
    for name in (schema.SPLIT, schema.RECORDING, schema.FRAME_TIME, schema.FRAME_CURRENT_END):
        root.create_array(name, shape=(n_frames,), dtype=schema.DTYPES[name], chunks=(block,),
                          dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite,
                          **codecs_for(name, chunk_crc))
    root.create_array(schema.CURRENT, shape=(n_current, 3), dtype=schema.DTYPES[schema.CURRENT],
                      chunks=(chunking.current_chunk, 3), dimension_names=schema.DIMS[schema.CURRENT],
                      fill_value=0.0, overwrite=overwrite, **codecs_for(schema.CURRENT, chunk_crc))
    root.create_array(schema.CURRENT_TIME, shape=(n_current,), dtype=schema.DTYPES[schema.CURRENT_TIME],
                      chunks=(chunking.current_chunk,), dimension_names=schema.DIMS[schema.CURRENT_TIME],
                      fill_value=0.0, overwrite=overwrite, **codecs_for(schema.CURRENT_TIME, chunk_crc))
    for name in (schema.RECORDING_FRAME_OFFSETS, schema.RECORDING_CURRENT_OFFSETS):
        root.create_array(name, shape=(n_recordings + 1,), dtype="int64", chunks=(n_recordings + 1,),
                          dimension_names=schema.DIMS[name], fill_value=0, overwrite=overwrite,
                          **codecs_for(name, chunk_crc))
