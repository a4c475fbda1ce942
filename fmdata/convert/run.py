"""``fmdata convert``'s entry point: a conversion in local worker processes or on a Dask cluster."""
from __future__ import annotations

import os
from collections.abc import Sequence

from fmdata.convert.cluster import convert_on_cluster
from fmdata.convert.driver import ConvertReport, convert
from fmdata.errors import FmDataError
from fmdata.sources import DEFAULT_FPS
from fmdata.store.layout import DEFAULT_LAYOUT
from fmdata.store.location import LocationLike


def run_conversion(sources: Sequence[str | os.PathLike[str]], out: LocationLike, *, scheduler: str | None = None,
                   workers: int | None = None, overwrite: bool = False, resume: bool = False,
                   chunk_frames: int | None = None, shard_frames: int | None = None, fps: float = DEFAULT_FPS,
                   progress: bool = True, mask_nonzero: bool = False, layout: str = DEFAULT_LAYOUT) -> ConvertReport:
    """Convert on a dask.distributed cluster when ``scheduler`` is given, else in local processes.

    The single entry point of ``fmdata convert``: ``workers`` (local process count) and
    ``scheduler`` exclude each other; the other options are those of
    :func:`fmdata.convert.driver.convert`. Returns its ConvertReport.
    """
    if scheduler:
        if workers is not None:
            raise FmDataError("expected either local worker processes or a scheduler address, got both",
                              field="scheduler")
        return convert_on_cluster(sources, out, scheduler, overwrite=overwrite, resume=resume,
                                  chunk_frames=chunk_frames, shard_frames=shard_frames, fps=fps, progress=progress,
                                  mask_nonzero=mask_nonzero, layout=layout)
    return convert(sources, out, workers=workers, overwrite=overwrite, resume=resume, chunk_frames=chunk_frames,
                   shard_frames=shard_frames, fps=fps, progress=progress, mask_nonzero=mask_nonzero, layout=layout)
