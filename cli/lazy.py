"""A click group whose commands are imported only when one is used.

The console scripts' modules are imported by every process that starts from them: spawned
conversion workers and DataLoader workers re-import the main script. The groups therefore
name their commands as "module:attribute" and import a command's module (and with it the
library) only when that command runs or its help is shown, so that a worker pays for
nothing it does not use.
"""
from __future__ import annotations

import importlib
from typing import Any

import click


class LazyGroup(click.Group):
    """A group of commands given as ``{name: "module:attribute"}`` (modules relative to this package)."""

    def __init__(self, *args: object, lazy_commands: dict[str, str], **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.lazy_commands = dict(lazy_commands)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy_commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.lazy_commands:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self.lazy_commands[cmd_name].partition(":")
        command = getattr(importlib.import_module(module, __package__), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.lazy_commands[cmd_name]} is not a click command")
        return command


def lazy_group(commands: dict[str, str]) -> Any:
    """The decorator of a console script's group: ``commands`` imported on demand, ``-h`` for help,
    help text up to 100 columns (the same for ``fmdata`` and ``fmmodel``)."""
    return click.group(cls=LazyGroup, lazy_commands=commands,
                       context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
