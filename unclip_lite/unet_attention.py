"""The U-Net's attention layer (ADM §3, GLIDE §2.3) and the small helpers the U-Net shares.

Pixels attend to each other and, in GLIDE, to the caption's tokens: the tokens are projected
to keys and values and put in front of the pixels' own (glide-text2im's ``encoder_kv``)::

    q = W_q h_pixels,   k = [W_ek text ; W_k h_pixels],   v = [W_ev text ; W_v h_pixels]
    out = softmax(q kᵀ / √d) v

unCLIP's decoder (Ramesh et al. 2022, §2.1) puts 4 more tokens in front: projections of the
CLIP image embedding. A token in a softmax always takes some weight, even a zero one (its key
is the projection's bias), so a decoder warm-started from a GLIDE would not compute what the
GLIDE did. Here those first ``gated_tokens`` keys have their (unnormalised) attention weight
multiplied by a learned per-head gate g ≥ 0 before normalising::

    w_j = g · exp(s_j)  for the gated tokens,   w_j = exp(s_j)  otherwise;   out = Σ w_j v_j / Σ w_j

g = 1 is plain attention over all tokens (the paper's concatenation); g = 0, the start, is
exactly the model without them, and the gradient with respect to g is not zero there (it is
Σ exp(s_j)(v_j − out) / Σ w), so training opens the gate as far as the image tokens help —
the same trick as the zero-initialised convolutions of the inpainting warm start.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unclip_lite.nn import CheckpointableBlock

POSITION_FREQUENCIES = (1, 2)  # half-periods across the image of the (x, y) Fourier features
# The gate is stored divided by this gain. Adam moves a parameter by about its learning rate per
# step whatever the gradient's size, so a gate stored as-is would take ~5,000 steps at lr 2e-4 to
# open fully (we measured 0.001-0.005 after 250 fine-tuning steps); stored /100 it can in ~50.
GATE_GAIN = 100.0


def group_norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(groups, channels), channels)


def zero_(module: nn.Module) -> nn.Module:
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


def pixel_coordinates(H: int, W: int, like: torch.Tensor) -> torch.Tensor:
    """``[H*W, 4 * len(POSITION_FREQUENCIES)]``: sin and cos of k·π/2·x and k·π/2·y for each pixel
    centre (x, y in [-1, 1], row-major like the attention's tokens), in ``like``'s dtype and device."""
    ys, xs = torch.meshgrid(torch.linspace(-1, 1, H), torch.linspace(-1, 1, W), indexing="ij")
    angles = torch.stack([k * math.pi / 2 * c for k in POSITION_FREQUENCIES for c in (xs, ys)], -1)  # [H, W, 2F]
    return torch.cat([angles.sin(), angles.cos()], -1).reshape(H * W, -1).to(like)


def gated_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, keep: torch.Tensor | None,
                    gate: torch.Tensor, gated: int) -> torch.Tensor:
    """Softmax attention [B, nh, N, d] in which the first ``gated`` keys' weights are scaled by
    ``gate`` [nh] (clamped at 0 in the forward pass; the gradient passes straight through, so
    a gate pushed below 0 can come back). q [B, nh, N, d]; k, v [B, nh, K, d]; ``keep``
    broadcastable to [B, nh, N, K], True = may attend."""
    logits = q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5  # [B, nh, N, K]
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    weights = (logits - logits.amax(-1, keepdim=True).detach()).exp()  # [B, nh, N, K]
    g = gate + (gate.clamp(min=0) - gate).detach()  # forward: max(g, 0); backward: identity
    g = g.to(weights.dtype)[None, :, None, None]  # [1, nh, 1, 1]
    weights = torch.cat([weights[..., :gated] * g, weights[..., gated:]], dim=-1)  # [B, nh, N, K]
    return weights @ v / weights.sum(-1, keepdim=True).clamp_min(1e-30)  # [B, nh, N, d]


class AttentionBlock(CheckpointableBlock):
    """Multi-head self-attention over the H*W pixels, optionally also over context tokens.

    With ``encoder_channels``, context tokens [B, L, E] are projected to keys and values and put
    in front of the pixels' own (GLIDE's ``encoder_kv``), so every pixel can read the text.
    ``context_mask`` [B, L] (True = real token) keeps pixels from attending to padding.
    ``gated_tokens``: the first that many context tokens are gated (see the module docstring).
    """

    def __init__(self, channels: int, heads: int, encoder_channels: int | None = None, num_groups: int = 32,
                 positions: bool = False, gated_tokens: int = 0, position_gain: float = 1.0):
        super().__init__()
        if position_gain <= 0:
            raise ValueError(f"position_gain must be > 0, got {position_gain}")
        self.position_gain = position_gain
        self.heads = heads
        self.norm = group_norm(channels, num_groups)
        # Fourier features of each pixel's (x, y) -> channels; zero at first, so a model
        # warm-started from one without it computes the same. One linear map shared by all pixels
        # (not a free table per pixel, whose entries each see one pixel's noisy gradient: we
        # measured such a table barely moving in 500 fine-tuning steps).
        self.position = zero_(nn.Linear(4 * len(POSITION_FREQUENCIES), channels, bias=False)) if positions else None
        self.qkv = nn.Linear(channels, 3 * channels)
        self.encoder_kv = nn.Linear(encoder_channels, 2 * channels) if encoder_channels else None
        self.proj_out = zero_(nn.Linear(channels, channels))
        if gated_tokens and not encoder_channels:
            raise ValueError("gated context tokens need encoder_channels (a model that attends to context)")
        self.gated_tokens = gated_tokens
        self.token_gate = nn.Parameter(torch.zeros(heads)) if gated_tokens else None  # g / GATE_GAIN per head, 0 at first

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None,
                context_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.maybe_checkpoint(self._residual, x, context, context_mask)

    def _residual(self, x: torch.Tensor, context: torch.Tensor | None,
                  context_mask: torch.Tensor | None) -> torch.Tensor:
        B, C, H, W = x.shape
        h = rearrange(self.norm(x), "b c h w -> b (h w) c")  # [B, HW, C]
        if self.position is not None:
            h = h + self.position_gain * self.position(pixel_coordinates(H, W, h))  # [B, HW, C]: where each pixel is
        q, k, v = rearrange(self.qkv(h), "b n (three nh d) -> three b nh n d", three=3, nh=self.heads)
        mask = None
        if context is not None and self.encoder_kv is not None:
            ek, ev = rearrange(self.encoder_kv(context), "b l (two nh d) -> two b nh l d", two=2, nh=self.heads)
            k, v = torch.cat([ek, k], dim=2), torch.cat([ev, v], dim=2)  # [B, nh, L + HW, d]
            if context_mask is not None:
                keep = torch.cat([context_mask.bool(), context_mask.new_ones(B, H * W, dtype=torch.bool)], dim=1)
                mask = keep[:, None, None, :]  # [B, 1, 1, L + HW]: pixels always visible
        if self.token_gate is not None and context is not None:
            if context.shape[1] < self.gated_tokens:
                raise ValueError(f"expected at least {self.gated_tokens} context tokens (the gated ones first), "
                                 f"got {context.shape[1]}")
            out = gated_attention(q, k, v, mask, GATE_GAIN * self.token_gate, self.gated_tokens)  # [B, nh, HW, d]
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # [B, nh, HW, d]
        out = self.proj_out(rearrange(out, "b nh n d -> b n (nh d)"))  # [B, HW, C]
        return x + rearrange(out, "b (h w) c -> b c h w", h=H, w=W)
