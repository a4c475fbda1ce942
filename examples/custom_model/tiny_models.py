"""Two small models for the FMF benchmark, written as a user of the toolkit would write them.

``clip_cnn`` is a cross-modal classifier: a 3-D convolution over the clip and a 1-D convolution
over the current, pooled and joined by a linear layer. ``current_gru`` reads the current only.
Each is declared with ``ModelFactory`` (which inputs it reads, which task it solves) and built
from the run's ``DataDescription``. Try one:

    fmmodel train demo.zarr --model examples/custom_model/tiny_models.py:clip_cnn --out runs/cnn
    fmmodel evaluate demo.zarr --checkpoint runs/cnn/best.pt \\
        --model examples/custom_model/tiny_models.py:clip_cnn

docs/custom-models.md explains the contract and how to install a model as an entry point.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fmmodel.model.user_models import DataDescription, ModelFactory


class ClipCNN(nn.Module):
    """Clip (B, 3, T, H, W) and current (B, R, 3) -> logits (B, classes)."""

    def __init__(self, data: DataDescription, width: int = 16) -> None:
        super().__init__()
        # inputs arrive as 0..255 video and amperes (reference preprocessing) or standardised
        # (normalized): normalising first makes the model work with both
        self.video = nn.Sequential(
            nn.BatchNorm3d(3),
            nn.Conv3d(3, width, kernel_size=(3, 5, 5), stride=(1, 2, 2), padding=(1, 2, 2)), nn.ReLU(),
            nn.Conv3d(width, 2 * width, kernel_size=3, stride=(1, 2, 2), padding=1), nn.ReLU(),
            nn.AdaptiveMaxPool3d(1), nn.Flatten())
        self.current = nn.Sequential(
            nn.BatchNorm1d(3),
            nn.Conv1d(3, width, kernel_size=5, padding=2), nn.ReLU(),
            nn.Conv1d(width, width, kernel_size=5, padding=2), nn.ReLU(),
            nn.AdaptiveMaxPool1d(1), nn.Flatten())
        self.head = nn.Linear(3 * width, data.num_classes)

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        assert video is not None and current is not None
        v = self.video(video.float())
        c = self.current(current.transpose(1, 2))
        return self.head(torch.cat([v, c], dim=1))


class CurrentGRU(nn.Module):
    """Current (B, R, 3) -> logits (B, classes), from the last state of a small GRU."""

    def __init__(self, data: DataDescription, width: int = 32) -> None:
        super().__init__()
        self.norm = nn.BatchNorm1d(3)
        self.gru = nn.GRU(3, width, batch_first=True)
        self.head = nn.Linear(width, data.num_classes)

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        assert current is not None
        x = self.norm(current.transpose(1, 2)).transpose(1, 2)
        _, h = self.gru(x)
        return self.head(h[-1])


clip_cnn = ModelFactory(build=lambda data: ClipCNN(data, width=int(data.options.get("width", 16))),
                        modality="both", task="cls", summary="small 3-D CNN over the clip + 1-D CNN over the current")
current_gru = ModelFactory(build=lambda data: CurrentGRU(data, width=int(data.options.get("width", 32))),
                           modality="current", task="cls", summary="GRU over the current")
