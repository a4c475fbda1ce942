"""``fmdata convert`` and ``fmdata verify``: MAT files / V2 folders -> Zarr store, and its checks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fmdata.convert import run_conversion, verify
from fmdata.sources import DEFAULT_FPS
from fmdata.store import Location
from fmdata.store.layout import DEFAULT_CHUNK_FRAMES, DEFAULT_LAYOUT, DEFAULT_SHARD_FRAMES
from fmdata.store.schema import ARRAY_LAYOUTS

from .errors import user_errors
from .options import STORE, json_option, overwrite_option, progress_flag, progress_option, store_argument

workers_option = click.option("--workers", type=click.IntRange(min=1), default=None, metavar="N",
                              help="Worker processes, this one included (default: the number of CPUs).")


@click.command("convert")
# SOURCES may be empty for click: a lone argument is then OUT, and the library says what is missing
# (a source before it, or OUT after a source: "expected OUT after the sources")
@click.argument("sources", nargs=-1, required=False, type=click.Path(path_type=Path))
@click.argument("out", type=STORE)
@workers_option
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Run the work units on an existing dask.distributed cluster (tcp://host:8786); its workers "
                   "must see SOURCES by the same absolute paths and reach OUT.")
@overwrite_option
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion into OUT, skipping finished shards.")
@click.option("--chunk-frames", type=int, default=None,
              help=f"Frames per chunk of arrays in the plain layout (the unit of reading; default "
                   f"{DEFAULT_CHUNK_FRAMES}, best for random short windows).")
@click.option("--shard-frames", type=int, default=None,
              help=f"Frames per shard (the unit of writing, one file each; default {DEFAULT_SHARD_FRAMES}, fewer for "
                   "large frames; with copied chunks, rounded to whole chunks of them).")
@click.option("--fps", type=float, default=DEFAULT_FPS, show_default=True,
              help="Frame rate of V1 files (they have no timestamps).")
@click.option("--layout", type=click.Choice(ARRAY_LAYOUTS), default=DEFAULT_LAYOUT, show_default=True,
              help="source: copy MATLAB's compressed chunks of video and mask into the store without decoding them "
                   "(fast; the MAT file's chunk grid, so a random frame decodes its whole chunk); plain: decode "
                   "and re-encode them in one-frame chunks (fastest random reads). Variables that cannot be copied "
                   "take the plain path; the report says which path each took (docs/store-format.md, \"Layouts\").")
@click.option("--mask-nonzero", is_flag=True,
              help="Store every mask value above 0 as 1, as the authors' loader reads masks (default: refuse values "
                   "other than 0 and 1). Recorded in the store; verify --source reads the sources the same way.")
@progress_option
@json_option
@user_errors
def convert_command(sources: tuple[Path, ...], out: Location, workers: int | None, scheduler: str | None,
                    overwrite: bool, resume: bool, chunk_frames: int | None, shard_frames: int | None, fps: float,
                    layout: str, mask_nonzero: bool, progress: bool | None, as_json: bool) -> None:
    """Convert SOURCES (V1 MAT files, one recording each, folders of them, and/or V2 folders, one
    recording per video) into a new Zarr store OUT (store format v2, or v3 with --layout source; see
    docs/store-format.md); recordings are concatenated in the order given (a folder's in name order)."""
    report = run_conversion(sources, out, scheduler=scheduler, workers=workers, overwrite=overwrite, resume=resume,
                            chunk_frames=chunk_frames, shard_frames=shard_frames, fps=fps,
                            progress=progress_flag(progress), mask_nonzero=mask_nonzero, layout=layout)
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())


@click.command("verify")
@store_argument()
@click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path),
              help="A source the store was converted from (repeat, in conversion order): compare every element.")
@workers_option
@progress_option
@user_errors
def verify_command(store: Location, sources: tuple[Path, ...], workers: int | None, progress: bool | None) -> None:
    """Recompute the checksums of STORE; with --source, compare every element with the sources.
    Exits 0 when everything holds, 1 with the arrays and frames that do not."""
    report = verify(store, sources, workers=workers, progress=progress_flag(progress))
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)

