"""Small synthetic stores for the trainer/evaluator tests, rendered by fmdata.synth.

Each recording is a V1-like store recording: one current row per frame (current_time =
frame_time), frame_current_end = i + 1, and the synthetic split (train block, guard gap of
frames in neither split, test block). Returned plans let tests ask which frames mist hides.
"""
from __future__ import annotations

import os

import numpy as np

from fmdata import schema, store, synth

# A configuration that trains on two CPU cores in well under a minute: 32x32 frames, short
# windows (10 frames step 6, 8 s of current resampled to 32 rows), a one-layer model.
SMALL_WINDOWS = {"frames": 10, "frame_step": 6, "current_seconds": 30.0, "current_rows": 60}
# Shorter, more frequent events than the default simulation: a short recording then holds enough
# anomalies (and mist episodes) for a model to generalise from and for a test split to score.
DENSE_EVENTS = synth.EVENT_PROFILES["dense"]
SMALL_MODEL = {"size": "tiny", "width": 32, "heads": 2, "head_dim": 16, "mlp_dim": 64, "depth": 1}


def synthetic_store(path: str | os.PathLike[str], recordings: int = 6, frames: int = 1500,
                    size: int | tuple[int, int] = 32, seed: int = 0,
                    cfg: synth.SynthConfig | None = None) -> list[synth.Recording]:
    """Write a complete store of ``recordings`` simulated recordings at ``path``; return their plans.

    ``size`` is the frame side, or (height, width).
    """
    h, w = (size, size) if isinstance(size, int) else size
    cfg = cfg or synth.SynthConfig(height=h, width=w, **DENSE_EVENTS)
    plans, arrays = [], []
    for i in range(recordings):
        rec = synth.simulate(frames, cfg, seed=seed, index=i)
        video, mask = rec.render(0, frames)
        t = np.arange(frames) / cfg.fps
        arrays.append(store.RecordingArrays(
            video=video, mask=mask, split=rec.split(0, frames), frame_time=t, current=rec.current(0, frames),
            current_time=t.copy(), frame_current_end=np.arange(1, frames + 1, dtype=np.int64),
            info=schema.RecordingInfo(name=f"synth-{i}", source_path="memory", source_bytes=0, layout="v1",
                                      n_frames=frames, n_current=frames)))
        plans.append(rec)
    store.write_store_from_arrays(path, arrays, fps=cfg.fps, chunking=store.Chunking(4, 512))
    return plans


def cached_store(tmp_path_factory, name: str = "model-store", **kwargs) -> str:
    """Return the path of a synthetic store built once per test session (stats included)."""
    path = tmp_path_factory.getbasetemp() / name
    if not (path / "zarr.json").exists():
        synthetic_store(path, **kwargs)
        from fmdata.stats import compute_stats

        compute_stats(str(path))
    return str(path)


def quick_config(store: str, out: str, **overrides):
    """A few-step training config (for plumbing tests, not for learning)."""
    from fmmodel.config import TrainConfig

    opts = dict(task="cls", modality="both", epochs=1, batch_size=16, lr=1e-3, workers=0, threads=1,
                device="cpu", seed=0, max_steps_per_epoch=4, stride=8, val_fraction=0.1,
                preprocessing="normalized", model=dict(SMALL_MODEL), **SMALL_WINDOWS)
    opts.update(overrides)
    return TrainConfig.with_defaults(store, out, **opts)


# Six short recordings (different shells, levels and events) generalise better than three long
# ones; every training window is used (no validation hold-out: its 30 s gap would cost 750 frames
# per recording); lr x0.1 for the last two epochs.
LEARN = dict(epochs=8, batch_size=32, lr=1e-3, lr_step_epoch=6, stride=4, val_fraction=0.0,
             preprocessing="normalized")


def learned_run(tmp_path_factory) -> tuple[str, str]:
    """Train the small learning configuration once per session; return (run folder, store)."""
    from fmmodel.train import train

    store = cached_store(tmp_path_factory)
    run = tmp_path_factory.getbasetemp() / "learned-run"
    if not (run / "last.pt").exists():
        train(quick_config(store, str(run), max_steps_per_epoch=None, **LEARN), progress=False)
    return str(run), store


def store64_with_table(tmp_path_factory) -> str:
    """A 64x64 one-recording store (reference model inputs) with stored window tables "ref10"
    (reference windows, every 10th) and "short" (4-frame clips), built once per session."""
    path = cached_store(tmp_path_factory, "store64", recordings=1, frames=500, size=64, seed=3)
    from fmdata.store import open_store
    from fmdata.window_table import list_window_tables
    from fmdata.windows import WindowParams, make_windows

    if "ref10" not in list_window_tables(open_store(path)):
        make_windows(path, "ref10", WindowParams(stride=10))
        make_windows(path, "short", WindowParams(frames=4, stride=10))
    return path
