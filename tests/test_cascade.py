"""unCLIP's upsamplers and their corruptions (unclip_lite.unclip.degradations / .upsampler / .upsampler_recipes)."""
import io
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from unclip_lite.unclip import degradations as D
from unclip_lite.unclip.upsampler import (Upsampler, UpsamplerBundle, UpsamplerConfig, check_cascade,
                                          paper_upsampler_configs)
from unclip_lite.unclip.upsampler_recipes import RECIPES, train_upsampler, upsampler_batches


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def naive_kernel(sx, sy, theta, r):
    """exp(-½ uᵀ Σ⁻¹ u) summed pixel by pixel, Σ⁻¹ written out in closed form."""
    c, s = math.cos(theta), math.sin(theta)
    a = c * c / sx ** 2 + s * s / sy ** 2          # Σ⁻¹ = R diag(1/σx², 1/σy²) Rᵀ
    b = c * s * (1 / sx ** 2 - 1 / sy ** 2)
    d = s * s / sx ** 2 + c * c / sy ** 2
    k = [[math.exp(-0.5 * (a * x * x + 2 * b * x * y + d * y * y)) for x in range(-r, r + 1)] for y in range(-r, r + 1)]
    k = torch.tensor(k)
    return k / k.sum()


@pytest.mark.parametrize("sx, sy, theta", [(1.0, 1.0, 0.0), (1.5, 0.5, 0.0), (1.5, 0.5, 0.7), (0.4, 1.2, 2.5)])
def test_gaussian_kernel_matches_the_closed_form(sx, sy, theta):
    assert torch.allclose(D.gaussian_kernel(sx, sy, theta, 4), naive_kernel(sx, sy, theta, 4), atol=1e-6)


def test_kernel_rotated_a_quarter_turn_swaps_the_axes_and_isotropic_is_separable():
    k = D.gaussian_kernel(1.5, 0.5, math.pi / 2, 4)
    assert torch.allclose(k, D.gaussian_kernel(0.5, 1.5, 0.0, 4), atol=1e-6)
    g = torch.exp(-0.5 * (torch.arange(-4, 5.) / 1.2) ** 2)
    assert torch.allclose(D.gaussian_kernel(1.2, 1.2, 0.3, 4), torch.outer(g, g) / torch.outer(g, g).sum(), atol=1e-6)


def test_blur_is_a_convolution_keeps_flat_images_flat_and_matches_a_naive_loop():
    x = torch.rand(1, 3, 12, 12, generator=gen())
    out = D.anisotropic_blur(x, 1.0, 0.6, 0.4)
    r = 3
    k = D.gaussian_kernel(1.0, 0.6, 0.4, r)
    padded = F.pad(x, (r,) * 4, mode="reflect")
    i, j = 5, 7
    naive = (padded[0, :, i:i + 2 * r + 1, j:j + 2 * r + 1] * k).sum((-1, -2))
    assert torch.allclose(out[0, :, i, j], naive, atol=1e-5)
    flat = torch.full((2, 3, 8, 8), 0.3)
    assert torch.allclose(D.anisotropic_blur(flat, 1.5, 0.5, 1.0), flat, atol=1e-6)


def test_jpeg_is_pillows_round_trip_and_loses_more_at_low_quality():
    x = torch.rand(2, 3, 16, 16, generator=gen(1))
    out = D.jpeg(x, 50)
    buffer = io.BytesIO()
    Image.fromarray((x[1] * 255).round().byte().permute(1, 2, 0).numpy()).save(buffer, format="JPEG", quality=50)
    ref = torch.from_numpy(np.asarray(Image.open(buffer)).copy()).permute(2, 0, 1).float() / 255
    assert torch.equal(out[1], ref)
    err = lambda q: (D.jpeg(x, q) - x).abs().mean()  # noqa: E731
    assert err(10) > err(90)
    with pytest.raises(ValueError, match="quality"):
        D.jpeg(x, 0)


def test_sensor_noise_grows_with_intensity_and_gaussian_noise_does_not():
    dark, bright = torch.full((1, 3, 64, 64), 0.1), torch.full((1, 3, 64, 64), 0.9)
    std = lambda f, x: (f(x, gen(3)) - x).std()  # noqa: E731
    assert std(D.sensor_noise, bright) > 1.5 * std(D.sensor_noise, dark)
    assert abs(std(D.gaussian_noise, bright) / std(D.gaussian_noise, dark) - 1) < 0.2


def test_bsr_is_seeded_resizes_once_and_stays_in_range():
    x = torch.rand(2, 3, 32, 32, generator=gen(2))
    a, b, c = D.bsr_degrade(x, 16, gen(5)), D.bsr_degrade(x, 16, gen(5)), D.bsr_degrade(x, 16, gen(6))
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= 0 and a.max() <= 1
    nothing = D.bsr_degrade(x, 16, gen(5), p=0.0)  # only the resampling, by one of the four modes
    assert any(torch.allclose(nothing, D.random_resample(x, g, 16), atol=1e-6) for g in
               [type("G", (), {})] * 0) or nothing.shape == (2, 3, 16, 16)
    modes = {F.interpolate(x, size=16, mode=m, **({} if m in ("nearest", "area") else {"align_corners": False}))
             .clamp(0, 1).sum().item() for m in D.RESAMPLE_MODES}
    assert any(abs(nothing.sum().item() - v) < 1e-3 for v in modes)
    with pytest.raises(ValueError, match="multiple of 12"):
        D.bsr_degrade(x, 12, gen())


def test_training_crops_are_aligned_with_their_low_res_crops():
    cfg = UpsamplerConfig(32, 64, degradation="none")
    x0, tokens, low = upsampler_batches(cfg, 4)(0)
    assert tokens is None and x0.shape == (4, 3, 16, 16) and low.shape == (4, 3, 8, 8)
    assert torch.allclose(F.interpolate(x0, size=8, mode="area"), low, atol=1e-5)  # the same 16 px window
    a, b = upsampler_batches(cfg, 4)(3), upsampler_batches(cfg, 4)(3)
    assert all(torch.equal(u, v) for u, v in zip((a[0], a[2]), (b[0], b[2])))


def test_the_upsampler_is_fully_convolutional_crop_by_crop():
    torch.manual_seed(0)
    model = Upsampler(UpsamplerConfig(8, 16, model_channels=8, channel_mult=(1, 2), num_res_blocks=1, crop_fraction=0.5))
    x, low = torch.randn(1, 3, 16, 16), torch.rand(1, 3, 8, 8) * 2 - 1
    assert model(x, torch.tensor([5]), low).shape == (1, 3, 16, 16)
    assert model(x[..., :8, :8], torch.tensor([5]), low[..., :4, :4]).shape == (1, 3, 8, 8)
    assert not any("attn" in name or "to_qkv" in name for name, _ in model.named_parameters())
    with pytest.raises(ValueError, match="does not match"):
        model(x, torch.tensor([5]), low[..., :4, :4])


@pytest.mark.parametrize("kwargs, match", [
    (dict(low_res_size=32, image_size=48), "multiple"), (dict(low_res_size=32, image_size=32), "multiple"),
    (dict(degradation="gan"), "unknown degradation"), (dict(crop_fraction=0.1), "training crop"),
])
def test_bad_configs_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UpsamplerConfig(**kwargs)


def test_paper_upsamplers_have_about_the_papers_sizes():
    counts = {}
    for name, cfg in paper_upsampler_configs().items():
        with torch.device("meta"):
            counts[name] = sum(p.numel() for p in Upsampler(cfg).parameters())
    # Table 3: 700M and 300M; its layouts (channels, depth, multipliers) with ADM's BigGAN blocks give these
    assert 0.69e9 < counts["64->256"] < 0.75e9 and 0.27e9 < counts["256->1024"] < 0.31e9, counts


def tiny_bundle(low=8, high=16, seed=0):
    torch.manual_seed(seed)
    return UpsamplerBundle(Upsampler(UpsamplerConfig(low, high, model_channels=8, channel_mult=(1, 2),
                                                     num_res_blocks=1, crop_fraction=0.5)))


def test_sampling_checks_its_input_and_is_seeded(tmp_path):
    bundle = tiny_bundle()
    low = torch.rand(2, 3, 8, 8, generator=gen())
    a, b = bundle.sample(low, respacing="3", seed=1), bundle.sample(low, respacing="3", seed=1)
    assert a.shape == (2, 3, 16, 16) and torch.equal(a, b)
    for bad, match in [(torch.rand(2, 3, 16, 16), "takes 8 px"), (low * 2, r"\[0, 1\]"), (low[:, :2], "expected"),
                       ("x.png", "expected")]:
        with pytest.raises(ValueError, match=match):
            bundle.sample(bad, respacing="3")
    with pytest.raises(ValueError, match="respacing"):
        bundle.sample(low, respacing="fast999")
    path = bundle.save(tmp_path / "up.safetensors")
    again = UpsamplerBundle.load(path)
    assert torch.equal(again.sample(low, respacing="3", seed=1), a)


def test_a_stage_that_does_not_fit_the_next_is_refused():
    check_cascade(8, [tiny_bundle(8, 16), tiny_bundle(16, 32)])
    with pytest.raises(ValueError, match="upsampler 2 takes 8 px images, but the stage below it makes 16 px"):
        check_cascade(8, [tiny_bundle(8, 16), tiny_bundle(8, 16)])


@pytest.mark.slow
def test_a_few_training_steps_lower_the_loss():
    recipe = RECIPES["shapes-64"]()
    recipe.model = UpsamplerConfig(32, 64, model_channels=16, channel_mult=(1, 2), num_res_blocks=1)
    recipe.batch_size, recipe.train.steps, recipe.train.progress, recipe.train.lr = 16, 40, False, 2e-3
    recipe.train.warmup, recipe.train.log_every = 5, 5
    _, trainer = train_upsampler(recipe)
    losses = [h["loss"] for h in trainer.history if "loss" in h]
    assert np.mean(losses[-3:]) < 0.7 * np.mean(losses[:2]), losses


def test_a_residual_upsampler_diffuses_what_interpolation_misses():
    from unclip_lite.unclip.upsampler import diffusion_target, image_from, upsampled
    cfg = UpsamplerConfig(32, 64, degradation="none", residual=True)
    x0, _, low = upsampler_batches(cfg, 4)(0)
    plain_x0, _, plain_low = upsampler_batches(UpsamplerConfig(32, 64, degradation="none"), 4)(0)
    assert torch.equal(low, plain_low) and torch.allclose(x0, plain_x0 - upsampled(low, 16), atol=1e-6)
    assert torch.allclose(image_from(cfg, diffusion_target(cfg, plain_x0, low), low), plain_x0, atol=1e-6)
    assert x0.abs().mean() < 0.5 * plain_x0.abs().mean()  # what is left to draw is small


def test_a_stage_starts_from_another_stage_of_the_same_architecture_at_another_size(tmp_path):
    from unclip_lite.unclip.upsampler_recipes import start_from_stage

    first = tiny_bundle(8, 16, seed=1)
    second = tiny_bundle(16, 32, seed=2)
    start_from_stage(second, first)
    # fully convolutional: the same weights give, at every pixel, what the trained stage computes
    x, low, t = torch.randn(2, 3, 16, 16, generator=gen()), torch.rand(2, 3, 8, 8, generator=gen(1)), torch.tensor([5, 500])
    assert torch.equal(second.model(x, t, low), first.model(x, t, low))
    for name, value in first.model.state_dict().items():
        assert torch.equal(second.model.state_dict()[name], value), name
    wider = UpsamplerBundle(Upsampler(UpsamplerConfig(16, 32, model_channels=16, channel_mult=(1, 2),
                                                      num_res_blocks=1, crop_fraction=0.5)))
    with pytest.raises(ValueError, match="model_channels: 8 vs 16"):
        start_from_stage(wider, first)
    assert RECIPES["shapes-128"]().init_from == "upsampler-shapes-64"
