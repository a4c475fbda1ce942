"""``fmdata``: convert the FMF benchmark's MATLAB files to Zarr and derive what training needs."""
from __future__ import annotations

import click

import fmdata

from .lazy import lazy_group

COMMANDS = {
    "synth": ".data_source:synth_command",
    "inspect": ".data_source:inspect_command",
    "convert": ".data_convert:convert_command",
    "verify": ".data_convert:verify_command",
    "labels": ".data_derive:labels_cmd",
    "windows": ".data_derive:windows_cmd",
    "stats": ".data_derive:stats_cmd",
    "preview": ".data_derive:preview_cmd",
}


@lazy_group(COMMANDS)
@click.version_option(fmdata.__version__, prog_name="fmdata")
def main() -> None:
    """Convert FMF benchmark recordings (MATLAB v7.3 files, folders of them, or V2 folders) into
    aligned Zarr stores, and derive labels, windows, statistics and previews from them. Every
    command that reads a store takes it as its first argument, STORE (--store STORE is the same)."""
