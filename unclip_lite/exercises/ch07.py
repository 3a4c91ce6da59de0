"""Chapter 07 exercises: the unCLIP priors' central pieces.

1. the diffusion prior's token sequence and its causal mask;
2. the x₀-prediction training loss;
3. PCA + buckets: an embedding to the AR prior's codes;
4. and back: codes to a unit embedding;
5. sample-k-keep-best by the dot product with z_t.

The references reuse the package: :func:`unclip_lite.unclip.prior.causal_mask`,
:meth:`unclip_lite.diffusion.GaussianDiffusion.training_losses`, :func:`unclip_lite.unclip.ar_prior.quantise`
/ :func:`~unclip_lite.unclip.ar_prior.dequantise` and :func:`unclip_lite.unclip.bundle.keep_best`.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.exercises.core import Case, Exercise, seeded, checker
from unclip_lite.unclip.ar_prior import dequantise, quantise
from unclip_lite.unclip.bundle import keep_best as package_keep_best
from unclip_lite.unclip.prior import causal_mask


# --- 1. The prior's sequence and mask --------------------------------------------------------
def prior_sequence(caption: torch.Tensor, text_embed: torch.Tensor, time: torch.Tensor, noised: torch.Tensor,
                   query: torch.Tensor, text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the diffusion prior's input (unCLIP §2.2), all tokens already of width W:
    ``caption`` [B, L, W], ``text_embed``, ``time``, ``noised`` [B, W] one token each, ``query`` [W]
    (shared by the batch). Returns ``(sequence [B, L + 4, W], mask [B, 1, L + 4, L + 4])``: the
    sequence in that order, and True where token i may attend to token j — j <= i, and never a
    caption position where ``text_mask`` [B, L] is False (padding)."""
    B = len(caption)
    sequence = torch.cat([caption, text_embed[:, None], time[:, None], noised[:, None],
                          query.expand(B, 1, -1)], dim=1)
    return sequence, causal_mask(text_mask)


def _sequence_cases():
    g = seeded(70)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    mask = torch.tensor([[True, True, True, False, False], [True, True, True, True, True]])
    yield Case((r(2, 5, 8), r(2, 8), r(2, 8), r(2, 8), r(8), mask), name="2 captions, one padded")
    yield Case((r(1, 3, 4), r(1, 4), r(1, 4), r(1, 4), r(4), torch.tensor([[True, True, False]])),
               name="one caption of 2 tokens in 3")
    yield Case((r(3, 2, 6), r(3, 6), r(3, 6), r(3, 6), r(6), torch.ones(3, 2, dtype=torch.bool)),
               name="no padding")


EX_SEQUENCE = Exercise(
    "ch07.prior_sequence", prior_sequence, _sequence_cases,
    hint="torch.cat along dim 1 in the order caption, z_t, timestep, noised z_i, query (text_embed[:, None] "
         "makes a token; query.expand(B, 1, -1)). The mask: torch.ones(S, S).tril() for 'j <= i', and a "
         "[B, S] key mask = cat(text_mask, four Trues); combine with & and add the head axis: [:, None].")


def test_prior_sequence(fn) -> bool:
    return EX_SEQUENCE.check(fn)


# --- 2. The x₀ objective --------------------------------------------------------------------
def x0_loss(model_fn, diffusion: GaussianDiffusion, x0: torch.Tensor, t: torch.Tensor,
            noise: torch.Tensor) -> torch.Tensor:
    """Reference: the prior's loss (§2.2: "predict the unnoised z_i directly"): noise ``x0`` [B, E]
    to x_t = √ᾱ_t x₀ + √(1 − ᾱ_t) ε with the given ``noise``, ask ``model_fn(x_t, t)`` for x̂₀ and
    return the mean squared error between x̂₀ and x₀, a scalar."""
    x0_diffusion = GaussianDiffusion(diffusion.betas, parameterization="x0")
    return x0_diffusion.training_losses(model_fn, x0, t, noise)["loss"].mean()


class _Shrink:
    """A stand-in network: x̂₀ = 0.8·x_t + a per-timestep bias (so the loss depends on everything)."""

    def __call__(self, x, t):
        return 0.8 * x + 0.01 * t.float()[:, None]


def _loss_cases():
    g = seeded(71)
    cosine = GaussianDiffusion.from_schedule("cosine", 1000)
    linear = GaussianDiffusion.from_schedule("linear", 100)
    for name, d, t in (("cosine, mixed t", cosine, torch.tensor([0, 10, 500, 999])),
                       ("cosine, noisy t", cosine, torch.tensor([900, 950, 990, 999])),
                       ("linear 100 steps", linear, torch.tensor([1, 50, 99, 3]))):
        x0, noise = torch.randn(4, 16, generator=g), torch.randn(4, 16, generator=g)
        yield Case((_Shrink(), d, x0, t, noise), name=name)


EX_LOSS = Exercise("ch07.x0_loss", x0_loss, _loss_cases,
                   hint="ab = diffusion.alphas_cumprod[t].float()[:, None]; x_t = ab.sqrt() * x0 + (1 - ab).sqrt() * "
                        "noise; the target is x0 itself, not the noise: ((model_fn(x_t, t) - x0) ** 2).mean().")


def test_x0_loss(fn) -> bool:
    return EX_LOSS.check(fn)


# --- 3. PCA + buckets: embedding -> codes ------------------------------------------------------
def pca_codes(z: torch.Tensor, mean: torch.Tensor, components: torch.Tensor, low: torch.Tensor,
              high: torch.Tensor, buckets: int) -> torch.Tensor:
    """Reference: the AR prior's codes of embeddings ``z`` [B, E]: the coefficients on the k
    principal ``components`` [k, E] (rows) of the centred embedding, each cut into ``buckets``
    equal bins between ``low`` and ``high`` [k]; codes [B, k] long in [0, buckets), values
    outside the range in the end bins."""
    return quantise((z - mean) @ components.T, low, high, buckets)


def _codec(g, E=8, k=3):
    components = torch.linalg.qr(torch.randn(E, E, generator=g))[0][:k]  # [k, E], orthonormal rows
    return torch.randn(E, generator=g) * 0.1, components, -torch.rand(k, generator=g) - 0.5, \
        torch.rand(k, generator=g) + 0.5


def _code_cases():
    g = seeded(72)
    mean, components, low, high = _codec(g)
    yield Case((F.normalize(torch.randn(6, 8, generator=g), dim=-1), mean, components, low, high, 16),
               name="unit embeddings, 3 components, 16 buckets")
    yield Case((torch.randn(5, 8, generator=g) * 3, mean, components, low, high, 4),
               name="embeddings far outside the range: the end bins")
    yield Case((mean[None] + 0.2 * components[:2], mean, components, low, high, 1024), name="1,024 buckets")


EX_CODES = Exercise("ch07.pca_codes", pca_codes, _code_cases,
                    hint="coefficients = (z - mean) @ components.T, then ((c - low) / (high - low) * buckets)"
                         ".floor().clamp(0, buckets - 1).long().")


def test_pca_codes(fn) -> bool:
    return EX_CODES.check(fn)


# --- 4. ... and back -----------------------------------------------------------------------------
def codes_to_embedding(codes: torch.Tensor, mean: torch.Tensor, components: torch.Tensor, low: torch.Tensor,
                       high: torch.Tensor, buckets: int) -> torch.Tensor:
    """Reference: the inverse of :func:`pca_codes` up to the bins: each code becomes the centre
    of its bin, the coefficients rebuild ``mean + c @ components``, and the result is scaled back
    to a unit vector (CLIP embeddings are compared by angle). [B, k] -> [B, E]."""
    return F.normalize(mean + dequantise(codes, low, high, buckets) @ components, dim=-1)


def _decode_cases():
    g = seeded(73)
    mean, components, low, high = _codec(g)
    yield Case((torch.randint(0, 16, (6, 3), generator=g), mean, components, low, high, 16), name="16 buckets")
    yield Case((torch.tensor([[0, 0, 0], [3, 3, 3]]), mean, components, low, high, 4), name="the end bins")
    yield Case((torch.randint(0, 1024, (4, 3), generator=g), mean * 5, components, low, high, 1024),
               name="1,024 buckets, a large mean")


EX_DECODE = Exercise("ch07.codes_to_embedding", codes_to_embedding, _decode_cases,
                     hint="the centre of bin b is low + (b + 0.5) / buckets * (high - low); then "
                          "F.normalize(mean + coefficients @ components, dim=-1).")


def test_codes_to_embedding(fn) -> bool:
    return EX_DECODE.check(fn)


# --- 5. Keep the best of k ---------------------------------------------------------------------
def keep_best(candidates: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """Reference: ``candidates`` [B, k, E] image embeddings drawn for each caption; return [B, E],
    per caption the candidate with the highest dot product with its ``text_embed`` [B, E]."""
    return package_keep_best(candidates, text_embed)


def _best_cases():
    g = seeded(74)
    yield Case((torch.randn(4, 2, 8, generator=g), torch.randn(4, 8, generator=g)), name="k = 2 (the paper's)")
    yield Case((torch.randn(3, 5, 6, generator=g) * torch.tensor([0.2, 1, 5, 1, 0.5])[None, :, None],
                torch.randn(3, 6, generator=g)), name="k = 5, candidates of different lengths")
    yield Case((torch.randn(2, 1, 4, generator=g), torch.randn(2, 4, generator=g)), name="k = 1: nothing to choose")


EX_BEST = Exercise("ch07.keep_best", keep_best, _best_cases,
                   hint="scores = (candidates * text_embed[:, None]).sum(-1) is [B, k]; index the candidates "
                        "with torch.arange(B) and scores.argmax(1).")


def test_keep_best(fn) -> bool:
    return EX_BEST.check(fn)


check = checker("ch07")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
