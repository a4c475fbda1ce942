"""FmFormer modules: sizes and parameter counts (docs/reference-protocol.md, "Model"), token layout, heads,
and GPU-training readiness."""
import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from fmmodel.errors import FmModelError
from fmmodel.model.config import FmFormerConfig, named_config
from fmmodel.model.fmformer import count_parameters
from fmmodel.model.layers import ResidualUnit, VideoPatchEmbed, _tokens_to_map
from fmmodel.model.reference_keys import to_reference_state_dict
from fmmodel.model.registry import VARIANTS, build_model, variant_for

from runs import FIXTURES

PAPER_COUNTS = {"vicu_cls": 1_923_466, "vicu_seg": 2_419_848, "video_cls": 776_836, "current_cls": 693_512}


def _inputs(cfg: FmFormerConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    video = torch.randint(0, 256, (batch, 3, cfg.frames, *cfg.image_size), generator=g, dtype=torch.uint8)
    current = 9000 + 2000 * torch.randn(batch, cfg.current_rows, 3, generator=g)
    return video, current


@pytest.mark.parametrize("variant", sorted(PAPER_COUNTS))
def test_reference_sizes_have_the_published_parameter_counts(variant):
    assert count_parameters(build_model(variant)) == PAPER_COUNTS[variant]


@pytest.mark.parametrize("variant", sorted(PAPER_COUNTS))
def test_state_dict_maps_onto_the_official_names_and_shapes(variant):
    summary_path = FIXTURES / "summary.json"
    if not summary_path.exists():
        pytest.skip(f"reference fixtures not found at {FIXTURES}")
    official = json.loads(summary_path.read_text())[variant]
    model = build_model(variant)
    ref = to_reference_state_dict(model.state_dict(), variant, model.config)
    assert {k: list(v.shape) for k, v in ref.items()} == official["state_dict"]
    assert count_parameters(model) == official["parameters"]


def test_token_counts_and_output_shapes_of_every_variant():
    cfg = FmFormerConfig()
    assert cfg.num_video_tokens == 401 and FmFormerConfig(frames=8).num_video_tokens == 257 + 64
    for variant, shape in [("vicu_cls", (2, 2)), ("vicu_seg", (2, 2, 64, 64)), ("video_cls", (2, 2)),
                           ("current_cls", (2, 2))]:
        model = build_model(variant, size="tiny").eval()
        video, current = _inputs(model.config)
        with torch.no_grad():
            assert tuple(model(video=video, current=current).shape) == shape
    model = build_model("vicu_cls").eval()
    video, current = _inputs(model.config, batch=1)
    with torch.no_grad():
        v, c = model.forward_features(video, current)
    assert tuple(v.shape) == (1, 401, 96) and tuple(c.shape) == (1, 241, 96)


def test_patch_flattening_is_ph_pw_pt_c_and_tokens_are_ordered_t_h_w():
    pt, ph, pw, c, t, h, w = 2, 4, 4, 3, 4, 8, 12
    embed = VideoPatchEmbed((pt, ph, pw), c, width=5, eps=1e-5)
    clip = torch.arange(c * t * h * w, dtype=torch.float64).reshape(1, c, t, h, w)
    seen = {}
    embed.norm_in.register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    embed.double()(clip)
    got = seen["x"][0].numpy()
    a = clip[0].numpy()
    expected = [[a[cc, ti * pt + kt, hi * ph + kh, wi * pw + kw]
                 for kh in range(ph) for kw in range(pw) for kt in range(pt) for cc in range(c)]
                for ti in range(t // pt) for hi in range(h // ph) for wi in range(w // pw)]
    np.testing.assert_array_equal(got, np.array(expected))


def test_segmentation_map_channels_are_time_outer():
    t, h, w, width = 3, 2, 4, 5
    tokens = torch.randn(2, t * h * w, width)
    got = _tokens_to_map(tokens, (t, h, w))
    for ti in range(t):
        for hi in range(h):
            for wi in range(w):
                token = tokens[:, (ti * h + hi) * w + wi]
                torch.testing.assert_close(got[:, ti * width:(ti + 1) * width, hi, wi], token)


def test_residual_unit_skips_with_relu_of_input():
    unit = ResidualUnit(4).eval()
    with torch.no_grad():
        unit.norm.running_mean.uniform_(-1, 1)
        unit.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 4, 6, 6)
    r = x.clamp(min=0)
    bn = (r - unit.norm.running_mean[:, None, None]) / torch.sqrt(unit.norm.running_var[:, None, None] + 1e-5)
    expected = r + F.conv2d(bn * unit.norm.weight[:, None, None] + unit.norm.bias[:, None, None],
                            unit.conv.weight, unit.conv.bias, padding=1)
    with torch.no_grad():
        torch.testing.assert_close(unit(x), expected, rtol=1e-5, atol=1e-5)


def test_uint8_and_float_video_give_the_same_logits():
    model = build_model("vicu_cls", size="tiny").eval()
    video, current = _inputs(model.config)
    with torch.no_grad():
        torch.testing.assert_close(model(video=video, current=current), model(video=video.float(), current=current))


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_trainable_parameter_gets_a_gradient(variant):
    """DDP needs no unused trainable parameters; the compatibility-only ones are frozen instead."""
    model = build_model(variant, size="tiny")
    video, current = _inputs(model.config)
    model(video=video, current=current).float().square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    frozen = sorted({n.rsplit(".", 1)[0] for n, p in model.named_parameters() if not p.requires_grad})
    assert missing == []
    assert frozen == {"vicu_cls": [], "current_cls": [],
                      "video_cls": ["spare_head.fc", "spare_head.norm"],
                      "vicu_seg": ["blocks.0.cross_attn.current_proj", "blocks.0.current_mlp.fc1",
                                   "blocks.0.current_mlp.fc2", "blocks.0.current_mlp.norm"]}[variant]


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_bf16_autocast_forward_runs(variant):
    model = build_model(variant, size="tiny")
    video, current = _inputs(model.config)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video=video, current=current)
    reference = model(video=video, current=current)
    assert out.dtype == torch.bfloat16 and torch.isfinite(out).all()
    scale = reference.abs().max()
    assert (out.float() - reference).abs().max() <= 0.1 * scale + 0.05


@pytest.mark.parametrize("variant", ["vicu_seg", "video_cls"])
def test_compiles_as_one_graph_and_matches_eager(variant):
    model = build_model(variant, size="tiny")
    video, current = _inputs(model.config)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    out = compiled(video=video, current=current)
    out.float().mean().backward()
    torch.testing.assert_close(out, model(video=video, current=current))


def test_named_sizes_variants_and_bad_configs():
    assert named_config("small", frames=4).frames == 4
    assert build_model("video_cls").config.frames == 8
    assert build_model("vicu_cls", frames=4, image_size=32).config.image_size == (32, 32)
    assert variant_for("both", "seg") == "vicu_seg" and variant_for("current", "cls") == "current_cls"
    assert FmFormerConfig.from_dict(FmFormerConfig(frames=6).to_dict()) == FmFormerConfig(frames=6)
    with pytest.raises(FmModelError, match="frames divisible by patch t=2"):
        FmFormerConfig(frames=7)
    with pytest.raises(FmModelError, match="dilation"):
        FmFormerConfig(image_size=(64, 72))
    with pytest.raises(FmModelError, match="expected a model from"):
        build_model("vicu_det")
    with pytest.raises(FmModelError, match="got video/seg"):
        variant_for("video", "seg")
    with pytest.raises(FmModelError, match="expected a current tensor"):
        build_model("current_cls", size="tiny")(video=torch.zeros(1, 3, 10, 64, 64))


def test_vit_init_is_small_and_reference_init_is_unit_normal():
    ref = build_model("vicu_cls", size="small")
    vit = build_model("vicu_cls", size="small", init="vit")
    assert 0.8 < ref.video_embed.pos_embed.std().item() < 1.2
    assert vit.video_embed.pos_embed.std().item() < 0.03
    assert math.isclose(vit.blocks[0].video_mlp.fc1.weight.std().item(), 0.02, rel_tol=0.2)


def test_size_overrides_say_whether_the_name_or_the_value_is_wrong():
    with pytest.raises(FmModelError, match=r"got \['widht'\]"):
        named_config("tiny", widht=3)
    with pytest.raises(FmModelError, match=r"expected an integer for width, got 'abc' \(of type str\)"):
        named_config("tiny", width="abc")
    # an integer size given as a float (--model-opt width=1e9 parses as JSON 1e9) names the field and its type
    for field, value, kind in (("width", 1e9, "float"), ("depth", True, "bool"), ("patch", [2, 8.0, 8], "list")):
        with pytest.raises(FmModelError, match=rf"for {field}, got .* \(of type {kind}\)") as err:
            named_config("tiny", **{field: value})
        assert err.value.field == field
    with pytest.raises(FmModelError, match="expected a positive dilation, got 0") as err:
        named_config("tiny", dilation=0)  # once a ZeroDivisionError
    assert err.value.field == "dilation"


def test_model_sizes_are_checked_against_memory_before_anything_is_built():
    """The lower bound of the parameters holds for every variant and size; a model whose weights
    cannot fit is refused before a tensor is allocated, naming its sizes."""
    for size in ("reference", "small", "tiny"):
        for variant in VARIANTS:
            model = build_model(variant, size=size)
            assert model.config.min_parameters() <= sum(p.numel() for p in model.parameters()), (variant, size)
    with pytest.raises(FmModelError, match=r"fit in memory.*width 1000000000.*TiB"):
        build_model("current_cls", size="tiny", width=10**9)
    with pytest.raises(FmModelError, match=r"fit in memory.*depth 100000000"):
        build_model("video_cls", size="reference", depth=10**8)
