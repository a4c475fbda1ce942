"""The building blocks of FmFormer (timm style: small modules, every size from the config).

Tokenizers (video patches with their dilated companions, current samples), self-attention,
bidirectional cross-attention, MLP, the per-stream and cross-modal transformer blocks, the class
heads and the segmentation decoder (residual units, upsampling stages). The models that stack
them are in :mod:`fmmodel.model.fmformer`; docs/model.md and docs/reference-protocol.md ("Model")
describe the reference architecture these blocks reproduce.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmmodel.model.config import FmFormerConfig


def _split_heads(qkv: Tensor, heads: int) -> tuple[Tensor, Tensor, Tensor]:
    """(B, N, 3 * heads * d) -> three (B, heads, N, d); the fused projection is [q | k | v], each (head, d)."""
    b, n, _ = qkv.shape
    q, k, v = qkv.view(b, n, 3, heads, -1).permute(2, 0, 3, 1, 4).unbind(0)
    return q, k, v


def _merge_heads(x: Tensor) -> Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    b, h, n, d = x.shape
    return x.transpose(1, 2).reshape(b, n, h * d)


class VideoPatchEmbed(nn.Module):
    """Clip (B, C, T, H, W) -> tokens (B, T/pt * H/ph * W/pw, width), ordered (t, h, w).

    Each patch is flattened in the order (p_h, p_w, p_t, c), then LayerNorm -> Linear -> LayerNorm.
    """

    def __init__(self, patch: tuple[int, int, int], channels: int, width: int, eps: float) -> None:
        super().__init__()
        self.patch = patch
        dim = math.prod(patch) * channels
        self.norm_in = nn.LayerNorm(dim, eps=eps)
        self.proj = nn.Linear(dim, width)
        self.norm_out = nn.LayerNorm(width, eps=eps)

    def forward(self, clip: Tensor) -> Tensor:
        b, c, t, h, w = clip.shape
        pt, ph, pw = self.patch
        x = clip.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        x = x.permute(0, 2, 4, 6, 5, 7, 3, 1)  # b, t', h', w', p_h, p_w, p_t, c
        x = x.reshape(b, (t // pt) * (h // ph) * (w // pw), ph * pw * pt * c)
        return self.norm_out(self.proj(self.norm_in(x)))


class CurrentEmbed(nn.Module):
    """Current window (B, rows, phases) -> one token per row (B, rows, width): LayerNorm -> Linear -> LayerNorm."""

    def __init__(self, channels: int, width: int, eps: float) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(channels, eps=eps)
        self.proj = nn.Linear(channels, width)
        self.norm_out = nn.LayerNorm(width, eps=eps)

    def forward(self, current: Tensor) -> Tensor:
        return self.norm_out(self.proj(self.norm_in(current)))


class VideoTokens(nn.Module):
    """Clip (B, C, T, H, W) -> video tokens (B, cfg.num_video_tokens, width).

    [class token, patch tokens] + learned positions, then (when on) the dilated tokens: the clip resized by
    nearest neighbour to (T, H/d, W/d), embedded by their own layers, plus their own learned positions.
    """

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        n_patch = math.prod(cfg.patch_grid)
        self.patch_embed = VideoPatchEmbed(cfg.patch, cfg.video_channels, cfg.width, cfg.norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n_patch + 1, cfg.width))
        self.dilation = cfg.dilation if cfg.dilated_tokens else 0
        if cfg.dilated_tokens:
            self.dilated_embed = VideoPatchEmbed(cfg.patch, cfg.video_channels, cfg.width, cfg.norm_eps)
            self.dilated_pos_embed = nn.Parameter(torch.zeros(1, math.prod(cfg.dilated_grid), cfg.width))

    def forward(self, clip: Tensor) -> Tensor:
        if not clip.is_floating_point():  # uint8 frames straight from the store
            clip = clip.to(self.pos_embed.dtype)
        x = self.patch_embed(clip)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed
        if self.dilation:
            t, h, w = clip.shape[-3:]
            small = F.interpolate(clip, size=(t, h // self.dilation, w // self.dilation), mode="nearest")
            x = torch.cat([x, self.dilated_embed(small) + self.dilated_pos_embed], dim=1)
        return x


class CurrentTokens(nn.Module):
    """Current window (B, rows, phases) -> current tokens (B, 1 + rows, width): class token + learned positions."""

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        self.embed = CurrentEmbed(cfg.current_channels, cfg.width, cfg.norm_eps)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.current_rows + 1, cfg.width))

    def forward(self, current: Tensor) -> Tensor:
        x = self.embed(current.to(self.pos_embed.dtype))
        return torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1) + self.pos_embed


class SelfAttention(nn.Module):
    """Pre-norm multi-head self-attention update (B, N, width) -> (B, N, width); the caller adds the residual."""

    def __init__(self, width: int, heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(width, eps=eps)
        self.qkv = nn.Linear(width, 3 * heads * head_dim, bias=False)
        self.proj = nn.Linear(heads * head_dim, width)

    def forward(self, x: Tensor) -> Tensor:
        q, k, v = _split_heads(self.qkv(self.norm(x)), self.heads)
        return self.proj(_merge_heads(F.scaled_dot_product_attention(q, k, v)))


class CrossAttention(nn.Module):
    """Bidirectional cross-attention updates: video queries attend to current keys/values and vice versa.

    Each stream has its own LayerNorm, fused QKV projection (no bias) and output projection.
    Takes video (B, Nv, width) and current (B, Nc, width); returns their updates, same shapes.
    With ``need_current=False`` the current update is skipped (returned as None).
    """

    def __init__(self, width: int, heads: int, head_dim: int, eps: float) -> None:
        super().__init__()
        self.heads = heads
        inner = heads * head_dim
        self.video_norm = nn.LayerNorm(width, eps=eps)
        self.current_norm = nn.LayerNorm(width, eps=eps)
        self.video_qkv = nn.Linear(width, 3 * inner, bias=False)
        self.current_qkv = nn.Linear(width, 3 * inner, bias=False)
        self.video_proj = nn.Linear(inner, width)
        self.current_proj = nn.Linear(inner, width)

    def forward(self, video: Tensor, current: Tensor, need_current: bool = True) -> tuple[Tensor, Tensor | None]:
        vq, vk, vv = _split_heads(self.video_qkv(self.video_norm(video)), self.heads)
        cq, ck, cv = _split_heads(self.current_qkv(self.current_norm(current)), self.heads)
        video_update = self.video_proj(_merge_heads(F.scaled_dot_product_attention(vq, ck, cv)))
        if not need_current:
            return video_update, None
        return video_update, self.current_proj(_merge_heads(F.scaled_dot_product_attention(cq, vk, vv)))


class Mlp(nn.Module):
    """Pre-norm feed-forward update: LayerNorm -> Linear(width, hidden) -> GELU -> Linear(hidden, width)."""

    def __init__(self, width: int, hidden: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(self.norm(x))))


class StreamBlock(nn.Module):
    """One layer of a one-modality trunk: x + attn(x), then + mlp(x)."""

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        self.attn = SelfAttention(cfg.width, cfg.heads, cfg.head_dim, cfg.norm_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp_dim, cfg.norm_eps)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


class CrossModalBlock(nn.Module):
    """One layer of the cross-modal trunk: per-stream self-attention, bidirectional cross-attention, per-stream MLP.

    Both cross-attention updates are computed from the states after self-attention, then added.
    """

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        args = (cfg.width, cfg.heads, cfg.head_dim, cfg.norm_eps)
        self.video_attn = SelfAttention(*args)
        self.current_attn = SelfAttention(*args)
        self.cross_attn = CrossAttention(*args)
        self.video_mlp = Mlp(cfg.width, cfg.mlp_dim, cfg.norm_eps)
        self.current_mlp = Mlp(cfg.width, cfg.mlp_dim, cfg.norm_eps)

    def forward(self, video: Tensor, current: Tensor, need_current: bool = True) -> tuple[Tensor, Tensor]:
        video = video + self.video_attn(video)
        current = current + self.current_attn(current)
        video_update, current_update = self.cross_attn(video, current, need_current)
        video = video + video_update
        video = video + self.video_mlp(video)
        if current_update is not None:  # a segmentation model never reads the last layer's current stream
            current = current + current_update
            current = current + self.current_mlp(current)
        return video, current


class ClassTokenHead(nn.Module):
    """Tokens (B, N, width) -> logits (B, classes) from the class token (index 0): LayerNorm -> Linear."""

    def __init__(self, width: int, classes: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width, eps=eps)
        self.fc = nn.Linear(width, classes)

    def forward(self, tokens: Tensor) -> Tensor:
        return self.fc(self.norm(tokens[:, 0]))


class CrossModalClassHead(nn.Module):
    """Logits (B, classes) = video head on the video class token + current head on the current class token."""

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        self.video = ClassTokenHead(cfg.width, cfg.num_classes, cfg.norm_eps)
        self.current = ClassTokenHead(cfg.width, cfg.num_classes, cfg.norm_eps)

    def forward(self, video: Tensor, current: Tensor) -> Tensor:
        return self.video(video) + self.current(current)


class ResidualUnit(nn.Module):
    """r = relu(x); out = r + conv3x3(batchnorm(r)): the reference's in-place ReLU makes the skip carry relu(x)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels)
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        r = F.relu(x)
        return r + self.conv(self.norm(r))


class UpStage(nn.Module):
    """(B, c_in, h, w) -> (B, c_out, 2h, 2w): transposed conv (kernel 2, stride 2), then a residual unit."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, kernel_size=2, stride=2)
        self.refine = ResidualUnit(c_out)

    def forward(self, x: Tensor) -> Tensor:
        return self.refine(self.up(x))


def _tokens_to_map(tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
    """(B, t*h*w, width) ordered (t, h, w) -> (B, t*width, h, w), channel index t*width + feature (time outer)."""
    b, _, width = tokens.shape
    t, h, w = grid
    return tokens.reshape(b, t, h, w, width).permute(0, 1, 4, 2, 3).reshape(b, t * width, h, w)


class SegmentationHead(nn.Module):
    """Video tokens (B, num_video_tokens, width) -> mask logits (B, classes, H, W); the class token is dropped.

    Patch tokens -> (t*width, H/8, W/8) map -> 1x1 conv to width; dilated tokens -> (t*width, H/16, W/16) ->
    1x1 conv -> UpStage(width, width); summed; then one UpStage per decoder channel; 1x1 conv to classes.
    """

    def __init__(self, cfg: FmFormerConfig) -> None:
        super().__init__()
        self.grid, self.dilated_grid = cfg.patch_grid, cfg.dilated_grid
        t = cfg.patch_grid[0]
        self.patch_proj = nn.Conv2d(t * cfg.width, cfg.width, kernel_size=1)
        if cfg.dilated_tokens:
            self.dilated_proj = nn.Conv2d(t * cfg.width, cfg.width, kernel_size=1)
            self.dilated_up = UpStage(cfg.width, cfg.width)
        chans = (cfg.width, *cfg.decoder_channels)
        self.stages = nn.ModuleList(UpStage(a, b) for a, b in zip(chans[:-1], chans[1:]))
        self.classifier = nn.Conv2d(chans[-1], cfg.num_classes, kernel_size=1)

    def forward(self, video: Tensor) -> Tensor:
        n_patch = math.prod(self.grid)
        x = self.patch_proj(_tokens_to_map(video[:, 1:1 + n_patch], self.grid))
        if hasattr(self, "dilated_proj"):
            d = _tokens_to_map(video[:, 1 + n_patch:], self.dilated_grid)
            x = x + self.dilated_up(self.dilated_proj(d))
        for stage in self.stages:
            x = stage(x)
        return self.classifier(x)
