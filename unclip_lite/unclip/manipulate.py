"""Playing in unCLIP's latent space (Ramesh et al. 2022, §3): the bipartite latent, variations,
interpolations and text diffs, on the shipped decoder and its CLIP.

An image x has a *bipartite latent* (z_i, x_T): z_i its CLIP image embedding, x_T the noise that
DDIM, run under z_i, maps back to x (found by DDIM inversion, :func:`~unclip_lite.diffusion.ddim_invert`)::

    z_i, x_T = encode(decoder, clip, images)                    # [B, E], [B, 3, R, R]
    same = decode(decoder, z_i, x_T, eta=0.0)                   # ≈ images
    variations = decode(decoder, z_i, x_T, eta=0.5, seed=1)     # keep what z_i says, redraw the rest
    halfway = decode(decoder, slerp(z_a, z_b, 0.5), x_T)        # an interpolation
    edited = decode(decoder, slerp(z_i, text_diff(clip, "a blue circle", "a red circle"), 0.3), x_T)

The decoder reads the *empty* caption here: every manipulation goes through z_i alone, as in
the paper's figures. Guidance is over z_i (conditional: z_i, unconditional: a zero embedding).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unclip_lite.diffusion.samplers import ddim_invert, ddim_sample_loop
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.unclip.decoder import DecoderBundle


def slerp(a: torch.Tensor, b: torch.Tensor, theta: float | torch.Tensor) -> torch.Tensor:
    """Spherical interpolation from ``a`` (θ = 0) to ``b`` (θ = 1) along the great circle through
    their directions, rows [..., D]; magnitudes are interpolated the same way, so two unit vectors
    give unit vectors and two Gaussian noises give a Gaussian-looking noise. Nearly parallel rows
    fall back to linear interpolation."""
    if a.shape != b.shape:
        raise ValueError(f"slerp needs tensors of one shape, got {tuple(a.shape)} and {tuple(b.shape)}")
    theta = torch.as_tensor(theta, dtype=a.dtype, device=a.device)
    if theta.min() < 0 or theta.max() > 1:
        raise ValueError(f"theta must be in [0, 1], got {theta.tolist()}")
    if (a.norm(dim=-1) == 0).any() or (b.norm(dim=-1) == 0).any():
        raise ValueError("slerp of a zero vector: it has no direction")
    theta = theta.reshape(theta.shape + (1,) * (a.dim() - theta.dim())) if theta.dim() else theta
    cos = (F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1, keepdim=True).clamp(-1, 1)  # [..., 1]
    omega = torch.arccos(cos)
    sin = torch.sin(omega)
    near = sin.abs() < 1e-6
    safe = torch.where(near, torch.ones_like(sin), sin)
    wa = torch.where(near, 1 - theta * torch.ones_like(sin), torch.sin((1 - theta) * omega) / safe)
    wb = torch.where(near, theta * torch.ones_like(sin), torch.sin(theta * omega) / safe)
    return wa * a + wb * b


def flat_slerp(a: torch.Tensor, b: torch.Tensor, theta: float) -> torch.Tensor:
    """:func:`slerp` of images or noises [B, C, H, W] treated as flat vectors."""
    return slerp(a.flatten(1), b.flatten(1), theta).view_as(a)


@torch.no_grad()
def text_diff(clip, target: str | list[str], source: str | list[str]) -> torch.Tensor:
    """unCLIP's text diff (§3.3): z_d = norm(z_t(target) − z_t(source)) [B, E], the direction in CLIP
    space from a caption of the image to the caption wanted."""
    target = [target] if isinstance(target, str) else list(target)
    source = [source] if isinstance(source, str) else list(source)
    if len(target) != len(source):
        raise ValueError(f"{len(target)} target captions for {len(source)} source captions")
    diff = clip.encode_texts(target) - clip.encode_texts(source)
    if (diff.norm(dim=-1) < 1e-6).any():
        raise ValueError("a target caption embeds like its source caption: the diff has no direction")
    return F.normalize(diff, dim=-1)


def _check_images(decoder: DecoderBundle, images: torch.Tensor) -> None:
    size = decoder.image_size
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or tuple(images.shape[1:]) != (3, size, size):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"the decoder encodes images [B, 3, {size}, {size}] in [0, 1], got {shape}")
    if images.min() < 0 or images.max() > 1:
        raise ValueError("expected images in [0, 1]")


def latent_model_fn(decoder: DecoderBundle, image_embed: torch.Tensor, guidance: float = 1.0):
    """The decoder as a ``model_fn(x, t)`` for DDIM: the empty caption, z_i = ``image_embed``
    [B, E], guided with ``guidance`` toward z_i (1 = the plain conditional model)."""
    decoder.model.check_image_embed(image_embed, len(image_embed))
    tokens = decoder.tokenize([""] * len(image_embed))
    return classifier_free_guidance(decoder.model, tokens, guidance, conditioning={"image_embed": image_embed})


@torch.no_grad()
def encode(decoder: DecoderBundle, clip, images: torch.Tensor, steps: int = 50, fixed_point_iters: int = 0,
           guidance: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The bipartite latent ``(z_i [B, E], x_T [B, 3, R, R])`` of ``images`` [B, 3, R, R] in [0, 1]."""
    _check_images(decoder, images)
    decoder.check_clip(clip)
    z_i = clip.encode_images(images)
    x_T = ddim_invert(decoder.diffusion, latent_model_fn(decoder, z_i, guidance), images * 2 - 1, steps=steps,
                      fixed_point_iters=fixed_point_iters, progress=False)
    return z_i, x_T


@torch.no_grad()
def decode(decoder: DecoderBundle, image_embed: torch.Tensor, x_T: torch.Tensor, eta: float = 0.0, steps: int = 50,
           guidance: float = 1.0, seed: int = 0) -> torch.Tensor:
    """Images [B, 3, R, R] in [0, 1] from a bipartite latent: DDIM from ``x_T`` under z_i. η = 0 is
    deterministic (the reconstruction); η > 0 adds fresh noise each step (variations, §3.1)."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    if x_T.shape[0] != image_embed.shape[0]:
        raise ValueError(f"{len(image_embed)} embeddings for {len(x_T)} noises")
    generator = torch.Generator().manual_seed(seed)
    x = ddim_sample_loop(decoder.diffusion, latent_model_fn(decoder, image_embed, guidance), x_T.shape, steps=steps,
                         eta=eta, x_T=x_T, generator=generator, clip_denoised=eta > 0, progress=False)
    return ((x + 1) / 2).clamp(0, 1)
