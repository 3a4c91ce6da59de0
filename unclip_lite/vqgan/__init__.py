"""VQGAN and VQGAN-CLIP (chapter 03: CLIP-guided generation).

- :mod:`~unclip_lite.vqgan.model`: the VQGAN of Esser et al. 2021 "Taming Transformers" §3.1,
  small — encoder, codebook (straight-through quantisation, eq. 2–4), decoder, PatchGAN critic,
  hinge loss and the adaptive weight of eq. 7.
- :mod:`~unclip_lite.vqgan.bundle`: :class:`VQGANBundle`, the checkpoint (images in [0, 1] at its border).
- :mod:`~unclip_lite.vqgan.recipes`: training on Shapes with the shared trainer (both players
  in one module), and :func:`evaluate_vqgan` (PSNR, codebook use).
- :mod:`~unclip_lite.vqgan.vqgan_clip`: VQGAN-CLIP (Crowson et al. 2022 §2): optimise the latent
  grid against CLIP through random cutouts and the spherical distance loss.
"""
from __future__ import annotations

from unclip_lite.vqgan.bundle import VQGANBundle, load_vqgan, to_image_range, to_model_range
from unclip_lite.vqgan.model import (
    VQGAN,
    Decoder,
    Encoder,
    PatchDiscriminator,
    VectorQuantizer,
    VQGANConfig,
    adaptive_weight,
    generator_adversarial_loss,
    hinge_d_loss,
    lookup,
    nearest_code_indices,
    perplexity,
    straight_through_quantize,
)
from unclip_lite.vqgan.recipes import (
    VQGANData,
    VQGANRecipe,
    VQGANTraining,
    evaluate_vqgan,
    train_vqgan,
    vqgan_batches,
    vqgan_step,
)
from unclip_lite.vqgan.vqgan_clip import (
    VQGANClipConfig,
    clamp_with_grad,
    evaluate_vqgan_clip,
    make_cutouts,
    parse_prompt,
    spherical_distance_loss,
    vqgan_clip,
)

__all__ = [
    "VQGAN", "Decoder", "Encoder", "PatchDiscriminator", "VQGANBundle", "VQGANClipConfig", "VQGANConfig",
    "VQGANData", "VQGANRecipe", "VQGANTraining", "VectorQuantizer", "adaptive_weight", "clamp_with_grad",
    "evaluate_vqgan", "evaluate_vqgan_clip", "generator_adversarial_loss", "hinge_d_loss", "load_vqgan", "lookup",
    "make_cutouts", "nearest_code_indices", "parse_prompt", "perplexity", "spherical_distance_loss",
    "straight_through_quantize", "to_image_range", "to_model_range", "train_vqgan", "vqgan_batches", "vqgan_clip",
    "vqgan_step",
]
