"""Drawing scenes: one signed distance function per shape, and the anti-aliased renderer.

Each shape is a signed distance function (negative inside) in units of the object's
radius; :func:`render` turns a pixel's distance into coverage with
``clamp(0.5 - d / pixel, 0, 1)``, which anti-aliases edges at any resolution without
supersampling. Builds on :mod:`.world` only.
"""
from __future__ import annotations

import math

import torch

from .world import BACKGROUND, SHAPES, Scenes, palette_tensor

# --------------------------------------------------------------------------------------
# Signed distance functions, in units of the object's radius; p is [..., 2] with y UP.
# --------------------------------------------------------------------------------------
def sdf_circle(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - 1.0


def sdf_square(p: torch.Tensor) -> torch.Tensor:
    half = 0.85  # a square of half-side 0.85 has about the same area as the unit circle
    d = p.abs() - half
    outside = d.clamp(min=0).norm(dim=-1)
    inside = d.max(dim=-1).values.clamp(max=0)
    return outside + inside


def sdf_triangle(p: torch.Tensor) -> torch.Tensor:
    """Equilateral triangle pointing up, circumradius 1.35, its bounding box centred."""
    r = 1.35 * math.sqrt(3) / 2  # half the side length
    k = math.sqrt(3.0)
    x, y = p[..., 0].abs() - r, p[..., 1] + 0.3 + r / k
    # Fold the plane so that only one edge needs a distance (the triangle's symmetry).
    fold = (x + k * y) > 0
    x, y = torch.where(fold, (x - k * y) / 2, x), torch.where(fold, (-k * x - y) / 2, y)
    x = x - x.clamp(-2 * r, 0)
    return -torch.sqrt(x * x + y * y) * torch.sign(y)


def sdf_star(p: torch.Tensor, inner: float = 0.5) -> torch.Tensor:
    """Five-pointed star pointing up, tips at radius 1.2, inner corners at ``inner`` × that."""
    r = 1.2
    k1x, k1y = 0.809016994375, -0.587785252292  # (cos 36°, -sin 36°)
    x, y = p[..., 0].abs(), p[..., 1]
    # Reflect into one tenth of the star using its mirror lines.
    for kx, ky in ((k1x, k1y), (-k1x, k1y)):
        d = (kx * x + ky * y).clamp(min=0) * 2
        x, y = x - d * kx, y - d * ky
    x = x.abs()
    y = y - r
    bax, bay = -inner * k1y, inner * k1x - 1.0  # from the tip to the inner corner
    h = ((x * bax + y * bay) / (bax * bax + bay * bay)).clamp(0, r)
    dist = torch.sqrt((x - bax * h) ** 2 + (y - bay * h) ** 2)
    return dist * torch.sign(y * bax - x * bay)


def sdf_heart(p: torch.Tensor) -> torch.Tensor:
    """Heart with its tip at the bottom, roughly spanning the unit disc."""
    scale = 1.75
    x, y = p[..., 0].abs() / scale, p[..., 1] / scale + 0.55
    lobes = torch.sqrt((x - 0.25) ** 2 + (y - 0.75) ** 2) - math.sqrt(2) / 4
    m = 0.5 * (x + y).clamp(min=0)
    body = torch.sqrt(torch.minimum(x**2 + (y - 1) ** 2, (x - m) ** 2 + (y - m) ** 2))
    body = body * torch.sign(x - y)
    return torch.where(y + x > 1.0, lobes, body) * scale


SDFS = {"circle": sdf_circle, "square": sdf_square, "triangle": sdf_triangle,
        "star": sdf_star, "heart": sdf_heart}


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------
def render(scenes: Scenes, resolution: int = 32, antialias: bool = True,
           background: tuple[int, int, int] | torch.Tensor = BACKGROUND) -> torch.Tensor:
    """Render scenes to images ``[B, 3, R, R]`` in [0, 1], objects painted in order."""
    if resolution < 4:
        raise ValueError(f"resolution must be at least 4 pixels, got {resolution}")
    if (scenes.radius <= 0).any():
        raise ValueError("object radius must be positive")
    B, K = scenes.colour.shape
    bg = torch.as_tensor(background, dtype=torch.float32)
    bg = bg / 255.0 if bg.max() > 1 else bg
    image = bg.view(1, 3, 1, 1).expand(B, 3, resolution, resolution).clone()
    # Pixel centres in [0, 1]; y grows downwards in the image.
    coords = (torch.arange(resolution, dtype=torch.float32) + 0.5) / resolution
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")  # [R, R]
    if scenes.rgb is None and (scenes.colour < 0).any():
        raise ValueError("uncoloured (grey) objects need their rgb set; use recolour()")
    rgb = scenes.rgb if scenes.rgb is not None else palette_tensor()[scenes.colour]  # [B, K, 3]
    for k in range(K):
        r = scenes.radius[:, k].view(B, 1, 1)
        # Local coordinates in radius units with y up, so shapes point up.
        local = torch.stack(
            [(gx - scenes.x[:, k].view(B, 1, 1)) / r, (scenes.y[:, k].view(B, 1, 1) - gy) / r], -1
        )  # [B, R, R, 2]
        dist = torch.empty(B, resolution, resolution)
        for s, name in enumerate(SHAPES):
            rows = (scenes.shape[:, k] == s).nonzero().squeeze(1)
            if len(rows):
                dist[rows] = SDFS[name](local[rows])
        dist_px = dist * r * resolution  # signed distance in pixels
        alpha = (0.5 - dist_px).clamp(0, 1) if antialias else (dist_px <= 0).float()
        alpha = alpha[:, None]  # [B, 1, R, R]
        image = image * (1 - alpha) + rgb[:, k, :, None, None] * alpha
    return image
