"""CLIP: contrastive language-image pre-training (Radford et al. 2021, §2.3-§2.5).

Two towers map images and captions into one embedding space; after L2 normalisation the
cosine similarities, multiplied by a learned inverse temperature, are the logits of a
symmetric cross-entropy over the batch (Figure 3 of the paper; the loss lives elsewhere).

    model = build_clip("shapes-tiny")
    img, txt, scale = model(images, tokens)   # unit vectors [B, E], [B, E]; scalar
    logits = scale * img @ txt.T              # [B_images, B_texts]
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.clip.configs import CLIPConfig, get_config
from unclip_lite.clip.text import TextTransformer
from unclip_lite.clip.vision import ModifiedResNet, VisionTransformer
from unclip_lite.nn import set_grad_checkpointing


class CLIP(nn.Module):
    """The two towers plus the temperature. Weights live under ``visual.*``, ``text.*`` and
    ``logit_scale`` (see :mod:`unclip_lite.clip.interop` for OpenAI/open_clip names)."""

    def __init__(self, config: CLIPConfig):
        super().__init__()
        config.validate()
        self.config = config
        if config.vision.is_resnet:
            self.visual = ModifiedResNet(config.vision, config.embed_dim)
        else:
            self.visual = VisionTransformer(config.vision, config.embed_dim, config.activation)
        self.text = TextTransformer(config.text, config.embed_dim, config.activation)
        # §2.3: "the temperature parameter which controls the range of the logits in the softmax,
        # τ, is directly optimized ... as a log-parameterized multiplicative scalar";
        # §2.5: initialised to τ = 0.07 and clipped so the logits are scaled by at most 100
        self.logit_scale = nn.Parameter(torch.tensor(float(config.init_logit_scale)))

    def encode_image(self, images: torch.Tensor, normalize: bool = False,
                     t: torch.Tensor | None = None) -> torch.Tensor:
        """Images [B, 3, S, S] (already normalised pixels) -> embeddings [B, E].

        ``t`` [B]: the diffusion timestep of noisy images, for a ``timestep_conditioned`` tower."""
        features = self.visual(images) if t is None else self.visual(images, t)
        return F.normalize(features, dim=-1) if normalize else features

    def encode_text(self, tokens: torch.Tensor, normalize: bool = False) -> torch.Tensor:
        """Token ids [B, L] (L <= context_length, [EOS] = largest id) -> embeddings [B, E]."""
        features = self.text(tokens)
        return F.normalize(features, dim=-1) if normalize else features

    def scale(self) -> torch.Tensor:
        """``exp(logit_scale)``, never above ``max_logit_scale`` (§2.5: clipped at 100).

        Written as a ``where`` rather than ``clamp`` so the gradient still flows when the
        parameter sits exactly at the cap (``clamp`` zeroes it there, and it would stick).
        """
        cap = math.log(self.config.max_logit_scale)
        return torch.where(self.logit_scale > cap, cap, self.logit_scale).exp()

    def set_grad_checkpointing(self, enable: bool = True) -> int:
        """Recompute every block of both towers in the backward pass instead of keeping its
        activations (open_clip's method name; :func:`unclip_lite.nn.set_grad_checkpointing`).
        Returns how many blocks were switched."""
        return set_grad_checkpointing(self, enable)

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clip the parameter itself into [0, ln 100]; call after each optimizer step, as
        OpenAI did, so the gradient through :meth:`scale` never vanishes at the cap."""
        self.logit_scale.clamp_(0, math.log(self.config.max_logit_scale))

    def forward(
        self, images: torch.Tensor, tokens: torch.Tensor, t: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Normalised image features [B, E], normalised text features [B, E], and the scale."""
        image_features = self.encode_image(images, normalize=True, t=t)
        text_features = self.encode_text(tokens, normalize=True)
        return image_features, text_features, self.scale()


def build_clip(
    name_or_config: str | CLIPConfig,
    device: str | torch.device | None = None,
) -> CLIP:
    """A freshly initialised CLIP from a preset name or a :class:`CLIPConfig`.

    ``device="meta"`` builds the module without allocating or initialising any weights:
    instant even for RN50x64, which is how the parameter counts are checked.
    """
    config = get_config(name_or_config) if isinstance(name_or_config, str) else name_or_config
    if device is None:
        return CLIP(config)
    with torch.device(device):
        return CLIP(config)


def count_parameters(model: nn.Module | CLIPConfig | str, trainable_only: bool = False) -> int:
    """Number of parameters of a module, or of the CLIP a config or preset name describes."""
    if not isinstance(model, nn.Module):
        model = build_clip(model, device="meta")
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
