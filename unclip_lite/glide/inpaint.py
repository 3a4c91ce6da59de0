"""GLIDE's inpainting model (Nichol et al. 2021, §3.3): fill a masked region to match a caption.

The model is :class:`~.text2im.Text2Im` whose U-Net reads 7 channels: the noisy image x_t,
the known pixels (image · mask) and the mask itself, so it always sees what must be kept::

    x_t [B, 3, H, W] ⊕ image · mask [B, 3, H, W] ⊕ mask [B, 1, H, W]  --U-Net-->  ε [B, 3, H, W]

``mask`` is 1 where the image is known (kept) and 0 where the model must draw. It is trained
like text2im (20% empty captions) on random erased rectangles. At sampling time the known
pixels are also pasted into every prediction of x_0 (:func:`paste_known`, as glide-text2im's
inpainting notebook does), and once more into the result, so pixels outside the hole come
back exactly as they went in.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from unclip_lite.data.shapes import Scenes
from unclip_lite.diffusion import GaussianDiffusion


def check_inpaint_inputs(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Validate ``image`` [B, 3, H, W] in [-1, 1] and ``mask`` [B, 1, H, W] of 0s and 1s;
    return the mask as the image's dtype."""
    if image.dim() != 4 or image.shape[1] != 3:
        raise ValueError(f"expected an image of shape [B, 3, H, W], got {tuple(image.shape)}")
    if not image.is_floating_point() or image.min() < -1 or image.max() > 1:
        raise ValueError("expected a floating-point image scaled to [-1, 1]")
    expected = (image.shape[0], 1, *image.shape[2:])
    if tuple(mask.shape) != expected:
        raise ValueError(f"mask must have shape {list(expected)} (1 = keep, 0 = fill) to match the image, "
                         f"got {list(mask.shape)}")
    mask = mask.to(image.dtype)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise ValueError("mask values must be exactly 0 (fill) or 1 (keep)")
    return mask


def inpaint_channels(image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The 4 extra input channels image · mask ⊕ mask: ``[B, 4, H, W]``."""
    mask = check_inpaint_inputs(image, mask)
    return torch.cat([image * mask, mask], dim=1)


def box_mask(box: tuple[int, int, int, int], size: int, n: int = 1) -> torch.Tensor:
    """A mask ``[n, 1, size, size]`` (1 = keep) with the pixel box ``(left, top, right, bottom)``
    erased: columns left..right-1 and rows top..bottom-1."""
    left, top, right, bottom = (int(v) for v in box)
    if not 0 <= left < right <= size or not 0 <= top < bottom <= size:
        raise ValueError(f"box {tuple(box)} must lie inside the {size} px image with left < right, top < bottom")
    mask = torch.ones(n, 1, size, size)
    mask[:, :, top:bottom, left:right] = 0
    return mask


def object_box(scenes: Scenes, k: int = 0, size: int = 32, pad: int = 2) -> tuple[int, int, int, int]:
    """The pixel box ``(left, top, right, bottom)`` around object ``k`` of the first scene at
    ``size`` px, padded by ``pad`` pixels and clipped to the image: the hole for an edit."""
    x, y, r = (float(getattr(scenes, f)[0, k]) * size for f in ("x", "y", "radius"))
    return (max(0, math.floor(x - r) - pad), max(0, math.floor(y - r) - pad),
            min(size, math.ceil(x + r) + pad), min(size, math.ceil(y + r) + pad))


def random_masks(n: int, size: int, generator: torch.Generator | None = None,
                 fill_all: float = 0.1, min_side: float = 0.25, max_side: float = 0.75) -> torch.Tensor:
    """Training masks ``[n, 1, size, size]``: each erases one random rectangle whose sides are
    ``min_side``–``max_side`` of the image; a fraction ``fill_all`` erases everything (plain
    text-to-image, so the model keeps that skill)."""
    if not 0 < min_side <= max_side <= 1:
        raise ValueError(f"need 0 < min_side <= max_side <= 1, got {min_side}, {max_side}")
    u = torch.rand(n, 5, generator=generator)  # [n, 5]: width, height, left, top, fill-all
    w = (min_side + (max_side - min_side) * u[:, 0]) * size  # [n]
    h = (min_side + (max_side - min_side) * u[:, 1]) * size
    left, top = u[:, 2] * (size - w), u[:, 3] * (size - h)
    coords = torch.arange(size, dtype=torch.float32) + 0.5  # pixel centres
    inside_x = (coords[None] >= left[:, None]) & (coords[None] < (left + w)[:, None])  # [n, size]
    inside_y = (coords[None] >= top[:, None]) & (coords[None] < (top + h)[:, None])
    hole = inside_y[:, :, None] & inside_x[:, None, :]  # [n, size, size]
    hole |= (u[:, 4] < fill_all)[:, None, None]
    return (~hole).float()[:, None]  # [n, 1, size, size], 1 = keep


def paste_known(diffusion: GaussianDiffusion, model_fn: Callable, image: torch.Tensor,
                mask: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``model_fn(x, t)`` whose x̂_0 holds the known pixels: x̂_0 ← mask · image + (1 - mask) · x̂_0,
    returned as the ε that points at it. ``diffusion`` is the trained process (t arrives as the
    model's own timestep); ε-prediction only."""
    mask = check_inpaint_inputs(image, mask)
    if diffusion.parameterization != "eps":
        raise ValueError(f"paste_known needs an ε-prediction model, got {diffusion.parameterization!r}")

    def pasted(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_fn(x, t)
        C = x.shape[1]
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(len(x))
        x0 = diffusion.predict_x0_from_eps(x, t, out[:, :C]).clamp(-1, 1)
        x0 = mask * image.to(x0) + (1 - mask) * x0
        return torch.cat([diffusion.predict_eps_from_x0(x, t, x0), out[:, C:]], dim=1)

    return pasted


def paste_result(result: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The final image: known pixels exactly as given, the rest from ``result`` (any one scale)."""
    mask = check_inpaint_inputs(image, mask)
    return torch.where(mask.bool(), image, result)
