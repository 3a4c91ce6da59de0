"""Guidance by the gradient of a differentiable score of the noisy image.

Classifier guidance (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §4, Algorithm 2)
shifts the model's noise prediction along the gradient of log p(y | x_t)::

    ε̂(x_t) = ε_θ(x_t) - √(1 - ᾱ_t) · s · ∇_{x_t} log p_φ(y | x_t)

which is Bayes' rule on scores: ∇ log p(x_t | y) = ∇ log p(x_t) + ∇ log p(y | x_t), with
∇ log p(x_t) = -ε / √(1 - ᾱ_t). The same form serves DDIM and DDPM. GLIDE's CLIP guidance
(§2.4) is the same with log p(y | x_t) replaced by a noised CLIP's scaled similarity
exp(τ) · f(x_t, t) · g(c). Classifier-free guidance needs no gradient: see
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
    """A ``model_fn(x, t)`` whose ε is pushed up the gradient of ``log_prob_fn(x, t) -> [B]``.

    ``diffusion`` is the process the model was trained on: ``t`` arrives as the model's own
    timestep (the samplers map respaced steps back to it), so ᾱ_t is read from its table.
    Only ε-prediction is guided here; a learned-variance half passes through unchanged.
    """
    scale = check_guidance_scale(scale, MAX_GRADIENT_SCALE)
    if diffusion.parameterization != "eps":
        raise ValueError(f"gradient guidance needs an ε-prediction model, got {diffusion.parameterization!r}")
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
        eps = out[:, :C] - sigma * scale * grad.to(out.dtype)
        return torch.cat([eps, out[:, C:]], dim=1)

    return guided
