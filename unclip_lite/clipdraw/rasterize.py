"""A differentiable rasteriser for strokes of cubic Bézier curves, in plain PyTorch.

CLIPDraw (Frans et al. 2021, §3 "Method") draws with diffvg (Li et al. 2020); we rebuild
the part it needs — open strokes of constant width, composited with alpha — from three
small steps, each differentiable with respect to the control points, widths and colours:

1. **Sample** each cubic segment densely (:func:`bezier_points`), turning a stroke into a
   polyline of ``segments × samples`` little straight pieces.
2. **Distance**: every pixel centre's exact distance to the nearest little piece.
3. **Coverage and compositing**: a sigmoid of ``(width/2 − d)`` gives each pixel a soft
   coverage; strokes are painted in order over the background with their alpha.

Units. Points live in [0, 1] image units (x right, y down), so one set of strokes renders at
any size; widths are a **fraction of the image side** for the same reason (CLIPDraw's
``stroke_width`` 1.0 on its 224 px canvas is ``1/224`` here).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

MAX_SEGMENTS = 3  # CLIPDraw draws 1 to 3 cubic segments per stroke
ELEMENT_BUDGET = 1 << 22  # distances computed at once in the nearest-piece search (16 MB in float32)


def bezier_points(control: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Points on cubic Bézier curves: ``control [..., 4, 2]``, ``t [T]`` → ``[..., T, 2]``.

    The Bernstein form ``B(t) = (1−t)³P0 + 3(1−t)²t P1 + 3(1−t)t² P2 + t³P3``: exact at
    both ends (B(0) = P0, B(1) = P3), so consecutive segments that share an end point join.
    """
    if control.shape[-2:] != (4, 2):
        raise ValueError(f"control points must be [..., 4, 2]; got {tuple(control.shape)}")
    t = t.to(control)
    s = 1 - t
    basis = torch.stack([s ** 3, 3 * s ** 2 * t, 3 * s * t ** 2, t ** 3], dim=-1)  # [T, 4]
    return torch.einsum("tk,...kd->...td", basis, control)


@dataclass
class Strokes:
    """N open strokes, each S consecutive cubic Bézier segments (CLIPDraw's paths).

    ``points [N, 3S+1, 2]``: segment j of a stroke uses points ``3j .. 3j+3``, so neighbours
    share an end point; coordinates in [0, 1] image units, y down.
    ``widths [N]``: stroke width as a fraction of the image side.
    ``colours [N, 4]``: RGBA in [0, 1]; alpha blends the stroke over what is below it.
    ``segment_counts [N]`` (optional, ints in 1..S): stroke n draws only its first
    ``segment_counts[n]`` segments, so strokes of 1 to 3 segments (as CLIPDraw samples them)
    stack into one tensor; the unused points are kept but get no gradient.
    """
    points: torch.Tensor
    widths: torch.Tensor
    colours: torch.Tensor
    segment_counts: torch.Tensor | None = None

    def __post_init__(self):
        self.check()

    @property
    def n(self) -> int:
        return self.points.shape[0]

    @property
    def segments(self) -> int:
        return (self.points.shape[1] - 1) // 3

    def check(self) -> None:
        """Raise ``ValueError`` on anything the rasteriser cannot draw."""
        p, w, c = self.points, self.widths, self.colours
        if not all(isinstance(x, torch.Tensor) for x in (p, w, c)):
            raise ValueError("points, widths and colours must be tensors")
        if p.ndim != 3 or p.shape[-1] != 2:
            raise ValueError(f"points must be [N, 3*S+1, 2]; got {tuple(p.shape)}")
        if p.shape[0] == 0:
            raise ValueError("there are zero strokes; draw at least one")
        if (p.shape[1] - 1) % 3 != 0 or not 1 <= (p.shape[1] - 1) // 3 <= MAX_SEGMENTS:
            raise ValueError(f"each stroke needs 3*S+1 points with segments S in 1..{MAX_SEGMENTS}; "
                             f"got {p.shape[1]} points (S = {(p.shape[1] - 1) / 3:g})")
        if w.shape != (p.shape[0],):
            raise ValueError(f"widths must be [N] = [{p.shape[0]}]; got {tuple(w.shape)}")
        if c.shape != (p.shape[0], 4):
            raise ValueError(f"colours must be RGBA [N, 4] = [{p.shape[0]}, 4]; got {tuple(c.shape)}")
        if bool((w.detach() < 0).any()):
            raise ValueError(f"stroke widths must be >= 0; the smallest is {float(w.detach().min()):g}")
        if self.segment_counts is not None:
            k = self.segment_counts
            if k.shape != (p.shape[0],) or k.dtype.is_floating_point:
                raise ValueError(f"segment_counts must be integers [N] = [{p.shape[0]}]; got {tuple(k.shape)} {k.dtype}")
            if bool(((k < 1) | (k > self.segments)).any()):
                raise ValueError(f"segment_counts must be in 1..{self.segments}; got {k.tolist()}")

    def detach(self) -> Strokes:
        counts = None if self.segment_counts is None else self.segment_counts.clone()
        return Strokes(self.points.detach().clone(), self.widths.detach().clone(),
                       self.colours.detach().clone(), counts)


def random_strokes(n: int, segments: int | None = None, generator: torch.Generator | None = None,
                   radius: float = 0.1, width: float = 0.015, dtype: torch.dtype = torch.float32) -> Strokes:
    """CLIPDraw's initial strokes (§3, the reference notebook's init), ``n`` of them.

    The start point is uniform on the canvas; each next control point is the previous one
    plus a uniform offset in ``[−radius/2, radius/2]²``, a short random scribble. Every
    stroke starts ``width`` wide (fraction of the side) with a uniformly random RGBA colour.
    ``segments`` fixes S for every stroke; ``None`` draws 1 to 3 per stroke, as the paper does.
    """
    if n < 1:
        raise ValueError(f"there are zero strokes; draw at least one (n={n})")
    if segments is not None and not 1 <= segments <= MAX_SEGMENTS:
        raise ValueError(f"segments must be in 1..{MAX_SEGMENTS} (or None for random); got {segments}")
    if width < 0:
        raise ValueError(f"stroke widths must be >= 0; got {width}")
    g = generator if generator is not None else torch.Generator().manual_seed(0)
    slots = segments or MAX_SEGMENTS
    start = torch.rand(n, 1, 2, generator=g, dtype=dtype)  # [N, 1, 2]
    steps = radius * (torch.rand(n, 3 * slots, 2, generator=g, dtype=dtype) - 0.5)  # [N, 3S, 2]
    points = torch.cat([start, start + steps.cumsum(1)], dim=1)  # [N, 3S+1, 2]: a random walk
    counts = None if segments else torch.randint(1, MAX_SEGMENTS + 1, (n,), generator=g)
    colours = torch.rand(n, 4, generator=g, dtype=dtype)
    return Strokes(points, torch.full((n,), width, dtype=dtype), colours, counts)


def pixel_centres(size: int, dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """``[size², 2]`` pixel centres ``(x, y)`` in pixel units, row-major (y down)."""
    c = torch.arange(size, dtype=dtype, device=device) + 0.5
    y, x = torch.meshgrid(c, c, indexing="ij")
    return torch.stack([x.reshape(-1), y.reshape(-1)], dim=-1)


def stroke_polylines(strokes: Strokes, samples: int) -> torch.Tensor:
    """Each stroke as a polyline ``[N, S*samples + 1, 2]``: every segment sampled at
    ``samples + 1`` evenly spaced t, neighbours' shared end points kept once."""
    seg = strokes.points.unfold(1, 4, 3).transpose(-1, -2)  # [N, S, 4, 2]: points 3j..3j+3
    t = torch.linspace(0, 1, samples + 1)
    curve = bezier_points(seg, t)[:, :, :-1]  # [N, S, samples, 2]: drop each segment's end ...
    end = strokes.points[:, -1:]  # [N, 1, 2] ... and add the last one back once
    return torch.cat([curve.flatten(1, 2), end], dim=1)


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from points ``p`` to line segments ``a–b`` (broadcast over leading dims).

    The tiny term under the square root keeps the gradient finite for a pixel centre lying
    exactly on the stroke's centre line (where |p − q| has no derivative)."""
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    closest = a + t.unsqueeze(-1) * ab
    return (((p - closest) ** 2).sum(-1) + 1e-12).sqrt()


def stroke_distances(strokes: Strokes, size: int, samples: int = 16) -> torch.Tensor:
    """Distance in pixels from every pixel centre to each stroke's centre line ``[N, size²]``.

    The exact distance to the densely sampled polyline is the minimum over its little
    pieces; the gradient of a minimum flows only through the piece that attains it. So we
    search for that piece **without** gradient (in chunks, so 224 px × 64 strokes × 48 pieces
    never sits in memory at once), then recompute the distance to it alone **with**
    gradient: the same value and the same gradient as ``min``, at O(N · pixels) memory.
    """
    line = stroke_polylines(strokes, samples) * size  # [N, L, 2] in pixels
    pix = pixel_centres(size, line.dtype, line.device)  # [P, 2]
    n, length = line.shape[:2]
    a, b = line[:, :-1], line[:, 1:]  # [N, L-1, 2]: the little pieces
    if strokes.segment_counts is not None:  # pieces past a stroke's last used segment: never nearest
        used = torch.arange(length - 1, device=line.device)[None] < (strokes.segment_counts[:, None] * samples)
    nearest = torch.empty(n, len(pix), dtype=torch.long, device=line.device)  # [N, P]
    chunk = max(1, ELEMENT_BUDGET // max(1, n * (length - 1)))
    with torch.no_grad():  # the same formula as _segment_distance, by components to save memory traffic
        ax, ay = a[..., 0, None].detach(), a[..., 1, None].detach()  # [N, L-1, 1]
        abx, aby = (b - a)[..., 0, None].detach(), (b - a)[..., 1, None].detach()
        inv_len2 = 1 / (abx * abx + aby * aby).clamp_min(1e-12)
        for start in range(0, len(pix), chunk):
            px, py = pix[start:start + chunk, 0], pix[start:start + chunk, 1]  # [C]
            apx, apy = px - ax, py - ay  # [N, L-1, C]
            t = (apx * abx + apy * aby).mul_(inv_len2).clamp_(0, 1)
            d2 = (apx - t * abx).square_() + (apy - t * aby).square_()  # squared: same argmin
            if strokes.segment_counts is not None:
                d2.masked_fill_(~used[:, :, None], math.inf)
            nearest[:, start:start + chunk] = d2.argmin(1)
    index = nearest[..., None].expand(-1, -1, 2)  # [N, P, 2]
    return _segment_distance(pix[None], a.gather(1, index), b.gather(1, index))  # [N, P]


def stroke_coverage(strokes: Strokes, size: int, softness: float = 0.25, samples: int = 16) -> torch.Tensor:
    """Soft coverage ``[N, size, size]`` in (0, 1): ``sigmoid((width/2 − d) / softness)``.

    Why a sigmoid and not the Shapes renderer's ``clamp(0.5 − d/pixel, 0, 1)``: a clamp is
    flat (zero gradient) everywhere but a one-pixel band at the edge, so a stroke that lies
    a pixel away from where CLIP wants ink gets no signal to move; the sigmoid's gradient is
    never exactly zero. ``softness`` is in pixels; 0.25 gives the sigmoid the clamp's slope
    (1 per pixel) at the edge, so edges look as crisp as the Shapes renderer's.
    """
    if softness <= 0:
        raise ValueError(f"softness must be > 0 pixels; got {softness}")
    d = stroke_distances(strokes, size, samples)  # [N, P]
    half_width = strokes.widths[:, None] * size / 2  # [N, 1] in pixels
    return torch.sigmoid((half_width - d) / softness).view(-1, size, size)


def composite(coverage: torch.Tensor, colours: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Paint strokes in order, first at the bottom: ``out ← out·(1 − a·c) + rgb·a·c``.

    ``coverage [N, H, W]``, ``colours [N, 4]`` RGBA, ``background [3]`` → ``[3, H, W]``.
    The "over" operator of alpha compositing, one stroke at a time as diffvg does."""
    out = background.to(coverage).view(3, 1, 1).expand(3, *coverage.shape[1:])
    for cov, colour in zip(coverage, colours):
        alpha = colour[3] * cov  # [H, W]
        out = out * (1 - alpha) + colour[:3, None, None] * alpha
    return out


def _check_size(size: int) -> None:
    if not isinstance(size, int) or size < 4:
        raise ValueError(f"size must be an int >= 4 pixels; got {size!r}")


def rasterize(strokes: Strokes, size: int, background: Sequence[float] | torch.Tensor = (1.0, 1.0, 1.0),
              softness: float = 0.25, samples: int = 16) -> torch.Tensor:
    """Draw ``strokes`` on a ``size × size`` canvas: an image ``[3, size, size]`` in [0, 1].

    Differentiable with respect to ``strokes.points``, ``widths`` and ``colours``.
    ``background`` RGB in [0, 1] (CLIPDraw paints on white); ``softness`` in pixels (see
    :func:`stroke_coverage`); ``samples`` little straight pieces per cubic segment (16 keeps
    the polyline within a small fraction of a pixel of the curve for CLIPDraw-sized scribbles).
    """
    _check_size(size)
    strokes.check()
    if samples < 1:
        raise ValueError(f"samples per segment must be >= 1; got {samples}")
    bg = torch.as_tensor(background, dtype=strokes.points.dtype, device=strokes.points.device)
    if bg.shape != (3,):
        raise ValueError(f"background must be RGB [3]; got {tuple(bg.shape)}")
    coverage = stroke_coverage(strokes, size, softness, samples)  # [N, size, size]
    return composite(coverage, strokes.colours, bg)  # [3, size, size]


def rasterize_many(strokes: Sequence[Strokes], size: int, **kwargs) -> torch.Tensor:
    """:func:`rasterize` for several stroke sets at once: ``[B, 3, size, size]``."""
    if len(strokes) == 0:
        raise ValueError("no stroke sets to rasterize")
    return torch.stack([rasterize(s, size, **kwargs) for s in strokes])
