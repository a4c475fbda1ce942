"""``fmdata labels``, ``fmdata windows``, ``fmdata stats``, ``fmdata preview``: thin click wrappers."""
from __future__ import annotations

import json
from typing import Any

import click

from fmdata.compute import DaskOptions
from fmdata.derive import compute_labels, compute_stats, make_windows
from fmdata.derive.preview import render_preview
from fmdata.store import Location, WindowParams

from .errors import user_errors
from .options import (
    dask_options,
    force_option,
    json_option,
    overwrite_option,
    progress_flag,
    progress_option,
    store_argument,
    window_options,
)


def _dask(workers: int | None, scheduler: str | None, memory_limit: str, progress: bool | None) -> DaskOptions:
    return DaskOptions(workers=workers, scheduler=scheduler, memory_limit=memory_limit,
                       progress=progress_flag(progress))


@click.command("labels")
@store_argument()
@force_option
@dask_options
@progress_option
@json_option
@user_errors
def labels_cmd(store: Location, force: bool, workers: int | None, scheduler: str | None, memory_limit: str,
               progress: bool | None, as_json: bool) -> None:
    """Derive per-frame class labels (abnormal when any mask pixel is 1) and abnormal-pixel counts.

    Writes the arrays frame_label and abnormal_pixels into STORE (a path or fsspec URL), with
    provenance. A no-op when they are up to date.
    """
    r = compute_labels(store, force=force, options=_dask(workers, scheduler, memory_limit, progress))
    click.echo(json.dumps(r.to_dict(), indent=2) if as_json else r.summary())


@click.command("windows")
@store_argument()
@click.option("--name", required=True, help="Name of the window table (stored as windows/NAME).")
@window_options
@force_option
@dask_options
@progress_option
@json_option
@user_errors
def windows_cmd(store: Location, name: str, window: dict[str, Any], force: bool, workers: int | None,
                scheduler: str | None, memory_limit: str, progress: bool | None, as_json: bool) -> None:
    """Build a window table (one row per training sample) and store it in STORE as windows/NAME.

    Computes frame labels first when they are missing.
    """
    params = WindowParams.reference("both", **window)
    r = make_windows(store, name, params, force=force, options=_dask(workers, scheduler, memory_limit, progress))
    click.echo(json.dumps(r.to_dict(), indent=2) if as_json else r.summary())


@click.command("stats")
@store_argument()
@click.option("--windows", "windows", default=None, metavar="NAME", help="Also summarise window table NAME.")
@force_option
@dask_options
@progress_option
@json_option
@user_errors
def stats_cmd(store: Location, windows: str | None, force: bool, workers: int | None, scheduler: str | None,
              memory_limit: str, progress: bool | None, as_json: bool) -> None:
    """Summarise STORE per split and per recording, and store training-split normalisation statistics.

    Video per-channel mean/std and current per-phase mean/std/min/max come from the training
    split only; they are kept in the store's fmf_stats attribute for the trainer.
    """
    r = compute_stats(store, windows=windows, force=force, options=_dask(workers, scheduler, memory_limit, progress))
    click.echo(json.dumps(r.to_dict(), indent=2) if as_json else r.table())


@click.command("preview")
@store_argument()
@click.option("--frame", type=int, required=True, help="Labelled frame (global, or within --recording).")
@click.option("--recording", default=None, help="Recording id or name; makes --frame local to it.")
@click.option("--windows", "windows", default=None, metavar="NAME",
              help="Take the window from table NAME (default: a reference window built with the options below).")
@click.option("--out", default="preview.png", show_default=True, help="Output .png picture or .mp4 video.")
@window_options
@overwrite_option
@json_option
@user_errors
def preview_cmd(store: Location, frame: int, recording: str | None, windows: str | None, out: str,
                window: dict[str, Any], overwrite: bool, as_json: bool) -> None:
    """Draw one window of STORE: clip frames with mask outlines and the three current phases."""
    params = WindowParams.reference("both", **window)
    r = render_preview(store, frame, out, recording=recording, windows=windows, params=params, overwrite=overwrite)
    click.echo(json.dumps(r.to_dict(), indent=2) if as_json else r.summary())

