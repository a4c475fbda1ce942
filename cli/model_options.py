"""Options of the commands that load a checkpoint (evaluate, predict, watch, export) and of those
that make alarms (watch, alarms), declared once.

Kept apart from :mod:`fmcli.options` (imported by the fmdata commands too) because naming the
checkpoint formats and variants imports the model package and torch.
"""
from __future__ import annotations

import dataclasses
from typing import Any

import click

from fmmodel.model.checkpoint import CHECKPOINT_FORMATS
from fmmodel.model.registry import VARIANTS
from fmmodel.scoring.alarms import SMOOTHINGS, WATCH_POLICY, AlarmPolicy

from .options import grouped, stack

P = WATCH_POLICY

checkpoint_option = click.option(
    "--checkpoint", required=True, type=click.Path(),
    help="A toolkit checkpoint (best.pt, last.pt), the authors' state_dict (.pth), or an exported model "
         "(fmmodel export: TorchScript, ONNX, torch.export; told apart by content).")
FORMAT_HELP = "Checkpoint format: toolkit, reference (the authors' key names), or auto (by content)."
format_option = click.option(
    "--format", "fmt", type=click.Choice(CHECKPOINT_FORMATS), default="auto", show_default=True, help=FORMAT_HELP)
variant_option = click.option(
    "--variant", type=click.Choice(sorted(VARIANTS)), default=None,
    help="Model variant of a reference checkpoint (default: from its key names).")
windows_option = click.option(
    "--windows", default=None, metavar="NAME",
    help="Stored window table (default: windows built as the checkpoint says).")
trusted_option = click.option(
    "--model", "trusted", multiple=True, metavar="MODEL",
    help="A user's model (module:name or file.py:name) whose code a checkpoint may import; installed "
         "models (entry points of group fmmodel.models) need not be named. Or an AOTInductor export (compiled "
         "code) you built or trust, by its path.")

# How decisions become alarms: fmmodel watch / alarms. The command receives ``alarm``: AlarmPolicy fields,
# None where not given (the command's default policy, WATCH_POLICY, keeps its value).
alarm_options = grouped("alarm", stack(
    click.option("--raise-threshold", type=float, default=None,
                 help=f"Raise when the smoothed score reaches this (default {P.raise_threshold:g})."),
    click.option("--clear-threshold", type=float, default=None,
                 help=f"Clear when the smoothed score falls below this (default {P.clear_threshold:g}; "
                      "<= the raise threshold: hysteresis)."),
    click.option("--smoothing", type=click.Choice(SMOOTHINGS), default=None,
                 help=f"Score smoothing: none, k_of_n (the k-th largest of the last n scores) or ema (default "
                      f"{P.smoothing})."),
    click.option("--k", type=int, default=None, help=f"k of k_of_n (default {P.k})."),
    click.option("--n", type=int, default=None, help=f"n of k_of_n (default {P.n})."),
    click.option("--half-life", type=float, default=None,
                 help=f"Half-life of the ema in seconds (default {P.half_life:g})."),
    click.option("--on-delay", type=float, default=None,
                 help=f"Seconds the raise condition must hold before the alarm is raised (Prometheus' for; default "
                      f"{P.on_delay:g})."),
    click.option("--hold", type=float, default=None,
                 help=f"Seconds the clear condition must hold before the alarm clears (Prometheus' keep_firing_for; "
                      f"default {P.hold:g})."),
))


def policy_from(alarm: dict[str, Any]) -> AlarmPolicy:
    """The alarm policy of ``alarm_options``' values: WATCH_POLICY with the fields given (AlarmPolicy
    checks them: called inside the command's error handling)."""
    return dataclasses.replace(WATCH_POLICY, **{k: v for k, v in alarm.items() if v is not None})
