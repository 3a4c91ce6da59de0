"""The ADM U-Net (Dhariwal & Nichol 2021, "Diffusion Models Beat GANs", §3) with GLIDE's text hooks.

One network serves every diffusion model of the course — chapter 04's unconditional model,
GLIDE and its inpainting and upsampling variants, ADM's noised classifier (its down half), and
unCLIP's decoder; only :class:`UNetConfig` changes::

    x [B, C, H, W] --conv--> input blocks (ResBlock [+ Attention])*n, Downsample  ... per level
                             middle: ResBlock, Attention, ResBlock
                             output blocks (concat skip, ResBlock [+ Attention])*(n+1), Upsample ... per level
                   --norm, SiLU, zero conv--> [B, out, H, W]

ADM's changes to the DDPM U-Net (§3): more heads / 64 channels per head, attention at 32, 16
and 8 px, BigGAN residual blocks for up/downsampling (``resblock_updown``) and adaptive group
norm, ``norm(h) * (1 + scale) + shift`` with (scale, shift) from the timestep embedding
(``use_scale_shift_norm``). GLIDE (Nichol et al. 2021, §2.3) adds text two ways: the final
token of its text transformer is added to the timestep embedding (our ``cond``) and every
attention layer also attends to the projected token sequence (our ``context``, GLIDE's
``encoder_kv``). unCLIP's decoder (Ramesh et al. 2022, §2.1) adds its CLIP image embedding
through the same two paths (:mod:`unclip_lite.unclip.decoder`; the paper's 3.5B one is
``paper_decoder_config()`` there).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.nn import CheckpointableBlock, timestep_embedding
from unclip_lite.unet_attention import (POSITION_FREQUENCIES, AttentionBlock, group_norm,  # noqa: F401 (re-exported)
                                        pixel_coordinates, zero_)
from unclip_lite.utils import config_from_dict


@dataclass
class UNetConfig:
    in_channels: int = 3
    out_channels: int = 3  # per predicted quantity; learn_sigma doubles it
    model_channels: int = 64  # width of the first level; level i has model_channels * channel_mult[i]
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2  # per level on the way down (n + 1 on the way up)
    attention_resolutions: tuple[int, ...] = (16, 8)  # image resolutions (px) that get attention
    num_head_channels: int | None = 32  # channels per head; None -> use num_heads
    num_heads: int = 4  # only used when num_head_channels is None
    dropout: float = 0.0
    use_scale_shift_norm: bool = True
    resblock_updown: bool = False  # up/downsample inside ResBlocks (BigGAN) instead of plain convs
    learn_sigma: bool = False  # also predict the variance interpolation v (improved DDPM)
    image_size: int = 32
    encoder_channels: int | None = None  # width of the text context tokens (GLIDE encoder_kv)
    cond_dim: int | None = None  # width of a vector added to the timestep embedding
    num_groups: int = 32  # GroupNorm groups (reduced to gcd(num_groups, channels) for small widths)
    # a learned position embedding per attention layer (from each pixel's x, y), added to the
    # pixels before they attend:
    # convolutions are translation-equivariant, so without it a pixel knows where it is only from
    # the zero padding at the borders, and "in the top left" has nothing to attend *from*
    attention_positions: bool = False
    # the maps are stored divided by this gain (and multiplied back in forward): Adam moves a
    # weight by about its learning rate per step, so a gain of G lets a map that starts at zero
    # grow G times faster, while step 0 is unchanged (issue 11: the maps' x columns stayed at
    # noise level while the y columns grew, and left/right was never learned)
    attention_position_gain: float = 1.0
    # unCLIP's decoder: the first N context tokens (its CLIP image tokens) are gated in every
    # attention layer, so a decoder warm-started from a GLIDE starts as that GLIDE (unet_attention)
    gated_context_tokens: int = 0
    # the middle block's attention layer; unCLIP's upsamplers have none at all (fully convolutional)
    middle_attention: bool = True

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        self.attention_resolutions = tuple(int(r) for r in self.attention_resolutions)
        for name in ("in_channels", "out_channels", "model_channels", "num_res_blocks", "image_size",
                     "num_heads", "num_groups"):
            if getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("encoder_channels", "cond_dim", "num_head_channels"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"UNetConfig.{name} must be None or >= 1, got {getattr(self, name)}")
        if self.attention_position_gain <= 0:
            raise ValueError(f"attention_position_gain must be > 0, got {self.attention_position_gain}")
        if self.gated_context_tokens < 0 or (self.gated_context_tokens and self.encoder_channels is None):
            raise ValueError(f"gated_context_tokens must be 0, or >= 1 with encoder_channels set, "
                             f"got {self.gated_context_tokens}")
        if not self.channel_mult or min(self.channel_mult) < 1:
            raise ValueError(f"channel_mult must be a non-empty tuple of positive ints, got {self.channel_mult}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.image_size % self.downsample_factor:
            raise ValueError(f"image_size {self.image_size} is not divisible by the total downsampling "
                             f"{self.downsample_factor} (2 ** (len(channel_mult) - 1))")
        resolutions = [self.image_size // 2**level for level in range(len(self.channel_mult))]
        unused = sorted(set(self.attention_resolutions) - set(resolutions))
        if unused:
            raise ValueError(f"attention_resolutions {unused} match no level; the levels run at {resolutions} px")
        for level, res in enumerate(resolutions):
            if res in self.attention_resolutions:
                self.heads_for(self.model_channels * self.channel_mult[level])  # raises if it doesn't divide

    @property
    def downsample_factor(self) -> int:
        return 2 ** (len(self.channel_mult) - 1)

    @property
    def final_out_channels(self) -> int:
        return self.out_channels * (2 if self.learn_sigma else 1)

    def heads_for(self, channels: int) -> int:
        """Number of attention heads for a layer of width ``channels``."""
        per_head = self.num_head_channels or channels // self.num_heads
        if channels % per_head or (self.num_head_channels is None and channels % self.num_heads):
            raise ValueError(f"attention width {channels} is not divisible into heads "
                             f"(num_head_channels={self.num_head_channels}, num_heads={self.num_heads})")
        return channels // per_head

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> UNetConfig:
        return config_from_dict(cls, d)


UNET_CONFIGS: dict[str, UNetConfig] = {
    # 32 px toy shapes: trains on a laptop CPU
    "shapes-tiny": UNetConfig(model_channels=64, channel_mult=(1, 2, 2), num_res_blocks=2,
                              attention_resolutions=(16, 8), num_head_channels=32, image_size=32),
    # glide-shapes-tiny's U-Net: one block per level and attention at 8 px only, ~0.65 s a
    # training step at batch 32 on 2 CPU threads (the 64-channel preset above takes 1.7 s)
    "shapes-small": UNetConfig(model_channels=48, channel_mult=(1, 2, 3), num_res_blocks=1,
                               attention_resolutions=(8,), num_head_channels=48, image_size=32),
    # glide-text2im's released (filtered) 64 px base model; text transformer width 512
    "glide-base-released": UNetConfig(model_channels=192, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                                      attention_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.1,
                                      use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True,
                                      image_size=64, encoder_channels=512, cond_dim=512),
    # GLIDE paper's 64 px model (§4: 512 channels; text transformer of width 2048)
    "glide-base-paper": UNetConfig(model_channels=512, channel_mult=(1, 2, 3, 4), num_res_blocks=3,
                                   attention_resolutions=(32, 16, 8), num_head_channels=64, dropout=0.1,
                                   use_scale_shift_norm=True, resblock_updown=True, learn_sigma=True,
                                   image_size=64, encoder_channels=2048, cond_dim=2048),
}


def get_unet_config(name: str) -> UNetConfig:
    """A fresh copy of the preset called ``name``."""
    if name not in UNET_CONFIGS:
        raise ValueError(f"unknown U-Net config {name!r}; choose one of {sorted(UNET_CONFIGS)}")
    return UNetConfig.from_dict(UNET_CONFIGS[name].to_dict())


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class Downsample(nn.Module):
    """Halve H and W: a stride-2 3x3 conv, or 2x2 average pooling (``use_conv=False``)."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.op = nn.Conv2d(channels, channels, 3, stride=2, padding=1) if use_conv else nn.AvgPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.op(x)  # [B, C, H/2, W/2]


class Upsample(nn.Module):
    """Double H and W: nearest-neighbour, then a 3x3 conv (``use_conv``)."""

    def __init__(self, channels: int, use_conv: bool = True):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if use_conv else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))  # [B, C, 2H, 2W]


class ResBlock(CheckpointableBlock):
    """GroupNorm -> SiLU -> conv, inject the embedding, GroupNorm -> SiLU -> dropout -> zero conv, + skip.

    ``up``/``down`` resample both paths inside the block (BigGAN, ADM's ``resblock_updown``).
    The last conv starts at zero, so a fresh block is the identity (or its skip projection).
    """

    def __init__(self, channels: int, emb_dim: int, out_channels: int | None = None, dropout: float = 0.0,
                 use_scale_shift_norm: bool = True, up: bool = False, down: bool = False,
                 num_groups: int = 32, skip_kernel: int = 1):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_norm = group_norm(channels, num_groups)
        self.resample = Upsample(channels, False) if up else Downsample(channels, False) if down else nn.Identity()
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, out_channels * (2 if use_scale_shift_norm else 1))
        self.out_norm = group_norm(out_channels, num_groups)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = zero_(nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip = (nn.Identity() if out_channels == channels
                     else nn.Conv2d(channels, out_channels, skip_kernel, padding=skip_kernel // 2))

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.maybe_checkpoint(self._residual, x, emb)

    def _residual(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.in_conv(self.resample(F.silu(self.in_norm(x))))  # [B, C_out, H', W']
        x = self.resample(x)  # [B, C_in, H', W']
        e = self.emb_proj(F.silu(emb))[:, :, None, None]  # [B, C_out (x2), 1, 1]
        if self.use_scale_shift_norm:
            scale, shift = e.chunk(2, dim=1)
            h = self.out_norm(h) * (1 + scale) + shift
        else:
            h = self.out_norm(h + e)
        h = self.out_conv(self.dropout(F.silu(h)))  # [B, C_out, H', W']
        return self.skip(x) + h


class TimestepSequential(nn.Sequential):
    """A sequence of ResBlocks / AttentionBlocks / resamplers, each fed what it needs."""

    def forward(self, x, emb, context=None, context_mask=None):
        for layer in self:
            if isinstance(layer, ResBlock):
                x = layer(x, emb)
            elif isinstance(layer, AttentionBlock):
                x = layer(x, context, context_mask)
            else:
                x = layer(x)
        return x


class UNet(nn.Module):
    """The ADM U-Net built from a :class:`UNetConfig` (see the module docstring for the layout).

    Parameter counts: shapes-tiny 7.28M; glide-base-released 308.7M (plus its separate 76.3M text
    transformer: ~385M in all); glide-base-paper 2.24B (GLIDE §4: "2.3 billion" visual parameters).
    """

    def __init__(self, config: UNetConfig, encoder_only: bool = False):
        super().__init__()
        self.config = cfg = config
        self.encoder_only = encoder_only  # the down half + middle only: ADM's noised classifier
        mc, emb_dim, groups = cfg.model_channels, 4 * cfg.model_channels, cfg.num_groups
        self.time_embed = nn.Sequential(nn.Linear(mc, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.cond_proj = nn.Linear(cfg.cond_dim, emb_dim) if cfg.cond_dim else None

        def res(ch_in, ch_out, **kw):
            return ResBlock(ch_in, emb_dim, ch_out, cfg.dropout, cfg.use_scale_shift_norm, num_groups=groups, **kw)

        def attn(ch):
            return AttentionBlock(ch, cfg.heads_for(ch), cfg.encoder_channels, groups,
                                  positions=cfg.attention_positions, gated_tokens=cfg.gated_context_tokens,
                                  position_gain=cfg.attention_position_gain)

        ch, res_px = mc, cfg.image_size
        self.input_blocks = nn.ModuleList([TimestepSequential(nn.Conv2d(cfg.in_channels, mc, 3, padding=1))])
        skip_channels = [ch]
        for level, mult in enumerate(cfg.channel_mult):
            for _ in range(cfg.num_res_blocks):
                layers = [res(ch, mult * mc)]
                ch = mult * mc
                if res_px in cfg.attention_resolutions:
                    layers.append(attn(ch))
                self.input_blocks.append(TimestepSequential(*layers))
                skip_channels.append(ch)
            if level != len(cfg.channel_mult) - 1:
                down = res(ch, ch, down=True) if cfg.resblock_updown else Downsample(ch)
                self.input_blocks.append(TimestepSequential(down))
                skip_channels.append(ch)
                res_px //= 2

        self.middle_block = TimestepSequential(res(ch, ch), *([attn(ch)] if cfg.middle_attention else []), res(ch, ch))
        self.out_channels = ch  # width of the middle block's output
        if encoder_only:
            return

        self.output_blocks = nn.ModuleList()
        for level, mult in reversed(list(enumerate(cfg.channel_mult))):
            for i in range(cfg.num_res_blocks + 1):
                layers = [res(ch + skip_channels.pop(), mult * mc)]
                ch = mult * mc
                if res_px in cfg.attention_resolutions:
                    layers.append(attn(ch))
                if level and i == cfg.num_res_blocks:
                    layers.append(res(ch, ch, up=True) if cfg.resblock_updown else Upsample(ch))
                    res_px *= 2
                self.output_blocks.append(TimestepSequential(*layers))

        self.out = nn.Sequential(group_norm(ch, groups), nn.SiLU(),
                                 zero_(nn.Conv2d(ch, cfg.final_out_channels, 3, padding=1)))

    def _check_inputs(self, x, t, context, context_mask, cond) -> torch.Tensor:
        cfg = self.config
        if x.dim() != 4 or x.shape[1] != cfg.in_channels:
            raise ValueError(f"expected x of shape [B, {cfg.in_channels}, H, W], got {tuple(x.shape)}")
        if x.shape[2] % cfg.downsample_factor or x.shape[3] % cfg.downsample_factor:
            raise ValueError(f"image size {tuple(x.shape[2:])} is not divisible by the U-Net's total "
                             f"downsampling {cfg.downsample_factor}")
        t = torch.as_tensor(t, device=x.device)
        t = t.expand(len(x)) if t.dim() == 0 else t
        if t.shape != (len(x),):
            raise ValueError(f"expected t of shape [{len(x)}] (or a scalar), got {tuple(t.shape)}")
        if context is not None:
            if cfg.encoder_channels is None:
                raise ValueError("context given, but this U-Net has no encoder_channels (no text attention)")
            if context.dim() != 3 or context.shape[0] != len(x) or context.shape[2] != cfg.encoder_channels:
                raise ValueError(f"expected context of shape [{len(x)}, L, {cfg.encoder_channels}], "
                                 f"got {tuple(context.shape)}")
            if context_mask is not None and tuple(context_mask.shape) != tuple(context.shape[:2]):
                raise ValueError(f"expected context_mask of shape {tuple(context.shape[:2])}, "
                                 f"got {tuple(context_mask.shape)}")
        elif context_mask is not None:
            raise ValueError("context_mask given without context")
        if cond is not None:
            if cfg.cond_dim is None:
                raise ValueError("cond given, but this U-Net has no cond_dim")
            if tuple(cond.shape) != (len(x), cfg.cond_dim):
                raise ValueError(f"expected cond of shape [{len(x)}, {cfg.cond_dim}], got {tuple(cond.shape)}")
        return t

    def encode(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
               context_mask: torch.Tensor | None = None, cond: torch.Tensor | None = None):
        """The down half and the middle block: ``(h [B, ch, H/f, W/f], emb [B, 4 mc], skips)``."""
        t = self._check_inputs(x, t, context, context_mask, cond)
        emb = self.time_embed(timestep_embedding(t, self.config.model_channels).to(x.dtype))  # [B, 4 mc]
        if cond is not None:
            emb = emb + self.cond_proj(cond)
        skips, h = [], x
        for block in self.input_blocks:
            h = block(h, emb, context, context_mask)  # [B, ch, H / 2^level, W / 2^level]
            skips.append(h)
        h = self.middle_block(h, emb, context, context_mask)  # [B, ch, H / f, W / f]
        return h, emb, skips

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None, cond: torch.Tensor | None = None) -> torch.Tensor:
        """Predict [B, out (x2 with learn_sigma), H, W] for noisy images x [B, C, H, W] at timesteps t [B].

        ``context`` [B, L, encoder_channels] with ``context_mask`` [B, L] (True = real token) is
        attended to by every attention layer; ``cond`` [B, cond_dim] is added to the timestep
        embedding. Leaving either out means that conditioning is absent (nothing is added).
        """
        if self.encoder_only:
            raise RuntimeError("this U-Net was built encoder_only: call encode(), or use a NoisedClassifier")
        h, emb, skips = self.encode(x, t, context, context_mask, cond)
        for block in self.output_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), emb, context, context_mask)
        return self.out(h)  # [B, out, H, W]
