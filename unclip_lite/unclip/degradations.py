"""The corruptions unCLIP's upsamplers train on (Ramesh et al. 2022, §2.1 and Appendix C).

An upsampler trained on perfect downsampled renders learns to trust every pixel of its input;
at sampling time its input is the stage below's *sample*, with that model's own blur, noise
and artefacts, and the mistakes are copied up the cascade. So the conditioning image is
corrupted during training: the first stage (64 → 256 in the paper, 32 → 64 here) with a
random Gaussian blur (:func:`blur_degrade`), the second (256 → 1024; 64 → 128 here) with the
*BSR* degradation of Zhang et al. 2021 ("Designing a practical degradation model for deep
blind image super-resolution", BSRGAN), :func:`bsr_degrade`::

    high [B, 3, S, S] in [0, 1] --shuffled: blur, blur, resample ↓2, Gaussian noise, sensor noise--> JPEG --> [B, 3, S/2, S/2]

Each step is applied with probability ``p`` and draws its strength from a seeded generator,
so a training batch and a chapter figure are reproducible. Every degradation is a function of
its own (``BSR_STEPS``), so chapter 08 can show each one. Our simplifications of BSRGAN: the
total scale factor is 2 in one resampling step (BSRGAN: 4, sometimes in two), the sensor noise
is Poisson shot noise plus read noise rather than a reversed camera pipeline, and JPEG runs
last (as in BSRGAN) with one compression rather than two.
"""
from __future__ import annotations

import io
import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from unclip_lite.glide.upsample import gaussian_blur

RESAMPLE_MODES = ("nearest", "bilinear", "bicubic", "area")


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator))


def gaussian_kernel(sigma_x: float, sigma_y: float, theta: float, radius: int) -> torch.Tensor:
    """A normalised anisotropic Gaussian kernel [2r+1, 2r+1]: k(u) ∝ exp(-½ uᵀ Σ⁻¹ u) with
    Σ = R(θ) diag(σ_x², σ_y²) R(θ)ᵀ, u = (x, y) pixel offsets (x along width)."""
    c, s = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x ** 2, sigma_y ** 2], dtype=torch.float64)) @ rot.T
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    y, x = torch.meshgrid(offsets, offsets, indexing="ij")
    u = torch.stack([x, y], -1)  # [K, K, 2]
    kernel = torch.exp(-0.5 * torch.einsum("ijk,kl,ijl->ij", u, torch.linalg.inv(cov), u))  # [K, K]
    return (kernel / kernel.sum()).float()


def anisotropic_blur(images: torch.Tensor, sigma_x: float, sigma_y: float, theta: float) -> torch.Tensor:
    """``images`` [B, C, H, W] convolved with :func:`gaussian_kernel` (radius 3·max σ, at least 1;
    reflected borders, so a flat image stays flat)."""
    radius = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)  # reflect padding needs r < size
    kernel = gaussian_kernel(sigma_x, sigma_y, theta, radius).to(images)  # [K, K]
    C = images.shape[1]
    padded = F.pad(images, (radius,) * 4, mode="reflect")
    return F.conv2d(padded, kernel.expand(C, 1, *kernel.shape), groups=C)


def random_blur(images: torch.Tensor, generator: torch.Generator, max_sigma: float = 1.5) -> torch.Tensor:
    """BSR's blur: half the time isotropic (one σ), else anisotropic and rotated; σ ~ U(0.1, max_sigma) px."""
    sigma_x = _uniform(generator, 0.1, max_sigma)
    if float(torch.rand((), generator=generator)) < 0.5:
        return anisotropic_blur(images, sigma_x, sigma_x, 0.0)
    return anisotropic_blur(images, sigma_x, _uniform(generator, 0.1, max_sigma), _uniform(generator, 0, math.pi))


def random_resample(images: torch.Tensor, generator: torch.Generator, size: int) -> torch.Tensor:
    """Resize to ``size`` with a random interpolation: nearest, bilinear, bicubic or area."""
    mode = RESAMPLE_MODES[int(torch.randint(len(RESAMPLE_MODES), (), generator=generator))]
    kwargs = {} if mode in ("nearest", "area") else {"align_corners": False}
    return F.interpolate(images, size=(size, size), mode=mode, **kwargs).clamp(0, 1)


def gaussian_noise(images: torch.Tensor, generator: torch.Generator, max_sigma: float = 10 / 255) -> torch.Tensor:
    """Additive white noise, σ ~ U(1/255, max_sigma): colour (independent per channel) or grey
    (one field for all channels), half the time each, as in BSRGAN."""
    sigma = _uniform(generator, 1 / 255, max_sigma)
    B, C, H, W = images.shape
    grey = float(torch.rand((), generator=generator)) < 0.5
    noise = torch.randn(B, 1 if grey else C, H, W, generator=generator).to(images)
    return (images + sigma * noise).clamp(0, 1)


def sensor_noise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Camera sensor noise, simplified: Poisson shot noise (photons: variance ∝ intensity, at
    a random 10^U(2, 4) photons per unit of intensity) plus Gaussian read noise."""
    peak = 10 ** _uniform(generator, 2.0, 4.0)
    shot = torch.poisson(images.clamp(0, 1) * peak, generator=generator) / peak
    read = _uniform(generator, 0.0, 3 / 255) * torch.randn(images.shape, generator=generator).to(images)
    return (shot + read).clamp(0, 1)


def jpeg(images: torch.Tensor, quality: int) -> torch.Tensor:
    """JPEG-compress each image at ``quality`` (1-95) and decode it again (Pillow, 4:2:0 chroma)."""
    if not 1 <= quality <= 95:
        raise ValueError(f"JPEG quality must be in [1, 95], got {quality}")
    out = []
    for image in images:
        pixels = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # [H, W, 3]
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=quality)
        decoded = torch.from_numpy(np.asarray(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")).copy())
        out.append(decoded.permute(2, 0, 1).float() / 255)
    return torch.stack(out).to(images)


def random_jpeg(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """JPEG at a random quality in [30, 95] (BSRGAN's range)."""
    return jpeg(images, int(torch.randint(30, 96, (), generator=generator)))


# name -> f(images, generator): each BSR step at full strength range, for the chapter's figure
BSR_STEPS = {"blur": random_blur, "gaussian noise": gaussian_noise, "sensor noise": sensor_noise,
             "JPEG": random_jpeg}


def bsr_degrade(high: torch.Tensor, low_size: int, generator: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """The BSR degradation of ``high`` [B, 3, S, S] in [0, 1] down to [B, 3, low_size, low_size]:
    two blurs, the resampling and two noises in a random order, each but the resampling kept
    with probability ``p``, then JPEG with probability ``p``. One draw of order and strengths
    per batch (one call); call it per image for independent ones."""
    if high.dim() != 4 or high.shape[1] != 3 or high.shape[-1] % low_size:
        raise ValueError(f"expected [B, 3, S, S] images with S a multiple of {low_size}, got {tuple(high.shape)}")
    steps = ["blur", "blur", "resample", "gaussian noise", "sensor noise"]
    order = torch.randperm(len(steps), generator=generator).tolist()
    x = high
    for i in order:
        name = steps[i]
        if name == "resample":
            x = random_resample(x, generator, low_size)
        elif float(torch.rand((), generator=generator)) < p:
            x = BSR_STEPS[name](x, generator)
    if float(torch.rand((), generator=generator)) < p:
        x = random_jpeg(x, generator)
    return x.clamp(0, 1)


def blur_degrade(high: torch.Tensor, low_size: int, generator: torch.Generator, max_sigma: float = 0.6) -> torch.Tensor:
    """The first stage's corruption: area-downsample to ``low_size``, then blur each image with
    its own isotropic σ ~ U(0, ``max_sigma``) low-res pixels (GLIDE's and unCLIP's blur augmentation)."""
    low = F.interpolate(high, size=(low_size, low_size), mode="area")
    return gaussian_blur(low, torch.rand(len(high), generator=generator) * max_sigma).clamp(0, 1)


def clean_downsample(high: torch.Tensor, low_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """No corruption: the area-downsampled render (the ablation's training input)."""
    return F.interpolate(high, size=(low_size, low_size), mode="area")


DEGRADATIONS = {"blur": blur_degrade, "bsr": bsr_degrade, "none": clean_downsample}
