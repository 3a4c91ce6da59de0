"""GLIDE's text-conditional diffusion model (Nichol et al. 2021, §2.3-2.4).

A transformer reads the caption; its output feeds the ADM U-Net (:mod:`.unet`) two ways::

    tokens [B, L] --embed + pos--> (PAD slots -> learned padding_embedding) --Transformer--> LN
        -> xf_out [B, L, W]  every U-Net attention layer also attends to it  (``context``)
        -> xf_out[:, -1]     the last position, added to the timestep embedding (``cond``)

GLIDE does not mask padding out of its text transformer: each PAD slot gets its own learned
vector ("padding_embedding"), so the model can tell an empty caption from a short one. For
classifier-free guidance (§2.4; Ho & Salimans 2021) the caption is replaced by the empty one
([SOT, EOT, PAD, ...]) for a fraction ``p_uncond`` (GLIDE: 20%) of training examples; see
:func:`drop_captions` and :mod:`.guidance`.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import torch
from torch import nn

from unclip_lite.glide.inpaint import inpaint_channels
from unclip_lite.glide.upsample import check_low_res, upsample_channels
from unclip_lite.nn import LayerNorm, Transformer
from unclip_lite.tokenizer import CompactVocab, PromptTooLongError
from unclip_lite.unet import UNet, UNetConfig, get_unet_config
from unclip_lite.utils import config_from_dict

PAD, SOT, EOT = CompactVocab.PAD, CompactVocab.SOT, CompactVocab.EOT
# What a model reads besides x_t and the caption, and how many input channels that adds:
# GLIDE's text-to-image model, its inpainting model (image·mask ⊕ mask, §3.3) and its
# upsampler (the low-res image, upsampled, §4) — glide-text2im's Text2ImUNet,
# InpaintText2ImUNet and SuperResText2ImUNet.
EXTRA_CHANNELS = {"text": 0, "inpaint": 4, "low_res": 3}


@dataclass
class Text2ImConfig:
    """GLIDE's text model (§2.3). ``unet.encoder_channels`` and ``unet.cond_dim`` must equal
    ``text_width``. ``vocab_size=None`` means "set at build time" (e.g. a compact vocab)."""

    unet: UNetConfig
    vocab_size: int | None = None
    context_length: int = 24
    text_width: int = 128
    text_layers: int = 4
    text_heads: int = 4
    p_uncond: float = 0.2  # probability of training on the empty caption (GLIDE §2.4: 20%)
    conditioning: str = "text"  # "text", "inpaint" or "low_res": see EXTRA_CHANNELS
    low_res_size: int | None = None  # "low_res" models: the side of the low-res input they read

    def __post_init__(self):
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)
        if self.conditioning not in EXTRA_CHANNELS:
            raise ValueError(f"conditioning must be one of {', '.join(EXTRA_CHANNELS)}, got {self.conditioning!r}")
        expected = self.unet.out_channels + EXTRA_CHANNELS[self.conditioning]
        if self.unet.in_channels != expected:
            raise ValueError(f"a {self.conditioning!r} model reads {expected} input channels (x_t and "
                             f"{EXTRA_CHANNELS[self.conditioning]} more), but unet.in_channels = {self.unet.in_channels}")
        if (self.conditioning == "low_res") != (self.low_res_size is not None):
            raise ValueError("low_res_size is set exactly for 'low_res' models (the upsampler's input side), "
                             f"got {self.low_res_size!r} for {self.conditioning!r}")
        if self.low_res_size is not None and not 0 < self.low_res_size < self.unet.image_size:
            raise ValueError(f"low_res_size must be in (0, {self.unet.image_size}), got {self.low_res_size}")
        for name in ("context_length", "text_width", "text_layers", "text_heads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"Text2ImConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.context_length < 2:
            raise ValueError(f"context_length must be >= 2 (room for start and end), got {self.context_length}")
        if self.vocab_size is not None and self.vocab_size <= EOT:
            raise ValueError(f"vocab_size must be > {EOT} (pad, start and end come first), got {self.vocab_size}")
        if self.text_width % self.text_heads:
            raise ValueError(f"text_width {self.text_width} is not divisible by text_heads {self.text_heads}")
        if not 0.0 <= self.p_uncond <= 1.0:
            raise ValueError(f"p_uncond must be in [0, 1], got {self.p_uncond}")
        for name in ("encoder_channels", "cond_dim"):
            if getattr(self.unet, name) != self.text_width:
                raise ValueError(f"unet.{name}={getattr(self.unet, name)} must equal text_width={self.text_width} "
                                 f"(the U-Net reads the text tokens and the pooled text vector at that width)")

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["unet"] = self.unet.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict) -> Text2ImConfig:
        return config_from_dict(cls, {**d, "unet": UNetConfig.from_dict(dict(d["unet"]))})


def _with_text(unet: str | UNetConfig, width: int, conditioning: str = "text") -> UNetConfig:
    """A U-Net preset (or config) that reads text of ``width`` and the input channels of
    ``conditioning`` (3 + 4 for inpainting: image·mask ⊕ mask; 3 + 3 for upsampling)."""
    cfg = get_unet_config(unet) if isinstance(unet, str) else unet
    cfg.encoder_channels = cfg.cond_dim = width
    cfg.in_channels = cfg.out_channels + EXTRA_CHANNELS[conditioning]
    return cfg


def _positions(unet: str, gain: float = 1.0) -> UNetConfig:
    cfg = get_unet_config(unet)
    cfg.attention_positions, cfg.attention_position_gain = True, gain
    return cfg


def _released_upsampler() -> UNetConfig:
    # glide-text2im's model_and_diffusion_defaults_upsampler: 256 px, 2 res blocks, (1, 1, 2, 2, 4, 4)
    cfg = get_unet_config("glide-base-released")
    cfg.image_size, cfg.num_res_blocks, cfg.channel_mult = 256, 2, (1, 1, 2, 2, 4, 4)
    return cfg


def _shapes_upsampler() -> UNetConfig:
    # 32 -> 64 px Shapes; no attention at all: upsampling is a local job
    return UNetConfig(model_channels=32, channel_mult=(1, 2, 2, 2), num_res_blocks=1, attention_resolutions=(8,),
                      num_head_channels=32, image_size=64)


def _paper_upsampler() -> UNetConfig:
    cfg = _released_upsampler()
    cfg.model_channels = 352
    return cfg


TEXT2IM_CONFIGS: dict[str, Text2ImConfig] = {
    # 32 px Shapes; vocab_size comes from the Shapes CompactVocab at build time (40 ids)
    "shapes-tiny": Text2ImConfig(_with_text("shapes-small", 128), None, 24, 128, 2, 4),
    # the same model whose attention layers also learn where each pixel is (issue 11: position)
    "shapes-tiny-positions": Text2ImConfig(_with_text(_positions("shapes-small"), 128), None, 24, 128, 2, 4),
    # ... whose position maps learn 10x faster (UNetConfig.attention_position_gain)
    "shapes-tiny-positions-x10": Text2ImConfig(_with_text(_positions("shapes-small", 10.0), 128), None, 24, 128, 2,
                                               4),
    # glide-text2im's released base model: text_ctx 128, xf_width 512, 16 layers, 8 heads, GPT-2 BPE
    "glide-base-released": Text2ImConfig(get_unet_config("glide-base-released"), 50257, 128, 512, 16, 8),
    # the paper's 3.5B model (§4): a 1.2B text transformer of width 2048, 24 blocks
    "glide-base-paper": Text2ImConfig(get_unet_config("glide-base-paper"), 50257, 128, 2048, 24, 32),
    # inpainting (§3.3): the same models reading x_t ⊕ image·mask ⊕ mask
    "shapes-tiny-inpaint": Text2ImConfig(_with_text("shapes-small", 128, "inpaint"), None, 24, 128, 2, 4,
                                         conditioning="inpaint"),
    "glide-inpaint-released": Text2ImConfig(_with_text("glide-base-released", 512, "inpaint"), 50257, 128, 512, 16, 8,
                                            conditioning="inpaint"),
    # text-conditional upsamplers reading x_t ⊕ bilinear(low res); a smaller text encoder
    "shapes-tiny-upsample": Text2ImConfig(_with_text(_shapes_upsampler(), 64, "low_res"), None, 24, 64, 1, 2,
                                          conditioning="low_res", low_res_size=32),
    "glide-upsample-released": Text2ImConfig(_with_text(_released_upsampler(), 512, "low_res"), 50257, 128, 512, 16,
                                             8, conditioning="low_res", low_res_size=64),
    # the paper's 64 -> 256 upsampler (§4): "1.5 billion parameters", text width 1024 instead of 2048.
    # The paper gives no channel count; 352 channels on the released upsampler's layout make
    # 1.44B in all (1.09B U-Net + 0.35B text transformer of 24 blocks), the nearest fit
    "glide-upsample-paper": Text2ImConfig(_with_text(_paper_upsampler(), 1024, "low_res"), 50257, 128, 1024, 24, 16,
                                          conditioning="low_res", low_res_size=64),
}


def get_text2im_config(name: str, vocab_size: int | None = None) -> Text2ImConfig:
    """A fresh copy of the preset ``name``; ``vocab_size`` overrides (or fills in) the preset's."""
    if name not in TEXT2IM_CONFIGS:
        raise ValueError(f"unknown Text2Im config {name!r}; choose one of {sorted(TEXT2IM_CONFIGS)}")
    cfg = Text2ImConfig.from_dict(TEXT2IM_CONFIGS[name].to_dict())
    if vocab_size is not None:
        cfg.vocab_size = vocab_size
        cfg.__post_init__()
    return cfg


def empty_tokens(batch: int, context_length: int, device: torch.device | str | None = None) -> torch.LongTensor:
    """The empty caption [SOT, EOT, PAD, ...] repeated: [batch, context_length]."""
    out = torch.full((batch, context_length), PAD, dtype=torch.long, device=device)
    out[:, 0], out[:, 1] = SOT, EOT
    return out


def drop_captions(tokens: torch.Tensor, p_uncond: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each row of ``tokens`` [B, L] by the empty caption with probability ``p_uncond``
    (GLIDE §2.4), so one network learns both p(x | caption) and p(x)."""
    if not 0.0 <= p_uncond <= 1.0:
        raise ValueError(f"p_uncond must be in [0, 1], got {p_uncond}")
    gen_device = generator.device if generator is not None else tokens.device
    drop = (torch.rand(len(tokens), generator=generator, device=gen_device) < p_uncond).to(tokens.device)  # [B]
    return torch.where(drop[:, None], empty_tokens(*tokens.shape, device=tokens.device), tokens)


def encode_prompts(vocab, prompts: str | Sequence[str], context_length: int) -> torch.LongTensor:
    """Token ids [N, context_length] for ``prompts``. GLIDE silently truncates long captions;
    we refuse with :class:`PromptTooLongError` naming the prompt."""
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    if not prompts:
        raise ValueError("encode_prompts needs at least one prompt")
    try:
        return vocab(prompts, context_length, truncate=False)
    except PromptTooLongError as err:
        raise PromptTooLongError(f"prompt too long for context_length={context_length}: {err}") from err


class TextEncoder(nn.Module):
    """GLIDE's text transformer (§2.3): embeddings, a non-causal transformer, a final LayerNorm.

    Slots holding PAD take a learned per-position ``padding_embedding`` instead of token +
    position embedding (glide-text2im's ``xf_padding``); attention is not masked.
    """

    def __init__(self, vocab_size: int, context_length: int, width: int, layers: int, heads: int):
        super().__init__()
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.padding_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads)
        self.final_ln = LayerNorm(width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.padding_embedding, std=0.01)
        self.transformer.init_weights()

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``(xf_out [B, L, W], pooled [B, W], mask [B, L])``; mask is True on real tokens."""
        if tokens.dim() != 2 or tokens.shape[1] != self.context_length:
            raise ValueError(f"expected tokens of shape [B, {self.context_length}], got {tuple(tokens.shape)}")
        mask = tokens != PAD  # [B, L]
        x = self.token_embedding(tokens) + self.positional_embedding  # [B, L, W]
        x = torch.where(mask[..., None], x, self.padding_embedding.to(x.dtype))  # [B, L, W]
        x = self.final_ln(self.transformer(x, causal=False))  # [B, L, W]
        return x, x[:, -1], mask  # GLIDE pools xf_out[:, :, -1]: the last slot, usually padding


class Text2Im(nn.Module):
    """GLIDE's text-to-image diffusion model: :class:`TextEncoder` + the ADM :class:`UNet`."""

    def __init__(self, config: Text2ImConfig):
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("Text2ImConfig.vocab_size is unset; pass get_text2im_config(name, vocab_size=vocab.size)")
        config.__post_init__()  # a config edited after it was made is checked again here
        self.config = c = config
        self.text = TextEncoder(c.vocab_size, c.context_length, c.text_width, c.text_layers, c.text_heads)
        self.unet = UNet(c.unet)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, tokens: torch.Tensor, extra: torch.Tensor | None = None,
                *, inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
                low_res: torch.Tensor | None = None) -> torch.Tensor:
        """U-Net output [B, C (x2 with learn_sigma), H, W] for x_t [B, C, H, W], t [B], tokens [B, L].

        What the model reads beside x_t comes by name — ``inpaint=(image, mask)`` for an
        inpainting model, ``low_res`` for an upsampler, in [-1, 1] (:meth:`extra_inputs`) — or
        already built as ``extra`` [B, E, H, W], the channels concatenated to x_t (what training
        batches and the batched guidance pass): image·mask ⊕ mask (E = 4) or the upsampled
        low-resolution image (E = 3).
        """
        if len(tokens) != len(x_t):
            raise ValueError(f"tokens batch {len(tokens)} != x_t batch {len(x_t)}")
        if inpaint is not None or low_res is not None:
            if extra is not None:
                raise ValueError("pass the conditioning by name (inpaint=, low_res=) or as extra, not both")
            extra = self.extra_inputs(len(x_t), inpaint=inpaint, low_res=low_res)
        if extra is not None:
            if extra.dim() != 4 or extra.shape[0] != len(x_t) or extra.shape[2:] != x_t.shape[2:]:
                raise ValueError(f"extra channels must be [B, E, H, W] matching x_t {tuple(x_t.shape)}, "
                                 f"got {tuple(extra.shape)}")
            x_t = torch.cat([x_t, extra.to(x_t.dtype)], dim=1)  # [B, C + E, H, W]
        xf_out, pooled, mask = self.text(tokens)
        return self.unet(x_t, t, context=xf_out, context_mask=mask, cond=pooled)

    def extra_inputs(self, n: int, inpaint: tuple[torch.Tensor, torch.Tensor] | None = None,
                     low_res: torch.Tensor | None = None) -> torch.Tensor | None:
        """The channels this model reads beside x_t, built from named inputs in [-1, 1], checked
        against the conditioning its config declares: ``inpaint=(image [n, 3, R, R], mask [n, 1,
        R, R])`` (1 = keep) for an inpainting model, ``low_res`` [n, 3, s, s] for an upsampler,
        nothing for a text-to-image model. Returns ``[n, E, R, R]`` or None."""
        kind, size = self.config.conditioning, self.config.unet.image_size
        names = {"inpaint": "an inpainting model", "low_res": "an upsampler", "text": "a text-to-image model"}
        for name, value in (("inpaint", inpaint), ("low_res", low_res)):
            if value is not None and kind != name:
                raise ValueError(f"{name} given, but this is {names[kind]}")
        if kind == "inpaint":
            if inpaint is None:
                raise ValueError("this is an inpainting model: pass inpaint=(image, mask), image [N, 3, R, R] "
                                 "in [0, 1], mask [N, 1, R, R] with 1 = keep, 0 = fill")
            image, mask = inpaint
            if len(image) != n or image.shape[-1] != size:
                raise ValueError(f"expected {n} images of {size} px to inpaint, got {tuple(image.shape)}")
            return inpaint_channels(image, mask)
        if kind == "low_res":
            if low_res is None:
                raise ValueError("this is an upsampler: pass low_res images [N, 3, s, s] in [0, 1]")
            check_low_res(low_res, self.config.low_res_size)
            if len(low_res) != n:
                raise ValueError(f"expected {n} low-res images, one per prompt, got {len(low_res)}")
            return upsample_channels(low_res, size)
        return None

    def empty_tokens(self, batch: int, device: torch.device | str | None = None) -> torch.LongTensor:
        device = device if device is not None else self.text.positional_embedding.device
        return empty_tokens(batch, self.config.context_length, device)

    def null_conditioning(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """∅ for classifier-free guidance: the empty caption, as trained with caption dropout."""
        return {"tokens": self.empty_tokens(len(tokens), tokens.device)}

    def drop_captions(self, tokens: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        return drop_captions(tokens, self.config.p_uncond, generator)
