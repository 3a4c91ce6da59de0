"""unCLIP's decoder (Ramesh et al. 2022, §2.1): a GLIDE that also reads a CLIP image embedding.

"We modify the architecture described in Nichol et al. (2021) by projecting and adding CLIP
embeddings to the existing timestep embedding, and by projecting CLIP embeddings into four
extra tokens of context that are concatenated to the sequence of outputs from the GLIDE text
encoder." In code (lucidrains' ``image_to_tokens``, diffusers' ``UnCLIPTextProjModel``)::

    z_i [B, E] --image_to_cond-->   [B, W]      + pooled caption vector  -> cond (timestep embedding)
    z_i [B, E] --image_to_tokens--> [B, 4, W]   ++ caption tokens [B, L, W] -> context (every attention layer)

The timestep projection starts at zero and the 4 image tokens are *gated* in every attention
layer (:mod:`unclip_lite.unet_attention`), gate 0 at first: a decoder warm-started from a trained
GLIDE computes exactly what that GLIDE computes, then learns to read z_i. (A zero token
projection alone would not do it: a zero token still takes attention weight through its key's
bias.)

Guidance (§2.1): z_i is replaced by zeros 10% of the time and the caption by the empty one 50%
of the time, independently. We use a *zero* null embedding, as Karlo and diffusers' unCLIP do,
rather than a learned one: a unit-norm CLIP embedding is never zero, so zero is unambiguous,
and with zero-initialised projections it leaves the warm-started GLIDE's unconditional model
untouched. At sampling the unconditional half drops both (Karlo's decoder does the same).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch
from torch import nn

from unclip_lite.checkpoints import load_state_into
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.glide.text2im import Text2Im, Text2ImConfig, get_text2im_config
from unclip_lite.tokenizer import CompactVocab
from unclip_lite.unet_attention import zero_
from unclip_lite.utils import config_from_dict


@dataclass
class DecoderConfig:
    """A GLIDE (``glide``) plus the CLIP image embedding's two ways in."""

    glide: Text2ImConfig
    clip_dim: int = 128  # E: the CLIP embedding width
    clip_tokens: int = 4  # §2.1: "four extra tokens of context"
    p_drop_image: float = 0.1  # §2.1: CLIP embeddings set to zero 10% of the time
    p_drop_text: float = 0.5  # §2.1: "randomly dropping the text caption 50% of the time"

    def __post_init__(self):
        if isinstance(self.glide, dict):
            self.glide = Text2ImConfig.from_dict(self.glide)
        if self.glide.conditioning != "text":
            raise ValueError(f"a decoder extends a text-to-image GLIDE, not a {self.glide.conditioning!r} model")
        for name in ("clip_dim", "clip_tokens"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DecoderConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("p_drop_image", "p_drop_text"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"DecoderConfig.{name} must be in [0, 1], got {getattr(self, name)}")
        self.glide.unet.gated_context_tokens = self.clip_tokens  # the image tokens come first, gated
        self.glide.p_uncond = self.p_drop_text
        self.glide.__post_init__()

    def to_dict(self) -> dict:
        return {"glide": self.glide.to_dict(), "clip_dim": self.clip_dim, "clip_tokens": self.clip_tokens,
                "p_drop_image": self.p_drop_image, "p_drop_text": self.p_drop_text}

    @classmethod
    def from_dict(cls, d: dict) -> DecoderConfig:
        return config_from_dict(cls, {**d, "glide": Text2ImConfig.from_dict(dict(d["glide"]))})



def paper_decoder_config() -> DecoderConfig:
    """The paper's 64 px decoder (§2.1, Table 3: "3.5B"): GLIDE's 3.5B model (512 channels, a
    text transformer of width 2,048) reading ViT-H/16 image embeddings (1,024-d). Build it on
    the ``meta`` device to count it: 3.56B parameters."""
    return DecoderConfig(get_text2im_config("glide-base-paper"), clip_dim=1024)

def image_conditioning(image_embed: torch.Tensor, pooled: torch.Tensor, xf_out: torch.Tensor, text_mask: torch.Tensor,
                       to_cond: nn.Module, to_tokens: nn.Module, n_tokens: int
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """unCLIP §2.1's two ways in for z_i, beside GLIDE's caption: ``(cond [B, W], context
    [B, n + L, W], context_mask [B, n + L])`` from ``image_embed`` [B, E], GLIDE's pooled caption
    vector ``pooled`` [B, W] and its tokens ``xf_out`` [B, L, W] with ``text_mask`` [B, L]:
    ``cond = pooled + to_cond(z)`` (the U-Net adds it to the timestep embedding), and
    ``to_tokens(z)`` cut into ``n_tokens`` tokens of width W, put *in front of* the caption's
    tokens, always visible."""
    B = len(image_embed)
    z = image_embed.to(pooled.dtype)
    image_tokens = to_tokens(z).view(B, n_tokens, -1)  # [B, n, W]
    context = torch.cat([image_tokens, xf_out], dim=1)  # [B, n + L, W]
    context_mask = torch.cat([text_mask.new_ones(B, n_tokens), text_mask], dim=1)  # [B, n + L]
    return pooled + to_cond(z), context, context_mask


def dual_dropout(tokens: torch.Tensor, image_embed: torch.Tensor, empty: torch.Tensor, u: torch.Tensor,
                 p_text: float, p_image: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Training's dropout of both conditionings (§2.1), from uniform draws ``u`` [B, 2]: caption
    row b becomes ``empty`` [L] where ``u[b, 0] < p_text``, and z_i row b becomes zeros where
    ``u[b, 1] < p_image`` — independent draws, so both go together for p_text·p_image of rows."""
    drop_text, drop_image = u[:, 0] < p_text, u[:, 1] < p_image  # [B], [B]
    tokens = torch.where(drop_text[:, None], empty.expand_as(tokens), tokens)
    return tokens, torch.where(drop_image[:, None], torch.zeros_like(image_embed), image_embed)


class Decoder(Text2Im):
    """GLIDE's :class:`~unclip_lite.glide.text2im.Text2Im` conditioned on z_i as well (§2.1).

    Its parameter names are GLIDE's plus ``image_to_cond``, ``image_to_tokens`` and each
    attention layer's ``token_gate``, so a GLIDE checkpoint warm-starts it."""

    def __init__(self, config: DecoderConfig):
        super().__init__(config.glide)
        self.decoder_config = c = config
        width = c.glide.text_width
        self.image_to_cond = zero_(nn.Linear(c.clip_dim, width))  # [E] -> [W], added to the pooled caption
        self.image_to_tokens = nn.Linear(c.clip_dim, c.clip_tokens * width)  # [E] -> [4 W]
        # Not zero: the attention gates (0 at first) already keep the start exact, and a gate can
        # only learn to open if the tokens behind it carry z_i. N(0, 1) weights on a unit z_i give
        # tokens of about unit scale per channel, like the caption's LayerNormed ones.
        nn.init.normal_(self.image_to_tokens.weight, std=1.0)
        nn.init.zeros_(self.image_to_tokens.bias)
        # The new projections learn 10x faster than the GLIDE they join (the trainer reads this):
        # at the GLIDE's fine-tuning rate, 600 steps left P_c at a tenth of the caption's scale
        # and the decoder drew a random colour from z_i alone (data/experiments/decoder-attempts.json)
        self.lr_multipliers = {"image_to_": 10.0}

    def check_image_embed(self, image_embed: torch.Tensor, batch: int) -> None:
        E = self.decoder_config.clip_dim
        if not isinstance(image_embed, torch.Tensor) or tuple(image_embed.shape) != (batch, E):
            shape = tuple(image_embed.shape) if isinstance(image_embed, torch.Tensor) else type(image_embed).__name__
            raise ValueError(f"expected CLIP image embeddings of shape [{batch}, {E}], got {shape}")

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor,
                image_embed: torch.Tensor) -> torch.Tensor:
        """U-Net output [B, C, H, W] for x_t [B, C, H, W], t [B], tokens [B, L] and the CLIP image
        embedding ``image_embed`` [B, E] (zeros: no image embedding)."""
        B = len(x_t)
        if len(tokens) != B:
            raise ValueError(f"tokens batch {len(tokens)} != x_t batch {B}")
        self.check_image_embed(image_embed, B)
        xf_out, pooled, mask = self.text(tokens)  # [B, L, W], [B, W], [B, L]
        cond, context, context_mask = image_conditioning(image_embed, pooled, xf_out, mask, self.image_to_cond,
                                                         self.image_to_tokens, self.decoder_config.clip_tokens)
        return self.unet(x_t, t, context=context, context_mask=context_mask, cond=cond)

    def null_conditioning(self, tokens: torch.Tensor, image_embed: torch.Tensor) -> dict[str, torch.Tensor]:
        """∅ for classifier-free guidance: the empty caption and a zero image embedding."""
        return {"tokens": self.empty_tokens(len(tokens), tokens.device), "image_embed": torch.zeros_like(image_embed)}

    def drop_conditioning(self, tokens: torch.Tensor, image_embed: torch.Tensor,
                          generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Training's dual dropout: each caption emptied with ``p_drop_text``, each z_i zeroed with
        ``p_drop_image``, independently (so ~5% of examples train the unconditional model)."""
        gen_device = generator.device if generator is not None else image_embed.device
        u = torch.stack([torch.rand(len(tokens), generator=generator, device=gen_device)  # captions' draws first,
                         for _ in range(2)], dim=1).to(tokens.device)  # then z_i's: [B, 2]
        c = self.decoder_config
        return dual_dropout(tokens, image_embed, self.empty_tokens(1, tokens.device)[0], u, c.p_drop_text, c.p_drop_image)


@dataclass
class DecoderBundle(GlideBundle):
    """A trained decoder: a GLIDE bundle whose model also reads z_i, and the CLIP it reads z_i of
    (name and sha256, checked like a prior's)."""

    kind = "decoder"
    clip_name: str = ""
    clip_sha256: str = ""

    @property
    def clip_dim(self) -> int:
        return self.model.decoder_config.clip_dim

    def check_clip(self, clip: CLIPBundle | None = None, name: str | None = None, sha256: str | None = None) -> None:
        """Refuse embeddings from a CLIP other than the decoder's (by its checkpoint's sha256)."""
        sha = clip.manifest.get("sha256") if clip is not None else sha256
        if sha != self.clip_sha256:
            other = name or (clip.manifest.get("name") if clip is not None else None) or "another CLIP"
            raise ValueError(f"this decoder reads embeddings of {self.clip_name!r} (sha256 {self.clip_sha256[:12]}…); "
                             f"{other} (sha256 {str(sha)[:12]}…) embeds differently")

    @torch.no_grad()
    def sample(self, prompts: str | Sequence[str], guidance: float = 3.0, sampler: str = "ddim",
               steps: int | None = 50, seed: int = 0, image_embed: torch.Tensor | None = None,
               **kwargs) -> torch.Tensor:
        """Images [N, 3, R, R] in [0, 1] for ``prompts`` and their CLIP image embeddings
        ``image_embed`` [N, E] (zeros: the caption alone), guided with ``guidance`` away from
        (empty caption, zero embedding). Other keywords as :meth:`GlideBundle.sample`."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if image_embed is None:
            raise ValueError("a decoder needs image_embed [N, E]: CLIP image embeddings (from a prior, or "
                             "clip.encode_images), or zeros for the caption alone")
        self.model.check_image_embed(image_embed, len(prompts))
        return super().sample(prompts, guidance, sampler, steps, seed=seed,
                              extra_conditioning={"image_embed": image_embed.to(self.device)}, **kwargs)

    def config_dict(self) -> dict:
        return {"decoder": self.model.decoder_config.to_dict(), "vocab": self.vocab.to_dict(),
                "diffusion": vars(self.diffusion_config).copy(),
                "clip": {"name": self.clip_name, "sha256": self.clip_sha256}, "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> DecoderBundle:
        model = Decoder(DecoderConfig.from_dict(config["decoder"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), CompactVocab.from_dict(config["vocab"]), DiffusionConfig(**config["diffusion"]),
                   config.get("extra", {}), clip_name=config["clip"]["name"], clip_sha256=config["clip"]["sha256"])


def load_decoder(name_or_path: str | Path, device: str | torch.device | None = None) -> DecoderBundle:
    return DecoderBundle.load(name_or_path, device)

