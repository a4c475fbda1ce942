"""The benchmark's comparison table: per model and window policy, mean ± std over seeds.

:func:`write_table` reads the cells' evaluation reports (``fmmodel evaluate``'s report, plus the
validation scores of each run's best epoch) and writes, atomically, ``table.json`` (every number,
per cell and aggregated), ``table.md`` (the tables a paper would show: test metrics overall and
per recording, validation beside test) and ``table.png`` (the metrics of each model with their
spread over seeds). The header states the protocol: store, seeds, epochs, model size and each
model's parameters, windows per model, the data path, validation hold-out, preprocessing,
checkpoint and test samples.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fmdata.store.atomic import new_figure, replace_text, save_figure
from fmmodel.errors import FmModelError
from fmmodel.scoring.alarms import AlarmPolicy
from fmmodel.scoring.report import write_json
from fmmodel.scoring.timeline import describe_policy

CLASS_METRICS = (("accuracy", "ACC"), ("f1", "F1"), ("fdr", "FDR"), ("mdr", "MDR"), ("auroc", "AUROC"), ("ap", "AP"))
PIXEL_METRICS = (("pixel_accuracy", "PA"), ("mean_pixel_accuracy", "MPA"), ("miou", "mIoU"))
VALIDATION = (("val_f1", "val F1"), ("val_auroc", "val AUROC"))
PICTURE_METRICS = ("accuracy", "f1", "auroc", "ap")
# the alarms of the test split as events (evaluate's "alarms": fmmodel.scoring.offline_alarms)
ALARM_FIGURES = (("recall", "event recall"), ("delay_median", "delay median s"), ("delay_p90", "delay p90 s"),
                 ("false_alarms_per_hour", "false alarms/h"), ("false_alarms_per_hour_upper95", "95% upper /h"),
                 ("chatter", "chatter"), ("nab_standard", "NAB"), ("nab_reward_low_FP_rate", "NAB low FP"))
TABLE_MD, TABLE_JSON, TABLE_PNG = "table.md", "table.json", "table.png"


@dataclass(frozen=True)
class Cell:
    """One (model, window policy, seed) of a benchmark."""

    model: str
    policy: str
    seed: int


@dataclass(frozen=True)
class BenchmarkTable:
    """The written table: its markdown text, the paths of its files, and the aggregated rows."""

    markdown: str
    markdown_path: str
    json_path: str
    picture_path: str
    rows: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        """Plain types only."""
        return {"markdown_path": self.markdown_path, "json_path": self.json_path, "picture_path": self.picture_path,
                "rows": self.rows}


def _spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and sample standard deviation (ddof 1; 0 for one seed) of the defined values."""
    v = [float(x) for x in values if x is not None and not math.isnan(float(x))]
    if not v:
        return {"mean": None, "std": None, "n": 0, "values": []}
    return {"mean": float(np.mean(v)), "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0, "n": len(v),
            "values": v}


def label(model: str) -> str:
    """A model's name as the table shows it: a factory file's path shortened to the file's name."""
    spec, sep, attr = model.rpartition(":")
    return f"{os.path.basename(spec)}:{attr}" if sep and spec.endswith(".py") else model


def _scores(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """The table's numbers of one metrics entry (overall or one recording) of an evaluation report."""
    c, p = metrics.get("class", {}), metrics.get("pixel") or {}
    out = {k: c.get(k) for k, _ in CLASS_METRICS}
    out.update({k: p.get(k) for k, _ in PIXEL_METRICS})
    out["n"] = c.get("n")
    return out


def _alarm_figures(report: Mapping[str, Any]) -> dict[str, Any]:
    """The alarm figures of one cell's report (empty when it has none)."""
    a = report.get("alarms")
    if not a:
        return {}
    o = a["overall"]
    return {**{k: o.get(k) for k, _ in ALARM_FIGURES if k in o}, "events": o.get("events"),
            **{f"nab_{p}": v for p, v in o.get("nab", {}).items()}}


def aggregate(cells: Sequence[Cell], reports: Mapping[Cell, Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per (model, policy): test scores overall and per recording, and validation scores,
    each as {mean, std, n} over the seeds; the number of test samples of one cell."""
    groups: dict[tuple[str, str], list[Cell]] = {}
    for cell in cells:
        groups.setdefault((cell.model, cell.policy), []).append(cell)
    rows = []
    for (model, policy), members in groups.items():
        overall = [_scores(reports[c]["metrics"]["overall"]) for c in members]
        keys = [k for k, _ in CLASS_METRICS + PIXEL_METRICS]
        row: dict[str, Any] = {"model": model, "policy": policy, "seeds": [c.seed for c in members],
                               "task": reports[members[0]].get("task"), "test_samples": overall[0]["n"],
                               "test": {k: _spread([o[k] for o in overall]) for k in keys}}
        recordings: dict[str, Any] = {}
        for rid, entry in reports[members[0]]["metrics"]["recordings"].items():
            per = [_scores(reports[c]["metrics"]["recordings"][rid]) for c in members]
            recordings[str(rid)] = {"name": entry.get("name", str(rid)), "test_samples": per[0]["n"],
                                    **{k: _spread([p[k] for p in per]) for k in keys}}
        row["recordings"] = recordings
        val = [reports[c].get("validation") or {} for c in members]
        row["validation"] = {k: _spread([v.get(k) for v in val]) for k, _ in VALIDATION}
        alarms = [_alarm_figures(reports[c]) for c in members]
        row["alarms"] = {k: _spread([a.get(k) for a in alarms]) for k, _ in ALARM_FIGURES}
        row["alarm_events"] = alarms[0].get("events")
        rows.append(row)
    return rows


def _fmt(s: Mapping[str, Any] | None) -> str:
    if not s or s.get("mean") is None:
        return "-"
    return f"{s['mean']:.3f} ± {s['std']:.3f}" if s["n"] > 1 else f"{s['mean']:.3f}"


def _markdown(rows: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any]) -> str:
    seg = any(r["task"] == "seg" for r in rows)
    test_cols = CLASS_METRICS + (PIXEL_METRICS if seg else ())
    lines = ["# Benchmark", "", *_header(protocol), "", "Values: mean ± sample standard deviation over seeds.", "",
             "## Test, overall", "",
             "| model | policy | test samples | " + " | ".join(n for _, n in test_cols) + " | "
             + " | ".join(n for _, n in VALIDATION) + " |",
             "|---|---|---:|" + "---:|" * (len(test_cols) + len(VALIDATION))]
    for r in rows:
        lines.append(f"| {label(r['model'])} | {r['policy']} | {r['test_samples']} | "
                     + " | ".join(_fmt(r["test"][k]) for k, _ in test_cols) + " | "
                     + " | ".join(_fmt(r["validation"][k]) for k, _ in VALIDATION) + " |")
    lines += ["", "## Test, per recording", "",
              "| model | policy | recording | test samples | " + " | ".join(n for _, n in test_cols) + " |",
              "|---|---|---|---:|" + "---:|" * len(test_cols)]
    for r in rows:
        for rec in r["recordings"].values():
            lines.append(f"| {label(r['model'])} | {r['policy']} | {rec['name']} | {rec['test_samples']} | "
                         + " | ".join(_fmt(rec[k]) for k, _ in test_cols) + " |")
    if any(r["alarm_events"] is not None for r in rows):
        lines += ["", "## Test, alarms as events", "", protocol["alarms"], "",
                  "| model | policy | events | " + " | ".join(n for _, n in ALARM_FIGURES) + " |",
                  "|---|---|---:|" + "---:|" * len(ALARM_FIGURES)]
        for r in rows:
            events = "-" if r["alarm_events"] is None else r["alarm_events"]
            lines.append(f"| {label(r['model'])} | {r['policy']} | {events} | "
                         + " | ".join(_fmt(r["alarms"][k]) for k, _ in ALARM_FIGURES) + " |")
    return "\n".join(lines) + "\n"


def _header(protocol: Mapping[str, Any]) -> list[str]:
    """The protocol a table's numbers come from, one markdown bullet per part."""
    models = protocol["windows"]
    size = dict(protocol.get("model") or {})
    size_text = str(size.pop("size", "reference"))
    if size:
        size_text += " with " + ", ".join(f"{k}={v}" for k, v in size.items())
    parameters = protocol.get("parameters") or {}
    data = protocol.get("data") or {}
    epochs = protocol.get("epochs") or []
    return [
        f"- Store `{protocol['store']}`; seeds {protocol['seeds']}.",
        f"- Training: {' or '.join(str(e) for e in epochs) or '?'} epoch(s) per run; model size {size_text}; "
        "parameters per model: " + "; ".join(f"{label(m)}: {parameters[m]:,}" if parameters.get(m) is not None
                                              else f"{label(m)}: ?" for m in models) + ".",
        "- Windows per model: " + "; ".join(f"{label(m)}: {w}" for m, w in models.items()) + ".",
        f"- Data path (`--data {data.get('requested', 'auto')}`): training {' and '.join(data.get('training') or ['?'])}"
        f", scoring {' and '.join(data.get('scoring') or ['?'])}.",
        f"- Validation: {_validation_text(protocol['val_fraction'])}; preprocessing {protocol['preprocessing']}.",
        f"- Test: every test window of the policy (stride 1), scored with the {protocol['evaluation']} evaluation "
        "protocol.",
    ]


def _validation_text(fraction: float) -> str:
    if not fraction:
        return "none (no hold-out: each run's last epoch is its checkpoint)"
    return (f"the last {fraction:.0%} of each recording's training block, one window span away from the training "
            "windows; checkpoint: each run's best validation epoch (toolkit format)")


def _picture(path: str, rows: Sequence[Mapping[str, Any]], protocol: Mapping[str, Any]) -> None:
    """Grouped bars: one group per metric, one bar per (model, policy) at its mean over seeds,
    an error bar of one standard deviation, and a dot per seed; the title says the store, the
    epochs and the model size (``protocol``)."""
    names = dict(CLASS_METRICS + PIXEL_METRICS)
    metrics = PICTURE_METRICS + (("miou",) if any(r["task"] == "seg" for r in rows) else ())
    fig = new_figure(figsize=(2.0 + 1.5 * len(metrics), 4.0), dpi=110)
    ax = fig.add_subplot()
    width = 0.8 / max(len(rows), 1)
    x = np.arange(len(metrics))
    for i, r in enumerate(rows):
        pos = x + (i - (len(rows) - 1) / 2) * width
        means = [r["test"][k]["mean"] if r["test"][k]["mean"] is not None else np.nan for k in metrics]
        stds = [r["test"][k]["std"] or 0.0 for k in metrics]
        ax.bar(pos, means, width, yerr=stds, capsize=3, alpha=0.85,
                      label=f"{label(r['model'])} ({r['policy']}, {len(r['seeds'])} seed(s))")
        for p, k in zip(pos, metrics):
            values = r["test"][k]["values"]
            ax.scatter(np.full(len(values), p), values, s=9, color="black", zorder=3)
    ax.set_xticks(x, [names[k] for k in metrics])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test score")
    epochs = " or ".join(str(e) for e in protocol.get("epochs") or []) or "?"
    size = (protocol.get("model") or {}).get("size", "reference")
    ax.set_title(f"test scores on {os.path.basename(str(protocol['store']).rstrip('/'))}: {epochs} epoch(s), model "
                 f"size {size}\nmean over seeds; bar: one std; dots: seeds", fontsize=9)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=min(len(rows), 2), frameon=False)
    fig.tight_layout()
    save_figure(fig, path, made_by="fmmodel benchmark")


def check_tables(out: str) -> None:
    """Raise FmModelError when the folder ``out`` holds table files that a benchmark did not write:
    each run rewrites table.md, table.json and table.png, so they must be an earlier benchmark's
    (its table.json names a protocol, rows and cells) or absent. Nothing is changed."""
    present = [n for n in (TABLE_MD, TABLE_JSON, TABLE_PNG) if os.path.lexists(os.path.join(out, n))]
    if not present:
        return
    try:
        with open(os.path.join(out, TABLE_JSON), encoding="utf-8") as fh:
            saved = json.load(fh)
        ours = isinstance(saved, dict) and {"protocol", "rows", "cells"} <= set(saved)
    except (OSError, ValueError):
        ours = False
    if not ours or any(os.path.islink(os.path.join(out, n)) or not os.path.isfile(os.path.join(out, n))
                       for n in present):
        raise FmModelError(f"expected a benchmark folder (a run rewrites its {', '.join(present)}), got files "
                           f"fmmodel benchmark did not write; nothing was written: choose another --out", out)


def write_table(out: str, cells: Sequence[Cell], *, reports: Mapping[Cell, Mapping[str, Any]],
                settings: Mapping[str, Any], preprocessing: str, val_fraction: float,
                model: Mapping[str, Any] | None = None, data: str = "auto") -> BenchmarkTable:
    """Aggregate the cells' ``reports`` and write table.md, table.json and table.png into ``out``.

    ``model`` is the model size every cell was built with (``TrainConfig.model``), ``data`` the
    data path asked for (``--data``); the cells' reports say the parameters of each model, the
    epochs each run trained (``training.epochs``) and the data paths taken (``training.data``,
    ``data.path``)."""
    rows = aggregate(cells, reports)
    first = {c.model: reports[c] for c in cells}
    every = [reports[c] for c in cells]
    protocol = {"store": next(iter(reports.values()))["store"], "seeds": sorted({c.seed for c in cells}),
                "preprocessing": preprocessing, "val_fraction": val_fraction,
                "evaluation": next(iter(reports.values())).get("protocol", "toolkit"),
                "windows": {m: _window_text(r["windows"]["params"]) for m, r in first.items()},
                "epochs": sorted({r["training"]["epochs"] for r in every if r.get("training")}),
                "model": dict(model or {}), "parameters": {m: r.get("parameters") for m, r in first.items()},
                "data": {"requested": data,
                         "training": sorted({str(r["training"]["data"]) for r in every if r.get("training")}),
                         "scoring": sorted({str((r.get("data") or {}).get("path")) for r in every})},
                "alarms": _alarm_text(next(iter(reports.values())).get("alarms"))}
    markdown = _markdown(rows, protocol)
    os.makedirs(out, exist_ok=True)
    paths = [os.path.join(out, name) for name in (TABLE_MD, TABLE_JSON, TABLE_PNG)]
    cell_rows = [{"model": c.model, "policy": c.policy, "seed": c.seed, "test": _scores(reports[c]["metrics"]["overall"]),
                  "validation": reports[c].get("validation"), "alarms": _alarm_figures(reports[c])} for c in cells]
    # table.json first: it is what marks the folder's table files as a benchmark's (check_tables)
    write_json(paths[1], {"protocol": protocol, "settings": dict(settings), "rows": rows, "cells": cell_rows})
    replace_text(paths[0], markdown)
    _picture(paths[2], rows, protocol)
    return BenchmarkTable(markdown=markdown, markdown_path=paths[0], json_path=paths[1], picture_path=paths[2],
                          rows=rows)


def _alarm_text(alarms: Mapping[str, Any] | None) -> str:
    """How the alarm figures were made (the policy of the first cell: all cells share it)."""
    if not alarms:
        return "no alarm figures"
    p = AlarmPolicy.from_dict(alarms["policy"])
    return (f"Decisions every {alarms['every']:g} s from the test windows' scores (as fmmodel watch replays a "
            f"recording), alarms: {describe_policy(p)}; an event is detected by a raise from its onset to "
            f"{alarms['tolerance']:g} s after its end; false alarms per hour of normal test time with the one-sided "
            "95% Poisson upper bound; NAB: normalised score, standard and reward_low_FP_rate profiles "
            "(docs/online.md).")


def _window_text(p: Mapping[str, Any]) -> str:
    return (f"{p.get('frames')} frames step {p.get('frame_step')}, {p.get('current_rows')} current rows over "
            f"{p.get('current_seconds')} s")
