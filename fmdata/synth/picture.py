"""A picture of a simulated recording: typical scenes, the life of one hot spot, and the current.

``fmdata synth --preview`` draws it; docs/synthetic-data.md shows one.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from fmdata.store import schema
from fmdata.store.atomic import new_figure, save_figure
from fmdata.synth import simulation as synth
from fmdata.synth.ownership import COMMAND


def _pick_frames(rec: synth.Recording, count: int) -> list[tuple[int, str]]:
    """Frames worth showing: clear normal, clear anomaly, anomaly under dense mist, light mist, flare."""
    picks: list[tuple[int, str]] = []
    labels = rec.labels()
    density = rec.mist_density(0, rec.n_frames)
    clear = density < 0.02
    candidates = [
        (np.nonzero((labels == 0) & clear)[0], "normal"),
        (np.nonzero((labels == 1) & clear)[0], "hot spot"),
        (np.nonzero((labels == 1) & (density >= 1.0))[0], "hot spot under dense mist"),
        (np.nonzero((labels == 0) & (density > 0.15) & (density < 0.6))[0], "light mist"),
        (np.nonzero((labels == 1) & (density > 0.15) & (density < 0.6))[0], "hot spot, light mist"),
    ]
    for frames, title in candidates:
        if frames.size and len(picks) < count:
            a = next((a for a in rec.anomalies if a.start <= frames[frames.size // 2] < a.stop), None)
            f = int(frames[frames.size // 2])
            if a is not None and title.startswith("hot spot"):  # show the spot near its largest
                inside = frames[(frames >= a.start) & (frames < a.stop)]
                f = int(inside[np.argmin(np.abs(inside - (a.start + a.stop) // 2))])
            picks.append((f, title))
    return picks


def _life_frames(rec: synth.Recording, count: int) -> list[tuple[int, str]]:
    """Frames across the life of the first hot spot that mist never touches (appear, grow, fade)."""
    for a in rec.anomalies:
        if a.stop - a.start >= count and not rec.mist_density(a.start, a.stop).any():
            frames = np.linspace(a.start, a.stop - 1, count).round().astype(int)
            return [(int(f), f"+{(f - a.start) / rec.cfg.fps:.1f} s") for f in frames]
    return []


def plot_preview(rec: synth.Recording, path: str | os.PathLike[str], count: int = 5) -> Path:
    """Draw frames with their masks (typical scenes, then the life of one hot spot) and the three
    current phases of ``rec`` to the PNG ``path``; return the path."""
    rows = [(_pick_frames(rec, count), "{title}"), (_life_frames(rec, 6), "one hot spot {title}")]
    rows = [r for r in rows if r[0]]
    cols = max(3, *(len(r[0]) for r in rows))
    fig = new_figure(figsize=(2.0 * cols, 2.1 * 2 * len(rows) + 3.0), layout="constrained")
    grid = fig.add_gridspec(2 * len(rows) + 1, cols, height_ratios=[1] * (2 * len(rows)) + [1.6])
    for r, (picks, fmt) in enumerate(rows):
        for i, (f, title) in enumerate(picks):
            video, mask = rec.render(f, f + 1)
            ax = fig.add_subplot(grid[2 * r, i])
            ax.imshow(video[0], interpolation="nearest")
            ax.set_title(f"frame {f}\n" + fmt.format(title=title), fontsize=8)
            ax.axis("off")
            ax = fig.add_subplot(grid[2 * r + 1, i])
            ax.imshow(mask[0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
            ax.set_title(f"mask: {int(mask[0].sum())} px", fontsize=8)
            ax.axis("off")
    ax = fig.add_subplot(grid[-1, :])
    step = max(1, rec.n_frames // 4000)
    frames = np.arange(0, rec.n_frames, step)
    amps = rec.current(0, rec.n_frames)[::step]
    t = frames / rec.cfg.fps
    for p, name in enumerate(schema.PHASES):
        ax.plot(t, amps[:, p], lw=0.6, label=f"phase {name}")
    for a in rec.anomalies:
        ax.axvspan(a.start / rec.cfg.fps, a.stop / rec.cfg.fps, color="red", alpha=0.12, lw=0)
    for ep in rec.mist:
        if ep.level >= 1.0:
            ax.axvspan(ep.start / rec.cfg.fps, ep.stop / rec.cfg.fps, ymax=0.06, color="0.4", lw=0)
    edge = (rec.n_train, rec.n_train + rec.n_guard)
    ax.axvspan(edge[0] / rec.cfg.fps, edge[1] / rec.cfg.fps, color="0.85", lw=0)
    ax.text(edge[1] / rec.cfg.fps, ax.get_ylim()[1], " test", va="top", fontsize=8)
    ax.set_xlabel("seconds (red: hot spot active; dark bars: dense mist; grey: guard gap)")
    ax.set_ylabel("current (A)")
    ax.legend(loc="lower left", fontsize=7, ncol=3)
    return save_figure(fig, path, made_by=COMMAND, dpi=110)
