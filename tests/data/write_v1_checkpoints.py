"""Write the toolkit checkpoints that tests/test_checkpoint_format.py reads back: format version 1
as ``save_checkpoint`` wrote it at commit 1f315f3, before ModelMeta became a ModelInfo.

    .venv/bin/python tests/data/write_v1_checkpoints.py tests/data

- ``checkpoint-v1-builtin.pt``: a vicu_cls FmFormer of a few KB (width 8, depth 1, 4x4 frames),
  weights drawn with seed 0, training info and extra state as ``fmmodel train`` records them.
- ``checkpoint-v1-user.pt``: a user's model (the installed entry point ``pooled_current`` of
  tests/plugins.py, a Linear(3, 2)); its ``fmf_info`` is set as the registry sets it, so that
  nothing is imported.
"""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn

from fmdata.store import WindowParams
from fmmodel.model.checkpoint import save_checkpoint
from fmmodel.model.registry import ModelInfo, build_model
from fmmodel.model.user_models import DataDescription, ModelSource

BUILTIN = {"width": 8, "depth": 1, "heads": 2, "head_dim": 4, "mlp_dim": 16, "patch": (1, 2, 2), "frames": 2,
           "image_size": (4, 4), "current_rows": 6, "decoder_channels": (4,)}
NORMALIZATION = {"video_mean": [0.25, 0.5, 0.75], "video_std": [1.5, 2.0, 2.5], "current_mean": [0.0, 1.0, -1.0],
                 "current_std": [3.0, 4.0, 5.0]}


def write(folder: Path) -> None:
    torch.manual_seed(0)
    model = build_model("vicu_cls", size="tiny", **BUILTIN)
    window = WindowParams.reference("both", frames=2, frame_step=3, current_seconds=1.0, current_rows=6,
                                    stride=4).to_dict()
    save_checkpoint(folder / "checkpoint-v1-builtin.pt", model, orientation="true",
                    preprocessing={"name": "normalized", "normalization": NORMALIZATION},
                    info={"task": "cls", "modality": "both", "window": window, "store": "store.zarr", "seed": 0,
                          "epoch": 3, "score": 0.75},
                    extra={"epoch": 3, "best_score": 0.75, "history": [{"epoch": 1, "loss": 0.5}],
                           "rng": torch.arange(4, dtype=torch.uint8)})

    user = nn.Sequential()
    user.add_module("head", nn.Linear(3, 2))
    description = DataDescription(task="cls", modality="current", frame_size=(4, 4), clip_frames=2, current_rows=6,
                                  num_classes=2, options={"hidden": 3})
    user.fmf_info = ModelInfo(variant="pooled_current", config=None, description=description,  # type: ignore[assignment]
                              source=ModelSource(name="pooled_current", spec="fmf_plugin_demo:pooled_current",
                                                 entry_point=True, version="1.2.3"))
    save_checkpoint(folder / "checkpoint-v1-user.pt", user, orientation="reference", preprocessing="reference",
                    info={"epoch": 1})


if __name__ == "__main__":
    write(Path(sys.argv[1]))
