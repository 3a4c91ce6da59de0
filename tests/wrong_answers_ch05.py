"""Plausible wrong answers to chapter 05's exercises; tests/test_exercises.py loads this file."""
import math

import torch
from torch import nn

PAD, SOT, EOT = 0, 1, 2


# --- ch05.TextAttentionBlock -----------------------------------------------------------------
class _Attention(nn.Module):
    """The skeleton the notebook gives (same parameter names); subclasses get one thing wrong."""

    def __init__(self, channels, heads, encoder_channels, num_groups=32):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(math.gcd(num_groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)
        self.encoder_kv = nn.Linear(encoder_channels, 2 * channels)
        self.proj_out = nn.Linear(channels, channels)

    use_mask, use_pixels, softmax_axis = True, True, -1

    def forward(self, x, context, context_mask):
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        h = self.norm(x).flatten(2).transpose(1, 2)
        q, k, v = self.qkv(h).split(C, dim=-1)
        ek, ev = self.encoder_kv(context).split(C, dim=-1)
        keep = context_mask.bool()
        if self.use_pixels:
            k, v = torch.cat([ek, k], 1), torch.cat([ev, v], 1)
            keep = torch.cat([keep, keep.new_ones(B, H * W)], 1)
        else:
            k, v = ek, ev
        q, k, v = (t.reshape(B, -1, nh, d).transpose(1, 2) for t in (q, k, v))
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)
        if self.use_mask:
            logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))
        out = logits.softmax(dim=self.softmax_axis) @ v
        out = self.proj_out(out.transpose(1, 2).reshape(B, H * W, C))
        return x + out.transpose(1, 2).reshape(B, C, H, W)


class NoPaddingMask(_Attention):  # attends to the padding slots (what glide-text2im does; not ours)
    use_mask = False


class TextOnlyAttention(_Attention):  # keys and values from the words alone: pixels no longer see each other
    use_pixels = False


class SoftmaxOverQueries(_Attention):  # normalises over the pixels asking, not the keys being read
    softmax_axis = -2


class NoResidual(_Attention):  # returns the attention's output without adding x back
    def forward(self, x, context, context_mask):
        return super().forward(x, context, context_mask) - x


# --- ch05.guided_eps -------------------------------------------------------------------------
def eps_from_conditional(eps_cond, eps_uncond, scale):  # starts from ε(c) instead of ε(∅)
    return eps_cond + scale * (eps_cond - eps_uncond)


def eps_swapped(eps_cond, eps_uncond, scale):  # pushes away from the caption
    return eps_cond + scale * (eps_uncond - eps_cond)


def eps_average(eps_cond, eps_uncond, scale):  # a weighted average that forgets to extrapolate
    return (eps_uncond + scale * eps_cond) / (1 + scale)


# --- ch05.drop_captions ----------------------------------------------------------------------
def drop_all_pad(tokens, drop_mask):  # the empty caption without its start and end tokens
    return torch.where(drop_mask[:, None], torch.zeros_like(tokens), tokens)


def drop_keeps_old_words(tokens, drop_mask):  # writes SOT, EOT but leaves the old words after them
    out = tokens.clone()
    out[drop_mask, 0], out[drop_mask, 1] = SOT, EOT
    return out


def drop_pads_with_eot(tokens, drop_mask):  # forgets the PAD after EOT
    empty = torch.full_like(tokens, EOT)
    empty[:, 0] = SOT
    return torch.where(drop_mask[:, None], empty, tokens)


def drop_inverted_mask(tokens, drop_mask):  # drops the rows that should be kept
    empty = torch.full_like(tokens, PAD)
    empty[:, 0], empty[:, 1] = SOT, EOT
    return torch.where(drop_mask[:, None], tokens, empty)


# --- ch05.guided_output ----------------------------------------------------------------------
def output_guides_variance(out, scale, channels):  # guides the variance channels too
    B = len(out) // 2
    return out[B:] + scale * (out[:B] - out[B:])


def output_halves_swapped(out, scale, channels):  # takes the first half as unconditional
    B = len(out) // 2
    eps_u, eps_c = out[:B, :channels], out[B:, :channels]
    return torch.cat([eps_u + scale * (eps_c - eps_u), out[B:, channels:]], dim=1)


def output_uncond_variance(out, scale, channels):  # keeps the unconditional variance half
    B = len(out) // 2
    eps_c, eps_u = out[:B, :channels], out[B:, :channels]
    return torch.cat([eps_u + scale * (eps_c - eps_u), out[B:, channels:]], dim=1)


def output_drops_variance(out, scale, channels):  # returns ε only, losing the learned σ
    B = len(out) // 2
    eps_c, eps_u = out[:B, :channels], out[B:, :channels]
    return eps_u + scale * (eps_c - eps_u)


# --- ch05.min_snr_weight ---------------------------------------------------------------------
def snr_weight_x0_form(diffusion, t, gamma):  # the weight for an x_0 loss, not an ε loss
    ab = diffusion.alphas_cumprod[t]
    return (ab / (1 - ab)).clamp(max=gamma)


def snr_weight_inverted(diffusion, t, gamma):  # SNR upside down: noise over signal
    ab = diffusion.alphas_cumprod[t]
    snr = (1 - ab) / ab
    return snr.clamp(max=gamma) / snr


def snr_weight_amplitude(diffusion, t, gamma):  # the square root of ᾱ, an amplitude ratio
    ab = diffusion.alphas_cumprod[t]
    snr = ab.sqrt() / (1 - ab).sqrt()
    return snr.clamp(max=gamma) / snr


WRONG_ANSWERS = {
    "ch05.TextAttentionBlock": [NoPaddingMask, TextOnlyAttention, SoftmaxOverQueries, NoResidual],
    "ch05.guided_eps": [eps_from_conditional, eps_swapped, eps_average],
    "ch05.drop_captions": [drop_all_pad, drop_keeps_old_words, drop_pads_with_eot, drop_inverted_mask],
    "ch05.guided_output": [output_guides_variance, output_halves_swapped, output_uncond_variance,
                           output_drops_variance],
    "ch05.min_snr_weight": [snr_weight_x0_form, snr_weight_inverted, snr_weight_amplitude],
}
