"""Options of the commands that load a checkpoint (evaluate, predict, watch), declared once.

Kept apart from :mod:`fmcli.options` (imported by the fmdata commands too) because naming the
checkpoint formats and variants imports the model package and torch.
"""
from __future__ import annotations

import click

from fmmodel.model.checkpoint import CHECKPOINT_FORMATS
from fmmodel.model.registry import VARIANTS

checkpoint_option = click.option(
    "--checkpoint", required=True, type=click.Path(),
    help="A toolkit checkpoint (best.pt, last.pt) or the authors' state_dict (.pth).")
format_option = click.option(
    "--format", "fmt", type=click.Choice(CHECKPOINT_FORMATS), default="auto", show_default=True,
    help="Checkpoint format: toolkit, reference (the authors' key names), or auto (by content).")
variant_option = click.option(
    "--variant", type=click.Choice(sorted(VARIANTS)), default=None,
    help="Model variant of a reference checkpoint (default: from its key names).")
windows_option = click.option(
    "--windows", default=None, metavar="NAME",
    help="Stored window table (default: windows built as the checkpoint says).")
trusted_option = click.option(
    "--model", "trusted", multiple=True, metavar="MODEL",
    help="A user's model (module:name or file.py:name) whose code a checkpoint may import; installed "
         "models (entry points of group fmmodel.models) need not be named.")
