"""Users' models for the tests of ``fmmodel watch``, declared with ModelFactory as any user's are
(named on the command line as ``--model tests/watch_models.py:NAME``).

``oracle`` knows the labels: its score is the labelled abnormal share of the clip's last frame,
read off the pure-red pixels that :func:`builders.marked_recording` paints where the mask is 1
(reference preprocessing: 0..255 video). ``slow`` takes 300 ms per decision and finds nothing.
"""
from __future__ import annotations

import time

import torch
from torch import Tensor, nn

from fmmodel.model.user_models import DataDescription, ModelFactory


def _logits(p: Tensor) -> Tensor:
    """Two-class logits whose softmax is (1 - p, p)."""
    p = p.clamp(1e-6, 1 - 1e-6)
    return torch.stack([torch.log1p(-p), torch.log(p)], dim=1)


class Oracle(nn.Module):
    def __init__(self, data: DataDescription) -> None:
        super().__init__()

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        assert video is not None
        last = video[:, :, -1]  # (B, 3, H', W'): the labelled frame
        red = (last[:, 0] == 255) & (last[:, 1] == 0) & (last[:, 2] == 0)
        return _logits(red.float().mean(dim=(1, 2)))


class Slow(nn.Module):
    def __init__(self, data: DataDescription) -> None:
        super().__init__()

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        assert video is not None
        time.sleep(0.3)
        return _logits(torch.full((video.shape[0],), 0.01))


oracle = ModelFactory(build=Oracle, modality="both", task="cls",
                      summary="the labelled abnormal share of the last frame (reads the current, ignores it)")
slow = ModelFactory(build=Slow, modality="video", task="cls", summary="300 ms per decision, finds nothing")
