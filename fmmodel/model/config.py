"""The sizes of an FmFormer: one frozen config that names every size, and the named presets.

``FmFormerConfig()`` is the reference cross-modal model (docs/reference-protocol.md, "Model");
``named_config("small")`` and ``"tiny"`` are CPU-friendly sizes with the same token layout.
Everything that builds, saves or loads a model takes its sizes from here.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Mapping
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
        check_field_types(asdict(self))
        set_ = object.__setattr__  # frozen: normalise list/int forms coming from JSON or the CLI
        size: Any = self.image_size
        set_(self, "image_size", (int(size), int(size)) if _is_int(size) else tuple(int(s) for s in size))
        set_(self, "patch", tuple(int(p) for p in self.patch))
        set_(self, "decoder_channels", tuple(int(c) for c in self.decoder_channels))
        shapes: list[tuple[bool, str, Any]] = [(len(self.patch) == 3, "patch (t, h, w)", self.patch),
                                               (len(self.image_size) == 2, "image_size (rows, cols)", self.image_size)]
        for ok, expected, got in shapes:
            if not ok:
                raise FmModelError(f"FmFormerConfig: expected {expected}, got {got}")
        for name in (*_INT_FIELDS, *_INT_TUPLE_FIELDS):  # sizes and counts: every one at least 1
            value = getattr(self, name)
            if min(value if isinstance(value, tuple) else (value,), default=1) < 1:
                raise FmModelError(f"FmFormerConfig: expected a positive {name}, got {value}", field=name)
        pt, ph, pw = self.patch
        h, w = self.image_size
        checks = [
            (self.frames % pt == 0, f"frames divisible by patch t={pt}", self.frames),
            (h % ph == 0 and w % pw == 0, f"image_size divisible by patch {ph}x{pw}", self.image_size),
            (not self.dilated_tokens or (h % (ph * self.dilation) == 0 and w % (pw * self.dilation) == 0),
             f"image_size divisible by patch x dilation {self.dilation}", self.image_size),
            (ph == pw == 2 ** len(self.decoder_channels),
             "patch h = w = 2 ** len(decoder_channels) (each decoder stage doubles the map)",
             (self.patch, self.decoder_channels)),
            (self.init in ("reference", "vit"), "init 'reference' or 'vit'", self.init),
        ]
        for ok, expected, got in checks:
            if not ok:
                raise FmModelError(f"FmFormerConfig: expected {expected}, got {got}")

    def min_parameters(self) -> int:
        """Return a lower bound of the parameters of every FmFormer variant of these sizes: ``depth``
        layers of one stream (:func:`layer_parameters`) and the smaller of its position tables (video
        tokens, or current rows + 1). What a model's memory is checked with before it is built
        (:func:`fmmodel.model.registry.require_model_memory`)."""
        tokens = min(self.num_video_tokens, self.current_rows + 1)
        return self.depth * layer_parameters(self.width, self.heads, self.head_dim, self.mlp_dim) + tokens * self.width

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


# the kinds of the fields (the rest are tuples of ints; image_size may be one int for a square)
_INT_FIELDS = ("width", "depth", "heads", "head_dim", "mlp_dim", "frames", "video_channels", "current_rows",
               "current_channels", "dilation", "num_classes")
_INT_TUPLE_FIELDS = ("patch", "image_size", "decoder_channels")


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_field_types(values: Mapping[str, Any]) -> None:
    """Raise FmModelError (field: the field's name) when a value in ``values`` (FmFormerConfig fields by
    name) has the wrong kind: an integer size given as a float (``width=1e9``), text or a bool,
    a tuple field holding anything but integers, ``dilated_tokens`` other than a bool, ``norm_eps``
    other than a number, ``init`` other than text. Other keys are left to the caller."""
    for name, value in values.items():
        if name in _INT_FIELDS:
            ok, kind = _is_int(value), "an integer"
        elif name in _INT_TUPLE_FIELDS:
            items = [value] if name == "image_size" and _is_int(value) else value
            ok = isinstance(items, (list, tuple)) and all(_is_int(v) for v in items)
            kind = "a list of integers"
        elif name == "dilated_tokens":
            ok, kind = isinstance(value, bool), "true or false"
        elif name == "norm_eps":
            ok, kind = isinstance(value, numbers.Real) and not isinstance(value, bool), "a number"
        elif name == "init":
            ok, kind = isinstance(value, str), "text"
        else:
            continue
        if not ok:
            raise FmModelError(f"FmFormerConfig: expected {kind} for {name}, got {value!r} (of type {type(value).__name__})",
                               field=name)


def layer_parameters(width: int, heads: int, head_dim: int, mlp_dim: int) -> int:
    """Return the weights of one stream's layer, a lower bound of any FmFormer layer's parameters:
    self-attention (QKV and output projections, 4 x width x heads x head_dim) and the MLP
    (2 x width x mlp_dim); norms and biases left out."""
    return 4 * width * heads * head_dim + 2 * width * mlp_dim


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
    return replace(SIZES[size], **overrides)  # values of the wrong kind: FmFormerConfig's own check_field_types
