"""Training set-ups for the trainer/evaluator tests, and where the authors' reference outputs are.

``quick_config`` is a few-step run for plumbing tests; ``learned_run`` trains the small learning
configuration once per test session. ``FIXTURES`` is the folder of reference FmFormer outputs
(the environment variable ``FMF_FIXTURES``, else ``../shared/fixtures/official-fmformer`` relative to
the repository root, i.e. beside the checkout); tests that need them are marked ``needs_fixtures`` and
skipped where it is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest

from fmdata.store import WindowParams
from fmmodel.runs.config import TrainConfig
from fmmodel.runs.train import train

from builders import cached_store

_BESIDE_THE_CHECKOUT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "official-fmformer"
FIXTURES = Path(os.environ.get("FMF_FIXTURES") or _BESIDE_THE_CHECKOUT)
needs_fixtures = pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"reference fixtures not found at {FIXTURES}")

# A configuration that trains on two CPU cores in well under a minute: 32x32 frames, short
# windows (10 frames step 6, 30 s of current resampled to 60 rows), a one-layer model.
SMALL_WINDOWS = {"frames": 10, "frame_step": 6, "current_seconds": 30.0, "current_rows": 60}
SMALL_MODEL = {"size": "tiny", "width": 32, "heads": 2, "head_dim": 16, "mlp_dim": 64, "depth": 1}
_WINDOW_KEYS = set(WindowParams().to_dict())


def quick_config(store: str, out: str, **overrides) -> TrainConfig:
    """A few-step training config (for plumbing tests, not for learning); window keys may be given flat."""
    opts = dict(task="cls", modality="both", epochs=1, batch_size=16, lr=1e-3, workers=0, threads=1,
                device="cpu", seed=0, max_steps_per_epoch=4, val_fraction=0.1, preprocessing="normalized",
                model=dict(SMALL_MODEL))
    window = {**SMALL_WINDOWS, "stride": 8}
    for key in list(overrides):
        if key in _WINDOW_KEYS:
            window[key] = overrides.pop(key)
    opts.update(overrides)
    return TrainConfig(store=store, out=out, window=WindowParams.reference(opts["modality"], **window), **opts)


# Twelve short recordings (more anomalies, shells and events to generalise from than six at the
# same cost: every 8th window); every training window is used (no validation hold-out: its 30 s
# gap would cost 750 frames per recording); clip frames 3 apart (the labelled frame's last 1.1 s:
# onsets are seen sooner than with step 6); lr x0.1 for the last two epochs. Test F1 0.95-0.96 over
# three seeds (docs/training.md, "The learning test").
LEARN = dict(epochs=8, batch_size=32, lr=1e-3, lr_step_epoch=6, stride=8, frame_step=3, val_fraction=0.0,
             preprocessing="normalized")
LEARN_STORE = dict(recordings=12, frames=1500)


def learned_run(tmp_path_factory) -> tuple[str, str]:
    """Train the small learning configuration once per session; return (run folder, store)."""
    store = cached_store(tmp_path_factory, "learn-store", **LEARN_STORE)
    run = tmp_path_factory.getbasetemp() / "learned-run"
    if not (run / "last.pt").exists():
        train(quick_config(store, str(run), max_steps_per_epoch=None, **LEARN), progress=False)
    return str(run), store
