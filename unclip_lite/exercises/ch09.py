"""Chapter 09 exercises: moving through unCLIP's latent space.

1. slerp, the path between two embeddings (or two noises) that stays on their sphere;
2. the text-diff direction z_d = norm(z_t(target) − z_t(source));
3. one DDIM step with η: the knob between reconstruction (η = 0) and variation;
4. one step of DDIM inversion, x_prev → x_t: the "encode" half of the bipartite latent.

References: :func:`unclip_lite.unclip.manipulate.slerp`, and DDIM's equations (Song et al. 2021,
eqs. 12 and 16) written for scalar ᾱ, which the tests check against the package's
:func:`~unclip_lite.diffusion.samplers.ddim_step` and :func:`~unclip_lite.diffusion.samplers.ddim_invert`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unclip_lite.exercises.core import Case, Exercise, seeded, checker
from unclip_lite.unclip.manipulate import slerp as package_slerp


# --- 1. slerp -------------------------------------------------------------------------------------
def slerp(a, b, theta):
    """Reference: sin((1−θ)Ω)/sin Ω · a + sin(θΩ)/sin Ω · b, Ω the angle between the rows of ``a``
    and ``b`` [..., D] (their directions); θ a float or one per row."""
    return package_slerp(a, b, theta)


def _slerp_cases():
    g = seeded(90)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    yield Case((unit(3, 8), unit(3, 8), 0.3), name="unit embeddings, θ = 0.3")
    yield Case((torch.randn(2, 12, generator=g), torch.randn(2, 12, generator=g), 0.7), name="two noises")
    yield Case((unit(2, 5), unit(2, 5), torch.tensor([0.2, 0.9])), name="a θ per row")


EX_SLERP = Exercise(
    "ch09.slerp", slerp, _slerp_cases,
    hint="cos Ω = (a/|a| · b/|b|) per row: (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1, keepdim=True), "
         "clamped to [-1, 1]; Ω = torch.arccos(...). A θ per row needs θ[:, None]. The weights multiply a and b "
         "themselves, not their directions.")


def test_slerp(fn) -> bool:
    return EX_SLERP.check(fn)


# --- 2. The text diff -------------------------------------------------------------------------------
def text_diff_direction(z_target, z_source):
    """Reference: the unit vector [B, E] from the source caption's embedding to the target's."""
    return F.normalize(z_target - z_source, dim=-1)


def _diff_cases():
    g = seeded(91)
    unit = lambda *s: F.normalize(torch.randn(*s, generator=g), dim=-1)  # noqa: E731
    yield Case((unit(4, 6), unit(4, 6)), name="four caption pairs")
    yield Case((unit(1, 3), unit(1, 3)), name="one pair, 3-d")


EX_DIFF = Exercise(
    "ch09.text_diff_direction", text_diff_direction, _diff_cases,
    hint="Target minus source (that is the way the edit goes), then F.normalize(..., dim=-1): a direction, length 1.")


def test_text_diff_direction(fn) -> bool:
    return EX_DIFF.check(fn)


# --- 3. A DDIM step with η ----------------------------------------------------------------------------
def ddim_eta_step(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):
    """Reference: x_prev = √ᾱ_prev x̂₀ + √(1 − ᾱ_prev − σ²) ε̂ + σ z with x̂₀ = (x_t − √(1−ᾱ_t) ε̂)/√ᾱ_t
    and σ = η √((1−ᾱ_prev)/(1−ᾱ_t)) √(1 − ᾱ_t/ᾱ_prev) (DDIM eqs. 12, 16); ᾱ are floats."""
    x0 = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)) ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + max(1 - alpha_bar_prev - sigma ** 2, 0.0) ** 0.5 * eps + sigma * noise


def _eta_cases():
    g = seeded(92)
    r = lambda: torch.randn(2, 3, 4, 4, generator=g)  # noqa: E731
    for eta, (ab_t, ab_prev) in ((0.0, (0.3, 0.5)), (0.5, (0.3, 0.5)), (1.0, (0.05, 0.2))):
        yield Case((r(), r(), ab_t, ab_prev, eta, r()), name=f"η = {eta}")


EX_ETA = Exercise(
    "ch09.ddim_eta_step", ddim_eta_step, _eta_cases,
    hint="First x̂₀ from x_t and ε̂. σ grows with η and is 0 at η = 0. The ε̂ direction gets what is left of the "
         "variance: √(1 − ᾱ_prev − σ²), so the total noise level of x_prev is right for any η.")


def test_ddim_eta_step(fn) -> bool:
    return EX_ETA.check(fn)


# --- 4. One step of DDIM inversion ----------------------------------------------------------------------
def ddim_inversion_step(x_prev, eps, alpha_bar_prev, alpha_bar_t):
    """Reference: DDIM's deterministic step run forwards in time, x_prev (less noisy) → x_t:
    x̂₀ = (x_prev − √(1−ᾱ_prev) ε̂)/√ᾱ_prev, then x_t = √ᾱ_t x̂₀ + √(1−ᾱ_t) ε̂."""
    x0 = (x_prev - (1 - alpha_bar_prev) ** 0.5 * eps) / alpha_bar_prev ** 0.5
    return alpha_bar_t ** 0.5 * x0 + (1 - alpha_bar_t) ** 0.5 * eps


def _inversion_cases():
    g = seeded(93)
    r = lambda: torch.randn(2, 3, 4, 4, generator=g)  # noqa: E731
    yield Case((r(), r(), 0.9, 0.6), name="ᾱ 0.9 -> 0.6")
    yield Case((r(), r(), 0.4, 0.05), name="ᾱ 0.4 -> 0.05")


EX_INVERSION = Exercise(
    "ch09.ddim_inversion_step", ddim_inversion_step, _inversion_cases,
    hint="The same two lines as a DDIM step with η = 0, with the roles of the two times swapped: estimate x̂₀ from "
         "the *less* noisy x_prev, then re-noise it deterministically to the noisier t with the same ε̂. No fresh noise.")


def test_ddim_inversion_step(fn) -> bool:
    return EX_INVERSION.check(fn)


check = checker("ch09")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
