"""Chapter 03 exercises: CLIP-guided generation, CLIPDraw and VQGAN-CLIP.

CLIPDraw's differentiable rasteriser, in its three steps:

1. a point on a cubic Bézier curve, in Bernstein form;
2. the distance from pixel centres to a straight piece of the sampled curve;
3. a soft, differentiable coverage from that distance and the stroke's width;
4. alpha compositing the strokes in order over the background.

VQGAN-CLIP's three pieces around the decoder:

5. straight-through quantisation: the nearest codes forward, an identity gradient to z backward;
6. the squared spherical distance between CLIP embeddings, the loss it minimises;
7. random cutouts, the augmentation that keeps the image from fooling CLIP through one view.

The references are written out here in plain torch; tests/test_exercises_ch03.py checks that they
agree with the package's :func:`unclip_lite.clipdraw.rasterize.bezier_points`, ``_segment_distance``,
:func:`~unclip_lite.clipdraw.rasterize.stroke_coverage`, :func:`~unclip_lite.clipdraw.rasterize.composite`,
:func:`unclip_lite.vqgan.model.straight_through_quantize`, and
:func:`unclip_lite.vqgan.vqgan_clip.spherical_distance_loss` and :func:`~unclip_lite.vqgan.vqgan_clip.make_cutouts`.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from unclip_lite.exercises.core import Case, Exercise, compare_outputs, seeded, checker


# --- 1. A point on a cubic Bézier curve -------------------------------------------------------------
def bezier_point(control, t):
    """Reference: ``control [..., 4, 2]`` (P0..P3), ``t [T]`` in [0, 1] → points ``[..., T, 2]`` of
    B(t) = (1−t)³ P0 + 3(1−t)²t P1 + 3(1−t)t² P2 + t³ P3, so B(0) = P0 and B(1) = P3."""
    t = t.to(control)
    s = 1 - t
    basis = torch.stack([s ** 3, 3 * s ** 2 * t, 3 * s * t ** 2, t ** 3], dim=-1)  # [T, 4]
    return (basis[:, :, None] * control[..., None, :, :]).sum(-2)  # [..., T, 4, 2] summed over the 4 points


def _bezier_cases():
    g = seeded(30)
    yield Case((torch.rand(4, 2, generator=g), torch.linspace(0, 1, 7)), name="one curve, 7 values of t")
    yield Case((torch.rand(3, 2, 4, 2, generator=g), torch.rand(5, generator=g)), name="3 × 2 curves, random t")
    yield Case((torch.randn(2, 4, 2, generator=g), torch.tensor([0.0, 1.0])), name="t = 0 and t = 1: the end points")


EX_BEZIER = Exercise(
    "ch03.bezier_point", bezier_point, _bezier_cases,
    hint="Four weights per t, one per control point: (1−t)³, 3(1−t)²t, 3(1−t)t², t³ (they sum to 1). Stack them "
         "into basis [T, 4], then weight the points: (basis[:, :, None] * control[..., None, :, :]).sum(-2), or "
         "torch.einsum('tk,...kd->...td', basis, control). P1 goes with (1−t)²t, which peaks at t = 1/3.")


def test_bezier_point(fn) -> bool:
    return EX_BEZIER.check(fn)


# --- 2. Distance from a point to a segment ----------------------------------------------------------
def segment_distance(p, a, b):
    """Reference: the distance from points ``p [..., 2]`` to the segments ``a–b`` ``[..., 2]`` (broadcast):
    project p on the line, t = (p − a)·(b − a)/|b − a|², clamp t to [0, 1], and measure |p − (a + t(b − a))|.
    A segment of length 0 is its point a (|b − a|² is clamped to at least 1e-12)."""
    ab = b - a  # [..., 2]
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)  # [...]
    closest = a + t[..., None] * ab  # [..., 2]
    return ((p - closest) ** 2).sum(-1).sqrt()  # [...]


def _segment_cases():
    g = seeded(31)
    yield Case((torch.rand(6, 1, 2, generator=g) * 8, torch.rand(1, 5, 2, generator=g) * 8,
                torch.rand(1, 5, 2, generator=g) * 8), name="6 pixels × 5 segments, broadcast")
    a, b = torch.tensor([1.0, 1.0]), torch.tensor([4.0, 1.0])
    p = torch.tensor([[2.5, 3.0], [6.0, 1.0], [-1.0, 2.0], [5.0, 5.0], [1.0, 1.0]])
    yield Case((p, a, b), name="points beside, past the end, before the start and on the segment")
    yield Case((torch.tensor([[3.0, 4.0], [0.0, 0.0]]), torch.zeros(2), torch.zeros(2)), name="a segment of length 0")


EX_SEGMENT = Exercise(
    "ch03.segment_distance", segment_distance, _segment_cases,
    hint="The nearest point of the segment is a + t(b − a) with t the projection of p − a on b − a, divided by "
         "|b − a|². Clamp t to [0, 1]: past an end, the nearest point is that end. Clamp |b − a|² away from 0 "
         "(clamp_min(1e-12)) so a zero-length segment gives t = 0, not NaN. Return the distance, not its square.")


def test_segment_distance(fn) -> bool:
    return EX_SEGMENT.check(fn)


# --- 3. Soft coverage --------------------------------------------------------------------------------
def soft_coverage(distance, width, softness):
    """Reference: ``distance [N, P]`` from each pixel to stroke n's centre line, ``width [N]`` the full
    stroke widths, ``softness`` a float, all in pixels → ``sigmoid((width/2 − d) / softness)`` ``[N, P]``:
    0.5 on the stroke's edge, towards 1 inside and 0 outside, with a gradient everywhere."""
    half_width = width[:, None] / 2  # [N, 1]
    return torch.sigmoid((half_width - distance) / softness)  # [N, P]


def _coverage_cases():
    g = seeded(32)
    yield Case((torch.rand(3, 20, generator=g) * 6, torch.rand(3, generator=g) * 4 + 0.5, 0.25),
               name="3 strokes, softness 0.25 px")
    yield Case((torch.rand(2, 9, generator=g) * 3, torch.rand(2, generator=g) * 2, 1.5), name="softness 1.5 px")
    yield Case((torch.tensor([[0.0, 1.0, 2.0]]), torch.tensor([2.0]), 0.5), name="on the line, on the edge, outside")


EX_COVERAGE = Exercise(
    "ch03.soft_coverage", soft_coverage, _coverage_cases,
    hint="The edge of a stroke of width w is w/2 from its centre line, so coverage is 0.5 at d = w/2. "
         "torch.sigmoid((w/2 − d) / softness): a smaller softness makes the edge sharper. width is [N] and "
         "distance [N, P]: width[:, None].")


def test_soft_coverage(fn) -> bool:
    return EX_COVERAGE.check(fn)


# --- 4. Compositing the strokes --------------------------------------------------------------------------
def composite_over(coverage, colours, background):
    """Reference: ``coverage [N, H, W]``, ``colours [N, 4]`` RGBA, ``background [3]`` → image ``[3, H, W]``.
    Start from the background and paint stroke 0, then 1, ... (the first ends at the bottom) with
    "over": out ← out·(1 − a·c) + rgb·a·c, a the stroke's alpha and c its coverage."""
    out = background.view(3, 1, 1).expand(3, *coverage.shape[1:])  # [3, H, W]
    for cov, colour in zip(coverage, colours):  # [H, W], [4]
        alpha = colour[3] * cov  # [H, W]
        out = out * (1 - alpha) + colour[:3, None, None] * alpha
    return out


def _composite_cases():
    g = seeded(33)
    yield Case((torch.rand(4, 5, 6, generator=g), torch.rand(4, 4, generator=g), torch.rand(3, generator=g)),
               name="4 overlapping strokes")
    yield Case((torch.rand(1, 3, 3, generator=g), torch.rand(1, 4, generator=g), torch.ones(3)),
               name="one stroke on white")
    opaque = torch.tensor([[0.2, 0.4, 0.6, 1.0], [0.9, 0.1, 0.0, 1.0]])
    yield Case((torch.ones(2, 2, 2), opaque, torch.zeros(3)), name="two opaque strokes covering everything")


EX_COMPOSITE = Exercise(
    "ch03.composite_over", composite_over, _composite_cases,
    hint="Loop over the strokes in order, first to last, each painted over what is there: the stroke's "
         "opacity at a pixel is alpha × coverage = colour[3] * cov. Keep (1 − a·c) of what was below and add "
         "rgb·a·c: out = out * (1 − a) + colour[:3, None, None] * a. Start from background.view(3, 1, 1).")


def test_composite_over(fn) -> bool:
    return EX_COMPOSITE.check(fn)


# --- 5. Straight-through quantisation ------------------------------------------------------------------
def straight_through_quantize(z, codebook):
    """Reference: ``z [B, D, h, w]``, ``codebook [K, D]`` → ``(z_q_st [B, D, h, w], indices [B, h, w] long)``.
    Each vector z[b, :, i, j] is replaced by its nearest code (squared L2 distance). Forward, z_q_st *is* the
    codes; backward, the gradient passes to z unchanged (identity) and none reaches the codebook."""
    B, D, h, w = z.shape
    flat = z.permute(0, 2, 3, 1).reshape(-1, D)  # [B·h·w, D]: one row per position
    distances = ((flat[:, None, :] - codebook[None, :, :]) ** 2).sum(-1)  # [B·h·w, K]
    indices = distances.argmin(1).view(B, h, w)  # [B, h, w]
    z_q = codebook[indices].permute(0, 3, 1, 2)  # [B, D, h, w]
    return z + (z_q - z).detach(), indices  # value z_q, derivative 1 in z


def _forward_backward(fn):
    """``fn(z, codebook)`` run forward and backward: ``(its output, z.grad, codebook.grad)``, the gradients that
    ``(z_q_st · weight).sum()`` sends to z and to the codebook (zeros where none arrives), for a fixed ``weight``."""
    def run(z, codebook):
        z, codebook = z.detach().requires_grad_(), codebook.detach().requires_grad_()
        out = fn(z, codebook)
        z_q = out[0] if isinstance(out, (tuple, list)) and out else None
        if isinstance(z_q, torch.Tensor) and z_q.shape == z.shape and z_q.requires_grad:
            weight = torch.linspace(-1, 2, z.numel()).view_as(z)  # a different weight for every element
            (z_q * weight).sum().backward()
        return out, *(torch.zeros_like(x) if x.grad is None else x.grad for x in (z, codebook))
    return run


def _compare_forward_backward(got, expected):
    out, z_grad, codebook_grad = got
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        return f"expected a pair (z_q_st, indices), got {type(out).__name__}"
    labelled = (("z_q_st", out[0], expected[0][0]), ("indices", out[1], expected[0][1]),
                ("the gradient reaching z", z_grad, expected[1]),
                ("the gradient reaching the codebook", codebook_grad, expected[2]))
    for label, g, e in labelled:
        problem = compare_outputs(g, e)
        if problem:
            return f"{label}: {problem}"
    return None


class _ForwardBackwardExercise(Exercise):
    """An exercise checked forward and backward: the outputs and the gradients of :func:`_forward_backward`."""

    def run(self, fn, case):
        return _forward_backward(fn)(*copy.deepcopy(case.args), **copy.deepcopy(case.kwargs))


def _quantize_cases():
    g = seeded(34)
    codebook = torch.randn(8, 4, generator=g) * (0.2 + 2 * torch.rand(8, 1, generator=g))  # codes of many norms
    yield Case((torch.randn(2, 4, 3, 3, generator=g), codebook), name="2 grids of 3×3, 8 codes")
    yield Case((torch.randn(1, 3, 2, 5, generator=g), torch.randn(6, 3, generator=g)), name="a 2×5 grid, D = 3")
    short_and_long = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, -1.0]])
    z = torch.tensor([[1.1, 2.2, 0.1], [0.1, 0.0, -0.6]])[None, :, None, :]  # [1, 2, 1, 3]
    yield Case((z, short_and_long), name="a short and a long code in the same direction")


EX_QUANTIZE = _ForwardBackwardExercise(
    "ch03.straight_through_quantize", straight_through_quantize, _quantize_cases,
    compare=_compare_forward_backward,
    hint="Nearest means smallest ‖z − e‖², not largest z·e (they differ when codes have different norms). "
         "Move D last first: z.permute(0, 2, 3, 1).reshape(-1, D), distances [B·h·w, K], argmin, then "
         "codebook[indices].permute(0, 3, 1, 2). For the gradient: z + (z_q − z).detach() equals z_q but "
         "differentiates like z, and detaching z_q keeps gradient away from the codebook. The check also runs "
         "backward.")


def test_straight_through_quantize(fn) -> bool:
    return EX_QUANTIZE.check(fn)


# --- 6. The squared spherical distance --------------------------------------------------------------------
def spherical_distance(x, y):
    """Reference: ``x [N, E]``, ``y [M, E]``, any lengths → ``[N, M]``, 2·arcsin(‖x̂ − ŷ‖/2)² between every row of
    x and every row of y, after normalising the rows (x̂ = x/‖x‖). It is θ²/2, θ the angle between them."""
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    chord = (x[:, None, :] - y[None, :, :]).norm(dim=-1)  # [N, M], in [0, 2]
    return 2 * (chord / 2).clamp(max=1).arcsin() ** 2  # the clamp guards arcsin against 1 + rounding


def _spherical_cases():
    g = seeded(35)
    yield Case((torch.randn(4, 6, generator=g) * 3, torch.randn(3, 6, generator=g)), name="4 × 3 embeddings")
    x = torch.randn(2, 5, generator=g)
    yield Case((x, torch.cat([2 * x, -x])), name="the same direction (0) and the opposite one (π²/2)")


EX_SPHERICAL = Exercise(
    "ch03.spherical_distance", spherical_distance, _spherical_cases,
    hint="Normalise first: F.normalize(x, dim=-1). The chord between two unit vectors is ‖x̂ − ŷ‖ = 2 sin(θ/2), "
         "so θ = 2·arcsin(chord/2) and the loss is 2·arcsin(chord/2)² = θ²/2. All pairs: x[:, None] − y[None], "
         "norm over the last dim. Opposite vectors can give chord/2 a hair above 1: clamp(max=1) before arcsin.")


def test_spherical_distance(fn) -> bool:
    return EX_SPHERICAL.check(fn)


# --- 7. Random cutouts ----------------------------------------------------------------------------------
def random_cutouts(image, cut_size, cutn, generator, min_cut_fraction=0.75):
    """Reference: ``cutn`` random square crops of ``image [3, R, R]``, each resized → ``[cutn, 3, cut_size, cut_size]``.
    For each cutout, drawn from ``generator`` in this order: side = int(torch.rand(()) · (R − low) + low) with
    low = max(1, round(min_cut_fraction · R)); top = int(torch.randint(0, R − side + 1, ())); then left the
    same way. The crop image[:, top:top+side, left:left+side] is shrunk with F.adaptive_avg_pool2d when
    side > cut_size and enlarged bilinearly (align_corners=False) when smaller."""
    R = image.shape[-1]
    low = max(1, round(min_cut_fraction * R))
    cuts = []
    for _ in range(cutn):
        side = int(torch.rand((), generator=generator) * (R - low) + low)
        top = int(torch.randint(0, R - side + 1, (), generator=generator))
        left = int(torch.randint(0, R - side + 1, (), generator=generator))
        cut = image[None, :, top:top + side, left:left + side]  # [1, 3, side, side]
        if side > cut_size:
            cut = F.adaptive_avg_pool2d(cut, cut_size)  # averages whole areas: no aliasing
        elif side < cut_size:
            cut = F.interpolate(cut, size=(cut_size, cut_size), mode="bilinear", align_corners=False)
        cuts.append(cut)
    return torch.cat(cuts)  # [cutn, 3, cut_size, cut_size]


def _cutout_cases():
    g = seeded(36)  # the images; each case hands the function its own generator, copied in the same state
    yield Case((torch.rand(3, 12, 12, generator=g), 8, 5, seeded(37), 0.25),
               name="12 px image, 5 cutouts of 3 to 11 px, to 8 px")
    yield Case((torch.rand(3, 16, 16, generator=g), 8, 3, seeded(38), 0.75),
               name="16 px image, 3 cutouts shrunk to 8 px")
    yield Case((torch.rand(3, 8, 8, generator=g), 8, 2, seeded(39), 1.0),
               name="R = cut_size and min_cut_fraction 1: the image itself")


EX_CUTOUTS = Exercise(
    "ch03.random_cutouts", random_cutouts, _cutout_cases,
    hint="Draw three numbers per cutout, in order, all from `generator`: the side, then top, then left; a new "
         "side for every cutout. The side is int(torch.rand((), generator=generator) * (R − low) + low); the "
         "offsets torch.randint(0, R − side + 1, (), generator=generator). Resize with F.adaptive_avg_pool2d(cut, "
         "cut_size) to shrink, F.interpolate(..., mode='bilinear', align_corners=False) to enlarge; crops are "
         "[1, 3, side, side] so the batch dim is there, and torch.cat them.")


def test_random_cutouts(fn) -> bool:
    return EX_CUTOUTS.check(fn)


check = checker("ch03")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
