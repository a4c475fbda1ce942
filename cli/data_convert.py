"""``fmdata convert`` and ``fmdata verify``: MAT files / V2 folders -> Zarr store, and its checks."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from fmcli.errors import user_errors


@click.command("convert")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.argument("out", type=str)
@click.option("--workers", type=int, default=None, help="Worker processes (default: the number of CPUs).")
@click.option("--scheduler", metavar="ADDRESS", default=None,
              help="Run the work units on an existing dask.distributed cluster (tcp://host:8786); its workers "
                   "must see SOURCES by the same absolute paths and reach OUT.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it is an existing store (once the new one is complete).")
@click.option("--resume", is_flag=True, help="Continue an interrupted conversion into OUT, skipping finished shards.")
@click.option("--chunk-frames", type=int, default=None,
              help="Frames per chunk (the unit of reading; default 1, best for random short windows).")
@click.option("--shard-frames", type=int, default=None,
              help="Frames per shard (the unit of writing, one file each; default 256, fewer for large frames).")
@click.option("--fps", type=float, default=25.0, show_default=True, help="Frame rate of V1 files (they have no timestamps).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
@user_errors
def convert_command(sources: tuple[Path, ...], out: str, workers: int | None, scheduler: str | None,
                    overwrite: bool, resume: bool,
                    chunk_frames: int | None, shard_frames: int | None, fps: float, progress: bool | None,
                    as_json: bool) -> None:
    """Convert SOURCES (V1 MAT files, one recording each, and/or V2 folders, one recording per
    video) into a new Zarr store OUT (store format v1, see docs/store-format.md); recordings are
    concatenated in the order given."""
    from fmdata.convert_cluster import run_conversion

    report = run_conversion(sources, out, scheduler=scheduler, workers=workers, overwrite=overwrite, resume=resume,
                            chunk_frames=chunk_frames, shard_frames=shard_frames, fps=fps,
                            progress=sys.stderr.isatty() if progress is None else progress)
    if as_json:
        d = {k: v for k, v in vars(report).items() if k != "chunking"}
        d["chunking"] = vars(report.chunking)
        click.echo(json.dumps(d, indent=2))
    else:
        click.echo(report.summary())


@click.command("verify")
@click.argument("store", type=str)
@click.option("--source", "sources", multiple=True, type=click.Path(path_type=Path),
              help="A source the store was converted from (repeat, in conversion order): compare every element.")
@click.option("--workers", type=int, default=None, help="Worker processes (default: the number of CPUs).")
@click.option("--progress/--no-progress", default=None, help="Progress bar (default: when stderr is a terminal).")
@user_errors
def verify_command(store: str, sources: tuple[Path, ...], workers: int | None, progress: bool | None) -> None:
    """Recompute the checksums of STORE; with --source, compare every element with the sources.
    Exits 0 when everything holds, 1 with the arrays and frames that do not."""
    from fmdata.verify import verify

    report = verify(store, sources, workers=workers, progress=sys.stderr.isatty() if progress is None else progress)
    click.echo(report.summary())
    if not report.ok:
        sys.exit(1)


COMMANDS: list = [convert_command, verify_command]
