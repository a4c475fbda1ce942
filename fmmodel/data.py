"""From a store to what a model reads: window tables, datasets and loaders for training and scoring.

The trainer, ``evaluate`` and ``predict`` all get their windows and datasets here, so that a
checkpoint is always scored on windows built the way it was trained: :func:`window_table_for`
reads a stored table or builds one from :class:`~fmdata.store.window_table.WindowParams`
(computing frame labels first when the store lacks them), :func:`checkpoint_window_params`
recovers a checkpoint's windows, :func:`make_dataset` wraps them in the lazy dataset (which
:mod:`fmmodel.data_path` turns into batches, lazily or resident).
"""
from __future__ import annotations

import numpy as np
import zarr

from fmdata.compute.dask_cluster import DaskOptions
from fmdata.derive.labels import ensure_labels, labels_up_to_date, read_labels, require_writable
from fmdata.derive.windows import build_window_table, load_index
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import open_store, read_offsets
from fmdata.store.columns import read_column
from fmdata.store.location import Location
from fmdata.store.window_table import WindowParams, WindowTable, read_window_table
from fmmodel import distributed as dd
from fmmodel.checkpoint import ModelMeta
from fmmodel.dataset import FmfWindowDataset
from fmmodel.errors import FmModelError
from fmmodel.preprocessing import ORIENTATION_REFERENCE, InputFormat
from fmmodel.protocol import CURRENT_SECOND_FRAMES, SPLITS
from fmmodel.user_models import DataDescription


def window_table_for(location: Location, root: zarr.Group, name: str | None, params: WindowParams,
                     ctx: dd.DistContext | None = None, progress: bool = False) -> WindowTable:
    """Return the stored table ``name``, or (name None) a table built now from ``params``.

    Building needs frame labels; when the store lacks them, rank 0 computes them first (as
    ``fmdata labels`` would, writing the derived arrays into the store; with a progress bar when
    ``progress``). On a read-only store that is an FmModelError saying what to run.
    """
    try:
        if name:
            return read_window_table(root, name)
        ctx = ctx or dd.DistContext()
        if not labels_up_to_date(root):
            if ctx.is_main:
                require_writable(location)
                dd.log(ctx, f"{location}: computing frame labels first (fmdata labels)")
                ensure_labels(location, DaskOptions(progress=progress))
            dd.barrier(ctx)
            root = open_store(location)
        return build_window_table(load_index(root), params)
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(location), field=exc.field) from None


def checkpoint_window_params(meta: ModelMeta) -> WindowParams:
    """Return the windows a checkpoint's model expects: those recorded in its info, completed by the
    reference windows of its clip length; every window (stride 1)."""
    recorded = dict(meta.info.get("window", {})) if isinstance(meta.info, dict) else {}
    data = meta.description
    base = WindowParams.for_clip(data.clip_frames, current_rows=data.current_rows).to_dict()
    return WindowParams.from_dict({**base, **recorded, "stride": 1})


def check_windows_fit(table: WindowTable, data: DataDescription, where: str) -> None:
    """Raise FmModelError when a window table's clip length or current rows differ from the model's."""
    frames = int(table.clip.shape[1])
    rows = int(table.params.get("current_rows", data.current_rows))
    if frames != data.clip_frames or rows != data.current_rows:
        raise FmModelError(f"expected windows of {data.clip_frames} frames and {data.current_rows} current rows "
                           f"(the model's), got {frames} frames and {rows} rows", where)


def check_frames_fit(meta: ModelMeta, height: int, width: int, checkpoint: str, where: str) -> None:
    """Raise FmModelError when a video model expects frames of another size than the store's
    ``height`` x ``width``; the message names the checkpoint and says both sizes (H x W, as the
    store holds them). A current-only model reads no frames and always fits."""
    if "video" not in meta.description.inputs:
        return
    rows, cols = meta.description.frame_size  # as fed to the model: (W, H) under the reference orientation
    want = (cols, rows) if meta.orientation == ORIENTATION_REFERENCE else (rows, cols)
    if want != (height, width):
        raise FmModelError(f"expects {want[0]}x{want[1]} frames (its model's input): expected a store of "
                           f"{want[0]}x{want[1]} frames, got {height}x{width} frames in {where}", checkpoint)


def select_split(table: WindowTable, split: str) -> np.ndarray:
    """Return the table rows of ``split`` ("test", "train" or "all": both splits)."""
    s = table.column("split")
    if split == "test":
        return np.flatnonzero(s == schema.SPLIT_TEST)
    if split == "train":
        return np.flatnonzero(s == schema.SPLIT_TRAIN)
    if split == "all":
        return np.flatnonzero(s != schema.SPLIT_NONE)
    raise FmModelError(f"expected a split in {SPLITS}, got {split!r}", field="split")


def per_second_samples(table: WindowTable, frame_time: np.ndarray, frame_label: np.ndarray,
                       frame_offsets: np.ndarray) -> WindowTable:
    """Return the authors' current-only samples of ``table``: one per distinct second.

    Their CurrentDataset (docs/reference-protocol.md, "Metrics") takes, per recording and split,
    each distinct timestamp second of the table's labelled frames in order of first appearance;
    the sample is the window of that second's first frame (its current ends at that second) and
    is abnormal when any of the ``CURRENT_SECOND_FRAMES`` (25) frames from that frame on (within
    the recording) is. ``frame_time`` (seconds), ``frame_label`` (0/1) are the store's per-frame
    arrays, ``frame_offsets`` its recording offsets. The table must be in frame order.
    """
    if not len(table):
        return table
    f, rec, split = table.column("frame"), table.column("recording"), table.column("split")
    second = np.floor(np.asarray(frame_time, np.float64)[f]).astype(np.int64)
    _, first = np.unique(np.stack([rec, split, second], axis=1), axis=0, return_index=True)
    first = np.sort(first)  # order of first appearance
    start = f[first]
    stop = np.minimum(start + CURRENT_SECOND_FRAMES, np.asarray(frame_offsets, np.int64)[rec[first] + 1])
    abnormal = np.concatenate([[0], np.cumsum(np.asarray(frame_label, np.int64) != 0)])
    out = table.table[first].copy()
    out[:, table.columns.index("label")] = (abnormal[stop] - abnormal[start] > 0).astype(np.int64)
    return WindowTable(table=out, columns=table.columns, params={**table.params, "samples": "per second"})


def read_per_second_samples(location: Location, root: zarr.Group, table: WindowTable) -> WindowTable:
    """Return :func:`per_second_samples` of ``table`` with the frame times, frame labels and recording
    offsets read from the store ``root`` (at ``location``); FmModelError when the store lacks them or
    they are damaged."""
    try:
        frame_label, _ = read_labels(root)
        frame_offsets, _ = read_offsets(root)
        frame_time = read_column(root[schema.FRAME_TIME], np.float64, str(location))
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(location)) from None
    return per_second_samples(table, frame_time, frame_label, frame_offsets)


def make_dataset(location: Location, table: WindowTable, fmt: InputFormat, *, augment: bool, seed: int,
                 modality: str, task: str) -> FmfWindowDataset:
    """Return the lazy dataset over ``table``'s windows, delivering ``fmt`` (preprocessing, dtype)."""
    target = "seg" if task in ("seg", "both") else "cls"
    return FmfWindowDataset(location, table, preprocessing=fmt.preprocessing, augment=augment, seed=seed,
                            modality=modality, target=target, video_dtype=fmt.video_dtype)
