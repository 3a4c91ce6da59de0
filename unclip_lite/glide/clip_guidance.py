"""CLIP guidance (GLIDE §2.4, after Nichol et al.'s and Crowson's CLIP-guided diffusion).

A noise-aware CLIP (``VisionConfig(timestep_conditioned=True)``: its image tower also reads
t) scores how well the noisy image x_t matches the caption, and the sampler climbs that
score: the "log-probability" handed to :func:`~unclip_lite.diffusion.guidance.gradient_guidance` is

    log p(c | x_t) ≈ exp(τ) · f(x_t, t) · g(c)        (unit vectors f, g; τ the CLIP temperature)

A CLIP trained on clean images only would see noise at large t and give useless gradients;
that is why GLIDE trains its CLIP on noised images (:func:`noised_clip_batches`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.diffusion import GaussianDiffusion


def check_noise_aware(bundle: CLIPBundle) -> None:
    if not bundle.model.config.vision.timestep_conditioned:
        raise ValueError("CLIP guidance needs a noise-aware CLIP (vision.timestep_conditioned=True); "
                         "a CLIP trained on clean images cannot read x_t")


def clip_log_prob(bundle: CLIPBundle, texts: Sequence[str] | torch.Tensor) -> Callable:
    """``log_prob_fn(x_t, t) -> [B]``: exp(τ) · cos(f(x_t, t), g(text)) for x_t in [-1, 1].

    ``texts`` are strings (encoded once here) or precomputed unit text embeddings [B, E].
    """
    check_noise_aware(bundle)
    model = bundle.model
    text_features = texts if isinstance(texts, torch.Tensor) else bundle.encode_texts(list(texts))  # [B, E]

    def log_prob(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(x_t) != len(text_features):
            raise ValueError(f"x_t has batch {len(x_t)} but there are {len(text_features)} texts")
        images = bundle.normalize_pixels((x_t + 1) / 2)  # the CLIP's own pixel scale
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(len(x_t))
        image_features = model.encode_image(images, normalize=True, t=t)  # [B, E]
        return model.scale() * (image_features * text_features.to(image_features)).sum(-1)  # [B]

    return log_prob


def noised_clip_batches(bundle: CLIPBundle, clean_batches: Callable, diffusion: GaussianDiffusion,
                        seed: int = 0) -> Callable:
    """Wrap a CLIP training stream ``batches(index, rank, world) -> (pixels, tokens)`` of clean,
    normalised images into one of ``(x_t pixels, tokens, t)``: each image noised by q(x_t | x_0)
    at a uniform timestep, drawn from a generator seeded by the batch index (resumable)."""
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)

    def batches(index: int, rank: int = 0, world: int = 1):
        pixels, tokens = clean_batches(index, rank, world)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index * world + rank)
        x0 = (pixels * std + mean) * 2 - 1  # back to [-1, 1]
        t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=gen)  # [B]
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        return bundle.normalize_pixels((x_t + 1) / 2), tokens, t

    return batches


def noised_contrastive_step(model, batch):
    """The CLIP loss on noisy images: the trainer's ``loss_fn`` for a noise-aware CLIP."""
    from unclip_lite.clip.loss import distributed_clip_loss

    images, tokens, t = batch
    image_features, text_features, scale = model(images, tokens, t)
    return distributed_clip_loss(image_features, text_features, scale), {"scale": scale.item()}
