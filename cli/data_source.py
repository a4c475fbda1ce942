"""Commands of this module are registered by the group in fmdata_main / fmmodel_main."""
from __future__ import annotations

COMMANDS: list = []
