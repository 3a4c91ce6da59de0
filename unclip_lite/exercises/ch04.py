"""Chapter 04 exercises: the forward process, the posterior mean and a DDIM step.

Every reference is the package's own implementation (:class:`~unclip_lite.diffusion.GaussianDiffusion`
and :func:`~unclip_lite.diffusion.ddim_step`), rebuilt from the ᾱ table the learner is given,
so the exercise and the samplers the rest of the course uses cannot drift apart.

Timesteps are 0-based indices into the schedule, as in the package: ``t ∈ {0, …, T-1}``.
"""
from __future__ import annotations

import torch

from unclip_lite.diffusion import GaussianDiffusion, get_betas
from unclip_lite.diffusion import ddim_step as _ddim_step
from unclip_lite.exercises.core import Case, Exercise, seeded


def _diffusion_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> GaussianDiffusion:
    """The process whose ᾱ table is ``alphas_cumprod`` (β_t = 1 - ᾱ_t / ᾱ_{t-1})."""
    ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return GaussianDiffusion(1.0 - ab / prev)


def _schedule(name: str, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(betas, alphas_cumprod)``, both ``[T]`` float64."""
    betas = get_betas(name, T)
    return betas, torch.cumprod(1.0 - betas, dim=0)


def _t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# --- 1. Sampling q(x_t | x_0) in one shot ---------------------------------------------------
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for images ``[B, C, H, W]`` and timesteps ``[B]``
    (DDPM eq. 4), via :meth:`GaussianDiffusion.q_sample`."""
    return _diffusion_from_alphas_cumprod(alphas_cumprod).q_sample(x0, t, noise)


def _q_sample_cases():
    g = seeded(40)
    _, cosine = _schedule("cosine", 1000)
    _, linear = _schedule("linear", 1000)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((x0, _t(250, 250, 250, 250), eps, cosine), name="one t for the whole batch")
    yield Case((x0, _t(0, 999, 500, 10), eps, cosine), name="mixed t: 0, T-1, 500, 10")
    yield Case((x0, _t(0, 0, 0, 0), eps, linear), name="t = 0 (almost clean)")
    yield Case((x0, _t(999, 999, 999, 999), eps, linear), name="t = T-1 (almost pure noise)")
    x1, e1 = 2 * torch.rand(3, 1, 5, 7, generator=g) - 1, torch.randn(3, 1, 5, 7, generator=g)
    _, short = _schedule("linear", 20)
    yield Case((x1, _t(3, 19, 1), e1, short), name="T = 20, non-square images")


EX_Q_SAMPLE = Exercise("ch04.q_sample", q_sample, _q_sample_cases,
                       hint="look up ab = alphas_cumprod[t] (one value per example), reshape it to "
                            "[B, 1, 1, 1] so it broadcasts over the image, then "
                            "ab.sqrt() * x0 + (1 - ab).sqrt() * noise.")


def test_q_sample(fn) -> bool:
    return EX_Q_SAMPLE.check(fn)


# --- 2. The posterior mean μ̃_t(x_t, x_0) ----------------------------------------------------
def posterior_mean(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, betas: torch.Tensor,
                   alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: the mean of q(x_{t-1} | x_t, x_0) (DDPM eq. 7), with ᾱ_{-1} = 1, via
    :meth:`GaussianDiffusion.q_posterior_mean_variance`."""
    return GaussianDiffusion(betas).q_posterior_mean_variance(x0, xt, t)[0]


def _posterior_cases():
    g = seeded(41)
    betas, ab = _schedule("cosine", 1000)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    xt = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((x0, xt, _t(400, 400, 400, 400), betas, ab), name="one t for the whole batch")
    yield Case((x0, xt, _t(1, 999, 600, 50), betas, ab), name="mixed t: 1, T-1, 600, 50")
    yield Case((x0, xt, _t(0, 0, 0, 0), betas, ab), name="t = 0 (the mean is x_0 itself)")
    lb, lab = _schedule("linear", 1000)
    yield Case((x0, xt, _t(0, 1, 998, 999), lb, lab), name="linear schedule, both ends")
    sb, sab = _schedule("cosine", 10)
    x1, y1 = torch.randn(2, 1, 3, 5, generator=g), torch.randn(2, 1, 3, 5, generator=g)
    yield Case((x1, y1, _t(9, 4), sb, sab), name="T = 10, non-square images")


EX_POSTERIOR = Exercise("ch04.posterior_mean", posterior_mean, _posterior_cases, atol=1e-4, rtol=2e-3,
                        hint="ᾱ_{t-1} is alphas_cumprod[t - 1] for t ≥ 1 and 1 at t = 0 (pad the table "
                             "with a leading 1). x_0's coefficient is √ᾱ_{t-1} β_t / (1 - ᾱ_t); x_t's is "
                             "√α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) with α_t = 1 - β_t. Shape both [B, 1, 1, 1], and "
                             "compute them in float64 (1 - ᾱ_t is tiny near t = 0).")


def test_posterior_mean(fn) -> bool:
    return EX_POSTERIOR.check(fn)


# --- 3. One deterministic DDIM step -----------------------------------------------------------
def ddim_step(eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: DDIM's η = 0 update from t to t_prev < t (Song et al. 2021, eq. 12)::

        x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t,     x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev) ε

    with ᾱ_prev = 1 when t_prev = -1 and no clipping of x̂_0, via :func:`unclip_lite.diffusion.ddim_step`.
    """
    diffusion = _diffusion_from_alphas_cumprod(alphas_cumprod)
    return _ddim_step(diffusion, eps, xt, t, t_prev, eta=0.0, clip_denoised=False).prev_sample


def _ddim_cases():
    g = seeded(42)
    _, ab = _schedule("cosine", 1000)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    t = _t(500, 500, 500, 500)
    xt = q_sample(x0, t, eps, ab)
    yield Case((eps, xt, t, _t(480, 480, 480, 480), ab), name="a consistent x_t, 500 → 480")
    xr = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((eps, xr, _t(999, 700, 20, 0), _t(899, 600, -1, -1), ab),
               name="mixed steps: T-1 → 899, 700 → 600, 20 → clean, 0 → clean")
    yield Case((eps, xr, _t(0, 0, 0, 0), _t(-1, -1, -1, -1), ab), name="t = 0 → t_prev = -1 (ᾱ = 1)")
    _, lab = _schedule("linear", 1000)
    yield Case((eps, xr, _t(999, 999, 1, 600), _t(998, 0, 0, 300), lab), name="linear schedule, long and short jumps")


EX_DDIM = Exercise("ch04.ddim_step", ddim_step, _ddim_cases, atol=1e-4, rtol=2e-3,
                   hint="ᾱ_prev is alphas_cumprod[t_prev] for t_prev ≥ 0 and 1 for t_prev = -1 (pad the "
                        "table with a leading 1 and index it at t_prev + 1). First recover x̂_0 from ε, "
                        "then rebuild the point at t_prev with the *same* ε; do not clip x̂_0.")


def test_ddim_step(fn) -> bool:
    return EX_DDIM.check(fn)
