"""What a training run was trained on, so that ``--resume`` continues on the same data or refuses.

A run records in its ``config.json`` (``TrainConfig.trained_on``) the absolute location of its store,
the store's fingerprint (:func:`fmdata.store.provenance.store_fingerprint`: the source arrays'
shapes and recorded checksums) and the window table's fingerprint
(:func:`fmdata.store.window_table.table_fingerprint`: every window, label and window parameter).
A resumed run checks both before it builds anything: a changed store, a table rebuilt with
other windows or labels, or a different store given with ``--store`` is refused with one line;
the same store moved elsewhere (same fingerprint) is used, and its new location recorded.
"""
from __future__ import annotations

from typing import Any

from fmdata.store.handle import StoreHandle
from fmdata.store.location import Location
from fmdata.store.provenance import store_fingerprint
from fmdata.store.window_table import WindowTable, table_fingerprint
from fmmodel.errors import FmModelError


def absolute_store(store: str) -> str:
    """Return ``store`` with a local path made absolute (URLs unchanged): a run found from any
    working directory still finds its store."""
    return str(Location.parse(store).absolute())


def store_identity(store: StoreHandle) -> dict[str, Any]:
    """Return the store part of a run's data record: the open store's absolute location and fingerprint."""
    return {"store": absolute_store(str(store.location)), "store_fingerprint": store_fingerprint(store.root)}


def windows_identity(name: str | None, table: WindowTable) -> dict[str, Any]:
    """Return the window part of a run's data record: the table's name (None: built from the
    run's window parameters), its number of windows and its fingerprint."""
    return {"windows": name, "windows_count": len(table), "windows_fingerprint": table_fingerprint(table)}


def _short(digest: Any) -> str:
    return str(digest)[:12]


def check_same_store(recorded: dict[str, Any], store: StoreHandle, run_dir: str) -> None:
    """Raise FmModelError when the open ``store`` is not the one the run recorded.

    Runs written before the toolkit recorded fingerprints (``recorded`` empty) are not checked here.
    """
    want = recorded.get("store_fingerprint")
    if not want:
        return
    got = store_fingerprint(store.root)
    if got != want:
        moved = absolute_store(str(store.location)) != recorded.get("store")
        what = "a different store" if moved else "a store whose data changed since the run started"
        raise FmModelError(f"expected the store this run was trained on (fingerprint {_short(want)}, at "
                           f"{recorded.get('store')}), got {what} (fingerprint {_short(got)}) at {store}; "
                           "--resume continues only on the same data: start a new run with another --out", run_dir)


def check_same_windows(recorded: dict[str, Any], runtime: dict[str, Any], table: WindowTable, run_dir: str) -> None:
    """Raise FmModelError when ``table`` is not the window table the run recorded.

    Older runs recorded only the number of windows (``runtime["windows_total"]``): that is checked.
    """
    want = recorded.get("windows_fingerprint")
    count = recorded.get("windows_count", runtime.get("windows_total"))
    name = recorded.get("windows")
    which = f"window table {name!r}" if name else "windows built from the run's window parameters"
    if (want and table_fingerprint(table) != want) or (count is not None and int(count) != len(table)):
        had = f"{int(count):,} windows" if count is not None else "its windows"
        raise FmModelError(f"expected the {which} this run was trained on ({had}"
                           f"{', fingerprint ' + _short(want) if want else ''}), got {len(table):,} windows"
                           f"{', fingerprint ' + _short(table_fingerprint(table)) if want else ''} (the table or "
                           "the store's labels changed); --resume continues only on the same windows: start a new "
                           "run with another --out", run_dir)
