"""The ADM / GLIDE U-Net: shapes, zero init, conditioning, parameter counts, a few training steps."""
import math

import pytest
import torch

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.unet import (UNET_CONFIGS, AttentionBlock, UNet, UNetConfig, count_parameters, get_unet_config,
                               timestep_embedding)


def tiny(**overrides) -> UNetConfig:
    """A GLIDE-shaped U-Net small enough for a unit test."""
    kw = dict(model_channels=16, channel_mult=(1, 2, 2), num_res_blocks=1, attention_resolutions=(8, 4),
              num_head_channels=8, image_size=16, resblock_updown=True, learn_sigma=True,
              encoder_channels=12, cond_dim=10)
    kw.update(overrides)
    return UNetConfig(**kw)


def randomize_zeros(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Give the zero-initialised layers random weights so that every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
    return model


@pytest.mark.parametrize("cfg, kwargs", [
    (tiny(), {}),
    (tiny(), {"context": True, "cond": True}),
    (tiny(learn_sigma=False, resblock_updown=False, use_scale_shift_norm=False, num_head_channels=None,
          num_heads=2, encoder_channels=None, cond_dim=None, out_channels=4, in_channels=1), {}),
    (tiny(channel_mult=(1,), attention_resolutions=(8,), image_size=8), {"context": True}),
])
def test_output_shapes(cfg, kwargs):
    torch.manual_seed(0)
    model = randomize_zeros(UNet(cfg))
    x = torch.randn(2, cfg.in_channels, cfg.image_size, cfg.image_size)
    extra = {}
    if kwargs.get("context"):
        extra["context"] = torch.randn(2, 5, cfg.encoder_channels)
        extra["context_mask"] = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    if kwargs.get("cond"):
        extra["cond"] = torch.randn(2, cfg.cond_dim)
    out = model(x, torch.tensor([3, 999]), **extra)
    assert out.shape == (2, cfg.final_out_channels, cfg.image_size, cfg.image_size)
    assert torch.isfinite(out).all() and out.abs().sum() > 0
    # float timesteps and a scalar timestep work too; the net is convolutional in H, W
    assert model(x, torch.tensor([0.5, 7.25]), **extra).shape == out.shape
    assert model(x, 10, **extra).shape == out.shape
    f = cfg.downsample_factor
    big = torch.randn(2, cfg.in_channels, cfg.image_size + 2 * f, cfg.image_size + f)
    assert model(big, torch.tensor([1, 2]), **extra).shape[2:] == big.shape[2:]


def test_shapes_tiny_preset_forward():
    cfg = get_unet_config("shapes-tiny")
    model = UNet(cfg)
    out = model(torch.randn(2, 3, 32, 32), torch.tensor([1, 500]))
    assert out.shape == (2, 3, 32, 32)


def test_fresh_model_outputs_exactly_zero():
    cfg = tiny()
    model = UNet(cfg)
    out = model(torch.randn(2, 3, 16, 16), torch.tensor([5, 50]), context=torch.randn(2, 4, 12),
                cond=torch.randn(2, 10))
    assert torch.equal(out, torch.zeros_like(out))
    for m in model.modules():
        if isinstance(m, AttentionBlock):
            assert not m.proj_out.weight.any() and not m.proj_out.bias.any()


def test_context_is_used_and_padding_is_masked():
    cfg = tiny()
    model = randomize_zeros(UNet(cfg)).eval()
    g = torch.Generator().manual_seed(1)
    x, t = torch.randn(2, 3, 16, 16, generator=g), torch.tensor([10, 400])
    context = torch.randn(2, 6, 12, generator=g)
    mask = torch.ones(2, 6, dtype=torch.bool)
    mask[:, 4:] = False  # the last two tokens are padding
    with torch.no_grad():
        base = model(x, t, context=context, context_mask=mask)
        changed_real = context.clone()
        changed_real[:, 1] += 1.0
        assert not torch.allclose(model(x, t, context=changed_real, context_mask=mask), base, atol=1e-5)
        changed_pad = context.clone()
        changed_pad[:, 4:] = torch.randn(2, 2, 12, generator=g) * 10
        torch.testing.assert_close(model(x, t, context=changed_pad, context_mask=mask), base, atol=1e-6, rtol=0)
        # masking the padding is the same as leaving those tokens out
        torch.testing.assert_close(model(x, t, context=context[:, :4]), base, atol=1e-5, rtol=1e-5)
        # cond is used too
        cond = torch.randn(2, 10, generator=g)
        assert not torch.allclose(model(x, t, context=context, context_mask=mask, cond=cond), base, atol=1e-5)


def test_timestep_embedding_closed_form():
    t = torch.tensor([0.0, 3.5, 999.0])
    dim = 6
    emb = timestep_embedding(t, dim)
    expected = torch.tensor([[math.cos(s * 10000 ** (-i / 3)) for i in range(3)]
                             + [math.sin(s * 10000 ** (-i / 3)) for i in range(3)] for s in t.tolist()])
    torch.testing.assert_close(emb, expected)
    odd = timestep_embedding(t, 7)
    assert odd.shape == (3, 7) and torch.equal(odd[:, -1], torch.zeros(3))
    torch.testing.assert_close(odd[:, :6], expected)
    ints = torch.tensor([0, 7, 999])  # integer timesteps embed like the same floats
    torch.testing.assert_close(timestep_embedding(ints, 8), timestep_embedding(ints.float(), 8))


def test_glide_released_size_on_meta_device():
    cfg = get_unet_config("glide-base-released")
    with torch.device("meta"):
        model = UNet(cfg)
    assert all(p.is_meta for p in model.parameters())  # no memory allocated, nothing initialised
    total = count_parameters(model)
    assert total == sum(p.numel() for m in model.modules() for p in m.parameters(recurse=False))
    text = count_parameters(model.cond_proj) + sum(
        count_parameters(m.encoder_kv) for m in model.modules() if isinstance(m, AttentionBlock))
    print(f"\nglide-base-released U-Net: {total:,} parameters ({total - text:,} without its text projections)")
    # learn_sigma doubles only the last conv's output channels
    last = model.out[-1]
    assert last.out_channels == 2 * cfg.out_channels
    cfg_eps = get_unet_config("glide-base-released")
    cfg_eps.learn_sigma = False
    with torch.device("meta"):
        eps_model = UNet(cfg_eps)
    assert total - count_parameters(eps_model) == cfg.out_channels * (last.in_channels * 9 + 1)
    # without text inputs the same structure loses exactly the encoder_kv and cond projections
    cfg_plain = UNetConfig.from_dict({**cfg.to_dict(), "encoder_channels": None, "cond_dim": None})
    with torch.device("meta"):
        assert count_parameters(UNet(cfg_plain)) == total - text


def test_presets_and_config_round_trip():
    for name in UNET_CONFIGS:
        cfg = get_unet_config(name)
        assert UNetConfig.from_dict(cfg.to_dict()) == cfg
    get_unet_config("shapes-tiny").model_channels = 1  # a copy: the preset itself is untouched
    assert UNET_CONFIGS["shapes-tiny"].model_channels == 64
    with pytest.raises(ValueError, match="shapes-tiny"):
        get_unet_config("nope")
    with pytest.raises(ValueError, match=r"unknown UNetConfig field\(s\)"):
        UNetConfig.from_dict({"channels": 3})


def test_tiny_unet_trains():
    torch.manual_seed(0)
    cfg = tiny(learn_sigma=False, encoder_channels=None, cond_dim=None, channel_mult=(1, 2),
               attention_resolutions=(8,), model_channels=32, num_head_channels=16)
    model = UNet(cfg)
    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    g = torch.Generator().manual_seed(0)
    x0 = torch.zeros(8, 3, 16, 16)
    x0[:, :, 4:12, 4:12] = 1.0  # a fixed batch of squares
    x0 = x0 * torch.rand(8, 3, 1, 1, generator=g) * 2 - 1
    t = torch.randint(0, 1000, (8,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(30):
        loss = diffusion.training_losses(model, x0, t, noise=noise)["loss"].mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    print(f"\ndiffusion loss {losses[0]:.3f} -> {losses[-1]:.3f} in 30 Adam steps")
    assert losses[-1] < 0.7 * losses[0], losses


def test_bad_inputs_raise_clear_errors():
    model = UNet(tiny(encoder_channels=None, cond_dim=None))
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([1, 2])
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\]"):
        model(torch.randn(2, 4, 16, 16), t)
    with pytest.raises(ValueError, match="divisible"):
        model(torch.randn(2, 3, 18, 16), t)
    with pytest.raises(ValueError, match="no encoder_channels"):
        model(x, t, context=torch.randn(2, 3, 12))
    with pytest.raises(ValueError, match="no cond_dim"):
        model(x, t, cond=torch.randn(2, 10))
    with pytest.raises(ValueError, match="t of shape"):
        model(x, torch.tensor([1, 2, 3]))
    text_model = UNet(tiny())
    with pytest.raises(ValueError, match="context of shape"):
        text_model(x, t, context=torch.randn(2, 3, 7))
    with pytest.raises(ValueError, match="context_mask of shape"):
        text_model(x, t, context=torch.randn(2, 3, 12), context_mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="total downsampling"):
        UNetConfig(image_size=30, channel_mult=(1, 2, 2))
    with pytest.raises(ValueError, match="match no level"):
        UNetConfig(image_size=32, channel_mult=(1, 2, 2), attention_resolutions=(12,))
    with pytest.raises(ValueError, match="heads"):
        UNetConfig(model_channels=40, num_head_channels=32)
    with pytest.raises(ValueError, match="dropout"):
        UNetConfig(dropout=1.5)
