"""Options of where a run's settings come from, shared by ``fmmodel train`` and ``fmmodel benchmark``.

Apart from :mod:`fmcli.options` because naming the presets imports :mod:`fmmodel.runs`, which
the fmdata commands do not need. Settings are layered as defaults < ``--preset`` < ``--config``
< the options typed (:mod:`fmmodel.runs.settings`).
"""
from __future__ import annotations

import click

from fmmodel.runs.presets import PRESETS

from .options import stack

# Where a run's settings come from: fmmodel train / benchmark (fmmodel.runs.settings): defaults <
# --preset < --config < the options typed.
recipe_options = stack(
    click.option("--preset", type=click.Choice(sorted(PRESETS)), default=None,
                 help="A named recipe: " + "; ".join(f"{p.name}: {p.summary.split(':')[0]}" for p in PRESETS.values())
                      + ". --config and the options typed override it (docs/training.md, Presets)."),
    click.option("--config", "config", type=click.Path(exists=True, dir_okay=False), default=None, metavar="FILE",
                 help="Settings from a YAML or JSON file whose keys are the training config's fields (a run's "
                      "config.json works as it is); options typed override it, it overrides --preset."),
)
