"""``fmdata``: convert the FMF benchmark's MATLAB files to Zarr and derive what training needs."""
from __future__ import annotations

import click

import fmdata

from .lazy import LazyGroup

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


@click.group(cls=LazyGroup, lazy_commands=COMMANDS,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(fmdata.__version__, prog_name="fmdata")
def main() -> None:
    """Convert FMF benchmark recordings (MATLAB v7.3 files or V2 folders) into aligned Zarr
    stores, and derive labels, windows, statistics and previews from them."""
