"""CLIPDraw (Frans et al. 2021): text-to-drawing by optimising strokes against CLIP, no training.

- :mod:`~unclip_lite.clipdraw.rasterize`: cubic Bézier strokes and a differentiable
  rasteriser in plain PyTorch (our stand-in for diffvg).
- :mod:`~unclip_lite.clipdraw.optimize`: the augmentations, the CLIP loss, :func:`clipdraw`
  and :func:`evaluate_clipdraw` (CLIP score and the Shapes judge's reading).
"""
from __future__ import annotations

from unclip_lite.clipdraw.optimize import (
    ClipDrawConfig,
    augment_views,
    augmentation_grids,
    clip_scores,
    clipdraw,
    evaluate_clipdraw,
    image_encoder,
    render_size,
    resize,
)
from unclip_lite.clipdraw.rasterize import (
    Strokes,
    bezier_points,
    composite,
    random_strokes,
    rasterize,
    rasterize_many,
    stroke_coverage,
    stroke_distances,
)

__all__ = [
    "ClipDrawConfig", "Strokes", "augment_views", "augmentation_grids", "bezier_points", "clip_scores",
    "clipdraw", "composite", "evaluate_clipdraw", "image_encoder", "random_strokes", "rasterize",
    "rasterize_many", "render_size", "resize", "stroke_coverage", "stroke_distances",
]
