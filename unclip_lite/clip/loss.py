"""CLIP's contrastive loss: symmetric InfoNCE over a batch (Radford et al. 2021, Figure 3).

For a batch of N matching (image, caption) pairs with unit embeddings I, T ``[N, E]``:

    logits = exp(t) · I Tᵀ                     # [N, N]: image i against caption j
    loss   = ½ (CE(logits, diag) + CE(logitsᵀ, diag))

Row i asks "which caption belongs to image i?", column j "which image belongs to caption j?";
the other N − 1 entries of each row are the negatives. More negatives make the task harder
and the embeddings better, so with several processes every rank compares its own images
and captions with *all* ranks' (:func:`gather_with_grad`), as open_clip does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F


def contrastive_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                       scale: torch.Tensor | float) -> torch.Tensor:
    """Scaled cosine similarities ``[N_images, N_texts]`` (features must be unit vectors)."""
    return scale * image_features @ text_features.T


def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
              scale: torch.Tensor | float) -> torch.Tensor:
    """Symmetric cross-entropy over one batch; pair i is ``(image_features[i], text_features[i])``."""
    if image_features.shape != text_features.shape or image_features.dim() != 2:
        raise ValueError(f"expected image and text features of one shape [N, E], got "
                         f"{tuple(image_features.shape)} and {tuple(text_features.shape)}")
    logits = contrastive_logits(image_features.float(), text_features.float(), scale)  # [N, N]
    labels = torch.arange(len(logits), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def gather_with_grad(features: torch.Tensor) -> torch.Tensor:
    """Concatenate ``features`` from every rank, in rank order, keeping the autograd graph.

    ``torch.distributed.nn.all_gather`` sends the gradient of each gathered slice back to
    the rank that produced it, so every rank's encoders learn from every rank's negatives.
    """
    import torch.distributed.nn as dist_nn

    return torch.cat(dist_nn.all_gather(features.contiguous()), dim=0)


def distributed_clip_loss(image_features: torch.Tensor, text_features: torch.Tensor,
                          scale: torch.Tensor | float) -> torch.Tensor:
    """:func:`clip_loss` over the global batch, computed from this rank's local slice.

    Each rank scores its local images against all captions and its local captions against
    all images (open_clip's ``local_loss``): an ``[n, N]`` block instead of the whole
    ``[N, N]`` matrix. Averaged over ranks (which DDP does to the gradients) it equals the
    single-process loss on the concatenated batch, and so do the gradients (tested).
    Without an initialised process group it is plain :func:`clip_loss`.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return clip_loss(image_features, text_features, scale)
    all_images = gather_with_grad(image_features.float())  # [N, E]
    all_texts = gather_with_grad(text_features.float())  # [N, E]
    n = len(image_features)
    labels = torch.arange(n, device=image_features.device) + n * dist.get_rank()
    per_image = contrastive_logits(image_features.float(), all_texts, scale)  # [n, N]
    per_text = contrastive_logits(text_features.float(), all_images, scale)  # [n, N]
    return 0.5 * (F.cross_entropy(per_image, labels) + F.cross_entropy(per_text, labels))
