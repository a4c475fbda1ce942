"""``fmdata``: convert the FMF benchmark's MATLAB files to Zarr and derive what training needs."""
from __future__ import annotations

import click

import fmdata
from fmcli import data_convert, data_derive, data_source


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(fmdata.__version__, prog_name="fmdata")
def main() -> None:
    """Convert FMF benchmark recordings (MATLAB v7.3 files or V2 folders) into aligned Zarr
    stores, and derive labels, windows, statistics and previews from them."""


for _module in (data_source, data_convert, data_derive):
    for _command in _module.COMMANDS:
        main.add_command(_command)
