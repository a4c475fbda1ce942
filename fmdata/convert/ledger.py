"""The ledger of a conversion: which units finished, and the checksums they wrote.

One small JSON object per finished unit inside the store being written, under
``fmf_convert_ledger/``. Single objects written whole work the same on local folders and object
stores, survive a kill at any point and need no locking between writers. A torn write leaves no
object under its key, but zarr's LocalStore writes through a temporary file beside it
(``<unit>.<hex>.partial``, renamed onto the key when complete) that a kill leaves behind and
that lists like any object: only keys ending in ``.json`` are entries. ``--resume`` skips the units it lists; the
driver moves its checksums into the arrays' attributes and drops it when the store is complete.
"""
from __future__ import annotations

import json

import zarr
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import collect_aiterator, sync

from fmdata.convert.plan import UnitResult

LEDGER_PREFIX = "fmf_convert_ledger"  # one small JSON object per finished unit, removed at the end
LEDGER_SUFFIX = ".json"


class Ledger:
    """Finished units of a conversion, one small JSON object per unit inside the store ``root``."""

    def __init__(self, root: zarr.Group) -> None:
        self._store = root.store
        self._proto = default_buffer_prototype()

    def record(self, result: UnitResult) -> None:
        """Persist one unit's result."""
        body = json.dumps({"key": result.key, "axis": result.axis, "rows": result.rows,
                           "checksums": result.checksums}).encode()
        sync(self._store.set(f"{LEDGER_PREFIX}/{result.key}{LEDGER_SUFFIX}", self._proto.buffer.from_bytes(body)))

    def load(self) -> dict[str, UnitResult]:
        """Return every recorded result by unit key."""
        keys = collect_aiterator(self._store.list_prefix(f"{LEDGER_PREFIX}/"))
        out = {}
        for k in keys:
            if not k.endswith(LEDGER_SUFFIX):  # a killed writer's temporary file, never renamed into place
                continue
            buf = sync(self._store.get(k, prototype=self._proto))
            if buf is None:
                continue
            d = json.loads(buf.to_bytes())
            out[d["key"]] = UnitResult(d["key"], d["axis"], int(d["rows"]),
                                       {n: [(int(b), int(c)) for b, c in v] for n, v in d["checksums"].items()})
        return out

    def clear(self) -> None:
        """Remove the ledger (after its content went into the arrays' attributes)."""
        sync(self._store.delete_dir(LEDGER_PREFIX))
