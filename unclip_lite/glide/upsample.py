"""GLIDE's text-conditional upsampler (Nichol et al. 2021, §4; the ADM super-resolution model).

A :class:`~.text2im.Text2Im` whose U-Net reads 6 channels: the noisy high-resolution image
and the low-resolution image upsampled bilinearly to the same size::

    x_t [B, 3, S, S] ⊕ bilinear(low_res [B, 3, s, s] -> S) [B, 3, S, S]  --U-Net-->  ε [B, 3, S, S]

Trained on (high-res render, degraded low-res copy) pairs: the low-res input is the image
downsampled and then blurred by a random Gaussian (GLIDE and unCLIP's "blur augmentation"),
so at test time the model tolerates the imperfect output of the base model. Sampled with a
short schedule such as GLIDE's ``"fast27"``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def check_low_res(low_res: torch.Tensor, expected_size: int | None = None) -> None:
    if low_res.dim() != 4 or low_res.shape[1] != 3 or low_res.shape[2] != low_res.shape[3]:
        raise ValueError(f"expected a square low-res image [B, 3, s, s], got {tuple(low_res.shape)}")
    if not low_res.is_floating_point() or low_res.min() < -1 or low_res.max() > 1:
        raise ValueError("expected a floating-point low-res image scaled to [-1, 1]")
    if expected_size is not None and low_res.shape[-1] != expected_size:
        raise ValueError(f"this upsampler takes {expected_size} px low-res images, got {low_res.shape[-1]} px")


def upsample_channels(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """The 3 extra input channels: ``low_res`` [B, 3, s, s] bilinearly resized to ``size``: [B, 3, size, size]."""
    check_low_res(low_res)
    if size < low_res.shape[-1] or size % low_res.shape[-1]:
        raise ValueError(f"output size {size} must be a multiple of the low-res size {low_res.shape[-1]}")
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)


def gaussian_blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Blur each image [B, C, H, W] with its own Gaussian of std ``sigma`` [B] pixels (σ = 0: unchanged)."""
    radius = max(1, int(3 * float(sigma.max())) if len(sigma) else 1)
    offsets = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)  # [K]
    s = sigma.to(images).clamp(min=1e-6)[:, None]  # [B, 1]
    kernel = torch.exp(-0.5 * (offsets[None] / s) ** 2)  # [B, K]
    kernel = kernel / kernel.sum(1, keepdim=True)
    B, C, H, W = images.shape
    x = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = x.reshape(1, B * C, H + 2 * radius, W + 2 * radius)
    k = kernel.repeat_interleave(C, 0)  # [B*C, K]
    x = F.conv2d(x, k[:, None, None, :], groups=B * C)  # along width
    x = F.conv2d(x, k[:, None, :, None], groups=B * C)  # along height
    return x.reshape(B, C, H, W)


def degrade(high_res: torch.Tensor, low_size: int, max_blur: float = 0.6,
            generator: torch.Generator | None = None) -> torch.Tensor:
    """A training low-res input: ``high_res`` [B, 3, S, S] in [-1, 1] area-downsampled to
    ``low_size``, then blurred with σ ~ U(0, ``max_blur``) low-res pixels per image."""
    if high_res.shape[-1] % low_size:
        raise ValueError(f"high-res size {high_res.shape[-1]} is not a multiple of {low_size}")
    low = F.interpolate(high_res, size=(low_size, low_size), mode="area")
    sigma = torch.rand(len(high_res), generator=generator) * max_blur  # [B]
    return gaussian_blur(low, sigma).clamp(-1, 1)
