"""CLIPDraw's differentiable stroke rasteriser (unclip_lite.clipdraw.rasterize)."""

import importlib

import numpy as np
import pytest
import torch

from unclip_lite.clipdraw.rasterize import (Strokes, bezier_points, random_strokes, rasterize, stroke_coverage,
                                            stroke_distances, stroke_polylines)

# the module itself (the package re-exports its function ``rasterize`` under the same name)
raster = importlib.import_module("unclip_lite.clipdraw.rasterize")


def test_bezier_points_match_the_power_basis_and_hit_the_end_points_exactly():
    control = torch.tensor([[0.1, 0.9], [0.3, 0.1], [0.8, 0.2], [0.95, 0.7]], dtype=torch.float64)
    p0, p1, p2, p3 = control
    t = torch.tensor([0.0, 0.2, 0.5, 0.73, 1.0], dtype=torch.float64)
    # the same cubic written as a polynomial in t: a different formula, the same curve
    c1, c2, c3 = 3 * (p1 - p0), 3 * (p0 - 2 * p1 + p2), p3 - p0 + 3 * (p1 - p2)
    expected = p0 + t[:, None] * c1 + t[:, None] ** 2 * c2 + t[:, None] ** 3 * c3
    got = bezier_points(control, t)
    assert got.shape == (5, 2)
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.equal(got[0], p0) and torch.equal(got[-1], p3)
    batched = bezier_points(control.expand(2, 3, 4, 2), t)  # leading dims pass through
    assert batched.shape == (2, 3, 5, 2) and torch.equal(batched[1, 2], got)


def test_consecutive_segments_share_their_end_points():
    strokes = random_strokes(3, 3, torch.Generator().manual_seed(1))
    line = stroke_polylines(strokes, samples=8)  # [3, 3*8 + 1, 2]
    assert line.shape == (3, 25, 2)
    for j in range(4):  # the polyline passes through points 0, 3, 6, 9 exactly
        assert torch.equal(line[:, 8 * j], strokes.points[:, 3 * j])


def _bernstein(control: np.ndarray, n: int) -> np.ndarray:
    t = np.linspace(0, 1, n)[:, None]
    p0, p1, p2, p3 = control
    return (1 - t) ** 3 * p0 + 3 * (1 - t) ** 2 * t * p1 + 3 * (1 - t) * t ** 2 * p2 + t ** 3 * p3


def reference_coverage(strokes: Strokes, size: int, supersample: int = 4) -> np.ndarray:
    """An independent reference in numpy: the fraction of each pixel's 4x4 subsamples that lie
    within half a width of the curve, itself 256 points per segment from the Bernstein
    formula written out again (no line pieces, no sigmoid: plain geometry and a box filter)."""
    big = size * supersample
    sub = (np.arange(big) + 0.5) / supersample  # subsample centres in pixels
    inside = np.zeros((big, big), dtype=bool)
    for n in range(strokes.n):
        points = strokes.points[n].double().numpy()
        used = int(strokes.segment_counts[n]) if strokes.segment_counts is not None else strokes.segments
        curve = np.concatenate([_bernstein(points[3 * j:3 * j + 4], 256) for j in range(used)]) * size
        r = float(strokes.widths[n]) * size / 2
        lo, hi = curve.min(0) - r - 1, curve.max(0) + r + 1  # only subsamples near the stroke can be in it
        xs = np.nonzero((sub >= lo[0]) & (sub <= hi[0]))[0]
        for y in np.nonzero((sub >= lo[1]) & (sub <= hi[1]))[0]:
            d2 = (sub[xs, None] - curve[None, :, 0]) ** 2 + (sub[y] - curve[None, :, 1]) ** 2  # [X, C]
            inside[y, xs] |= d2.min(1) <= r * r
    return inside.reshape(size, supersample, size, supersample).mean(axis=(1, 3))


@pytest.mark.parametrize("size", [32, 64, 224])
def test_coverage_agrees_with_an_independent_supersampled_reference(size):
    """IoU >= 0.95 of the thresholded (> 0.5) coverage of all strokes together.

    The strokes are 8% of the side wide (2.6 px at 32 px) so that the one-pixel rim, where a
    sigmoid of the distance and a 4x4 box filter may round a pixel differently, is a small
    part of each stroke (at 32 px the rim is most of the disagreement)."""
    strokes = random_strokes(4, None, torch.Generator().manual_seed(3), radius=0.4, width=0.08)
    strokes.points = 0.15 + 0.7 * strokes.points.clamp(0, 1)  # keep the strokes on the canvas
    ink = Strokes(strokes.points, strokes.widths, torch.tensor([[0.0, 0.0, 0.0, 1.0]]).expand(4, 4),
                  strokes.segment_counts)
    ours = 1 - rasterize(ink, size, background=(1.0, 1.0, 1.0))[0].numpy()  # black ink on white
    reference = reference_coverage(strokes, size)
    a, b = ours > 0.5, reference > 0.5
    iou = (a & b).sum() / (a | b).sum()
    assert b.sum() > 0.05 * size * size  # the test draws something substantial
    assert iou >= 0.95, f"IoU {iou:.3f} at {size} px"


def test_the_chunked_nearest_piece_search_gives_the_exact_polyline_distance(monkeypatch):
    strokes = random_strokes(5, None, torch.Generator().manual_seed(4), radius=0.3)
    monkeypatch.setattr(raster, "ELEMENT_BUDGET", 1000)  # force many small chunks
    got = stroke_distances(strokes, 20, samples=6)  # [5, 400]
    line = stroke_polylines(strokes, 6) * 20  # [5, L, 2]
    pix = raster.pixel_centres(20)  # [400, 2]
    every = raster._segment_distance(pix[None, None], line[:, :-1, None], line[:, 1:, None])  # [5, L-1, 400]
    used = torch.arange(every.shape[1])[None] < strokes.segment_counts[:, None] * 6  # [5, L-1]
    expected = every.masked_fill(~used[..., None], float("inf")).min(1).values
    assert torch.allclose(got, expected, atol=1e-5)


def test_segment_counts_draw_only_the_used_segments():
    g = torch.Generator().manual_seed(5)
    three = random_strokes(2, 3, g, radius=0.3, width=0.05)
    short = Strokes(three.points, three.widths, three.colours, torch.tensor([1, 2]))
    alone = Strokes(three.points[:1, :4], three.widths[:1], three.colours[:1])  # stroke 0's first segment
    cov_short, cov_alone = stroke_coverage(short, 32), stroke_coverage(alone, 32)
    assert torch.allclose(cov_short[0], cov_alone[0], atol=1e-6)
    assert not torch.allclose(stroke_coverage(three, 32)[0], cov_alone[0], atol=1e-3)


def test_compositing_paints_strokes_in_order_with_alpha():
    points = torch.tensor([[0.1, 0.5], [0.4, 0.5], [0.6, 0.5], [0.9, 0.5]]).expand(2, 4, 2)
    widths = torch.tensor([0.3, 0.3])
    red_then_half_blue = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.5]])
    image = rasterize(Strokes(points, widths, red_then_half_blue), 16, background=(0.0, 1.0, 0.0))
    assert torch.allclose(image[:, 8, 8], torch.tensor([0.5, 0.0, 0.5]), atol=1e-3)  # blue half over red
    assert torch.allclose(image[:, 0, 0], torch.tensor([0.0, 1.0, 0.0]), atol=1e-3)  # background far away


def test_gradcheck_with_respect_to_points_width_and_colour():
    """Double precision, 1 stroke of 2 segments on 8 px; the sigmoid coverage is smooth, and a
    random stroke puts no pixel within gradcheck's step of a tie between two nearest pieces."""
    s = random_strokes(1, 2, torch.Generator().manual_seed(6), radius=0.8, width=0.3, dtype=torch.float64)
    points, widths, colours = (x.clone().requires_grad_(True) for x in (s.points, s.widths, s.colours))

    def draw(p, w, c):
        return rasterize(Strokes(p, w, c), 8, background=(0.2, 0.3, 0.4), samples=4)

    assert torch.autograd.gradcheck(draw, (points, widths, colours), eps=1e-6, atol=1e-6)


def test_gradients_reach_points_widths_and_colours_but_not_unused_points():
    s = random_strokes(6, None, torch.Generator().manual_seed(7), width=0.05)
    points, widths, colours = (x.clone().requires_grad_(True) for x in (s.points, s.widths, s.colours))
    image = rasterize(Strokes(points, widths, colours, s.segment_counts), 32)
    ((image - 0.3) ** 2).mean().backward()
    for name, grad in (("points", points.grad), ("widths", widths.grad), ("colours", colours.grad)):
        assert grad is not None and torch.isfinite(grad).all() and (grad != 0).any(), name
    assert (widths.grad != 0).all()
    for n, k in enumerate(s.segment_counts.tolist()):
        assert (points.grad[n, :3 * k + 1] != 0).any()
        assert (points.grad[n, 3 * k + 1:] == 0).all()  # points of undrawn segments: no gradient


def test_random_strokes_follow_clipdraws_init():
    s = random_strokes(50, None, torch.Generator().manual_seed(8), radius=0.1, width=0.015)
    assert s.points.shape == (50, 10, 2) and set(s.segment_counts.tolist()) == {1, 2, 3}
    steps = s.points[:, 1:] - s.points[:, :-1]
    assert steps.abs().max() <= 0.05 + 1e-6  # each control point within radius/2 of the previous
    assert torch.all(s.widths == 0.015) and s.colours.min() >= 0 and s.colours.max() <= 1
    fixed = random_strokes(3, 2, torch.Generator().manual_seed(8))
    assert fixed.points.shape == (3, 7, 2) and fixed.segment_counts is None


def _strokes(n=2, points=7):
    return torch.rand(n, points, 2), torch.full((n,), 0.05), torch.rand(n, 4)


@pytest.mark.parametrize("make, match", [
    (lambda: Strokes(torch.zeros(0, 4, 2), torch.zeros(0), torch.zeros(0, 4)), "zero strokes"),
    (lambda: Strokes(*_strokes()[:1], torch.tensor([0.05, -0.01]), _strokes()[2]), "widths must be >= 0"),
    (lambda: Strokes(*_strokes(points=13)), r"segments S in 1\.\.3; got 13 points \(S = 4\)"),
    (lambda: Strokes(*_strokes(points=6)), "3\\*S\\+1 points"),
    (lambda: Strokes(torch.rand(2, 7, 3), *_strokes()[1:]), r"points must be \[N, 3\*S\+1, 2\]"),
    (lambda: Strokes(_strokes()[0], torch.full((3,), 0.05), _strokes()[2]), r"widths must be \[N\] = \[2\]"),
    (lambda: Strokes(*_strokes()[:2], torch.rand(2, 3)), r"colours must be RGBA \[N, 4\]"),
    (lambda: Strokes(*_strokes(), segment_counts=torch.tensor([1, 3])), r"segment_counts must be in 1\.\.2"),
    (lambda: random_strokes(0), "zero strokes"),
    (lambda: random_strokes(2, 4), r"segments must be in 1\.\.3"),
    (lambda: rasterize(Strokes(*_strokes()), 3), "size must be an int >= 4"),
    (lambda: rasterize(Strokes(*_strokes()), 16, background=(1.0, 1.0)), r"background must be RGB \[3\]"),
])
def test_bad_input_is_refused_with_a_clear_message(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_a_width_made_negative_after_construction_is_caught_at_rasterize_time():
    s = Strokes(*_strokes())
    s.widths = torch.tensor([0.05, -0.2])
    with pytest.raises(ValueError, match="widths must be >= 0"):
        rasterize(s, 16)
