"""FmFormer: the cross-modal (video + arc current) transformer of the FMF benchmark, and its one-modality kin.

Layout follows timm: the blocks are in :mod:`fmmodel.model.layers`, every size in
:class:`fmmodel.model.config.FmFormerConfig`; here are the models (one trunk, several heads) and
their initialisation. The reference checkpoint key mapping lives in
:mod:`fmmodel.model.reference_keys`; building a model by variant name in :mod:`fmmodel.model.registry`.

Shapes (reference sizes, B = batch):
    video   (B, 3, T, H, W)  float 0..255 as the reference feeds it (uint8 is accepted and cast), or normalised
    current (B, rows, 3)     float amperes (or normalised), rows = 240
    video tokens   (B, 1 + T/2 * H/8 * W/8 [+ T/2 * H/16 * W/16 dilated], width)  = (B, 401, 96) for T=10
    current tokens (B, 1 + rows, width)                                          = (B, 241, 96)
Class logits are (B, classes); segmentation logits (B, classes, H, W) in the orientation of the input frames.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from fmmodel.errors import FmModelError
from fmmodel.model.config import FmFormerConfig
from fmmodel.model.layers import (
    ClassTokenHead,
    CrossModalBlock,
    CrossModalClassHead,
    CurrentTokens,
    SegmentationHead,
    StreamBlock,
    VideoTokens,
)


def _require(x: Tensor | None, name: str, model: str) -> Tensor:
    if x is None:
        raise FmModelError(f"{model}: expected a {name} tensor, got None")
    return x


def _freeze(*modules: nn.Module) -> None:
    """Parameters kept only for checkpoint compatibility never get gradients; DDP must not wait for them."""
    for m in modules:
        m.requires_grad_(False)


class FmFormer(nn.Module):
    """Cross-modal FmFormer: video and current streams joined by cross-attention, with a cls or seg head.

    forward(video (B, 3, T, H, W), current (B, rows, 3)) -> (B, classes) for task "cls",
    (B, classes, H, W) for task "seg". ``forward_features`` returns the trunk's (video, current) tokens.
    With task "seg" the last layer's current-side cross-attention output and MLP cannot reach the output:
    they are skipped and frozen (they stay in the state_dict for reference compatibility).
    """

    inputs = ("video", "current")

    def __init__(self, cfg: FmFormerConfig | None = None, task: str = "cls") -> None:
        super().__init__()
        if task not in ("cls", "seg"):
            raise FmModelError(f"FmFormer: expected task 'cls' or 'seg', got {task!r}")
        self.config, self.task = cfg or FmFormerConfig(), task
        self.video_embed = VideoTokens(self.config)
        self.current_embed = CurrentTokens(self.config)
        self.blocks = nn.ModuleList(CrossModalBlock(self.config) for _ in range(self.config.depth))
        self.head: nn.Module = CrossModalClassHead(self.config) if task == "cls" else SegmentationHead(self.config)
        if task == "seg":
            last: CrossModalBlock = self.blocks[-1]  # type: ignore[assignment]  # ModuleList items are Modules
            _freeze(last.cross_attn.current_proj, last.current_mlp)
        init_weights(self, self.config.init)

    @property
    def variant(self) -> str:
        return f"vicu_{self.task}"

    def forward_features(self, video: Tensor, current: Tensor) -> tuple[Tensor, Tensor]:
        """Trunk only: (B, num_video_tokens, width) and (B, 1 + rows, width) after the last layer."""
        v, c = self.video_embed(video), self.current_embed(current)
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            v, c = block(v, c, need_current=self.task == "cls" or i < last)
        return v, c

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        v, c = self.forward_features(_require(video, "video", "FmFormer"), _require(current, "current", "FmFormer"))
        return self.head(v, c) if self.task == "cls" else self.head(v)


class VideoFmFormer(nn.Module):
    """Video-only FmFormer classifier: video tokens (with dilated tokens) -> self-attention layers -> class head.

    forward(video (B, 3, T, H, W), current ignored) -> (B, classes), read from the video class token with no
    final norm. ``spare_head`` is never used: the reference state_dict carries it, so it stays here (frozen).
    """

    inputs = ("video",)
    task = "cls"
    variant = "video_cls"

    def __init__(self, cfg: FmFormerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or FmFormerConfig(frames=8)
        self.video_embed = VideoTokens(self.config)
        self.blocks = nn.ModuleList(StreamBlock(self.config) for _ in range(self.config.depth))
        self.head = ClassTokenHead(self.config.width, self.config.num_classes, self.config.norm_eps)
        self.spare_head = ClassTokenHead(self.config.width, self.config.num_classes, self.config.norm_eps)
        _freeze(self.spare_head)
        init_weights(self, self.config.init)

    def forward_features(self, video: Tensor) -> Tensor:
        """Trunk only: (B, num_video_tokens, width)."""
        x = self.video_embed(video)
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        return self.head(self.forward_features(_require(video, "video", "VideoFmFormer")))


class CurrentFmFormer(nn.Module):
    """Current-only FmFormer classifier: current tokens -> self-attention layers -> LayerNorm -> Linear.

    forward(video ignored, current (B, rows, 3)) -> (B, classes), read from the class token.
    """

    inputs = ("current",)
    task = "cls"
    variant = "current_cls"

    def __init__(self, cfg: FmFormerConfig | None = None) -> None:
        super().__init__()
        self.config = cfg or FmFormerConfig()
        self.current_embed = CurrentTokens(self.config)
        self.blocks = nn.ModuleList(StreamBlock(self.config) for _ in range(self.config.depth))
        self.norm = nn.LayerNorm(self.config.width, eps=self.config.norm_eps)
        self.head = nn.Linear(self.config.width, self.config.num_classes)
        init_weights(self, self.config.init)

    def forward_features(self, current: Tensor) -> Tensor:
        """Trunk only, final norm included: (B, 1 + rows, width)."""
        x = self.current_embed(current)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)

    def forward(self, video: Tensor | None = None, current: Tensor | None = None) -> Tensor:
        return self.head(self.forward_features(_require(current, "current", "CurrentFmFormer"))[:, 0])




def init_weights(model: nn.Module, scheme: str = "reference") -> None:
    """Initialise in place. "reference": layers keep PyTorch's defaults, class tokens and positions ~ N(0, 1)
    (as the authors' code). "vit": Linear weights, class tokens and positions ~ truncated N(0, 0.02), biases 0."""
    tokens = [p for name, p in model.named_parameters() if name.rsplit(".", 1)[-1] in
              ("cls_token", "pos_embed", "dilated_pos_embed")]
    with torch.no_grad():
        if scheme == "reference":
            for p in tokens:
                p.normal_(0.0, 1.0)
            return
        if scheme != "vit":
            raise FmModelError(f"init_weights: expected scheme 'reference' or 'vit', got {scheme!r}")
        for p in tokens:
            nn.init.trunc_normal_(p, std=0.02)
        for m in model.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or kept for compatibility (the figures docs/reference-protocol.md quotes); buffers excluded."""
    return sum(p.numel() for p in model.parameters())
