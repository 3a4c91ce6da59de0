"""Guidance by the gradient of a differentiable score of the noisy image.

Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §4.2, Algorithm 2)
shifts the model's noise prediction along the gradient of log p(y | x_t)::

    ε̂'(x_t) = ε̂(x_t) - √(1 - ᾱ_t) · s · ∇_{x_t} log p_φ(y | x_t)

which is Bayes' rule on scores: ∇ log p(x_t | y) = ∇ log p(x_t) + ∇ log p(y | x_t), with the
score form ∇ log p(x_t) = -ε / √(1 - ᾱ_t) (Song et al. 2021, "Score-Based Generative Modeling
through SDEs", §5 on controllable generation). The same form serves DDIM and DDPM.

The shift is made on ε̂ whatever the network predicts, as in guided-diffusion / glide-text2im's
``condition_score``: x̂_0 or v is converted to ε̂ at the same x_t, shifted, and converted back,
so the samplers read the guided output as they read any other. Going through ε matters because
ε̂ is the score; x̂_0 and v are affine in ε̂ with other coefficients (Tweedie: the shift above
moves x̂_0 by +(1 - ᾱ_t)/√ᾱ_t · s · ∇ log p(y | x_t)), so adding s∇ to them directly is wrong.

GLIDE's CLIP guidance (§2.4) is the same with log p(y | x_t) replaced by a noised CLIP's scaled
similarity exp(τ) · f(x_t, t) · g(c). Classifier-free guidance needs no gradient: see
:mod:`unclip_lite.glide.guidance`.
"""
from __future__ import annotations

import math
from collections.abc import Callable

import torch

from unclip_lite.diffusion.gaussian import GaussianDiffusion

MAX_GRADIENT_SCALE = 1000.0


def check_guidance_scale(scale, max_scale: float) -> float:
    """``scale`` as a float, or a ValueError unless it is a finite number in [0, ``max_scale``]."""
    try:
        scale = float(scale)
    except (TypeError, ValueError):
        raise ValueError(f"guidance scale must be a number, got {scale!r}") from None
    if not math.isfinite(scale) or not 0.0 <= scale <= max_scale:
        raise ValueError(f"guidance scale must be finite and in [0, {max_scale:g}], got {scale}")
    return scale


def gradient_guidance(diffusion: GaussianDiffusion, model_fn: Callable, log_prob_fn: Callable,
                      scale: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``model_fn(x, t)`` whose ε̂ is pushed up the gradient of ``log_prob_fn(x, t) -> [B]``.

    Works for ε-, x_0- and v-prediction (``diffusion.parameterization``): the output's mean
    channels go to ε̂ unclipped (:meth:`~.GaussianDiffusion.eps_from_output`), ε̂ is shifted by
    -√(1-ᾱ_t) · ``scale`` · ∇ log p (ADM §4.2, Algorithm 2), and the result goes back to the
    model's own parameterisation (:meth:`~.GaussianDiffusion.output_from_eps`). A learned-variance
    half passes through unchanged, and ``scale = 0`` returns the model's output as it is.

    ``diffusion`` is the process the model was trained on: ``t`` arrives as the model's own
    timestep (the samplers map respaced steps back to it), so ᾱ_t is read from its table.
    """
    scale = check_guidance_scale(scale, MAX_GRADIENT_SCALE)
    sqrt_one_minus_ab = diffusion.sqrt_one_minus_alphas_cumprod

    def guided(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        out = model_fn(x, t)  # [B, C (or 2C), H, W]
        if scale == 0.0:
            return out
        with torch.enable_grad():
            x_in = x.detach().requires_grad_(True)
            log_prob = log_prob_fn(x_in, t)  # [B]
            if log_prob.shape != (len(x),):
                raise ValueError(f"log_prob_fn must return one value per image [{len(x)}], got {tuple(log_prob.shape)}")
            grad = torch.autograd.grad(log_prob.sum(), x_in)[0]  # [B, C, H, W]
        C = x.shape[1]
        sigma = GaussianDiffusion._extract(sqrt_one_minus_ab, t, x)  # [B, 1, 1, 1]
        eps = diffusion.eps_from_output(x, t, out[:, :C]) - sigma * scale * grad.to(out.dtype)  # [B, C, H, W]
        return torch.cat([diffusion.output_from_eps(x, t, eps), out[:, C:]], dim=1)

    return guided
