"""Chapter 01 exercises: the pieces of CLIP's two towers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange

from unclip_lite.clip.loss import contrastive_logits
from unclip_lite.exercises.core import Case, Exercise, seeded
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


# --- 2. The causal mask ------------------------------------------------------------------
def causal_mask(n: int) -> torch.Tensor:
    """Reference: bool ``[n, n]``, True where query i may attend to key j (j ≤ i)."""
    return torch.ones(n, n, dtype=torch.bool).tril()


EX_MASK = Exercise("ch01.causal_mask", causal_mask,
                   lambda: [Case((n,), name=f"n={n}") for n in (1, 2, 5, 16)],
                   hint="query i (a row) may see keys 0..i (columns): the lower triangle, "
                        "diagonal included; return dtype torch.bool.")


def test_causal_mask(fn) -> bool:
    return EX_MASK.check(fn)


# --- 3. Reading the text features at the end token ---------------------------------------
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


# --- 4. Cosine similarity with a learned temperature -------------------------------------
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
