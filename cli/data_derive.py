"""``fmdata labels``, ``fmdata windows``, ``fmdata stats``, ``fmdata preview``: thin click wrappers."""
from __future__ import annotations

import json
from typing import Any, Callable

import click

from fmcli.errors import user_errors


def dask_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--workers`` and ``--scheduler`` (where the Dask work runs) to a command."""
    fn = click.option("--scheduler", metavar="ADDRESS", default=None,
                      help="Run on an existing dask.distributed cluster (e.g. tcp://host:8786); its workers "
                           "must reach the store by the same path or URL.")(fn)
    fn = click.option("--workers", type=int, default=None, metavar="N",
                      help="Start a local cluster of N single-threaded worker processes for this command. "
                           "Without --workers or --scheduler, Dask uses threads in this process.")(fn)
    fn = click.option("--memory-limit", default="auto", show_default=True, metavar="SIZE",
                      help="Memory limit per local worker process (e.g. 2GiB).")(fn)
    return fn


def _opts(workers: int | None, scheduler: str | None, memory_limit: str) -> Any:
    from fmdata.cluster import DaskOptions

    return DaskOptions(workers=workers, scheduler=scheduler, memory_limit=memory_limit)


@click.command("labels")
@click.argument("store")
@click.option("--force", is_flag=True, help="Recompute even when the labels are up to date.")
@dask_options
@user_errors
def labels_cmd(store: str, force: bool, workers: int | None, scheduler: str | None, memory_limit: str) -> None:
    """Derive per-frame class labels (abnormal when any mask pixel is 1) and abnormal-pixel counts.

    Writes the arrays frame_label and abnormal_pixels into STORE (a path or fsspec URL), with
    provenance. A no-op when they are up to date.
    """
    from fmdata.labels import compute_labels

    r = compute_labels(store, force=force, options=_opts(workers, scheduler, memory_limit))
    if r["status"] == "up to date":
        click.echo(f"{store}: labels up to date ({r['frames']:,} frames, {r['abnormal_frames']:,} abnormal); "
                   "--force recomputes")
        return
    click.echo(f"{store}: labelled {r['frames']:,} frames, {r['abnormal_frames']:,} abnormal, "
               f"{r['abnormal_pixels']:,} abnormal pixels in {r['seconds']:.1f} s on {r['scheduler']}")


@click.command("windows")
@click.argument("store")
@click.option("--name", required=True, help="Name of the window table (stored as windows/NAME).")
@click.option("--frames", type=int, default=10, show_default=True, help="Frames per clip.")
@click.option("--frame-step", type=int, default=18, show_default=True, help="Frames between clip frames.")
@click.option("--current-seconds", type=float, default=120.0, show_default=True,
              help="Seconds of current history per window.")
@click.option("--current-rows", type=int, default=240, show_default=True,
              help="Current rows a reader resamples each window to.")
@click.option("--stride", type=int, default=1, show_default=True, help="Keep every N-th window of each split block.")
@click.option("--policy", type=click.Choice(["reference", "strict"]), default="reference", show_default=True,
              help="reference: the authors' sampler, deterministic at recording starts; strict: every frame and "
                   "current row inside the labelled frame's split block (no leakage).")
@click.option("--force", is_flag=True, help="Replace a table of that name built with other parameters.")
@dask_options
@user_errors
def windows_cmd(store: str, name: str, frames: int, frame_step: int, current_seconds: float, current_rows: int,
                stride: int, policy: str, force: bool, workers: int | None, scheduler: str | None,
                memory_limit: str) -> None:
    """Build a window table (one row per training sample) and store it in STORE as windows/NAME.

    Computes frame labels first when they are missing.
    """
    from fmdata.windows import WindowParams, make_windows

    params = WindowParams(frames=frames, frame_step=frame_step, current_seconds=current_seconds,
                          current_rows=current_rows, stride=stride, policy=policy)
    r = make_windows(store, name, params, force=force, options=_opts(workers, scheduler, memory_limit))
    parts = ", ".join(f"{k} {v['windows']:,} ({v['abnormal']:,} abnormal)" for k, v in r["splits"].items())
    click.echo(f"{store}: windows/{name} {r['status']}: {r['windows']:,} windows ({policy}): {parts}")


@click.command("stats")
@click.argument("store")
@click.option("--windows", "windows", default=None, metavar="NAME", help="Also summarise window table NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
@click.option("--force", is_flag=True, help="Recompute the normalisation statistics even when up to date.")
@dask_options
@user_errors
def stats_cmd(store: str, windows: str | None, as_json: bool, force: bool, workers: int | None,
              scheduler: str | None, memory_limit: str) -> None:
    """Summarise STORE per split and per recording, and store training-split normalisation statistics.

    Video per-channel mean/std and current per-phase mean/std/min/max come from the training
    split only; they are kept in the store's fmf_stats attribute for the trainer.
    """
    from fmdata.stats import compute_stats, format_stats

    s = compute_stats(store, windows=windows, force=force, options=_opts(workers, scheduler, memory_limit))
    click.echo(json.dumps(s, indent=2) if as_json else format_stats(s))


@click.command("preview")
@click.argument("store")
@click.option("--frame", type=int, required=True, help="Labelled frame (global, or within --recording).")
@click.option("--recording", default=None, help="Recording id or name; makes --frame local to it.")
@click.option("--windows", "windows", default=None, metavar="NAME",
              help="Take the window from table NAME (default: a reference window built with the options below).")
@click.option("--out", default="preview.png", show_default=True, help="Output .png picture or .mp4 video.")
@click.option("--frames", type=int, default=10, show_default=True, help="Frames per clip (without --windows).")
@click.option("--frame-step", type=int, default=18, show_default=True, help="Frames between clip frames.")
@click.option("--current-seconds", type=float, default=120.0, show_default=True, help="Seconds of current.")
@user_errors
def preview_cmd(store: str, frame: int, recording: str | None, windows: str | None, out: str, frames: int,
                frame_step: int, current_seconds: float) -> None:
    """Draw one window of STORE: clip frames with mask outlines and the three current phases."""
    from fmdata.preview import render_preview
    from fmdata.windows import WindowParams

    params = WindowParams(frames=frames, frame_step=frame_step, current_seconds=current_seconds)
    r = render_preview(store, frame, out, recording=recording, windows=windows, params=params)
    what = f"{r['frames_written']} video frames" if "frames_written" in r else "picture"
    click.echo(f"{r['out']}: {what} of recording {r['recording']} frame {r['local_frame']} "
               f"({r['split']}, {'abnormal' if r['label'] else 'normal'}); clip frames {r['clip']}, "
               f"current rows {r['current_rows'][0]}..{r['current_rows'][1] - 1}")


COMMANDS: list = [labels_cmd, windows_cmd, stats_cmd, preview_cmd]
