"""``fmdata synth`` and ``fmdata inspect``: make synthetic recordings, look inside MAT files and V2 folders."""
from __future__ import annotations

import json
from pathlib import Path

import click

from fmdata.sources import LAYOUT_V1, format_report, inspect_path
from fmdata.sources.layouts import LAYOUTS
from fmdata.synth import EVENT_PROFILES, synthesize
from fmdata.synth.writers import STORAGES

from .errors import DataError, user_errors
from .options import json_option, overwrite_option, progress_flag, progress_option


@click.command("synth")
@click.argument("out", type=click.Path())  # a str: a trailing "/" (a folder) must survive
@click.option("--layout", type=click.Choice(LAYOUTS), default=LAYOUT_V1, show_default=True,
              help="v1: one MATLAB file per recording (a folder of them when --recordings > 1); "
                   "v2: the folder layout (videos/, currents/, timestamps/, train.json, test.json).")
@click.option("--storage", type=click.Choice(STORAGES), default="matlab", show_default=True,
              help="matlab: v7.3 chunked with deflate 3 as MATLAB writes; contiguous: v7.3 uncompressed; "
                   "v7: the older non-HDF5 format (small files only).")
@click.option("--recordings", type=int, default=1, show_default=True, help="Recordings (1..99).")
@click.option("--frames", type=int, default=2000, show_default=True, help="Frames per recording.")
@click.option("--size", default="64", show_default=True, help="Frame size H or HxW in pixels.")
@click.option("--fps", type=float, default=25.0, show_default=True, help="Frames per second.")
@click.option("--seed", type=int, default=0, show_default=True,
              help="Random seed; the same seed writes the same bytes.")
@click.option("--events", type=click.Choice(sorted(EVENT_PROFILES)), default="standard", show_default=True,
              help="Anomaly profile: dense packs shorter, more frequent hot spots into short recordings.")
@overwrite_option
@click.option("--preview", type=click.Path(path_type=Path), default=None,
              help="Also draw frames, masks and current of the first recording to this PNG.")
@json_option
@progress_option
@user_errors
def synth_command(out: str, layout: str, storage: str, recordings: int, frames: int, size: str, fps: float,
                  seed: int, events: str, overwrite: bool, preview: Path | None, as_json: bool,
                  progress: bool | None) -> None:
    """Write synthetic FMF recordings to OUT in the users' exact file formats (V1: one MAT file,
    or a folder of them when OUT ends with / or --recordings > 1; V2: a folder)."""
    result = synthesize(out, layout=layout, storage=storage, recordings=recordings, frames=frames, size=size,
                        fps=fps, seed=seed, overwrite=overwrite, preview=preview, events=events,
                        progress=progress_flag(progress))
    if as_json:
        click.echo(json.dumps(result.to_dict(), indent=2))
        return
    click.echo(result.summary())


@click.command("inspect")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@click.option("--check", is_flag=True, help="Also read every variable once to find corrupt data.")
@user_errors
def inspect_command(path: Path, as_json: bool, check: bool) -> None:
    """Show what a MAT file, a folder of V1 files or a V2 folder holds: format, variables
    (MATLAB class, MATLAB-order shape, storage, size), recordings. Exits 1 when a V2 folder has problems."""
    report = inspect_path(path, check=check)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if report.get("problems"):
        raise DataError(f"{path}: {len(report['problems'])} problem(s) found")

