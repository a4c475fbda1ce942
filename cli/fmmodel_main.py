"""``fmmodel``: train, evaluate and run FmFormer models on FMF stores."""
from __future__ import annotations

import click

import fmmodel
from fmcli import model_commands


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(fmmodel.__version__, prog_name="fmmodel")
def main() -> None:
    """Train, evaluate and predict with the FmFormer cross-modal transformer on an FMF store."""


for _command in model_commands.COMMANDS:
    main.add_command(_command)
