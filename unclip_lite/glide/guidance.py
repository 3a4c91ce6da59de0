"""Classifier-free guidance (Ho & Salimans 2021; GLIDE, Nichol et al. 2021, §2.4, eq. 4)::

    ε̂(x_t | c) = ε_θ(x_t | ∅) + s · (ε_θ(x_t | c) - ε_θ(x_t | ∅))

s = 1 is the plain conditional model, s = 0 the unconditional one, s > 1 pushes samples
toward the caption (GLIDE samples at s = 3). Both predictions come from one batched forward
over [x; x] with [caption; empty caption]. With a learned variance (2C outputs) only the ε half
is guided; the variance half is the conditional one, as in glide-text2im.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from unclip_lite.diffusion.guidance import check_guidance_scale

MAX_SCALE = 50.0


def classifier_free_guidance(model, tokens: torch.Tensor, scale: float, **model_kwargs
                             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``model_fn(x, t)`` for the samplers that guides ``model`` (a :class:`~.text2im.Text2Im`,
    anything with ``forward(x, t, tokens, **model_kwargs)`` and ``empty_tokens(batch, device)``)
    toward ``tokens`` [B, L]. Tensor ``model_kwargs`` with a batch dimension (e.g. ``extra``,
    the inpainting or upsampling channels) are given to both halves of the batched forward."""
    scale = check_guidance_scale(scale, MAX_SCALE)
    if tokens.dim() != 2 or len(tokens) == 0:
        raise ValueError(f"expected tokens of shape [B, L] with B >= 1, got {tuple(tokens.shape)}")
    empty = model.empty_tokens(len(tokens), device=tokens.device)  # [B, L]
    both_tokens = torch.cat([tokens, empty])  # [2B, L]
    for name, value in model_kwargs.items():
        if isinstance(value, torch.Tensor) and len(value) != len(tokens):
            raise ValueError(f"{name} has batch {len(value)} but there are {len(tokens)} captions")
    # a learned variance comes from the conditional half, so s = 0 still needs both halves
    learned_variance = bool(getattr(getattr(getattr(model, "config", None), "unet", None), "learn_sigma", True))
    both_kwargs = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in model_kwargs.items()}

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        B, C = x.shape[:2]
        if B != len(tokens):
            raise ValueError(f"x has batch {B} but guidance was built for {len(tokens)} captions")
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(B)  # [B]
        if scale == 1.0 or (scale == 0.0 and not learned_variance):  # one half is all the formula needs
            return model(x, t, empty if scale == 0 else tokens, **model_kwargs)
        out = model(torch.cat([x, x]), torch.cat([t, t]), both_tokens, **both_kwargs)  # [2B, C or 2C, H, W]
        eps, rest = out[:, :C], out[:, C:]
        eps_c, eps_u = eps[:B], eps[B:]  # [B, C, H, W] each
        guided = eps_u + scale * (eps_c - eps_u)
        return torch.cat([guided, rest[:B]], dim=1)  # variance half (if any): the conditional one

    return model_fn
