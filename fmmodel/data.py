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

from fmdata.derive.labels import ensure_labels, labels_up_to_date
from fmdata.derive.windows import build_window_table, load_index
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.access import open_store
from fmdata.store.location import Location
from fmdata.store.window_table import WindowParams, WindowTable, read_window_table
from fmmodel import distributed as dd
from fmmodel.checkpoint import ModelMeta
from fmmodel.dataset import FmfWindowDataset
from fmmodel.errors import FmModelError
from fmmodel.preprocessing import InputFormat
from fmmodel.protocol import SPLITS
from fmmodel.user_models import DataDescription


def window_table_for(location: Location, root: zarr.Group, name: str | None, params: WindowParams,
                     ctx: dd.DistContext | None = None) -> WindowTable:
    """Return the stored table ``name``, or (name None) a table built now from ``params``.

    Building needs frame labels; when the store lacks them, rank 0 computes them first (as
    ``fmdata labels`` would, writing the derived arrays into the store).
    """
    try:
        if name:
            return read_window_table(root, name)
        ctx = ctx or dd.DistContext()
        if not labels_up_to_date(root):
            if ctx.is_main:
                dd.log(ctx, f"{location}: computing frame labels first (fmdata labels)")
                ensure_labels(location)
            dd.barrier(ctx)
            root = open_store(location)
        return build_window_table(load_index(root), params)
    except FmDataError as exc:
        raise FmModelError(str(exc), str(location)) from None


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


def make_dataset(location: Location, table: WindowTable, fmt: InputFormat, *, augment: bool, seed: int,
                 modality: str, task: str) -> FmfWindowDataset:
    """Return the lazy dataset over ``table``'s windows, delivering ``fmt`` (preprocessing, dtype)."""
    target = "seg" if task in ("seg", "both") else "cls"
    return FmfWindowDataset(location, table, preprocessing=fmt.preprocessing, augment=augment, seed=seed,
                            modality=modality, target=target, video_dtype=fmt.video_dtype)
