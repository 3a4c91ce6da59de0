"""Chapter 01 exercises: the pieces of CLIP's two towers (Radford et al. 2021, §2.4).

1. ``patchify``: an image as a sequence of flattened patches;
2. ``PatchEmbedding``: the ViT's stem (Dosovitskiy et al. 2021, §3.1) with CLIP's ``ln_pre``;
3. ``causal_mask``: the text tower's mask;
4. ``eot_pool``: reading the text features at the end token;
5. ``attention``: scaled dot-product attention (Vaswani et al. 2017, §3.2.1), with a mask;
6. ``TransformerBlock``: the pre-LN block both towers stack;
7. ``clip_logits``: cosine similarities times the learned temperature (§2.3, §2.5).

The references are plain torch; tests/test_exercises_ch01.py checks that they equal the package's
:class:`unclip_lite.nn.MultiheadAttention` and :class:`unclip_lite.nn.Block` (loading the same
state dict), the stem of :class:`unclip_lite.clip.vision.VisionTransformer`, and that the pieces
assembled reproduce ``CLIP.encode_image`` and ``CLIP.encode_text``.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unclip_lite.clip.loss import contrastive_logits
from unclip_lite.exercises.core import Case, Exercise, ModuleExercise, seeded, checker
from unclip_lite.tokenizer import get_tokenizer


# --- 1. Cutting an image into patches ----------------------------------------------------
def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Reference: ``[B, C, H, W]`` → ``[B, (H/p)·(W/p), C·p·p]``, patches in reading order,
    each flattened channel-first (the order a stride-p convolution's weights use)."""
    return rearrange(images, "b c (h p) (w q) -> b (h w) (c p q)", p=patch_size, q=patch_size)


def _patch_cases():
    g = seeded(0)
    yield Case((torch.randn(2, 3, 8, 8, generator=g), 4), name="2 images, 8 px, patch 4")
    yield Case((torch.randn(1, 3, 32, 32, generator=g), 8), name="32 px, patch 8")
    yield Case((torch.randn(3, 1, 6, 6, generator=g), 2), name="one channel")
    yield Case((torch.arange(2 * 3 * 4 * 4.0).view(2, 3, 4, 4), 2), name="counting pixels")


EX_PATCHIFY = Exercise("ch01.patchify", patchify, _patch_cases,
                       hint="einops: 'b c (h p) (w q) -> b (h w) (c p q)'; the channel comes first "
                            "inside a patch, rows of patches before columns.")


def test_patchify(fn) -> bool:
    return EX_PATCHIFY.check(fn)


# --- 2. The ViT's stem: patches, class token, positions ----------------------------------
class PatchEmbedding(nn.Module):
    """Reference: images ``[B, C, S, S]`` → tokens ``[B, 1 + N, D]``, N = (S/p)² (ViT, §3.1).

    A stride-p convolution embeds each patch (= patchify, then a Linear without bias), a learned
    class token goes in front, learned positions are added to all 1 + N tokens, and CLIP's one
    change (§2.4), a LayerNorm ``ln_pre``, normalises the result. Parameter names as
    :class:`unclip_lite.clip.vision.VisionTransformer`'s, so its stem loads into this module.
    """

    def __init__(self, image_size: int, patch_size: int, width: int, channels: int = 3):
        super().__init__()
        self.patch_size = patch_size
        n_patches = (image_size // patch_size) ** 2
        self.patch_embed = nn.Conv2d(channels, width, patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.randn(width) * width ** -0.5)  # [D]
        self.positional_embedding = nn.Parameter(torch.randn(n_patches + 1, width) * width ** -0.5)  # [1 + N, D]
        self.ln_pre = nn.LayerNorm(width)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = rearrange(self.patch_embed(images), "b d gh gw -> b (gh gw) d")  # [B, N, D]
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # [B, 1, D]
        x = torch.cat([cls, x], dim=1) + self.positional_embedding  # [B, 1 + N, D]
        return self.ln_pre(x)  # [B, 1 + N, D]


def _with_random_norms(build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """``build`` whose LayerNorms get random gains and biases: a fresh LayerNorm has gain 1 and
    bias 0, and a check with those could not tell ``ln_1`` from ``ln_2``."""
    def drawn(**init) -> nn.Module:
        module = build(**init)
        with torch.no_grad():
            for m in module.modules():
                if isinstance(m, nn.LayerNorm):
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.normal_(0.0, 0.2)
        return module
    return drawn


class _DrawnNormsExercise(ModuleExercise):
    """A module exercise whose reference weights include random LayerNorm parameters."""

    def run(self, cls, case):
        reference = self.reference
        self.reference = _with_random_norms(reference)  # `cls` is then built and loaded, as a learner's is
        try:
            return super().run(cls, case)
        finally:
            self.reference = reference


def _stem_cases():
    g = seeded(4)
    yield Case(({"image_size": 8, "patch_size": 4, "width": 16}, torch.randn(2, 3, 8, 8, generator=g)),
               name="8 px images, patch 4: 4 patches + the class token")
    yield Case(({"image_size": 12, "patch_size": 3, "width": 8, "channels": 1}, torch.randn(3, 1, 12, 12, generator=g)),
               name="one channel, 16 patches of 3 px")
    yield Case(({"image_size": 32, "patch_size": 4, "width": 32}, torch.randn(1, 3, 32, 32, generator=g)),
               name="shapes-tiny's 32 px and patch 4")


EX_STEM = _DrawnNormsExercise(
    "ch01.PatchEmbedding", PatchEmbedding, _stem_cases, kind="module",
    hint="x = self.patch_embed(images) is [B, D, S/p, S/p]: flatten the grid and move D last, [B, N, D] "
         "(or patchify(images, p) @ self.patch_embed.weight.flatten(1).T). Put the class token FIRST: "
         "torch.cat([self.class_embedding.expand(B, 1, D), x], dim=1), then add positional_embedding "
         "([1 + N, D], one row per token, the class token's included) and finish with self.ln_pre.")


def test_patch_embedding(fn) -> bool:
    return EX_STEM.check(fn)


# --- 3. The causal mask ------------------------------------------------------------------
def causal_mask(n: int) -> torch.Tensor:
    """Reference: bool ``[n, n]``, True where query i may attend to key j (j ≤ i)."""
    return torch.ones(n, n, dtype=torch.bool).tril()


EX_MASK = Exercise("ch01.causal_mask", causal_mask,
                   lambda: [Case((n,), name=f"n={n}") for n in (1, 2, 5, 16)],
                   hint="query i (a row) may see keys 0..i (columns): the lower triangle, "
                        "diagonal included; return dtype torch.bool.")


def test_causal_mask(fn) -> bool:
    return EX_MASK.check(fn)


# --- 4. Reading the text features at the end token ---------------------------------------
def eot_pool(features: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Reference: ``features [B, L, D]`` at the position of each row's largest token id
    (CLIP's end token, 49407) → ``[B, D]``."""
    return features[torch.arange(features.shape[0]), tokens.argmax(dim=-1)]


def _pool_cases():
    g = seeded(2)
    tokens = get_tokenizer()(["a red circle", "the star is yellow and large", ""], context_length=12)
    yield Case((torch.randn(3, 12, 4, generator=g), tokens), name="real captions")
    tokens = torch.randint(1, 100, (5, 7), generator=g)
    tokens[torch.arange(5), torch.tensor([1, 6, 3, 2, 4])] = 49407
    yield Case((torch.randn(5, 7, 3, generator=g), tokens), name="end token anywhere")


EX_POOL = Exercise("ch01.eot_pool", eot_pool, _pool_cases,
                   hint="the end token has the largest id: tokens.argmax(-1) gives its position; "
                        "index features with (torch.arange(B), positions).")


def test_eot_pool(fn) -> bool:
    return EX_POOL.check(fn)


# --- 5. Scaled dot-product attention -----------------------------------------------------
def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Reference: softmax(q kᵀ / √d) v (Vaswani et al. 2017, §3.2.1).

    ``q [B, H, Lq, d]``, ``k, v [B, H, Lk, d]`` → ``[B, H, Lq, d]``. ``mask``: bool, broadcastable to
    ``[B, H, Lq, Lk]``, True where query i may attend to key j (as ``F.scaled_dot_product_attention``);
    a blocked logit becomes −∞ before the softmax, so it gets weight exactly 0.
    """
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])  # [B, H, Lq, Lk]
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # [B, H, Lq, d]: each query's weights over the keys sum to 1


def _attention_cases():
    g = seeded(5)

    def qkv(b, h, lq, lk, d):
        return (torch.randn(b, h, lq, d, generator=g), torch.randn(b, h, lk, d, generator=g),
                torch.randn(b, h, lk, d, generator=g))

    padding = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])[:, None, None, :]  # [B, 1, 1, Lk]
    yield Case(qkv(2, 2, 5, 5, 8), name="self-attention, no mask")
    yield Case(qkv(1, 3, 3, 7, 16), name="3 queries over 7 keys, no mask")
    yield Case((*qkv(2, 2, 6, 6, 8), causal_mask(6)), name="a causal mask [L, L]")
    yield Case((*qkv(2, 2, 6, 6, 8), padding), name="a padding mask [B, 1, 1, Lk]: row 1 ends in 2 padding keys")
    yield Case((*qkv(2, 1, 6, 6, 4), causal_mask(6) & padding), name="causal and padding together")


EX_ATTENTION = Exercise(
    "ch01.attention", attention, _attention_cases,
    hint="scores = q @ k.transpose(-2, -1) / math.sqrt(d), [B, H, Lq, Lk]; where the mask is False put "
         "-inf BEFORE the softmax: scores.masked_fill(~mask, float('-inf')); softmax over the keys (dim=-1), "
         "then @ v.")


def test_attention(fn) -> bool:
    return EX_ATTENTION.check(fn)


# --- 6. The pre-LN transformer block -----------------------------------------------------
class TransformerBlock(nn.Module):
    """Reference: ``x + attn(ln_1(x))``, then ``x + mlp(ln_2(x))`` on ``x [B, L, D]`` (GPT-2's pre-LN order,
    the block of both CLIP towers, §2.4), with :func:`attention` over ``heads`` heads and a GELU MLP 4·D wide.

    Parameter names as :class:`unclip_lite.nn.Block`'s, so a block of the package loads into it.
    ``attn.qkv``'s output is ``[q | k | v]`` along the last dim, each D wide and split into heads of
    D/heads consecutive features. ``mask``: bool, broadcastable to ``[B, heads, L, L]``, True = may attend.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.ln_1 = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(dim, 3 * dim), "out_proj": nn.Linear(dim, dim)})
        self.ln_2 = nn.LayerNorm(dim)
        self.mlp = nn.ModuleDict({"c_fc": nn.Linear(dim, 4 * dim), "c_proj": nn.Linear(4 * dim, dim)})

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        qkv = self.attn.qkv(self.ln_1(x))  # [B, L, 3D]
        q, k, v = rearrange(qkv, "b l (three h d) -> three b h l d", three=3, h=self.heads)  # [B, H, L, D/H] each
        y = rearrange(attention(q, k, v, mask), "b h l d -> b l (h d)")  # [B, L, D]
        x = x + self.attn.out_proj(y)  # [B, L, D]
        return x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x))))  # [B, L, D]


def _block_cases():
    g = seeded(6)
    padding = torch.tensor([[True] * 5, [True] * 3 + [False] * 2])[:, None, None, :]  # [B, 1, 1, L]
    yield Case(({"dim": 16, "heads": 2}, torch.randn(2, 5, 16, generator=g)), name="no mask (the image tower)")
    yield Case(({"dim": 16, "heads": 4}, torch.randn(2, 6, 16, generator=g), causal_mask(6)),
               name="a causal mask (the text tower)")
    yield Case(({"dim": 24, "heads": 3}, torch.randn(2, 5, 24, generator=g), padding), name="a padding mask")


EX_BLOCK = _DrawnNormsExercise(
    "ch01.TransformerBlock", TransformerBlock, _block_cases, kind="module", atol=1e-5, rtol=1e-4,
    hint="Split self.attn.qkv(self.ln_1(x)) into q, k, v [B, H, L, D/H]: rearrange(t, 'b l (three h d) -> "
         "three b h l d', three=3, h=self.heads). y = attention(q, k, v, mask), back to [B, L, D] with "
         "'b h l d -> b l (h d)'. Then x = x + self.attn.out_proj(y) and "
         "x = x + self.mlp.c_proj(F.gelu(self.mlp.c_fc(self.ln_2(x)))): normalise the branch's input, "
         "never the residual stream.")


def test_transformer_block(fn) -> bool:
    return EX_BLOCK.check(fn)


# --- 7. Cosine similarity with a learned temperature -------------------------------------
def clip_logits(image_features: torch.Tensor, text_features: torch.Tensor,
                logit_scale: torch.Tensor) -> torch.Tensor:
    """Reference: normalise both, multiply by ``exp(logit_scale)`` capped at 100 → ``[N_img, N_txt]``."""
    scale = logit_scale.exp().clamp(max=100)
    return contrastive_logits(F.normalize(image_features, dim=-1), F.normalize(text_features, dim=-1), scale)


def _logit_cases():
    g = seeded(3)
    yield Case((torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g), torch.tensor(2.659)),
               name="CLIP's initial temperature 1/0.07")
    yield Case((torch.randn(3, 5, generator=g), torch.randn(6, 5, generator=g), torch.tensor(1.0)),
               name="more texts than images")
    yield Case((5 * torch.randn(2, 4, generator=g), torch.randn(2, 4, generator=g), torch.tensor(6.0)),
               name="scale above the cap of 100")


EX_LOGITS = Exercise("ch01.clip_logits", clip_logits, _logit_cases,
                     hint="F.normalize both feature sets along the last dim; the scale is "
                          "logit_scale.exp() clamped at 100; logits = scale * img @ txt.T.")


def test_clip_logits(fn) -> bool:
    return EX_LOGITS.check(fn)


check = checker("ch01")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
