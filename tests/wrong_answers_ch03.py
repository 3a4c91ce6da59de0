"""Plausible wrong answers to chapter 03's exercises; tests/test_exercises.py loads this file."""
import torch
import torch.nn.functional as F


def _weighted(basis, control):  # basis [T, 4], control [..., 4, 2] -> [..., T, 2]
    return torch.einsum("tk,...kd->...td", basis, control)


# --- ch03.bezier_point ---------------------------------------------------------------------------------
def bezier_missing_threes(control, t):  # forgot the binomial coefficients 3: the weights no longer sum to 1
    s = 1 - t
    return _weighted(torch.stack([s ** 3, s ** 2 * t, s * t ** 2, t ** 3], dim=-1), control)


def bezier_swapped_middle(control, t):  # t and 1−t swapped in the middle terms: the curve with P1, P2 swapped
    s = 1 - t
    return _weighted(torch.stack([s ** 3, 3 * s * t ** 2, 3 * s ** 2 * t, t ** 3], dim=-1), control)


def bezier_linear(control, t):  # a straight line P0 -> P3, ignoring the handles
    t = t[:, None]
    return (1 - t) * control[..., None, 0, :] + t * control[..., None, 3, :]


# --- ch03.segment_distance -----------------------------------------------------------------------------
def segment_infinite_line(p, a, b):  # no clamp: distance to the whole line through a and b
    ab = b - a
    t = ((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)
    return ((p - (a + t[..., None] * ab)) ** 2).sum(-1).sqrt()


def segment_nearer_end(p, a, b):  # only the two end points
    return torch.minimum((p - a).norm(dim=-1), (p - b).norm(dim=-1))


def segment_squared(p, a, b):  # forgot the square root
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-12)).clamp(0, 1)
    return ((p - (a + t[..., None] * ab)) ** 2).sum(-1)


# --- ch03.soft_coverage ----------------------------------------------------------------------------------
def coverage_full_width(distance, width, softness):  # the edge at w, not w/2: strokes twice as wide
    return torch.sigmoid((width[:, None] - distance) / softness)


def coverage_hard_step(distance, width, softness):  # no gradient anywhere but on the edge
    return (distance < width[:, None] / 2).float()


def coverage_times_softness(distance, width, softness):  # a larger softness gives a sharper edge
    return torch.sigmoid((width[:, None] / 2 - distance) * softness)


# --- ch03.composite_over ---------------------------------------------------------------------------------
def _over(coverage, colours, background, alpha_of):
    out = background.view(3, 1, 1).expand(3, *coverage.shape[1:])
    for cov, colour in zip(coverage, colours):
        a = alpha_of(colour, cov)
        out = out * (1 - a) + colour[:3, None, None] * a
    return out


def composite_reversed(coverage, colours, background):  # the first stroke ends on top
    return _over(coverage.flip(0), colours.flip(0), background, lambda colour, cov: colour[3] * cov)


def composite_ignores_alpha(coverage, colours, background):  # every stroke opaque
    return _over(coverage, colours, background, lambda colour, cov: cov)


def composite_adds(coverage, colours, background):  # adds paint without hiding what is below
    out = background.view(3, 1, 1).expand(3, *coverage.shape[1:])
    for cov, colour in zip(coverage, colours):
        out = out + colour[:3, None, None] * colour[3] * cov
    return out


# --- ch03.straight_through_quantize ------------------------------------------------------------------------
def _nearest(z, codebook, score):  # score(flat [N, D], codebook [K, D]) -> [N, K], the best code is the smallest
    B, D, h, w = z.shape
    indices = score(z.permute(0, 2, 3, 1).reshape(-1, D), codebook).argmin(1).view(B, h, w)
    return codebook[indices].permute(0, 3, 1, 2), indices


def _l2(flat, codebook):
    return ((flat[:, None] - codebook[None]) ** 2).sum(-1)


def quantize_no_straight_through(z, codebook):  # the codes themselves: the gradient reaches the codebook, not z
    return _nearest(z, codebook, _l2)


def quantize_max_dot(z, codebook):  # "nearest" by the largest dot product: favours long codes
    z_q, indices = _nearest(z, codebook, lambda flat, cb: -flat @ cb.T)
    return z + (z_q - z).detach(), indices


def quantize_detach_wrong_side(z, codebook):  # z_q + (z − z_q).detach() has the value z and differentiates like z_q
    z_q, indices = _nearest(z, codebook, _l2)
    return z_q + (z - z_q).detach(), indices


def quantize_grad_to_both(z, codebook):  # value right, gradient to z right, but the codebook gets one too
    z_q, indices = _nearest(z, codebook, _l2)
    return z_q + (z - z.detach()), indices


def quantize_unpermuted(z, codebook):  # flattens [B, D, h, w] without moving D last: mixes channels and positions
    B, D, h, w = z.shape
    indices = _l2(z.reshape(-1, D), codebook).argmin(1).view(B, h, w)
    z_q = codebook[indices].permute(0, 3, 1, 2)
    return z + (z_q - z).detach(), indices


# --- ch03.spherical_distance --------------------------------------------------------------------------------
def spherical_unnormalised(x, y):  # the raw embeddings' chord: wrong, and NaN once it passes 2
    return 2 * ((x[:, None] - y[None]).norm(dim=-1) / 2).arcsin() ** 2


def spherical_no_square(x, y):  # 2·arcsin(chord/2) = θ: the angle, not θ²/2
    x, y = F.normalize(x, dim=-1), F.normalize(y, dim=-1)
    return 2 * ((x[:, None] - y[None]).norm(dim=-1) / 2).clamp(max=1).arcsin()


def spherical_one_minus_cosine(x, y):  # the cosine distance: close to θ²/2 only for small angles
    return 1 - F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).T


# --- ch03.random_cutouts ------------------------------------------------------------------------------------
def _cutouts(image, cut_size, cutn, generator, min_cut_fraction, *, where="top-left", side_once=False,
             resize="area"):
    R = image.shape[-1]
    low = max(1, round(min_cut_fraction * R))
    draw_side = lambda: int(torch.rand((), generator=generator) * (R - low) + low)  # noqa: E731
    once = draw_side() if side_once else None
    cuts = []
    for _ in range(cutn):
        side = once if side_once else draw_side()
        first = int(torch.randint(0, R - side + 1, (), generator=generator))
        second = int(torch.randint(0, R - side + 1, (), generator=generator))
        top, left = {"top-left": (first, second), "left-top": (second, first), "corner": (0, 0)}[where]
        cut = image[None, :, top:top + side, left:left + side]
        if resize == "nearest" and side != cut_size:
            cut = F.interpolate(cut, size=(cut_size, cut_size), mode="nearest")
        elif side > cut_size:
            cut = F.adaptive_avg_pool2d(cut, cut_size)
        elif side < cut_size:
            cut = F.interpolate(cut, size=(cut_size, cut_size), mode="bilinear", align_corners=False)
        cuts.append(cut)
    return torch.cat(cuts)


def cutouts_at_corner(image, cut_size, cutn, generator, min_cut_fraction):  # always the top-left corner
    return _cutouts(image, cut_size, cutn, generator, min_cut_fraction, where="corner")


def cutouts_one_side(image, cut_size, cutn, generator, min_cut_fraction):  # the side drawn once for all cutouts
    return _cutouts(image, cut_size, cutn, generator, min_cut_fraction, side_once=True)


def cutouts_left_first(image, cut_size, cutn, generator, min_cut_fraction):  # the first offset drawn is used as left
    return _cutouts(image, cut_size, cutn, generator, min_cut_fraction, where="left-top")


def cutouts_nearest(image, cut_size, cutn, generator, min_cut_fraction):  # nearest-neighbour resizing: aliasing
    return _cutouts(image, cut_size, cutn, generator, min_cut_fraction, resize="nearest")


WRONG_ANSWERS = {
    "ch03.bezier_point": [bezier_missing_threes, bezier_swapped_middle, bezier_linear],
    "ch03.segment_distance": [segment_infinite_line, segment_nearer_end, segment_squared],
    "ch03.soft_coverage": [coverage_full_width, coverage_hard_step, coverage_times_softness],
    "ch03.composite_over": [composite_reversed, composite_ignores_alpha, composite_adds],
    "ch03.straight_through_quantize": [quantize_no_straight_through, quantize_max_dot, quantize_detach_wrong_side,
                                       quantize_grad_to_both, quantize_unpermuted],
    "ch03.spherical_distance": [spherical_unnormalised, spherical_no_square, spherical_one_minus_cosine],
    "ch03.random_cutouts": [cutouts_at_corner, cutouts_one_side, cutouts_left_first, cutouts_nearest],
}
