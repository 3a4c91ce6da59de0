"""Gradient guidance for ε-, x_0- and v-prediction, checked against a Gaussian closed form.

Data x_0 ~ N(μ, σ² I) makes the optimal denoiser exact: x_t ~ N(√ᾱ μ, (ᾱσ² + 1 - ᾱ) I), so

    E[x_0 | x_t] = μ + √ᾱ σ² / (ᾱσ² + 1 - ᾱ) · (x_t - √ᾱ μ),    ε̂ = (x_t - √ᾱ x̂_0)/√(1-ᾱ),

and v̂ = √ᾱ ε̂ - √(1-ᾱ) x̂_0. A Gaussian likelihood log p(y | x_t) = -|x_t - m|²/(2τ²) has the
exact gradient -(x_t - m)/τ². Guidance must then give ε̂' = ε̂ - √(1-ᾱ) s ∇ log p(y | x_t)
(ADM §4.2, Algorithm 2) in every parameterisation. Everything here is float64.
"""
import pytest
import torch

from unclip_lite.diffusion import PARAMETERIZATIONS, GaussianDiffusion, ddim_sample_loop
from unclip_lite.diffusion.guidance import gradient_guidance

SHAPE = (3, 2, 4, 4)
SIGMA, TAU = 0.6, 0.8
T_MODEL = torch.tensor([5, 400, 990])  # low, middle and high noise, one per image
gen = torch.Generator().manual_seed(0)
MU = 0.5 * torch.randn(1, *SHAPE[1:], generator=gen, dtype=torch.float64)  # data mean  [1, C, H, W]
M = torch.randn(1, *SHAPE[1:], generator=gen, dtype=torch.float64)  # the likelihood's centre
X_T = torch.randn(SHAPE, generator=gen, dtype=torch.float64)  # [B, C, H, W]


def diffusion_for(parameterization: str, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion.from_schedule("cosine", 1000, parameterization=parameterization, **kwargs)


def coefficients(t):
    """(√ᾱ_t, √(1-ᾱ_t)) shaped [B, 1, 1, 1], straight from the schedule table."""
    ab = diffusion_for("eps").alphas_cumprod[t].view(-1, 1, 1, 1)
    return ab.sqrt(), (1 - ab).sqrt()


def ideal(x, t):
    """The exact (x̂_0, ε̂, v̂) for Gaussian data, written out from the closed form."""
    a, s = coefficients(t)
    x0 = MU + a * SIGMA ** 2 / (a ** 2 * SIGMA ** 2 + s ** 2) * (x - a * MU)
    eps = (x - a * x0) / s
    return {"x0": x0, "eps": eps, "v": a * eps - s * x0}


def ideal_model(parameterization):
    return lambda x, t: ideal(x, t)[parameterization]


def log_prob(x, t):
    return -((x - M) ** 2).sum((1, 2, 3)) / (2 * TAU ** 2)  # [B]


def grad_log_prob(x):
    return -(x - M) / TAU ** 2


def to_x0_eps(parameterization, out, x, t):
    """(x̂_0, ε̂) of an output, converted by hand (independent of the package's helpers)."""
    a, s = coefficients(t)
    if parameterization == "eps":
        return (x - s * out) / a, out
    if parameterization == "x0":
        return out, (x - a * out) / s
    return a * x - s * out, s * x + a * out


def guided_output(parameterization, scale):
    return gradient_guidance(diffusion_for(parameterization), ideal_model(parameterization), log_prob,
                             scale)(X_T, T_MODEL)


def test_the_closed_form_is_the_score_of_the_noisy_marginal():
    """Sanity of the fixture: ε̂ = -√(1-ᾱ) ∇ log p(x_t) (Song et al. 2021's score form)."""
    a, s = coefficients(T_MODEL)
    score = -(X_T - a * MU) / (a ** 2 * SIGMA ** 2 + s ** 2)
    torch.testing.assert_close(ideal(X_T, T_MODEL)["eps"], -s * score)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
@pytest.mark.parametrize("scale", [1.0, 3.0])
def test_guided_output_is_the_shifted_eps_in_every_parameterisation(parameterization, scale):
    out = guided_output(parameterization, scale)
    x0, eps = to_x0_eps(parameterization, out, X_T, T_MODEL)
    a, s = coefficients(T_MODEL)
    expected_eps = ideal(X_T, T_MODEL)["eps"] - s * scale * grad_log_prob(X_T)
    torch.testing.assert_close(eps, expected_eps, rtol=1e-9, atol=1e-9)
    # Tweedie with the tilted score: x̂_0' = x̂_0 + (1-ᾱ)/√ᾱ · s ∇ log p(y | x_t)
    torch.testing.assert_close(x0, ideal(X_T, T_MODEL)["x0"] + s ** 2 / a * scale * grad_log_prob(X_T),
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("scale", [0.5, 4.0])
def test_all_parameterisations_agree_on_the_guided_x0_and_eps(scale):
    got = {p: to_x0_eps(p, guided_output(p, scale), X_T, T_MODEL) for p in PARAMETERIZATIONS}
    for p in ("x0", "v"):
        torch.testing.assert_close(got[p][0], got["eps"][0], rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got[p][1], got["eps"][1], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_scale_zero_returns_the_model_output_untouched(parameterization):
    out = ideal_model(parameterization)(X_T, T_MODEL)

    def never(x, t):
        raise AssertionError("scale 0 must not evaluate the guide")

    got = gradient_guidance(diffusion_for(parameterization), lambda x, t: out, never, 0.0)(X_T, T_MODEL)
    assert got is out


@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_shifting_the_x0_or_v_output_directly_is_wrong(parameterization):
    """The plausible mistake: treat x̂_0 or v̂ as if it were ε̂ and subtract √(1-ᾱ) s ∇ from it
    (or add s ∇, as for a score). Both differ from going through ε by O(1) here."""
    scale = 2.0
    _, s = coefficients(T_MODEL)
    out = ideal(X_T, T_MODEL)[parameterization]
    got = guided_output(parameterization, scale)
    for wrong in (out - s * scale * grad_log_prob(X_T), out + scale * grad_log_prob(X_T)):
        assert (got - wrong).abs().max() > 0.1
    assert (got - out).abs().max() > 0.1  # and guidance did something


def test_the_conversion_to_eps_does_not_clip_x0():
    """With x̂_0 far outside [-1, 1] a clipped conversion (``predict_x0_eps`` with clipping, as
    the samplers use) would change ε̂ before the shift; guidance must not."""
    x, t = 4.0 + X_T, torch.tensor([5, 5, 5])  # nearly clean, so x̂_0 ≈ x / √ᾱ ≈ 4
    d = diffusion_for("x0")
    clipped_eps = d.predict_x0_eps(ideal(x, t)["x0"], x, t, clip_denoised=True)[1]
    got = gradient_guidance(d, ideal_model("x0"), log_prob, 1.0)(x, t)
    _, s = coefficients(t)
    clipped = d.output_from_eps(x, t, clipped_eps - s * grad_log_prob(x))
    torch.testing.assert_close(to_x0_eps("x0", got, x, t)[1], ideal(x, t)["eps"] - s * grad_log_prob(x))
    assert (got - clipped).abs().max() > 1.0


@pytest.mark.parametrize("parameterization", ["x0", "v"])
def test_a_learned_variance_half_passes_through(parameterization):
    d = diffusion_for(parameterization, learned_range=True)
    half = torch.full(SHAPE, 0.3, dtype=torch.float64)

    def with_variance(x, t):
        return torch.cat([ideal(x, t)[parameterization], half], dim=1)  # [B, 2C, H, W]

    got = gradient_guidance(d, with_variance, log_prob, 2.0)(X_T, T_MODEL)
    assert torch.equal(got[:, SHAPE[1]:], half)
    torch.testing.assert_close(got[:, :SHAPE[1]], guided_output(parameterization, 2.0))


@pytest.mark.parametrize("parameterization", PARAMETERIZATIONS)
def test_eps_from_output_and_output_from_eps_are_inverse(parameterization):
    d = diffusion_for(parameterization)
    out = ideal(X_T, T_MODEL)[parameterization]
    eps = d.eps_from_output(X_T, T_MODEL, out)
    torch.testing.assert_close(eps, ideal(X_T, T_MODEL)["eps"], rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(eps, d.predict_x0_eps(out, X_T, T_MODEL, clip_denoised=False)[1])
    torch.testing.assert_close(d.output_from_eps(X_T, T_MODEL, eps), out, rtol=1e-10, atol=1e-10)


def test_guided_ddim_runs_end_to_end_and_agrees_across_parameterisations():
    """Guided DDIM with an x_0-model and a v-model: the same trajectory as the ε-model (their
    guided outputs describe the same x̂_0), and the guide pulls the samples toward m."""
    shape, steps = (4, *SHAPE[1:]), 10
    samples = {}
    for p in PARAMETERIZATIONS:
        d = diffusion_for(p)
        for scale in (0.0, 3.0):
            fn = gradient_guidance(d, ideal_model(p), log_prob, scale)
            samples[p, scale] = ddim_sample_loop(d, fn, shape, steps=steps, dtype=torch.float64, progress=False,
                                                 generator=torch.Generator().manual_seed(1))
    for p in ("x0", "v"):
        assert torch.isfinite(samples[p, 3.0]).all()
        torch.testing.assert_close(samples[p, 3.0], samples["eps", 3.0], rtol=1e-6, atol=1e-6)

    def distance(x):
        return (x - M).pow(2).mean().item()

    assert distance(samples["v", 3.0]) < 0.5 * distance(samples["v", 0.0])
