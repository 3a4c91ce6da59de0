"""Chapter 03's exercise references agree with the package code the chapter runs: the CLIPDraw
rasteriser (unclip_lite.clipdraw.rasterize) and VQGAN-CLIP (unclip_lite.vqgan)."""
import pytest
import torch

from unclip_lite.clipdraw.rasterize import (_segment_distance, bezier_points, composite, random_strokes, rasterize,
                                            stroke_coverage, stroke_distances)
from unclip_lite.exercises import ch03
from unclip_lite.vqgan.model import straight_through_quantize as package_quantize
from unclip_lite.vqgan.vqgan_clip import make_cutouts, spherical_distance_loss


def g(seed):
    return torch.Generator().manual_seed(seed)


def test_bezier_point_matches_bezier_points():
    control, t = torch.rand(3, 2, 4, 2, generator=g(0)), torch.rand(9, generator=g(1))
    torch.testing.assert_close(ch03.bezier_point(control, t), bezier_points(control, t))
    ends = ch03.bezier_point(control, torch.tensor([0.0, 1.0]))
    torch.testing.assert_close(ends, control[..., [0, 3], :])


def test_segment_distance_matches_the_rasterisers():
    p, a, b = torch.rand(7, 1, 2, generator=g(2)) * 10, torch.rand(1, 6, 2, generator=g(3)) * 10, \
        torch.rand(1, 6, 2, generator=g(4)) * 10
    b[0, 0] = a[0, 0]  # one piece of length 0
    # the package adds 1e-12 under the square root (a finite gradient on the line): 1e-6 px at most
    torch.testing.assert_close(ch03.segment_distance(p, a, b), _segment_distance(p, a, b),
                               atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("softness", [0.25, 1.0])
def test_soft_coverage_gives_stroke_coverage(softness):
    strokes = random_strokes(3, generator=g(5), width=0.08)
    size = 16
    distance = stroke_distances(strokes, size)  # [N, P] in pixels
    ours = ch03.soft_coverage(distance, strokes.widths * size, softness).view(-1, size, size)
    torch.testing.assert_close(ours, stroke_coverage(strokes, size, softness))


def test_composite_over_matches_composite():
    coverage, colours, background = torch.rand(5, 6, 7, generator=g(6)), torch.rand(5, 4, generator=g(7)), \
        torch.rand(3, generator=g(8))
    torch.testing.assert_close(ch03.composite_over(coverage, colours, background),
                               composite(coverage, colours, background))


def test_the_three_steps_rasterize_strokes():
    strokes = random_strokes(4, generator=g(9), width=0.06)
    size, background = 16, torch.tensor([1.0, 0.9, 0.8])
    coverage = ch03.soft_coverage(stroke_distances(strokes, size), strokes.widths * size, 0.25)
    ours = ch03.composite_over(coverage.view(-1, size, size), strokes.colours, background)
    torch.testing.assert_close(ours, rasterize(strokes, size, background))


def test_straight_through_quantize_matches_the_package_forward_and_backward():
    codebook = torch.randn(10, 4, generator=g(10)) * (0.2 + 2 * torch.rand(10, 1, generator=g(11)))
    z = torch.randn(2, 4, 3, 5, generator=g(12))
    weight = torch.randn(z.shape, generator=g(13))
    results = []
    for quantize in (ch03.straight_through_quantize, package_quantize):
        zz, cb = z.clone().requires_grad_(), codebook.clone().requires_grad_()
        z_q, indices = quantize(zz, cb)
        (z_q * weight).sum().backward()
        results.append((z_q.detach(), indices, zz.grad, cb.grad))
    (ours_q, ours_i, ours_grad, ours_cb), (pkg_q, pkg_i, pkg_grad, pkg_cb) = results
    assert ours_i.dtype == torch.long and torch.equal(ours_i, pkg_i)
    torch.testing.assert_close(ours_q, pkg_q)
    torch.testing.assert_close(ours_q, codebook[ours_i].permute(0, 3, 1, 2))  # the value is the codes
    torch.testing.assert_close(ours_grad, weight)  # identity gradient to z
    torch.testing.assert_close(pkg_grad, weight)
    assert ours_cb is None and pkg_cb is None  # nothing reaches the codebook


def test_the_quantize_check_sees_the_gradient():
    """The check runs backward: a function with the right values but no straight-through fails it."""
    from wrong_answers_ch03 import quantize_no_straight_through
    from unclip_lite.exercises.core import ExerciseFailed
    with pytest.raises(ExerciseFailed, match="gradient reaching z"):
        ch03.test_straight_through_quantize(quantize_no_straight_through)


def test_spherical_distance_matches_the_loss():
    x, y = torch.randn(5, 8, generator=g(14)) * 3, torch.randn(4, 8, generator=g(15))
    y[0] = -x[0]  # opposite directions: the clamp
    torch.testing.assert_close(ch03.spherical_distance(x, y), spherical_distance_loss(x, y))
    x, y = x[1:], y[1:]  # θ²/2 by arccos (ill-conditioned for opposite vectors)
    theta = torch.arccos(torch.nn.functional.cosine_similarity(x[:, None], y[None], dim=-1).clamp(-1, 1))
    torch.testing.assert_close(ch03.spherical_distance(x, y), theta ** 2 / 2, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("side, cut_size, cutn, fraction", [(12, 8, 6, 0.25), (16, 8, 4, 0.75), (8, 8, 2, 1.0),
                                                            (20, 8, 5, 0.1)])
def test_random_cutouts_is_make_cutouts_with_cut_pow_1_and_no_noise(side, cut_size, cutn, fraction):
    image = torch.rand(3, side, side, generator=g(16))
    ours = ch03.random_cutouts(image, cut_size, cutn, g(17), fraction)
    theirs = make_cutouts(image, cut_size, cutn, g(17), cut_pow=1.0, min_cut_fraction=fraction, noise=0.0)
    torch.testing.assert_close(ours, theirs)
    if side == cut_size and fraction == 1.0:
        torch.testing.assert_close(ours, image.expand(cutn, -1, -1, -1))


def test_the_cutout_cases_enlarge_and_shrink():
    """The check's first case has cutouts smaller and larger than cut_size (nearest resizing must show)."""
    case = next(iter(ch03._cutout_cases()))
    image, cut_size, cutn, generator, fraction = case.args
    R, low = image.shape[-1], max(1, round(fraction * image.shape[-1]))
    sides = []
    for _ in range(cutn):
        sides.append(int(torch.rand((), generator=generator) * (R - low) + low))
        for _offset in ("top", "left"):
            torch.randint(0, R - sides[-1] + 1, (), generator=generator)
    assert min(sides) < cut_size < max(sides), sides
