"""The sizes of an FmFormer: one frozen config that names every size, and the named presets.

``FmFormerConfig()`` is the reference cross-modal model (docs/reference-protocol.md, "Model");
``named_config("small")`` and ``"tiny"`` are CPU-friendly sizes with the same token layout.
Everything that builds, saves or loads a model takes its sizes from here.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from fmmodel.errors import FmModelError


@dataclass(frozen=True)
class FmFormerConfig:
    """Every size of an FmFormer. Defaults are the reference cross-modal sizes (docs/reference-protocol.md)."""

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
    known = [f.name for f in fields(FmFormerConfig)]
    unknown = sorted(set(overrides) - set(known))
    if unknown:
        raise FmModelError(f"FmFormerConfig: expected fields from {known}, got {unknown}")
    try:
        return replace(SIZES[size], **overrides)
    except (TypeError, ValueError):  # a value of the wrong kind (width="abc") fails in the config's own checks
        given = ", ".join(f"{k}={v!r}" for k, v in sorted(overrides.items()))
        raise FmModelError(f"FmFormerConfig: expected numbers of the right kind for the sizes, got {given}") from None
