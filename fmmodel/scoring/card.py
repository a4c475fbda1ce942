"""A run's model card: ``README.md`` in the run folder, what the model is and how well it does.

The trainer writes it after every epoch (:func:`run_card`, :func:`write_card`): what the model
is (variant, sizes, parameters), what it was trained on (the store and its fingerprint, the
windows, the splits, the validation hold-out), its settings, its validation scores per epoch
(and ``curves.png``), its test figures once ``fmmodel evaluate`` scored one of the run's
checkpoints (:func:`record_evaluation`), and the commands that evaluate and predict with it.

The card is marked as the trainer's by its first line (an HTML comment,
:func:`fmdata.store.outputs.text_mark`) and carries its data as JSON in a last HTML comment,
which no Markdown viewer shows; ``evaluate`` re-renders the card from that data with its test
figures added. A ``README.md`` without the mark (a user's) is never written over. Test figures
are kept while the checkpoint they score still holds the same epoch (a run trained further
drops the figures of a ``best.pt`` that changed).
"""
from __future__ import annotations

import datetime
import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

from fmdata.errors import FmDataError
from fmdata.store.atomic import replace_text
from fmdata.store.location import Location
from fmdata.store.lock import writer_lock
from fmdata.store.outputs import made_by, text_mark

CARD = "README.md"
MADE_BY = "fmmodel train"
_DATA_OPEN = "<!-- fmf-model-card-data"
_DATA_CLOSE = "-->"
CHECKPOINTS = ("best.pt", "last.pt")
_CLASS = (("accuracy", "ACC"), ("f1", "F1"), ("precision", "precision"), ("recall", "recall"), ("fdr", "FDR"),
          ("mdr", "MDR"), ("auroc", "AUROC"), ("ap", "AP"))
_SETTINGS = ("epochs", "batch_size", "lr", "lr_step_epoch", "lr_gamma", "optimizer", "weight_decay", "hflip",
             "preprocessing", "balanced", "max_steps_per_epoch", "seed", "device", "precision", "data")
_HISTORY = ("epoch", "train_loss", "val_loss", "val_f1", "val_auroc", "val_miou", "samples_per_s", "best")


def run_card(config: Mapping[str, Any], history: Sequence[Mapping[str, Any]], *, parameters: int,
             tests: Sequence[Mapping[str, Any]] = ()) -> dict[str, Any]:
    """The card's data of a run: its ``config`` (``config.json`` as a dict), its ``history`` (rows of
    metrics.csv), the model's ``parameters`` and the ``tests`` still valid (see the module)."""
    rt = config.get("runtime") or {}
    trained = config.get("trained_on") or {}
    rows = [{k: r.get(k) for k in _HISTORY} for r in history]
    best = [int(r["epoch"]) for r in history if r.get("best")]
    epochs = {"best.pt": best[-1] if best else None, "last.pt": int(history[-1]["epoch"]) if history else None}
    data = {
        "run": config.get("out"), "variant": config.get("variant"), "task": config.get("task"),
        "modality": config.get("modality"), "model": config.get("model") or {}, "sizes": rt.get("model_config") or {},
        "parameters": int(parameters), "preset": config.get("preset"),
        "store": trained.get("store") or config.get("store"), "store_fingerprint": trained.get("store_fingerprint"),
        "store_frames": rt.get("store_frames"), "windows": config.get("windows"),
        "windows_count": trained.get("windows_count"), "windows_fingerprint": trained.get("windows_fingerprint"),
        "window": config.get("window") or {}, "validation": _validation(config.get("validation") or {}),
        "settings": {**{k: config.get(k) for k in _SETTINGS}, "device": rt.get("device") or config.get("device"),
                     "precision": rt.get("precision") or config.get("precision")}, "world_size": rt.get("world_size"),
        "epochs_planned": config.get("epochs"), "history": rows, "checkpoint_epochs": epochs,
        "user_model": None if (rt.get("model_config") or {}).get("source") is None else config.get("variant"),
    }
    data["tests"] = [t for t in tests if epochs.get(str(t.get("checkpoint"))) == t.get("epoch")]
    return data


def _validation(v: Mapping[str, Any]) -> dict[str, Any]:
    """What the card says of the hold-out: the method, shares asked and used, windows, the adjustment."""
    per = v.get("recordings") or []
    return {"method": v.get("method"), "fraction": v.get("fraction"), "adjusted": v.get("adjusted"),
            "train_windows": v.get("train_windows"), "val_windows": v.get("val_windows"), "recordings": len(per),
            "fractions": sorted({float(r.get("fraction", v.get("fraction") or 0)) for r in per})}


def write_card(run_dir: str, data: Mapping[str, Any]) -> str | None:
    """Write the card of ``data`` as ``run_dir``/README.md, atomically; return its path, or None
    when a README.md that is not a card is there (a user's: left as it is). The caller holds the
    run folder (the trainer's lock, or :func:`record_evaluation`'s)."""
    path = os.path.join(run_dir, CARD)
    if os.path.lexists(path) and made_by(path) != MADE_BY:
        return None
    replace_text(path, render(data), durable=False)
    return path


def read_card(path: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The data of the card at ``path``; None when there is none or the file is not a card."""
    if made_by(path) != MADE_BY:
        return None
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
        start = text.rindex(_DATA_OPEN) + len(_DATA_OPEN)
        data = json.loads(text[start:text.index(_DATA_CLOSE, start)])
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def card_tests(run_dir: str) -> list[dict[str, Any]]:
    """The test figures the card in ``run_dir`` holds (none when there is no card)."""
    data = read_card(os.path.join(run_dir, CARD))
    return list(data.get("tests") or []) if data else []


def record_evaluation(checkpoint: str, report: Mapping[str, Any], *, epoch: int | None) -> str | None:
    """Add ``report`` (``fmmodel evaluate``'s) to the card of the run folder that holds ``checkpoint``
    (``best.pt`` or ``last.pt`` of epoch ``epoch``). Returns the line to log: where the figures
    went, or why the card was left as it is (not a card, another model's, a run still training);
    None when the checkpoint is not in a run folder with a card."""
    folder = os.path.dirname(os.path.abspath(checkpoint))
    path = os.path.join(folder, CARD)
    name = os.path.basename(checkpoint)
    if name not in CHECKPOINTS or not os.path.isfile(path):
        return None
    try:
        with writer_lock(folder, "fmmodel evaluate", what="run folder"):
            data = read_card(path)
            if data is None:
                return f"{path}: not a model card of fmmodel train: left as it is"
            if data.get("variant") != report.get("variant") or data.get("checkpoint_epochs", {}).get(name) != epoch:
                return f"{path}: the card is of another model or epoch than {name}: left as it is"
            entry = _test_entry(name, epoch, report)
            key = ("checkpoint", "split", "protocol", "store")
            tests = [t for t in data.get("tests") or [] if any(t.get(k) != entry[k] for k in key)]
            write_card(folder, {**data, "tests": [*tests, entry]})
    except FmDataError:  # the run folder's writer (its trainer) holds it: its next epoch rewrites the card
        return f"{path}: the run is still being written; its model card is not updated"
    return f"model card: {path} (test figures of {name})"


def _test_entry(name: str, epoch: int | None, report: Mapping[str, Any]) -> dict[str, Any]:
    overall = (report.get("metrics") or {}).get("overall") or {}
    c, p = overall.get("class") or {}, overall.get("pixel") or {}
    recs = (report.get("metrics") or {}).get("recordings") or {}
    files = report.get("files") or {}
    store = report.get("store")
    return {"checkpoint": name, "epoch": epoch, "split": report.get("split"), "protocol": report.get("protocol"),
            "store": None if store is None else str(Location.parse(str(store)).absolute()),
            "windows": (report.get("windows") or {}).get("count"),
            "class": {k: c.get(k) for k, _ in _CLASS}, "miou": p.get("miou"),
            "recordings": {str(e.get("name", rid)): (e.get("class") or {}).get("f1") for rid, e in recs.items()},
            "report": files.get("report"), "date": f"{datetime.date.today():%Y-%m-%d}"}


# ---- rendering ---------------------------------------------------------------------------------


def _num(v: Any, fmt: str = ".3f") -> str:
    return "–" if v is None else (format(v, fmt) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))


def _window_text(w: Mapping[str, Any], name: str | None) -> str:
    shape = (f"{w.get('frames')} frames {w.get('frame_step')} apart, {_num(w.get('current_seconds'), 'g')} s of "
             f"current as {w.get('current_rows')} rows, every {_ordinal(w.get('stride'))} window, policy "
             f"{w.get('policy')}")
    return f"stored table `{name}` ({shape})" if name else f"built from parameters: {shape}"


def _ordinal(n: Any) -> str:
    n = int(n or 1)
    if n == 1:
        return ""
    return f"{n}{'th' if 10 <= n % 100 <= 20 else {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')}"


def _model_text(d: Mapping[str, Any]) -> str:
    inputs = {"both": "video and current (cross-modal)", "video": "video", "current": "arc current"}.get(
        str(d.get("modality")), str(d.get("modality")))
    task = ("the class (normal or abnormal) of each window's labelled frame" if d.get("task") == "cls"
            else "the anomaly mask of each window's labelled frame")
    s = d.get("sizes") or {}
    if d.get("user_model"):
        what = f"the user's model `{d.get('variant')}`"
    else:
        size = (d.get("model") or {}).get("size", "reference")
        what = (f"FmFormer `{d.get('variant')}`, size {size} (width {s.get('width')}, depth {s.get('depth')}, "
                f"{s.get('heads')} heads of {s.get('head_dim')}, MLP {s.get('mlp_dim')})")
    return f"{what}, {int(d.get('parameters') or 0):,} parameters: from {inputs}, it predicts {task}."


def _embedded(d: Mapping[str, Any]) -> str:
    """``d`` as one line of JSON that cannot end the HTML comment holding it (``>`` escaped)."""
    return json.dumps(d, default=str).replace(">", "\\u003e")


def render(d: Mapping[str, Any]) -> str:
    """The card's Markdown of the data ``d`` (:func:`run_card`), marked and carrying ``d``."""
    run = str(d.get("run") or ".")
    store = str(d.get("store"))
    ce = d.get("checkpoint_epochs") or {}
    hist = d.get("history") or []
    model_opt = f" --model {d['user_model']}" if d.get("user_model") else ""
    preset = f" (preset `{d['preset']}`)" if d.get("preset") else ""
    lines = [text_mark(MADE_BY),
             f"# Model card: `{d.get('variant')}`, run `{os.path.basename(run.rstrip('/')) or run}`", "",
             f"Written by `fmmodel train`{preset} after each epoch and by `fmmodel evaluate` (test figures); "
             f"the run's settings in full: `config.json`.", "",
             "## The model", "", _model_text(d), "",
             f"Trained for {len(hist)} of {d.get('epochs_planned')} epochs; `best.pt` holds epoch "
             f"{_num(ce.get('best.pt'), 'd')}, `last.pt` epoch {_num(ce.get('last.pt'), 'd')}.", "",
             "## Trained on", "",
             "| | |", "|---|---|",
             f"| store | `{store}` (fingerprint `{str(d.get('store_fingerprint'))[:16]}`, "
             f"{_num(d.get('store_frames'), ',d')} frames) |",
             f"| windows | {_window_text(d.get('window') or {}, d.get('windows'))}; {_num(d.get('windows_count'), ',d')} "
             f"windows in all (fingerprint `{str(d.get('windows_fingerprint'))[:16]}`) |"]
    v = d.get("validation") or {}
    lines.append(f"| splits | training: {_num(v.get('train_windows'), ',d')} windows of the training split of "
                 f"{v.get('recordings')} recording(s); the test split is never read in training |")
    if v.get("val_windows"):
        used = ", ".join(format(f, "g") for f in v.get("fractions") or [])
        held = (f"{_num(v.get('val_windows'), ',d')} windows: the last {used} of each recording's training block, "
                "one window span apart from the training windows (no shared frame or current sample)")
    else:
        held = "none: no validation (best.pt is the last epoch)"
    if v.get("adjusted"):
        held += f". Asked for {_num(v.get('fraction'), 'g')}: {v['adjusted']}"
    lines += [f"| validation hold-out | {held} |", "",
              "## Settings", "", "| setting | value |", "|---|---|",
              *(f"| {k} | {_num(d.get('settings', {}).get(k), 'g')} |" for k in _SETTINGS), "",
              f"`fmmodel train --config {os.path.join(run, 'config.json')} --out NEW_RUN` trains with the same "
              "settings again.", "",
              "## Validation", "", "![training curves](curves.png)", "",
              "| epoch | train loss | val loss | val F1 | val AUROC | val mIoU | samples/s | |", "|" + "---|" * 8]
    for r in hist:
        lines.append(f"| {r.get('epoch')} | {_num(r.get('train_loss'), '.4f')} | {_num(r.get('val_loss'), '.4f')} | "
                     f"{_num(r.get('val_f1'))} | {_num(r.get('val_auroc'))} | {_num(r.get('val_miou'))} | "
                     f"{_num(r.get('samples_per_s'), ',.0f')} | {'best' if r.get('best') else ''} |")
    evaluate = f"fmmodel evaluate --store {store} --checkpoint {os.path.join(run, 'best.pt')}{model_opt}"
    lines += ["", "## Test", ""]
    tests = d.get("tests") or []
    if not tests:
        lines.append(f"Not evaluated yet: `{evaluate} --out {os.path.join(run, 'eval')}` scores it on the test split.")
    else:
        lines += ["| checkpoint (epoch) | split | protocol | windows | " + " | ".join(n for _, n in _CLASS)
                  + " | mIoU | per recording F1 |", "|" + "---|" * (len(_CLASS) + 6)]
        for t in tests:
            c = t.get("class") or {}
            per = ", ".join(f"{k} {_num(x)}" for k, x in (t.get("recordings") or {}).items())
            other = "" if t.get("store") == store else f" on `{t.get('store')}`"
            lines.append(f"| {t.get('checkpoint')} ({t.get('epoch')}) | {t.get('split')}{other} | {t.get('protocol')} | "
                         f"{_num(t.get('windows'), ',d')} | " + " | ".join(_num(c.get(k)) for k, _ in _CLASS)
                         + f" | {_num(t.get('miou'))} | {per} |")
        reports = [str(t["report"]) for t in tests if t.get("report")]
        if reports:
            lines += ["", "Reports: " + ", ".join(f"`{r}`" for r in reports)]
    lines += ["", "## Use it", "", "```bash",
              f"{evaluate} --out {os.path.join(run, 'eval')}",
              f"fmmodel predict --store {store} --checkpoint {os.path.join(run, 'best.pt')}{model_opt} "
              f"--out {os.path.join(run, 'predictions.zarr')}", "```", "",
              _DATA_OPEN, _embedded(d), _DATA_CLOSE, ""]
    return "\n".join(lines)
