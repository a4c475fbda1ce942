"""From a store to what a model reads: window tables, datasets and loaders for training and scoring.

The trainer, ``evaluate`` and ``predict`` all get their windows and datasets here, so that a
checkpoint is always scored on windows built the way it was trained: :func:`window_table_for`
reads a stored table of an open store or builds one from
:class:`~fmdata.store.window_table.WindowParams` (computing frame labels first when the store
lacks them, and handing back the fresh handle that sees them), :func:`checkpoint_window_params`
recovers a checkpoint's windows, :func:`make_dataset` wraps them in the lazy dataset (which
:mod:`fmmodel.data.paths` turns into batches, lazily or resident).
"""
from __future__ import annotations

import numpy as np

from fmdata.compute.dask_cluster import DaskOptions
from fmdata.derive.labels import ensure_labels, labels_up_to_date, require_writable
from fmdata.derive.windows import FrameIndex, build_window_table, load_index, reference_windows
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.handle import StoreHandle
from fmdata.store.window_table import WindowParams, WindowTable
from fmmodel.data.dataset import FmfWindowDataset
from fmmodel.data.preprocessing import InputFormat
from fmmodel.errors import FmModelError
from fmmodel.model.checkpoint import ModelMeta
from fmmodel.model.user_models import DataDescription
from fmmodel.protocol import CURRENT_SECOND_FRAMES, ORIENTATION_REFERENCE, SPLITS
from fmmodel.runtime import distributed as dd


def window_table_for(store: StoreHandle, name: str | None, params: WindowParams, ctx: dd.DistContext | None = None,
                     progress: bool = False) -> tuple[WindowTable, StoreHandle]:
    """Return the stored table ``name`` of the open ``store``, or (name None) a table built now from
    ``params``, and the handle to read the store through from now on.

    Building needs frame labels; when the store lacks them, rank 0 computes them first (as
    ``fmdata labels`` would, writing the derived arrays into the store; with a progress bar when
    ``progress``) and every rank goes on with a fresh handle that sees them (else ``store``
    itself). On a read-only store that is an FmModelError saying what to run.
    """
    try:
        if name:
            return store.window_table(name), store
        ctx = ctx or dd.DistContext()
        if not labels_up_to_date(store):
            labelled = None
            if ctx.is_main:
                require_writable(store.location)
                dd.log(ctx, f"{store}: computing frame labels first (fmdata labels)")
                labelled = ensure_labels(store, DaskOptions(progress=progress))
            dd.barrier(ctx)
            store = labelled or store.reopen()  # the other ranks open it again once rank 0 wrote them
        return build_window_table(load_index(store), params), store
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(store), field=exc.field) from None


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


def store_frame_size(meta: ModelMeta) -> tuple[int, int]:
    """Return the (height, width) of frames in store orientation that a model's input frames come
    from (its ``frame_size`` is as fed: (W, H) under the reference orientation)."""
    rows, cols = meta.description.frame_size
    return (cols, rows) if meta.orientation == ORIENTATION_REFERENCE else (rows, cols)


def check_frames_fit(meta: ModelMeta, height: int, width: int, checkpoint: str, where: str) -> None:
    """Raise FmModelError when a video model expects frames of another size than the store's
    ``height`` x ``width``; the message names the checkpoint and says both sizes (H x W, as the
    store holds them). A current-only model reads no frames and always fits."""
    if "video" not in meta.description.inputs:
        return
    want = store_frame_size(meta)
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


def per_second_samples(ix: FrameIndex, frame_time: np.ndarray, params: WindowParams, split: str) -> WindowTable:
    """Return the authors' current-only samples of ``split`` ("test", "train" or "all"): one per second.

    Their CurrentDataset (docs/reference-protocol.md, "Metrics"): per recording, each distinct
    timestamp second among the recording's frames of ``split``, in order of first appearance. The
    sample is the ``reference`` window (the shape of ``params``, whatever its policy and stride) of
    that second's first frame among ALL the recording's frames, whatever their split: its current
    ends at that second. It is abnormal when any of the ``CURRENT_SECOND_FRAMES`` (25) frames from
    that frame on (within the recording, whatever their split) is. Its ``split`` is that of the
    second's first frame of ``split``. ``ix`` is the store's frame index (labels included),
    ``frame_time`` its frame times (seconds). The samples do not depend on any window table.
    """
    codes = {"test": [schema.SPLIT_TEST], "train": [schema.SPLIT_TRAIN],
             "all": [schema.SPLIT_TRAIN, schema.SPLIT_TEST]}.get(split)
    if codes is None:
        raise FmModelError(f"expected a split in {SPLITS}, got {split!r}", field="split")
    second = np.floor(np.asarray(frame_time, np.float64)).astype(np.int64)
    # every (recording, second) of the store; return_index: its first frame over all frames
    _, first_frame, group = np.unique(np.stack([ix.recording, second], axis=1), axis=0, return_index=True,
                                      return_inverse=True)
    chosen = np.flatnonzero(np.isin(ix.split, codes))
    groups, first_chosen = np.unique(group.ravel()[chosen], return_index=True)
    order = np.argsort(chosen[first_chosen], kind="stable")  # order of first appearance among the split's frames
    seen, start = chosen[first_chosen[order]], first_frame[groups[order]].astype(np.int64)
    wt = reference_windows(ix, start, params)
    stop = np.minimum(start + CURRENT_SECOND_FRAMES, ix.frame_offsets[ix.recording[start] + 1])
    abnormal = np.concatenate([[0], np.cumsum(np.asarray(ix.frame_label, np.int64) != 0)])
    out = wt.table.copy()
    out[:, wt.columns.index("label")] = (abnormal[stop] - abnormal[start] > 0).astype(np.int64)
    out[:, wt.columns.index("split")] = ix.split[seen]
    return WindowTable(table=out, columns=wt.columns, params={**wt.params, "samples": "per second"})


def read_per_second_samples(store: StoreHandle, params: WindowParams, split: str) -> WindowTable:
    """Return :func:`per_second_samples` of ``split`` with the windows of ``params``, from the frame
    index and frame times of the open ``store``; FmModelError when the store lacks them (frame
    labels included) or they are damaged."""
    try:
        return per_second_samples(load_index(store), np.asarray(store.frame_time, np.float64), params, split)
    except FmDataError as exc:
        raise FmModelError(exc.message, exc.path or str(store)) from None


def make_dataset(store: StoreHandle, table: WindowTable, fmt: InputFormat, *, augment: bool, seed: int,
                 modality: str, task: str) -> FmfWindowDataset:
    """Return the lazy dataset over ``table``'s windows of the open ``store``, delivering ``fmt``
    (preprocessing, dtype)."""
    target = "seg" if task in ("seg", "both") else "cls"
    return FmfWindowDataset(store, table, preprocessing=fmt.preprocessing, augment=augment, seed=seed,
                            modality=modality, target=target, video_dtype=fmt.video_dtype)
