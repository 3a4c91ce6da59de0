"""Classifier-free guidance for GLIDE (GLIDE §2.4, eq. 4): toward the caption, away from the
empty caption, in one batched forward. The formula and the batching live in
:mod:`unclip_lite.diffusion.free_guidance` (any conditioning); here GLIDE's conditioning is the
caption tokens, and :meth:`~unclip_lite.glide.text2im.Text2Im.null_conditioning` says its ∅ is
the empty caption [SOT, EOT, PAD, …]. With a learned variance (2C outputs) only the ε half is
guided; the variance half is the conditional one, as in glide-text2im.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from unclip_lite.diffusion.free_guidance import MAX_SCALE, classifier_free_guidance as free_guidance

__all__ = ["MAX_SCALE", "classifier_free_guidance"]


def classifier_free_guidance(model, tokens: torch.Tensor, scale: float,
                             conditioning: dict[str, torch.Tensor] | None = None, **model_kwargs
                             ) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """A ``model_fn(x, t)`` for the samplers that guides ``model`` (a :class:`~.text2im.Text2Im`,
    anything with ``forward(x, t, tokens, **model_kwargs)`` and ``null_conditioning(tokens)``)
    toward ``tokens`` [B, L]. Tensor ``model_kwargs`` with a batch dimension (e.g. ``extra``,
    the inpainting or upsampling channels) are given to both halves of the batched forward;
    ``conditioning`` tensors (unCLIP's decoder: ``image_embed``) are guided with the caption."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2 or len(tokens) == 0:
        shape = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise ValueError(f"expected tokens of shape [B, L] with B >= 1, got {shape}")
    # a learned variance comes from the conditional half, so s = 0 still needs both halves
    learned_variance = bool(getattr(getattr(getattr(model, "config", None), "unet", None), "learn_sigma", True))
    return free_guidance(model, scale, {"tokens": tokens, **(conditioning or {})}, learned_variance, **model_kwargs)
