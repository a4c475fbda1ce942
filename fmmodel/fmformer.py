"""FmFormer: the cross-modal (video + arc current) transformer of the FMF benchmark, and its one-modality kin.

Layout follows timm: small blocks (tokenizers, attention, cross-attention, MLP, decoder units), then the
models (one trunk, several heads), then initialisation, then the named sizes. The reference checkpoint key
mapping lives in ``fmmodel.checkpoint``; building a model by variant name in ``fmmodel.registry``.

Shapes (reference sizes, B = batch):
    video   (B, 3, T, H, W)  float 0..255 as the reference feeds it (uint8 is accepted and cast), or normalised
    current (B, rows, 3)     float amperes (or normalised), rows = 240
    video tokens   (B, 1 + T/2 * H/8 * W/8 [+ T/2 * H/16 * W/16 dilated], width)  = (B, 401, 96) for T=10
    current tokens (B, 1 + rows, width)                                          = (B, 241, 96)
Class logits are (B, classes); segmentation logits (B, classes, H, W) in the orientation of the input frames.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from fmmodel.errors import FmModelError

# ----------------------------------------------------------------------------------------------------------
# configuration


@dataclass(frozen=True)
class FmFormerConfig:
    """Every size of an FmFormer. Defaults are the reference cross-modal sizes (§4 of fmf-benchmark.md)."""

    width: int = 96
    depth: int = 6
    heads: int = 3
    head_dim: int = 32
    mlp_dim: int = 384
    patch: tuple[int, int, int] = (2, 8, 8)  # (t, h, w) extent of one video patch
    frames: int = 10
    image_size: tuple[int, int] = (64, 64)  # (rows, cols) of a frame as fed to the model
    video_channels: int = 3
    current_rows: int = 240
    current_channels: int = 3
    dilated_tokens: bool = True  # extra tokens from the clip resized (nearest) by 1/dilation in h and w
    dilation: int = 2
    num_classes: int = 2
    decoder_channels: tuple[int, ...] = (128, 64, 32)  # segmentation head stages, each upsamples by 2
    norm_eps: float = 1e-5
    init: str = "reference"  # "reference" (PyTorch defaults, N(0,1) tokens) or "vit" (truncated normal 0.02)

    def __post_init__(self) -> None:
        set_ = object.__setattr__  # frozen: normalise list/int forms coming from JSON or the CLI
        size = self.image_size
        set_(self, "image_size", (int(size), int(size)) if isinstance(size, int) else tuple(int(s) for s in size))
        set_(self, "patch", tuple(int(p) for p in self.patch))
        set_(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        pt, ph, pw = self.patch
        h, w = self.image_size
        checks = [
            (len(self.image_size) == 2, "image_size (rows, cols)", self.image_size),
            (self.frames % pt == 0, f"frames divisible by patch t={pt}", self.frames),
            (h % ph == 0 and w % pw == 0, f"image_size divisible by patch {ph}x{pw}", self.image_size),
            (not self.dilated_tokens or (h % (ph * self.dilation) == 0 and w % (pw * self.dilation) == 0),
             f"image_size divisible by patch x dilation {self.dilation}", self.image_size),
            (ph == pw == 2 ** len(self.decoder_channels),
             "patch h = w = 2 ** len(decoder_channels) (each decoder stage doubles the map)",
             (self.patch, self.decoder_channels)),
            (self.init in ("reference", "vit"), "init 'reference' or 'vit'", self.init),
            (min(self.width, self.depth, self.heads, self.head_dim, self.mlp_dim, self.num_classes) > 0,
             "positive sizes", asdict(self)),
        ]
        for ok, expected, got in checks:
            if not ok:
                raise FmModelError(f"FmFormerConfig: expected {expected}, got {got}")

    @property
    def patch_grid(self) -> tuple[int, int, int]:
        """(t, h, w) count of patch tokens."""
        return (self.frames // self.patch[0], self.image_size[0] // self.patch[1], self.image_size[1] // self.patch[2])

    @property
    def dilated_grid(self) -> tuple[int, int, int]:
        """(t, h, w) count of dilated tokens (zeros when dilated tokens are off)."""
        t, h, w = self.patch_grid
        return (t, h // self.dilation, w // self.dilation) if self.dilated_tokens else (0, 0, 0)

    @property
    def num_video_tokens(self) -> int:
        """Class token + patch tokens + dilated tokens."""
        return 1 + math.prod(self.patch_grid) + math.prod(self.dilated_grid)

    def to_dict(self) -> dict[str, Any]:
        """Plain types only (lists for tuples): safe for JSON and weights-only checkpoints."""
        return {f.name: list(v) if isinstance(v := getattr(self, f.name), tuple) else v for f in fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FmFormerConfig:
        """Inverse of to_dict; unknown keys are an error (a checkpoint from a different toolkit version)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FmModelError(f"FmFormerConfig: expected fields from {sorted(known)}, got unknown {unknown}")
        return cls(**data)


# ----------------------------------------------------------------------------------------------------------
# blocks


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


# ----------------------------------------------------------------------------------------------------------
# models


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
            _freeze(self.blocks[-1].cross_attn.current_proj, self.blocks[-1].current_mlp)
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


# ----------------------------------------------------------------------------------------------------------
# initialisation


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
    """All parameters, trainable or kept for compatibility (the figure §4 quotes); buffers excluded."""
    return sum(p.numel() for p in model.parameters())


# ----------------------------------------------------------------------------------------------------------
# named sizes

SIZES: dict[str, FmFormerConfig] = {
    "reference": FmFormerConfig(),
    # a CPU-friendly size for demos and tests; same token layout as the reference
    "small": FmFormerConfig(width=48, depth=2, heads=2, head_dim=24, mlp_dim=96),
    "tiny": FmFormerConfig(width=16, depth=1, heads=2, head_dim=8, mlp_dim=32, decoder_channels=(16, 8, 8)),
}


def named_config(size: str = "reference", **overrides: Any) -> FmFormerConfig:
    """A named size with some fields replaced, e.g. named_config("small", frames=4)."""
    if size not in SIZES:
        raise FmModelError(f"FmFormerConfig: expected a size from {sorted(SIZES)}, got {size!r}")
    try:
        return replace(SIZES[size], **overrides)
    except TypeError as exc:
        raise FmModelError(f"FmFormerConfig: expected fields from {[f.name for f in fields(FmFormerConfig)]}, "
                           f"got {sorted(overrides)}") from exc


__all__ = [
    "FmFormerConfig", "VideoPatchEmbed", "CurrentEmbed", "VideoTokens", "CurrentTokens", "SelfAttention",
    "CrossAttention", "Mlp", "StreamBlock", "CrossModalBlock", "ClassTokenHead", "CrossModalClassHead",
    "ResidualUnit", "UpStage", "SegmentationHead", "FmFormer", "VideoFmFormer", "CurrentFmFormer",
    "init_weights", "count_parameters", "SIZES", "named_config",
]
