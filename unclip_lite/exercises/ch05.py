"""Chapter 05 exercises: GLIDE's text-conditioned attention, caption dropout, classifier-free
guidance and the Min-SNR weight.

The attention block is written out here (a reference the learner's module is checked against,
parameter for parameter); tests/test_exercises_ch05.py proves it computes what the package's
:class:`unclip_lite.unet_attention.AttentionBlock` computes, on random weights and on every
attention layer of the shipped ``glide-shapes-tiny``. The other references reuse the package's
own code: :func:`unclip_lite.glide.guidance.classifier_free_guidance` (run on a stand-in "model"
that returns fixed outputs), :func:`unclip_lite.glide.text2im.empty_tokens` and
:meth:`unclip_lite.diffusion.GaussianDiffusion.min_snr_weight`.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.exercises.core import Case, Exercise, ModuleExercise, seeded, checker
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.text2im import EOT, PAD, SOT, empty_tokens


class _FixedOutput:
    """Stands in for a Text2Im whose outputs are fixed: ``out`` = [cond; uncond] ([2B, ...]).
    Asked for both halves it returns ``out``; asked for one (guidance at s = 0 or 1 needs only
    one), the half its tokens select: the empty caption gets the unconditional rows."""

    def __init__(self, out: torch.Tensor):
        self.out = out

    def __call__(self, x, t, tokens):
        if len(tokens) == len(self.out):
            return self.out
        B = len(self.out) // 2
        empty = torch.equal(tokens, self.empty_tokens(B, tokens.device))
        return self.out[B:] if empty else self.out[:B]

    def empty_tokens(self, batch, device=None):
        return empty_tokens(batch, 4, device)

    def null_conditioning(self, tokens):
        return {"tokens": self.empty_tokens(len(tokens), tokens.device)}


def _guide(out: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """Run the package's classifier_free_guidance on a network whose batched output is ``out``."""
    B = len(out) // 2
    x = torch.zeros(B, channels, *out.shape[2:], dtype=out.dtype)  # only its shape matters
    tokens = torch.full((B, 4), PAD, dtype=torch.long)
    return classifier_free_guidance(_FixedOutput(out), tokens, scale)(x, torch.zeros(B, dtype=torch.long))


# --- 0. Attention over pixels and words (GLIDE's encoder_kv) ----------------------------------
class TextAttentionBlock(nn.Module):
    """Reference: the U-Net's attention layer of GLIDE §2.3 (glide-text2im's ``AttentionBlock``
    with ``encoder_kv``). The H·W pixels are the queries; the keys and values are the caption's
    L tokens, projected by ``encoder_kv``, followed by the pixels' own::

        q = W_q h,   k = [W_ek c ; W_k h],   v = [W_ev c ; W_v h],   out = x + W_o softmax(q kᵀ/√d) v

    with h the group-normed pixels and c the text encoder's output. ``context_mask`` [B, L]
    (True = real token) hides padding slots from every pixel; OpenAI's released code does not
    mask them (the padding slots carry a learned embedding there), ours does. The parameter
    names are the package's, so a shipped layer's ``state_dict`` loads into this block."""

    def __init__(self, channels: int, heads: int, encoder_channels: int, num_groups: int = 32):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(math.gcd(num_groups, channels), channels)
        self.qkv = nn.Linear(channels, 3 * channels)  # pixels -> [q; k; v], heads inside each
        self.encoder_kv = nn.Linear(encoder_channels, 2 * channels)  # words -> [k; v]
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor, context_mask: torch.Tensor) -> torch.Tensor:
        """x [B, C, H, W], context [B, L, E], context_mask [B, L] bool -> [B, C, H, W]."""
        B, C, H, W = x.shape
        nh, d = self.heads, C // self.heads
        h = self.norm(x).flatten(2).transpose(1, 2)  # [B, HW, C]
        q, k, v = self.qkv(h).split(C, dim=-1)  # [B, HW, C] each
        ek, ev = self.encoder_kv(context).split(C, dim=-1)  # [B, L, C] each
        k, v = torch.cat([ek, k], dim=1), torch.cat([ev, v], dim=1)  # [B, L + HW, C]
        q, k, v = (t.reshape(B, -1, nh, d).transpose(1, 2) for t in (q, k, v))  # [B, nh, N, d]
        logits = q @ k.transpose(-1, -2) / math.sqrt(d)  # [B, nh, HW, L + HW]
        keep = torch.cat([context_mask.bool(), context_mask.new_ones(B, H * W, dtype=torch.bool)], dim=1)
        logits = logits.masked_fill(~keep[:, None, None, :], float("-inf"))  # padding: weight 0
        out = logits.softmax(dim=-1) @ v  # [B, nh, HW, d]: each pixel, a mix over words and pixels
        out = self.proj_out(out.transpose(1, 2).reshape(B, H * W, C))  # [B, HW, C]
        return x + out.transpose(1, 2).reshape(B, C, H, W)


def _caption_mask(lengths: list[int], context: int) -> torch.Tensor:
    """[B, context] bool: the first ``lengths[b]`` slots real (SOT, words, EOT), the rest padding."""
    return torch.arange(context)[None, :] < torch.tensor(lengths)[:, None]


def _attention_cases():
    g = seeded(5)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    yield Case(({"channels": 8, "heads": 2, "encoder_channels": 6, "num_groups": 4}, r(2, 8, 4, 4), r(2, 5, 6),
                _caption_mask([3, 4], 5)), name="2 heads, padding to hide")
    yield Case(({"channels": 8, "heads": 1, "encoder_channels": 4, "num_groups": 4}, r(1, 8, 3, 3), r(1, 4, 4),
                _caption_mask([4], 4)), name="one head, no padding")
    yield Case(({"channels": 16, "heads": 4, "encoder_channels": 8, "num_groups": 8}, r(2, 16, 2, 6), r(2, 7, 8),
                _caption_mask([2, 7], 7)), name="4 heads, a 2 x 6 image, the empty caption")
    yield Case(({"channels": 12, "heads": 3, "encoder_channels": 10, "num_groups": 32}, r(3, 12, 2, 2), r(3, 9, 10),
                _caption_mask([5, 2, 9], 9)), name="more words than pixels")
    yield Case(({"channels": 144, "heads": 3, "encoder_channels": 128}, r(1, 144, 8, 8), r(1, 24, 128),
                _caption_mask([9], 24)), name="glide-shapes-tiny's sizes (144 channels, 3 heads, 24 tokens of width 128)")


EX_TEXT_ATTENTION = ModuleExercise(
    "ch05.TextAttentionBlock", TextAttentionBlock, _attention_cases, kind="module", atol=1e-5, rtol=1e-4,
    hint="keys and values are [encoder_kv(context) ; the pixels' own] along the token axis (L + H*W); "
         "the mask is [context_mask ; all True]; logits = q kᵀ / √d per head, -inf where the mask is False, "
         "softmax over the keys (the last axis); then proj_out and the residual x + ….")


def test_text_attention_block(cls) -> bool:
    return EX_TEXT_ATTENTION.check(cls)


# --- 1. The guidance formula -------------------------------------------------------------
def guided_eps(eps_cond: torch.Tensor, eps_uncond: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference: ε̂ = ε(∅) + s · (ε(c) − ε(∅)) (GLIDE §2.4, eq. 4), same shape as the inputs."""
    return _guide(torch.cat([eps_cond, eps_uncond]), scale, eps_cond.shape[1])


def _eps_cases():
    g = seeded(0)
    e = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    yield Case((e(2, 3, 4, 4), e(2, 3, 4, 4), 3.0), name="scale 3 (GLIDE's default)")
    yield Case((e(1, 3, 8, 8), e(1, 3, 8, 8), 0.0), name="scale 0: the unconditional prediction")
    yield Case((e(3, 3, 2, 2), e(3, 3, 2, 2), 1.0), name="scale 1: the conditional prediction")
    yield Case((e(2, 1, 4, 4), e(2, 1, 4, 4), 7.5), name="scale 7.5, one channel")
    c = e(2, 3, 4, 4)
    yield Case((c, c.clone(), 5.0), name="caption changes nothing: no push at any scale")


EX_GUIDED_EPS = Exercise("ch05.guided_eps", guided_eps, _eps_cases,
                         hint="start from the unconditional prediction and move s times the difference "
                              "(conditional − unconditional): eps_uncond + scale * (eps_cond - eps_uncond).")


def test_guided_eps(fn) -> bool:
    return EX_GUIDED_EPS.check(fn)


# --- 2. Caption dropout ---------------------------------------------------------------------
def drop_captions(tokens: torch.Tensor, drop_mask: torch.Tensor) -> torch.Tensor:
    """Reference: rows of ``tokens`` [B, L] where ``drop_mask`` [B] is True become the empty
    caption [SOT, EOT, PAD, …, PAD]; the other rows are kept. A new tensor; the input is untouched."""
    return torch.where(drop_mask[:, None], empty_tokens(*tokens.shape, device=tokens.device), tokens)


def _caption_row(g, length: int, context: int) -> list[int]:
    words = torch.randint(4, 40, (length,), generator=g).tolist()
    return [SOT, *words, EOT] + [PAD] * (context - length - 2)


def _drop_cases():
    g = seeded(1)
    rows = [_caption_row(g, n, 12) for n in (3, 5, 2, 7, 4, 3)]
    tokens = torch.tensor(rows)
    yield Case((tokens, torch.tensor([True, False, False, True, False, False])), name="drop rows 0 and 3")
    yield Case((tokens[:3], torch.zeros(3, dtype=torch.bool)), name="drop nothing")
    yield Case((tokens[:4], torch.ones(4, dtype=torch.bool)), name="drop everything")
    full = torch.tensor([_caption_row(g, 6, 8), _caption_row(g, 2, 8)])  # first row fills the context
    yield Case((full, torch.tensor([True, False])), name="a caption that fills the whole context")
    yield Case((torch.tensor([_caption_row(g, 1, 24)]), torch.tensor([True])), name="one row, context 24")


EX_DROP = Exercise("ch05.drop_captions", drop_captions, _drop_cases,
                   hint="build the empty caption: a row full of PAD, then SOT at position 0 and EOT at "
                        "position 1; torch.where(drop_mask[:, None], empty, tokens) picks it per row.")


def test_drop_captions(fn) -> bool:
    return EX_DROP.check(fn)


# --- 3. Guidance on one batched forward pass ---------------------------------------------------
def guided_output(out: torch.Tensor, scale: float, channels: int) -> torch.Tensor:
    """Reference: ``out`` [2B, C or 2C, H, W] is one forward over [captions; empty captions].
    Returns [B, C or 2C, H, W]: the first ``channels`` (= C, the ε part) guided, the variance
    part (present with a learned σ) taken from the conditional half unchanged."""
    return _guide(out, scale, channels)


def _output_cases():
    g = seeded(2)
    o = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    yield Case((o(4, 3, 4, 4), 3.0, 3), name="2 captions, ε only (C = 3)")
    yield Case((o(4, 6, 4, 4), 3.0, 3), name="2 captions, learned σ (2C = 6 channels)")
    yield Case((o(2, 6, 2, 2), 0.0, 3), name="learned σ, scale 0")
    yield Case((o(6, 6, 2, 2), 1.0, 3), name="learned σ, scale 1")
    yield Case((o(2, 2, 4, 4), 5.0, 1), name="one image channel with a learned σ")
    yield Case((o(6, 4, 2, 2), 2.0, 4), name="3 captions, 4 channels, no σ")


EX_GUIDED_OUTPUT = Exercise(
    "ch05.guided_output", guided_output, _output_cases,
    hint="B = len(out) // 2; out[:B] is conditional, out[B:] unconditional. Guide only "
         "out[:, :channels]; concatenate the conditional half's remaining channels out[:B, channels:].")


def test_guided_output(fn) -> bool:
    return EX_GUIDED_OUTPUT.check(fn)


# --- 4. The Min-SNR-γ loss weight ---------------------------------------------------------------
def min_snr_weight(diffusion: GaussianDiffusion, t: torch.Tensor, gamma: float) -> torch.Tensor:
    """Reference: per-example weight [B] on the ε-prediction loss, min(SNR(t), γ) / SNR(t), with
    SNR(t) = ᾱ_t / (1 − ᾱ_t) read from ``diffusion.alphas_cumprod`` (Hang et al. 2023)."""
    return diffusion.min_snr_weight(t, gamma)


def _snr_cases():
    cosine = GaussianDiffusion.from_schedule("cosine", 1000)
    linear = GaussianDiffusion.from_schedule("linear", 200)
    yield Case((cosine, torch.tensor([0, 10, 100, 250, 500, 999]), 5.0), name="cosine, γ = 5")
    yield Case((cosine, torch.arange(0, 1000, 37), 1.0), name="cosine, γ = 1")
    yield Case((linear, torch.tensor([0, 1, 5, 50, 199]), 5.0), name="linear 200 steps, γ = 5")
    yield Case((cosine, torch.tensor([999, 998]), 20.0), name="only noisy steps: weight 1")


EX_MIN_SNR = Exercise("ch05.min_snr_weight", min_snr_weight, _snr_cases,
                      hint="ab = diffusion.alphas_cumprod[t]; snr = ab / (1 - ab); "
                           "return snr.clamp(max=gamma) / snr.")


def test_min_snr_weight(fn) -> bool:
    return EX_MIN_SNR.check(fn)


check = checker("ch05")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
