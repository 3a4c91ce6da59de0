"""CLIP model, configs and open_clip interop: parameter counts, parity, round trips, errors."""
from __future__ import annotations

import json
import logging
import math

import pytest
import torch

open_clip = pytest.importorskip("open_clip")
from open_clip.model import convert_to_custom_text_state_dict  # noqa: E402

from unclip_lite.clip import (  # noqa: E402
    CLIP,
    CONFIG_NAMES,
    PAPER_CONFIGS,
    CLIPConfig,
    TextConfig,
    VisionConfig,
    build_clip,
    config_from_open_clip,
    count_parameters,
    from_open_clip_state_dict,
    get_config,
    load_open_clip_pretrained,
    to_open_clip_config,
    to_open_clip_state_dict,
)
from unclip_lite.nn import LayerNorm, MultiheadAttention  # noqa: E402

logging.getLogger().setLevel(logging.ERROR)  # open_clip warns "no pretrained weights" per model

OPEN_CLIP_ARCHS = [n for n in PAPER_CONFIGS if n != "ViT-H-16-256"]
TINY_VIT = CLIPConfig(
    embed_dim=32,
    vision=VisionConfig(image_size=32, layers=2, width=48, heads=3, patch_size=8),
    text=TextConfig(context_length=12, vocab_size=100, width=32, heads=2, layers=2),
    activation="quick_gelu",
)
TINY_RESNET = CLIPConfig(
    embed_dim=32,
    vision=VisionConfig(image_size=64, layers=(1, 2, 1, 1), width=16, heads=8, patch_size=None),
    text=TextConfig(context_length=12, vocab_size=100, width=32, heads=2, layers=2),
    activation="gelu",
)


def open_clip_model(config_or_name, device=None):
    """A fresh open_clip CLIP for one of its names or for one of our configs."""
    with torch.device(device or "cpu"):
        if isinstance(config_or_name, str):
            return open_clip.create_model(config_or_name, device=device or "cpu")
        return open_clip.CLIP(**to_open_clip_config(config_or_name))


def n_params(module) -> int:
    return sum(p.numel() for p in module.parameters())


@torch.no_grad()
def randomize_(module: torch.nn.Module, seed: int) -> None:
    """Perturb every weight and buffer so no branch is trivially zero (ResNet bn3, biases)."""
    g = torch.Generator().manual_seed(seed)
    for name, t in module.state_dict().items():
        if not t.is_floating_point():
            continue
        noise = torch.randn(t.shape, generator=g)
        if name.endswith("running_var"):
            t.copy_(0.5 + torch.rand(t.shape, generator=g))
        elif name.endswith("logit_scale"):
            t.fill_(math.log(1 / 0.07))
        else:
            t.add_(0.02 * noise)


def sample_inputs(config: CLIPConfig, batch: int = 2, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    v, t = config.vision, config.text
    images = torch.randn(batch, 3, v.image_size, v.image_size, generator=g)
    tokens = torch.randint(1, t.vocab_size - 1, (batch, t.context_length), generator=g)
    eot = torch.tensor([t.context_length // 2, t.context_length - 1])[:batch]
    tokens[torch.arange(batch), eot] = t.vocab_size - 1  # [EOS] is the largest id
    return images, tokens


def vit_params(v: VisionConfig, embed_dim: int) -> int:
    """A ViT tower's parameter count by hand: patch conv, embeddings, blocks, norms, projection."""
    w, g = v.width, v.image_size // v.patch_size
    block = 12 * w * w + 13 * w  # qkv 3w^2+3w, out w^2+w, mlp 8w^2+5w, two LayerNorms 4w
    return 3 * v.patch_size**2 * w + w + (g * g + 1) * w + 2 * w + v.layers * block + 2 * w + w * embed_dim


def text_params(t: TextConfig, embed_dim: int) -> int:
    w = t.width
    block = 12 * w * w + 13 * w
    return t.vocab_size * w + t.context_length * w + t.layers * block + 2 * w + w * embed_dim


# ----------------------------------------------------------------------------- 1. counts


@pytest.mark.parametrize("name", OPEN_CLIP_ARCHS)
def test_parameter_count_matches_open_clip(name):
    build_clip("shapes-tiny", device="meta")  # warm-up (lazy imports)
    ours = build_clip(name, device="meta")
    assert all(p.is_meta for p in ours.parameters())  # no memory allocated, nothing initialised
    theirs = open_clip_model(name, device="meta")
    assert count_parameters(ours) == count_parameters(name) == n_params(theirs)


def test_vit_h_16_256_count_by_hand_and_open_clip():
    cfg = get_config("ViT-H-16-256")
    assert (cfg.vision.image_size, cfg.vision.patch_size, cfg.vision.width, cfg.vision.layers) == (256, 16, 1280, 32)
    assert (cfg.text.width, cfg.text.layers, cfg.text.heads, cfg.embed_dim) == (1024, 24, 16, 1024)
    by_hand = vit_params(cfg.vision, cfg.embed_dim) + text_params(cfg.text, cfg.embed_dim) + 1  # + logit_scale
    assert count_parameters("ViT-H-16-256") == by_hand == n_params(open_clip_model(cfg, device="meta"))
    # the formula is right for the released ViTs too
    for name in ("ViT-B-32", "ViT-L-14-336"):
        c = get_config(name)
        assert vit_params(c.vision, c.embed_dim) + text_params(c.text, c.embed_dim) + 1 == count_parameters(name)


@pytest.mark.parametrize("name", OPEN_CLIP_ARCHS)
def test_presets_are_open_clips_quickgelu_configs(name):
    assert config_from_open_clip(f"{name}-quickgelu") == get_config(name)
    plain = config_from_open_clip(name)
    assert plain.activation == "gelu" and get_config(name).activation == "quick_gelu"


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_state_dict_layout_matches_open_clip_on_meta(name):
    """Every full-size architecture converts both ways (names and shapes), without any weights."""
    ours = build_clip(name, device="meta")
    theirs = open_clip_model(get_config(name), device="meta")
    converted = to_open_clip_state_dict(ours)
    expected = theirs.state_dict()
    assert set(converted) == set(expected)
    assert all(converted[k].shape == expected[k].shape for k in expected)
    back = from_open_clip_state_dict(expected, get_config(name))
    assert list(back) == list(ours.state_dict())


# ----------------------------------------------------------------------------- 2. parity

PARITY_CASES = {
    "ViT-B-32": ("ViT-B-32", lambda: config_from_open_clip("ViT-B-32")),  # nn.GELU
    "RN50-quickgelu": ("RN50-quickgelu", lambda: get_config("RN50")),  # QuickGELU text tower
    "tiny-vit": (TINY_VIT, lambda: TINY_VIT),
    "tiny-resnet": (TINY_RESNET, lambda: TINY_RESNET),
}


@pytest.mark.parametrize("case", list(PARITY_CASES))
@torch.no_grad()
def test_embeddings_match_open_clip_both_directions(case):
    source, make_config = PARITY_CASES[case]
    config = make_config()
    theirs = open_clip_model(source).eval()
    ours = build_clip(config).eval()
    images, tokens = sample_inputs(config, batch=2)

    def max_errors():
        img = (ours.encode_image(images) - theirs.encode_image(images)).abs().max().item()
        txt = (ours.encode_text(tokens) - theirs.encode_text(tokens)).abs().max().item()
        return img, txt

    # open_clip -> ours
    randomize_(theirs, seed=1)
    ours.load_state_dict(from_open_clip_state_dict(theirs.state_dict(), config), strict=True)
    assert ours.encode_image(images).abs().max() > 1e-2  # a real signal, not zeros
    img_err, txt_err = max_errors()
    assert img_err <= 1e-5 and txt_err <= 1e-5, (case, "open_clip->ours", img_err, txt_err)

    # ours -> open_clip (a fresh open_clip model, strict load)
    randomize_(ours, seed=2)
    theirs = open_clip_model(source).eval()
    theirs.load_state_dict(to_open_clip_state_dict(ours), strict=True)
    img_err, txt_err = max_errors()
    assert img_err <= 1e-5 and txt_err <= 1e-5, (case, "ours->open_clip", img_err, txt_err)

    # forward: normalised features and the scale, like open_clip's
    oi, ot, os_ = ours(images, tokens)
    ti, tt, ts = theirs(images, tokens)
    assert torch.allclose(oi, ti, atol=1e-5) and torch.allclose(ot, tt, atol=1e-5) and torch.allclose(os_, ts)
    assert torch.allclose(oi.norm(dim=-1), torch.ones(2), atol=1e-5)


@torch.no_grad()
def test_activation_matters():
    """The parity test can tell GELU from QuickGELU: the config really carries the activation."""
    quick = build_clip(TINY_VIT).eval()
    randomize_(quick, 0)
    gelu = build_clip(CLIPConfig.from_dict({**TINY_VIT.to_dict(), "activation": "gelu"})).eval()
    gelu.load_state_dict(quick.state_dict())
    images, tokens = sample_inputs(TINY_VIT)
    assert (quick.encode_text(tokens) - gelu.encode_text(tokens)).abs().max() > 1e-4
    assert (quick.encode_image(images) - gelu.encode_image(images)).abs().max() > 1e-4


# ----------------------------------------------------------------------------- 3. round trip, strictness


@pytest.mark.parametrize("config", [TINY_VIT, TINY_RESNET], ids=["vit", "resnet"])
def test_state_dict_round_trip_is_identity(config):
    ours = build_clip(config)
    randomize_(ours, 3)
    sd = ours.state_dict()
    via_open_clip = open_clip_model(config)
    via_open_clip.load_state_dict(to_open_clip_state_dict(ours), strict=True)
    back = from_open_clip_state_dict(via_open_clip.state_dict(), config)
    assert list(back) == list(sd)
    assert all(torch.equal(back[k], sd[k]) for k in sd)


def test_openai_checkpoint_variants_are_accepted():
    ours = build_clip(TINY_VIT)
    sd = to_open_clip_state_dict(ours)
    openai = {**sd, "input_resolution": torch.tensor(32), "context_length": torch.tensor(12),
              "vocab_size": torch.tensor(100)}
    ddp = {f"module.{k}": v for k, v in sd.items()}
    custom_text = convert_to_custom_text_state_dict(dict(sd))
    assert "text.text_projection" in custom_text
    for variant in (openai, ddp, custom_text):
        back = from_open_clip_state_dict(variant, TINY_VIT)
        assert all(torch.equal(back[k], v) for k, v in ours.state_dict().items())


def test_strict_conversion_errors():
    sd = to_open_clip_state_dict(build_clip(TINY_VIT))
    missing = {k: v for k, v in sd.items() if k != "visual.ln_post.weight"}
    with pytest.raises(ValueError, match=r"missing keys: visual\.ln_post\.weight"):
        from_open_clip_state_dict(missing, TINY_VIT)
    with pytest.raises(ValueError, match=r"unexpected keys: visual\.extra"):
        from_open_clip_state_dict({**sd, "visual.extra": torch.zeros(1)}, TINY_VIT)
    with pytest.raises(ValueError, match=r"text\.proj: expected \[32, 32\], got \[32, 16\]"):
        from_open_clip_state_dict({**sd, "text_projection": torch.zeros(32, 16)}, TINY_VIT)
    with pytest.raises(ValueError, match="does not match the config"):
        from_open_clip_state_dict(sd, TINY_RESNET)  # a ViT checkpoint for a ResNet config


# ----------------------------------------------------------------------------- configs


def test_config_names_dicts_and_errors():
    with pytest.raises(ValueError, match=r"unknown CLIP config 'ViT-Z-99'.*RN50.*ViT-H-16-256.*shapes-tiny"):
        get_config("ViT-Z-99")
    with pytest.raises(ValueError, match="unknown CLIP config"):
        build_clip("nope", device="meta")
    for name in CONFIG_NAMES:
        cfg = get_config(name)
        assert CLIPConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    a = get_config("shapes-tiny")
    a.text.vocab_size = 7
    assert get_config("shapes-tiny").text.vocab_size == 512  # presets hand out copies
    with pytest.raises(ValueError, match=r"unknown CLIPConfig\.vision field\(s\) \['patch'\]"):
        CLIPConfig.from_dict({"vision": {"patch": 4}})
    with pytest.raises(ValueError, match="multiple of patch_size"):
        VisionConfig(image_size=30, layers=2, width=64, heads=2, patch_size=4)
    with pytest.raises(ValueError, match="activation must be"):
        CLIPConfig(activation="relu")
    with pytest.raises(ValueError, match="unknown open_clip model"):
        config_from_open_clip("ViT-Z-99")
    with pytest.raises(ValueError, match="does not implement"):
        config_from_open_clip("ViT-B-16-SigLIP")
    # the download helper refuses an unknown tag before touching the network
    with pytest.raises(ValueError, match="neither a pretrained tag"):
        load_open_clip_pretrained("ViT-B-32", "no-such-tag")


@pytest.mark.parametrize("name", ["shapes-tiny", "emoji-tiny"])
@torch.no_grad()
def test_tiny_presets_run(name):
    cfg = get_config(name)
    assert cfg.embed_dim == 128 and cfg.text.context_length == 16 and cfg.vision.width == 128
    model = build_clip(cfg).eval()
    images, tokens = sample_inputs(cfg)
    img, txt, scale = model(images, tokens)
    assert img.shape == txt.shape == (2, 128) and scale.shape == ()
    assert count_parameters(model) == count_parameters(name) < 2_000_000


# ----------------------------------------------------------------------------- 4. behaviour


def test_logit_scale_init_and_clamp():
    model = build_clip(TINY_VIT)
    assert model.logit_scale.item() == pytest.approx(math.log(1 / 0.07))
    assert model.scale().item() == pytest.approx(1 / 0.07, rel=1e-6)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    images, tokens = sample_inputs(TINY_VIT)
    assert model(images, tokens)[2].item() == pytest.approx(100.0)
    model.scale().backward()
    assert model.logit_scale.grad.item() == 0.0  # capped: no gradient pushes it further
    model.clamp_logit_scale_()
    assert model.logit_scale.item() == pytest.approx(math.log(100))
    model.logit_scale.grad = None
    model.scale().backward()
    assert model.logit_scale.grad.item() == pytest.approx(100.0)  # at the cap the gradient flows


@torch.no_grad()
def test_causal_mask_reads_only_up_to_eot():
    model = build_clip(TINY_VIT).eval()
    randomize_(model, 4)
    _, tokens = sample_inputs(TINY_VIT, batch=1)  # [EOS] at position 6 of 12
    eot = int(tokens[0].argmax())
    base = model.encode_text(tokens)

    after = tokens.clone()
    after[0, eot + 1:] = torch.randint(1, 50, (tokens.shape[1] - eot - 1,))
    assert torch.allclose(model.encode_text(after), base, atol=1e-6)
    assert torch.allclose(model.encode_text(tokens[:, : eot + 1]), base, atol=1e-5)  # shorter input

    before = tokens.clone()
    before[0, eot - 2] = (before[0, eot - 2] + 1) % 90 + 1
    assert (model.encode_text(before) - base).abs().max() > 1e-4


def test_attention_masks():
    attn = MultiheadAttention(16, 4)
    x = torch.randn(2, 5, 16)
    causal = attn(x, causal=True)
    allowed = torch.ones(5, 5, dtype=torch.bool).tril()
    additive = torch.zeros(5, 5).masked_fill(~allowed, float("-inf"))
    assert torch.allclose(attn(x, attn_mask=allowed), causal, atol=1e-6)
    assert torch.allclose(attn(x, attn_mask=additive), causal, atol=1e-6)
    with pytest.raises(ValueError, match="not both"):
        attn(x, causal=True, attn_mask=allowed)
    ln = LayerNorm(16).to(torch.bfloat16)
    assert ln(x.to(torch.bfloat16)).dtype == torch.bfloat16


@pytest.mark.parametrize("config", [TINY_VIT, TINY_RESNET], ids=["vit", "resnet"])
def test_bad_inputs_raise_clear_errors(config):
    model = build_clip(config)
    s = config.vision.image_size
    with pytest.raises(ValueError, match=rf"expected images of shape \[B, 3, {s}, {s}\], got \[2, 3, 16, 16\]"):
        model.encode_image(torch.zeros(2, 3, 16, 16))
    with pytest.raises(ValueError, match=rf"expected images of shape \[B, 3, {s}, {s}\], got \[2, 1, {s}, {s}\]"):
        model.encode_image(torch.zeros(2, 1, s, s))
    with pytest.raises(ValueError, match=r"got \[3, 32, 32\]"):
        model.encode_image(torch.zeros(3, 32, 32))
    with pytest.raises(ValueError, match="floating-point"):
        model.encode_image(torch.zeros(1, 3, s, s, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"L <= context_length=12, got \[1, 13\]"):
        model.encode_text(torch.zeros(1, 13, dtype=torch.long))
    with pytest.raises(ValueError, match=r"got \[12\]"):
        model.encode_text(torch.zeros(12, dtype=torch.long))
    with pytest.raises(ValueError, match="integer token ids"):
        model.encode_text(torch.zeros(1, 12))
    with pytest.raises(ValueError, match=r"\[0, vocab_size=100\), got ids in \[0, 100\]"):
        model.encode_text(torch.tensor([[0, 5, 100]]))
    with pytest.raises(ValueError, match=r"got ids in \[-1, 5\]"):
        model.encode_text(torch.tensor([[-1, 5, 3]]))
    assert isinstance(model, CLIP)
