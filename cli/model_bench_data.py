"""``fmmodel bench-data``: windows/s of the data path alone, a thin click wrapper over fmmodel.data.throughput."""
from __future__ import annotations

import json

import click

from fmdata.store import Location
from fmmodel.data.preprocessing import PREPROCESSING_REFERENCE, PREPROCESSINGS, VIDEO_DTYPES
from fmmodel.data.throughput import measure_data_path
from fmmodel.protocol import DEVICES

from .errors import user_errors
from .options import (
    batch_size_option,
    data_options,
    json_option,
    loader_workers_option,
    progress_flag,
    progress_option,
    store_argument,
)


@click.command("bench-data")
@store_argument()
@click.option("--windows", required=True, metavar="NAME", help="Stored window table (fmdata windows).")
@data_options
@loader_workers_option
@batch_size_option
@click.option("--split", type=click.Choice(("train", "test", "none", "all")), default="train", show_default=True,
              help="Windows to read (all: every window of the table).")
@click.option("--limit", type=click.IntRange(min=1), default=None, metavar="N",
              help="Time a seeded random sample of N windows of the split (default: all of them).")
@click.option("--preprocessing", type=click.Choice(PREPROCESSINGS), default=PREPROCESSING_REFERENCE,
              show_default=True, help="As fmmodel train --preprocessing.")
@click.option("--video-dtype", type=click.Choice(VIDEO_DTYPES), default=None,
              help="Clip dtype (default: what training uses on the device: uint8 on CUDA with reference "
                   "preprocessing, else float32).")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where batches go (auto: CUDA when available).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads of this process (torch).")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True,
              help="Seed of the sample, order and flips.")
@json_option
@progress_option
@user_errors
def bench_data_cmd(store: Location, windows: str, data: str, resident_budget: int | None, workers: int,
                   batch_size: int, split: str,
                   limit: int | None, preprocessing: str, video_dtype: str | None, device: str,
                   threads: int | None, seed: int, as_json: bool,
                   progress: bool | None) -> None:
    """Print the windows/s that the data path alone delivers (clip, current rows, mask, flip; batches
    moved onto the device), after one untimed pass. Compare it with training's samples/s to see
    whether the data or the model bounds a run."""
    report = measure_data_path(store, windows, data=data, workers=workers, batch_size=batch_size,
                               split=None if split == "all" else split, limit=limit, seed=seed,
                               preprocessing=preprocessing, video_dtype=video_dtype, device=device,
                               resident_budget=resident_budget, threads=threads, progress=progress_flag(progress))
    click.echo(json.dumps(report.to_dict(), indent=2) if as_json else report.summary())
