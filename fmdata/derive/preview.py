"""``fmdata preview``: a picture (PNG) or a short video (MP4) of one window of a store.

The PNG shows the clip's frames, oldest first, with the mask outlined (cv2 contours, yellow) and
the labelled frame framed in red, above the three current phases over the window's current rows
with the labelled frame's time and the clip frames' times marked. The MP4 plays every frame from
the clip's first to the labelled frame (only the clip frames when that span exceeds
``MAX_VIDEO_FRAMES``) at the store's fps, with the mask outline and a current strip whose red
line follows the frame's time.

The window comes from a stored table (``windows``) or is built on the fly with the
``reference`` policy and the given parameters. Reads only the frames and rows it shows.
"""
from __future__ import annotations

import os
import textwrap
from dataclasses import asdict, dataclass
from typing import Any

import cv2
import numpy as np

from fmdata.derive.windows import load_index, window_for_frame
from fmdata.errors import FmDataError
from fmdata.store import schema
from fmdata.store.atomic import atomic_file, new_figure, save_figure
from fmdata.store.handle import StoreHandle, StoreLike, location_of, open_store
from fmdata.store.outputs import check_apart, check_replaceable, mark_mp4
from fmdata.store.row_reader import ZarrAxisReader
from fmdata.store.window_table import WindowParams, current_row_indices, current_row_offsets

COMMAND = "fmdata preview"  # the mark of its pictures and videos: its --overwrite replaces only those
MAX_VIDEO_FRAMES = 1000
MAX_PNG_FRAMES = 20  # clip frames a picture draws (a 20-frame row stays readable)
OUTLINE_RGB = (255, 255, 0)
PHASE_COLOURS = ("tab:blue", "tab:orange", "tab:green")


def resolve_frame(store: StoreHandle, frame: int, recording: str | int | None) -> tuple[int, int]:
    """Return (global frame, recording id) for ``frame`` (global, or local to ``recording``) of the open ``store``.

    ``recording`` is a recording id or name. FmDataError when either is out of range.
    """
    f_off = store.frame_offsets
    if recording is None:
        if not 0 <= frame < f_off[-1]:
            raise FmDataError(f"expected a frame in 0..{f_off[-1] - 1}, got {frame}", field="frame")
        return int(frame), int(np.searchsorted(f_off, frame, side="right") - 1)
    r = store.recording_index(recording)
    n = int(f_off[r + 1] - f_off[r])
    if not 0 <= frame < n:
        raise FmDataError(f"expected a frame in 0..{n - 1} (recording {r} has {n} frames), got {frame}",
                          field="frame")
    return int(f_off[r] + frame), r


def _window_row(store: StoreHandle, g: int, windows: str | None,
                params: WindowParams) -> tuple[np.ndarray, tuple, int, float]:
    """Return (table row, columns, current_rows, current_seconds) of the window ending at global frame ``g``."""
    if windows:
        wt = store.window_table(windows)
        hit = np.flatnonzero(wt.column("frame") == g)
        if not len(hit):
            raise FmDataError(f"expected frame {g} in window table {windows!r}, got no window there (its split "
                              "is none, the strict policy dropped it, or the stride skipped it)")
        seconds = float(wt.params.get("current_seconds", params.current_seconds))
        return wt.table[hit[0]], wt.columns, wt.current_rows, seconds
    wt = window_for_frame(load_index(store, require_labels=False), g, params)
    return wt.table[0], wt.columns, params.current_rows, params.current_seconds


def current_rows_note(stored: int, rows: int, seconds: float, asked: float, *, cut: bool = False) -> str:
    """Say how a window's current is fed to a model: ``stored`` distinct rows of the store lie in
    the window (``seconds`` from first to last, of the ``asked`` seconds of history; ``cut``: the
    window begins at its recording's first row, so it holds less) and are resampled to the model's
    ``rows`` at evenly spaced row indices (:func:`fmdata.store.window_table.current_row_offsets`,
    the authors' rule)."""
    offsets = current_row_offsets(stored, rows)
    repeats = np.bincount(offsets, minlength=stored)
    span = f"{seconds:,.1f} s of the {asked:g} s of history" + (": the recording begins later" if cut else "")
    if stored > rows:
        how = f"the model reads {rows:,} of them, evenly spaced (about every {stored / rows:.1f}th)"
    elif stored < rows:
        how = (f"the model reads {rows:,} rows: each stored row {int(repeats.min())} to {int(repeats.max())} times "
               f"(about {rows / stored:.1f}), evenly spaced")
    else:
        how = "the model reads each of them once"
    return f"current: the window holds {stored:,} rows of the store ({span}); {how}"


def outlined(frame: np.ndarray, mask: np.ndarray, scale: int) -> np.ndarray:
    """Return the RGB frame enlarged ``scale`` times (nearest) with the mask's outline drawn."""
    big = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    m = cv2.resize((mask == 1).astype(np.uint8), None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    big = np.ascontiguousarray(big)
    cv2.drawContours(big, contours, -1, OUTLINE_RGB, max(1, scale // 2))
    return big


def _load(store: StoreHandle, frame: int, recording: str | int | None, windows: str | None,
          params: WindowParams) -> dict[str, Any]:
    root, meta = store.root, store.meta
    g, r = resolve_frame(store, frame, recording)
    row, columns, rows, seconds = _window_row(store, g, windows, params)
    col = {c: int(row[i]) for i, c in enumerate(columns)}
    clip = row[len(schema.WINDOW_COLUMNS):].astype(np.int64)
    start, stop = col["current_start"], col["current_stop"]
    f_off, c_off = store.frame_offsets, store.current_offsets
    names = store.recording_names
    return {"root": root, "meta": meta, "frame": g, "recording": r, "local": g - int(f_off[r]),
            "rec_first": int(f_off[r]), "rec_first_row": int(c_off[r]),
            "name": names[r] if r < len(names) else str(r), "clip": clip,
            "split": col["split"], "start": start, "stop": stop, "rows": rows, "seconds": seconds,
            "video": ZarrAxisReader(root[schema.VIDEO]).take(clip), "mask": ZarrAxisReader(root[schema.MASK]).take(clip),
            "clip_time": ZarrAxisReader(root[schema.FRAME_TIME]).take(clip),
            "current": ZarrAxisReader(root[schema.CURRENT]).take(np.arange(start, stop)),
            "current_time": ZarrAxisReader(root[schema.CURRENT_TIME]).take(np.arange(start, stop)),
            "source": f"table {windows!r}" if windows else "reference window built on the fly"}


def _current_note(w: dict[str, Any]) -> str:
    """:func:`current_rows_note` of the loaded window ``w``."""
    span = float(w["current_time"][-1] - w["current_time"][0])
    return current_rows_note(w["stop"] - w["start"], w["rows"], span, w["seconds"],
                             cut=w["start"] == w["rec_first_row"] and span < w["seconds"])


def _plot_current(ax: Any, w: dict[str, Any], t0: float, marks: bool = True) -> None:
    t = w["current_time"] - t0
    for i, ph in enumerate(schema.PHASES):
        ax.plot(t, w["current"][:, i], color=PHASE_COLOURS[i], lw=1.0, label=f"phase {ph}")
    if marks:
        read = np.unique(current_row_offsets(len(t), w["rows"]))  # the rows the model reads: a rug along the bottom
        ax.plot(t[read], np.zeros(len(read)), "|", color="0.3", ms=6, transform=ax.get_xaxis_transform(),
                clip_on=False)
        for ct in np.unique(w["clip_time"] - t0):
            ax.axvline(ct, color="0.6", lw=0.8, ls=":")
        ax.axvline(0.0, color="red", lw=1.5, label="labelled frame")
    ax.set_ylabel("current (A)")
    ax.margins(x=0.01)


def _png(w: dict[str, Any], out: str) -> None:
    last = len(w["clip"]) - 1
    # a long clip shows MAX_PNG_FRAMES of its frames, evenly spread, the labelled frame last
    shown = np.unique(np.linspace(0, last, min(last + 1, MAX_PNG_FRAMES)).round().astype(int))
    n = len(shown)
    h, wd = w["video"].shape[1:3]
    scale = max(1, 192 // max(h, wd))
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # late, as in new_figure

    fig = new_figure(figsize=(max(8.0, 1.5 * n), 5.6), dpi=110, layout="constrained")
    FigureCanvasAgg(fig)
    grid = fig.add_gridspec(2, n, height_ratios=[1.0, 1.2])
    for col, i in enumerate(shown):
        ax = fig.add_subplot(grid[0, col])
        ax.imshow(outlined(w["video"][i], w["mask"][i], scale), interpolation="nearest")
        ax.set_xticks([]), ax.set_yticks([])
        abnormal = bool((w["mask"][i] == 1).any())
        ax.set_title(f"{int(w['clip'][i]) - w['rec_first']}\n{'abnormal' if abnormal else 'normal'}", fontsize=8,
                     color="red" if abnormal else "black")
        if i == last:
            for s in ax.spines.values():
                s.set_edgecolor("red")
                s.set_linewidth(3)
    ax = fig.add_subplot(grid[1, :])
    t0 = float(w["clip_time"][-1])
    _plot_current(ax, w, t0)
    ax.set_xlabel("seconds relative to the labelled frame (dotted lines: clip frames)\n"
                  + textwrap.fill(f"{w['note']} (ticks at the bottom)", width=int(fig.get_figwidth() * 15)), fontsize=9)
    ax.legend(loc="upper left", fontsize=8, ncols=4)
    label = "abnormal" if (w["mask"][-1] == 1).any() else "normal"
    fig.suptitle(f"recording {w['recording']} ({w['name']}), frame {w['local']} (global {w['frame']}), "
                 f"split {schema.SPLIT_NAMES.get(w['split'], w['split'])}, {label}; {w['source']}; "
                 f"yellow: mask outline", fontsize=9)
    save_figure(fig, out, made_by=COMMAND)


def _strip(w: dict[str, Any], width: int, height: int) -> tuple[np.ndarray, Any]:
    """Render the current traces as an RGB image; return it and a time -> pixel column function."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # late, as in new_figure

    fig = new_figure(figsize=(width / 100, height / 100), dpi=100)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_axes((0.1, 0.12, 0.88, 0.84))
    t0 = float(w["clip_time"][-1])
    _plot_current(ax, w, t0, marks=False)
    ax.tick_params(labelsize=6)
    ax.yaxis.label.set_fontsize(6)
    canvas.draw()
    img = np.asarray(canvas.buffer_rgba())[..., :3].copy()
    to_px = lambda t: int(round(ax.transData.transform((t - t0, 0.0))[0]))
    return img, to_px


def _mp4(w: dict[str, Any], out: str) -> int:
    root, first, last = w["root"], int(w["clip"][0]), w["frame"]
    idx = np.arange(first, last + 1) if last - first + 1 <= MAX_VIDEO_FRAMES else w["clip"]
    video, mask = ZarrAxisReader(root[schema.VIDEO]).take(idx), ZarrAxisReader(root[schema.MASK]).take(idx)
    times = ZarrAxisReader(root[schema.FRAME_TIME]).take(idx)
    h, wd = video.shape[1:3]
    scale = max(1, 320 // max(h, wd))
    fw, fh = wd * scale + (wd * scale) % 2, h * scale + (h * scale) % 2
    strip, to_px = _strip(w, fw, 120)
    with atomic_file(out, suffix=".mp4") as tmp:  # OpenCV picks the container by the suffix
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), float(w["meta"].fps or 25.0),
                                 (fw, fh + 120))
        if not writer.isOpened():
            raise FmDataError("expected a writable MP4 file (OpenCV's mp4v writer), got a failure to open it", out)
        try:
            for k, g in enumerate(idx):
                img = np.zeros((fh + 120, fw, 3), np.uint8)
                img[:h * scale, :wd * scale] = outlined(video[k], mask[k], scale)
                img[fh:] = strip
                x = to_px(float(times[k]))
                cv2.line(img, (x, fh), (x, fh + 119), (255, 0, 0), 1)
                tag = "abnormal" if (mask[k] == 1).any() else "normal"
                cv2.putText(img, f"frame {int(g) - w['rec_first']} {tag}", (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (255, 255, 255), 1, cv2.LINE_AA)
                writer.write(cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        mark_mp4(tmp, COMMAND)  # what lets a later --overwrite recognise its own video
    return len(idx)


@dataclass(frozen=True)
class PreviewReport:
    """What :func:`render_preview` drew: the file, the window (global and local frame, clip frames
    local to the recording, current rows), its label and split, how its current rows are read
    (``current``: :func:`current_rows_note`), and for MP4 the frames written."""

    out: str
    frame: int
    recording: int
    local_frame: int
    clip: list[int]
    current_rows: list[int]
    current_rows_read: list[int]
    label: int
    split: str
    current: str = ""
    frames_written: int | None = None

    def summary(self) -> str:
        """Return the human summary: what was drawn, and how the window's current is read."""
        what = f"{self.frames_written} video frames" if self.frames_written is not None else "picture"
        return (f"{self.out}: {what} of recording {self.recording} frame {self.local_frame} "
                f"({self.split}, {'abnormal' if self.label else 'normal'}); clip frames {self.clip}, "
                f"current rows {self.current_rows[0]}..{self.current_rows[1] - 1}\n{self.current}")

    def to_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-able dict."""
        return asdict(self)


def render_preview(store: StoreLike, frame: int, out: str, *, recording: str | int | None = None,
                   windows: str | None = None, params: WindowParams = WindowParams(),
                   overwrite: bool = False) -> PreviewReport:
    """Write a preview of the window ending at ``frame`` of ``store`` (an open store or its location)
    to ``out`` (.png picture or .mp4 video).

    ``frame`` is global, or local to ``recording`` (id or name) when given. ``windows`` names a
    stored window table; otherwise a reference window with ``params`` is built. An ``out`` inside
    the store is refused; an existing ``out`` is refused unless ``overwrite``, and then replaced
    only when it is a preview (:mod:`fmdata.store.outputs`); the file appears complete or not at all.
    """
    ext = os.path.splitext(out)[1].lower()
    if ext not in (".png", ".mp4"):
        raise FmDataError(f"expected a file name ending in .png or .mp4, got {ext or 'no extension'!r}", out,
                          field="out")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise FmDataError("expected an existing folder for the preview, got none", parent, field="out")
    check_apart(out, [location_of(store)], field="out")
    check_replaceable(out, overwrite=overwrite, command=COMMAND)
    w = _load(open_store(store), frame, recording, windows, params)
    w["note"] = _current_note(w)
    written = _mp4(w, out) if ext == ".mp4" else None
    if ext == ".png":
        _png(w, out)
    return PreviewReport(out=out, frame=w["frame"], recording=w["recording"], local_frame=w["local"],
                         clip=[int(c) - w["rec_first"] for c in w["clip"]], current_rows=[w["start"], w["stop"]],
                         current_rows_read=current_row_indices(w["start"], w["stop"], w["rows"])[[0, -1]].tolist(),
                         label=int((w["mask"][-1] == 1).any()),
                         split=schema.SPLIT_NAMES.get(w["split"], str(w["split"])), current=w["note"],
                         frames_written=written)
