"""``fmdata inspect``: what a MAT file, a folder of V1 files or a V2 folder holds.

:func:`inspect_path` returns a JSON-able report; :func:`format_report` renders it for people.
A MAT file gives its format and, per variable, MATLAB class, MATLAB-order shape, storage and
sizes (from :func:`fmdata.sources.matinfo.describe`, no array data read unless ``check=True``),
and for video and mask whether ``fmdata convert --layout source`` copies their chunks (or why
not) and what a random frame costs to read in their chunk grid (``source_layout``).
A V2 folder gives its recordings: for each, the video file's variables and frame count, the
current log (rows, first and last timestamp), the per-frame timestamps and the split counts.
Its problems come from the one validator that ``fmdata convert`` uses
(:mod:`fmdata.sources.validate`): every structural problem, then (when the pieces fit) the
first content problem, so that inspect flags exactly what convert refuses. What a folder is
(a V2 folder, or a set of V1 files: its ``*.mat`` files) is the validator's one rule,
:func:`fmdata.sources.validate.folder_layout`.
"""
from __future__ import annotations

import json
import os
from collections import deque
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from fmdata.compute.memory import format_bytes
from fmdata.errors import FmDataError, first_line
from fmdata.sources import matinfo
from fmdata.sources.hdf5_chunks import copy_problem, random_read
from fmdata.sources.layouts import (
    LAYOUT_V1,
    LAYOUT_V2,
    V1_VARIABLES,
    V2_CURRENTS,
    V2_SPLIT_FILES,
    V2_TIMESTAMPS,
    V2_VARIABLES,
    V2_VIDEOS,
    v2_key,
)
from fmdata.sources.validate import folder_layout, open_sources, v2_folder_problems, v2_names


def inspect_path(path: str | os.PathLike[str], *, check: bool = False) -> dict[str, Any]:
    """Describe ``path`` (MAT file, V2 folder or folder of V1 files); return a JSON-able report.

    ``check=True`` also reads every variable once (chunk by chunk) to find corrupt data.
    Raises FmDataError when ``path`` is missing, is not a MAT file or is an unreadable one.
    """
    p = Path(path)
    if not p.exists():
        raise FmDataError("expected a MAT file, a folder of them or a V2 folder, got nothing there", p)
    if p.is_dir():
        layout, mats = folder_layout(p)  # the rule convert follows too
        if layout == LAYOUT_V2:
            return _inspect_v2(p, check)
        files = [_inspect_mat(Path(m), check) for m in mats]
        problems = [f"{os.path.basename(f['path'])}: {problem}" for f in files for problem in f["problems"]]
        return {"kind": "v1-folder", "path": str(p), "files": files, "problems": problems}
    return _inspect_mat(p, check)


def _inspect_mat(p: Path, check: bool) -> dict[str, Any]:
    info = matinfo.describe(p)
    report = info.to_dict()
    report["kind"] = "mat"
    names = {v.name for v in info.variables}
    report["layout"] = (LAYOUT_V1 if set(V1_VARIABLES.values()) <= names
                        else "v2-video" if set(V2_VARIABLES.values()) <= names else "other")
    frames = None
    video = next((v for v in info.variables if v.name in (V1_VARIABLES["video"], V2_VARIABLES["video"])), None)
    if video is not None:
        frames = video.shape[3] if len(video.shape) == 4 else 1
    report["frames"] = frames
    report["source_layout"] = _source_layout(info)
    report["problems"] = [problem for v in info.variables if (problem := v.problem())]
    if check and not report["problems"]:
        report["checked"] = check_readable(p, info)
    return report


def _source_layout(info: matinfo.MatFileInfo) -> dict[str, Any]:
    """Per video and mask variable: whether ``convert --layout source`` copies its chunks (or why not),
    its chunk grid's frames per chunk, and what one random frame costs to read in that grid."""
    out: dict[str, Any] = {}
    for v in info.variables:
        if v.name not in (V1_VARIABLES["video"], V1_VARIABLES["mask"], V2_VARIABLES["video"]):
            continue
        reason = copy_problem(v, info.format)
        out[v.name] = {"copied": reason is None, "reason": reason,
                       "chunk_frames": int(v.h5_chunks[0]) if v.h5_chunks and v.layout == "chunked" else None,
                       "random_read": random_read(v)}
    return out


def check_readable(p: Path, info: matinfo.MatFileInfo | None = None) -> bool:
    """Read every variable of MAT file ``p`` once (HDF5: chunk by chunk); raise FmDataError if any fails."""
    info = info or matinfo.describe(p)
    for v in info.variables:
        problem = v.problem()
        if problem:
            raise FmDataError(problem, p)
    if info.format != "7.3":
        import scipy.io  # v5/v7 files only; scipy.io costs 0.2 s to import

        try:
            scipy.io.loadmat(p)
        except Exception as exc:  # scipy signals corruption with many exception types
            raise FmDataError(first_line(f"expected readable variables, got corrupt data ({exc})"), p) from None
        return True
    with h5py.File(p, "r") as f:
        for v in info.variables:
            if v.layout not in ("compact", "contiguous", "chunked"):
                continue
            ds = f[v.name]
            try:
                if ds.chunks is None:
                    ds[...]
                else:
                    for sel in ds.iter_chunks():
                        ds[sel]
            except (OSError, RuntimeError, ValueError) as exc:
                first = first_line(exc) or type(exc).__name__
                raise FmDataError(f"variable {v.name!r}: expected readable data, got corrupt data ({first})", p) from None
    return True


def _csv_summary(p: Path) -> dict[str, Any]:
    """Header, row count and first/last first-column value of a CSV file, read as a stream (bytes that
    are not UTF-8 shown as U+FFFD: the validator names the file and the line)."""
    with open(p, newline="", encoding="utf-8", errors="replace") as fh:
        header = fh.readline().rstrip("\r\n")
        first = fh.readline().rstrip("\r\n")
        rows = 1 if first else 0
        tail: deque[str] = deque([first], maxlen=1)
        for line in fh:
            if line.strip():
                rows += 1
                tail.append(line)
    last = tail[-1].rstrip("\r\n") if rows else ""
    return {"file": str(p), "header": header, "rows": rows,
            "first": first.split(",")[0] if first else None, "last": last.split(",")[0] if last else None}


def _load_json(p: Path) -> dict[str, list[int]]:
    """The split lists of a JSON file for counting; {} when it is missing or unusable (the validator
    reports why)."""
    try:
        data = json.loads(p.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(v, list) and all(isinstance(i, int) for i in v)}


def _problem(err: FmDataError, folder: Path) -> str:
    """One problem line, its path relative to the folder."""
    if err.path is None:
        return err.message
    rel = os.path.relpath(err.path, folder)
    return err.message if rel == "." else f"{rel}: {err.message}"


def _inspect_v2(p: Path, check: bool) -> dict[str, Any]:
    problems = [_problem(e, p) for e in v2_folder_problems(p)]
    if not problems:
        try:
            open_sources([str(p)])
        except FmDataError as exc:
            problems.append(_problem(exc, p))
    train = _load_json(p / V2_SPLIT_FILES["train"])
    test = _load_json(p / V2_SPLIT_FILES["test"])
    recordings = []
    for name in v2_names(str(p)):
        rec: dict[str, Any] = {"name": name}
        video = _inspect_mat(p / V2_VIDEOS / f"{name}.mat", check)
        rec["video"] = {"file": video["path"], "format": video["format"], "frames": video["frames"],
                        "variables": {v["name"]: {"class": v["matlab_class"], "shape": v["shape"], "layout": v["layout"],
                                                  "chunks": v["chunks"], "filters": v["filters"]}
                                      for v in video["variables"]},
                        "source_layout": video["source_layout"]}
        for part in (V2_CURRENTS, V2_TIMESTAMPS):
            csv_path = p / part / f"{name}.csv"
            rec[part] = _csv_summary(csv_path) if csv_path.is_file() else None
        n = video["frames"]
        tr = np.asarray(train.get(v2_key(name), []), dtype=np.int64)
        te = np.asarray(test.get(v2_key(name), []), dtype=np.int64)
        rec["train"], rec["test"] = int(tr.size), int(te.size)
        rec["neither"] = int(n - np.union1d(tr, te).size) if n is not None else None
        recordings.append(rec)
    return {"kind": "v2-folder", "path": str(p), "recordings": recordings, "problems": problems}


# ---- text rendering -----------------------------------------------------------------------------
def _mb(n: int | None) -> str:
    return "-" if n is None else format_bytes(n)


def _dims(shape: Any) -> str:
    return "x".join(str(s) for s in shape) if shape else "-"


def _storage(v: dict[str, Any]) -> str:
    text = v["layout"]
    if v.get("chunks"):
        text += f" {_dims(v['chunks'])}"
    if v.get("filters"):
        text += " " + ",".join(v["filters"])
    return text


_FORMAT_NAMES = {"7.3": "MATLAB v7.3 (HDF5)", "5": "MATLAB v5/v6/v7", "4": "MATLAB v4"}


def _format_mat(r: dict[str, Any], indent: str = "") -> list[str]:
    lines = [f"{indent}{r['path']}: {_FORMAT_NAMES.get(r['format'], r['format'])}, {_mb(r['file_bytes'])}"
             + (f", {r['layout']} layout" if r.get("layout") not in (None, "other") else "")]
    if r.get("header"):
        lines.append(f"{indent}  header: {r['header']}")
    rows = [("variable", "class", "MATLAB shape", "storage", "stored", "data")]
    rows += [(v["name"], v["matlab_class"], _dims(v["shape"]), _storage(v), _mb(v["stored_bytes"]), _mb(v["data_bytes"]))
             for v in r["variables"]]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        lines.append(indent + "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    lines += _format_source_layout(r.get("source_layout") or {}, indent + "  ")
    if r.get("checked"):
        lines.append(f"{indent}  every variable read back without error")
    return lines


def _format_source_layout(layout: dict[str, Any], indent: str) -> list[str]:
    """One line per video/mask variable: copied by ``--layout source`` or not, and its random-read cost."""
    lines = []
    for name, c in layout.items():
        cost = c["random_read"]
        ratio = cost["decoded_bytes"] / cost["frame_bytes"] if cost["frame_bytes"] else float("nan")
        what = (f"copied by --layout source (chunks of {c['chunk_frames']} frame(s))" if c["copied"]
                else f"not copied by --layout source: {c['reason']}")
        read = (f"a random frame decodes {cost['chunks']} chunk(s), {_mb(cost['decoded_bytes'])} = {ratio:.1f} x the "
                f"frame (plain layout: 1.0 x)" if c["copied"] else "decoded and encoded in one-frame chunks")
        lines.append(f"{indent}{name}: {what}; {read}")
    return lines


def format_report(report: dict[str, Any]) -> str:
    """Render a report of :func:`inspect_path` as aligned text lines."""
    kind = report["kind"]
    if kind == "mat":
        lines = _format_mat(report)
    elif kind == "v1-folder":
        lines = [f"{report['path']}: folder of {len(report['files'])} MAT file(s)"]
        for r in report["files"]:
            lines += _format_mat(r, "  ")
    else:
        recs = report["recordings"]
        lines = [f"{report['path']}: V2 folder with {len(recs)} recording(s)"]
        for rec in recs:
            v = rec["video"]
            lines.append(f"  {rec['name']}: {v['frames']} frames; train {rec['train']}, test {rec['test']}, "
                         f"neither {rec['neither']}")
            for name, var in v["variables"].items():
                lines.append(f"    {V2_VIDEOS}/{rec['name']}.mat '{name}': {var['class']} {_dims(var['shape'])}, {_storage(var)}")
            lines += _format_source_layout(v.get("source_layout") or {}, "    ")
            for part, what in ((V2_CURRENTS, "current rows"), (V2_TIMESTAMPS, "frame timestamps")):
                c = rec.get(part)
                if c:
                    lines.append(f"    {part}/{rec['name']}.csv: {c['rows']} {what}, {c['first']} .. {c['last']}")
    for problem in report.get("problems", []):
        lines.append(f"  problem: {problem}")
    return "\n".join(lines)
