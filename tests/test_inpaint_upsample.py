"""Inputs and paste-back of GLIDE's inpainting model, inputs of its upsampler
(unclip_lite.glide.inpaint / .upsample)."""
import pytest
import torch
import torch.nn.functional as F

from unclip_lite.diffusion import GaussianDiffusion, ddim_sample_loop, ddpm_sample_loop
from unclip_lite.glide.inpaint import (check_inpaint_inputs, inpaint_channels, paste_known, paste_result,
                                       random_masks)
from unclip_lite.glide.upsample import degrade, gaussian_blur, upsample_channels


def image_and_mask(seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, 8, 8, generator=g) * 2 - 1
    mask = torch.ones(2, 1, 8, 8)
    mask[:, :, 2:6, 3:7] = 0
    return image, mask


def test_inpaint_channels_are_known_pixels_and_mask():
    image, mask = image_and_mask()
    extra = inpaint_channels(image, mask)
    assert extra.shape == (2, 4, 8, 8)
    assert torch.equal(extra[:, :3], image * mask) and torch.equal(extra[:, 3:], mask)
    assert (extra[:, :3, 2:6, 3:7] == 0).all()


@pytest.mark.parametrize("make, match", [
    (lambda i, m: (i, m[:, :, :4]), "mask must have shape"),
    (lambda i, m: (i, m.repeat(1, 3, 1, 1)), "mask must have shape"),
    (lambda i, m: (i, m * 0.5), "exactly 0"),
    (lambda i, m: (i * 3, m), r"\[-1, 1\]"),
    (lambda i, m: (i[:, :2], m), r"\[B, 3, H, W\]"),
])
def test_bad_masks_and_images_get_a_clear_error(make, match):
    with pytest.raises(ValueError, match=match):
        check_inpaint_inputs(*make(*image_and_mask()))


def test_random_masks_erase_one_rectangle_of_the_asked_size():
    masks = random_masks(400, 32, torch.Generator().manual_seed(0), fill_all=0.1)
    assert masks.shape == (400, 1, 32, 32) and set(masks.unique().tolist()) <= {0.0, 1.0}
    erased = 1 - masks.mean((1, 2, 3))  # [n]
    full = erased == 1
    assert 0.05 < full.float().mean() < 0.15
    rest = erased[~full]
    assert rest.min() >= 0.25 ** 2 * 0.8 and rest.max() <= 0.75 ** 2 * 1.2
    # every hole is one axis-aligned rectangle: rows and columns of the hole form contiguous runs
    hole = masks[~full][0, 0] == 0
    rows, cols = hole.any(1).nonzero().flatten(), hole.any(0).nonzero().flatten()
    assert hole[rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
    assert torch.equal(random_masks(5, 16, torch.Generator().manual_seed(3)),
                       random_masks(5, 16, torch.Generator().manual_seed(3)))


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_paste_back_keeps_every_known_pixel_exactly(sampler):
    """With any denoiser, the sampled image equals the source outside the hole, bit for bit,
    and the predicted x_0 handed to each step already holds the known pixels."""
    diffusion = GaussianDiffusion.from_schedule("cosine", 50)
    image, mask = image_and_mask()

    def noisy_model(x, t):  # a deliberately wrong denoiser
        return 0.5 * x + torch.sin(t.view(-1, 1, 1, 1).float())

    model_fn = paste_known(diffusion, noisy_model, image, mask)
    x = torch.randn(2, 3, 8, 8, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([30, 30])
    x0 = diffusion.predict_x0_from_eps(x, t, model_fn(x, t))
    torch.testing.assert_close(x0 * mask, image * mask)  # up to float rounding
    gen = torch.Generator().manual_seed(2)
    if sampler == "ddim":
        out = ddim_sample_loop(diffusion, model_fn, (2, 3, 8, 8), steps=10, generator=gen, progress=False)
    else:
        out = ddpm_sample_loop(diffusion, model_fn, (2, 3, 8, 8), generator=gen, progress=False)
    final = paste_result(out, image, mask)
    assert torch.equal(final[mask.expand_as(image).bool()], image[mask.expand_as(image).bool()])
    assert not torch.equal(final, image)  # the hole was filled with something else
    with pytest.raises(ValueError, match="ε-prediction"):
        paste_known(GaussianDiffusion.from_schedule("cosine", 10, parameterization="x0"), noisy_model, image, mask)


def test_upsample_channels_are_bilinear_and_check_sizes():
    low = torch.rand(2, 3, 8, 8) * 2 - 1
    up = upsample_channels(low, 16)
    torch.testing.assert_close(up, F.interpolate(low, size=(16, 16), mode="bilinear", align_corners=False))
    with pytest.raises(ValueError, match="multiple"):
        upsample_channels(low, 12)
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        upsample_channels(low * 5, 16)
    with pytest.raises(ValueError, match="square low-res"):
        upsample_channels(torch.zeros(2, 3, 8, 4), 16)


def test_gaussian_blur_matches_a_naive_convolution_and_keeps_mass():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(2, 3, 9, 9, generator=g)
    sigma = torch.tensor([0.0, 1.2])
    out = gaussian_blur(images, sigma)
    torch.testing.assert_close(out[0], images[0], atol=1e-6, rtol=0)  # σ = 0: unchanged
    # naive 2-D Gaussian on the interior pixel (4, 4), far enough from the border
    r = 3
    ys, xs = torch.meshgrid(torch.arange(-r, r + 1.0), torch.arange(-r, r + 1.0), indexing="ij")
    k = torch.exp(-(xs ** 2 + ys ** 2) / (2 * 1.2 ** 2))
    k = k / k.sum()
    naive = (images[1, :, 4 - r:4 + r + 1, 4 - r:4 + r + 1] * k).sum((1, 2))
    torch.testing.assert_close(out[1, :, 4, 4], naive, atol=1e-5, rtol=0)
    flat = torch.full((1, 3, 9, 9), 0.3)
    torch.testing.assert_close(gaussian_blur(flat, torch.tensor([2.0])), flat)


def test_degrade_downsamples_and_blurs_deterministically():
    high = torch.rand(4, 3, 16, 16) * 2 - 1
    a = degrade(high, 8, generator=torch.Generator().manual_seed(0))
    b = degrade(high, 8, generator=torch.Generator().manual_seed(0))
    assert a.shape == (4, 3, 8, 8) and torch.equal(a, b) and a.min() >= -1 and a.max() <= 1
    sharp = degrade(high, 8, max_blur=0.0)
    torch.testing.assert_close(sharp, F.interpolate(high, size=(8, 8), mode="area"), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="multiple"):
        degrade(high, 5)
