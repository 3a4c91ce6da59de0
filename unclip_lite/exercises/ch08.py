"""Chapter 08 exercises: the unCLIP decoder's central pieces.

1. z_i's two ways in: added to the timestep path, and 4 tokens in front of the caption's;
2. the dual dropout of caption and z_i;
3. attention in which the image tokens sit behind a gate;
4. the guided prediction over both conditionings, in one batched forward;
5. one degradation of the upsamplers' BSR pipeline: an anisotropic, rotated Gaussian blur.

The references are the package's own: :func:`unclip_lite.unclip.decoder.image_conditioning`,
:func:`~unclip_lite.unclip.decoder.dual_dropout`, :func:`unclip_lite.unet_attention.gated_attention`
and :func:`unclip_lite.diffusion.free_guidance.classifier_free_guidance`,
:func:`unclip_lite.unclip.degradations.anisotropic_blur`.
"""
from __future__ import annotations

import torch
from torch import nn

from unclip_lite.diffusion.free_guidance import classifier_free_guidance
from unclip_lite.exercises.core import Case, Exercise, seeded, checker
from unclip_lite.unclip.decoder import dual_dropout as package_dual_dropout
from unclip_lite.unclip.decoder import image_conditioning as package_image_conditioning
from unclip_lite.unclip.degradations import anisotropic_blur as package_anisotropic_blur
from unclip_lite.unet_attention import gated_attention as package_gated_attention


def _linear(g: torch.Generator, d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(d_out, d_in, generator=g))
        layer.bias.copy_(torch.randn(d_out, generator=g))
    return layer


# --- 1. z_i's two ways in -----------------------------------------------------------------------
def image_conditioning(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens):
    """Reference: ``(cond [B, W], context [B, n + L, W], context_mask [B, n + L])``: the pooled
    caption vector plus ``to_cond(z)``, and ``to_tokens(z)`` cut into ``n_tokens`` tokens of width
    W put in front of the caption's tokens ``xf_out`` [B, L, W], always visible."""
    return package_image_conditioning(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens)


def _conditioning_cases():
    g = seeded(80)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    yield Case((r(2, 6), r(2, 8), r(2, 5, 8), torch.tensor([[True] * 3 + [False] * 2, [True] * 5]),
                _linear(g, 6, 8), _linear(g, 6, 4 * 8), 4), name="2 captions, 4 image tokens")
    yield Case((r(3, 4), r(3, 2), r(3, 3, 2), torch.ones(3, 3, dtype=torch.bool), _linear(g, 4, 2),
                _linear(g, 4, 2 * 2), 2), name="width 2, 2 image tokens")


EX_CONDITIONING = Exercise(
    "ch08.image_conditioning", image_conditioning, _conditioning_cases,
    hint="cond = pooled + to_cond(z). tokens = to_tokens(z).view(B, n_tokens, -1): consecutive chunks of W "
         "numbers are the tokens. context = torch.cat([tokens, xf_out], dim=1) (image tokens first), and the "
         "mask gains n_tokens Trues in front: torch.cat([text_mask.new_ones(B, n_tokens), text_mask], dim=1).")


def test_image_conditioning(fn) -> bool:
    return EX_CONDITIONING.check(fn)


# --- 2. The dual dropout --------------------------------------------------------------------------
def dual_dropout(tokens, image_embed, empty, u, p_text, p_image):
    """Reference: caption row b becomes ``empty`` where ``u[b, 0] < p_text``; z_i row b becomes
    zeros where ``u[b, 1] < p_image``. Returns ``(tokens, image_embed)``."""
    return package_dual_dropout(tokens, image_embed, empty, u, p_text, p_image)


def _dropout_cases():
    g = seeded(81)
    tokens = torch.randint(3, 40, (6, 5), generator=g)
    empty = torch.tensor([1, 2, 0, 0, 0])
    u = torch.tensor([[0.1, 0.9], [0.7, 0.05], [0.2, 0.01], [0.6, 0.6], [0.49, 0.11], [0.51, 0.09]])
    yield Case((tokens, torch.randn(6, 4, generator=g), empty, u, 0.5, 0.1), name="the paper's 50% / 10%")
    yield Case((tokens[:3], torch.randn(3, 4, generator=g), empty, u[:3], 0.0, 1.0), name="never text, always z_i")


EX_DROPOUT = Exercise(
    "ch08.dual_dropout", dual_dropout, _dropout_cases,
    hint="Two boolean rows: drop_text = u[:, 0] < p_text and drop_image = u[:, 1] < p_image — one column each, "
         "never the same draw for both. Then torch.where(drop_text[:, None], empty.expand_as(tokens), tokens), "
         "and the same with torch.zeros_like(image_embed).")


def test_dual_dropout(fn) -> bool:
    return EX_DROPOUT.check(fn)


# --- 3. Gated attention ------------------------------------------------------------------------------
def gated_attention(q, k, v, keep, gate, gated):
    """Reference: softmax attention [B, nh, N, d] in which the first ``gated`` keys' unnormalised
    weights exp(q·k/√d) are multiplied by ``gate`` [nh] (one per head, ≥ 0) before normalising;
    ``keep`` (or None) is True where a query may attend to a key."""
    return package_gated_attention(q, k, v, keep, gate.clamp(min=0), gated)


def _gated_cases():
    g = seeded(82)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    yield Case((r(2, 2, 3, 4), r(2, 2, 6, 4), r(2, 2, 6, 4), None, torch.tensor([0.5, 2.0]), 2),
               name="two heads, gates 0.5 and 2")
    keep = torch.tensor([True, True, True, False, True])[None, None, None, :]
    yield Case((r(1, 2, 3, 4), r(1, 2, 5, 4), r(1, 2, 5, 4), keep, torch.tensor([0.0, 1.0]), 1),
               name="gate 0 and 1, one key masked")


EX_GATED = Exercise(
    "ch08.gated_attention", gated_attention, _gated_cases,
    hint="logits = q @ k.transpose(-1, -2) / d ** 0.5; masked_fill(~keep, -inf) if keep is given; weights = "
         "(logits - logits.amax(-1, keepdim=True)).exp(). Multiply weights[..., :gated] by gate[None, :, None, None] "
         "(the head axis is dim 1), then divide weights @ v by weights.sum(-1, keepdim=True).")


def test_gated_attention(fn) -> bool:
    return EX_GATED.check(fn)


# --- 4. The guided prediction ------------------------------------------------------------------------
def guided_prediction(model_fn, x_t, t, tokens, image_embed, empty, scale):
    """Reference: ε̂ = ε(x_t | ∅, 0) + s · (ε(x_t | caption, z_i) − ε(x_t | ∅, 0)), the unconditional
    half with the empty caption ``empty`` [L] *and* a zero embedding, both halves from one call
    ``model_fn(x [2B, ...], t [2B], tokens [2B, L], image_embed [2B, E])``."""

    class _Model:
        def __call__(self, x, t, tokens, image_embed):
            return model_fn(x, t, tokens, image_embed)

        @staticmethod
        def null_conditioning(tokens, image_embed):
            return {"tokens": empty.expand_as(tokens), "image_embed": torch.zeros_like(image_embed)}

    return classifier_free_guidance(_Model(), scale, {"tokens": tokens, "image_embed": image_embed})(x_t, t)


class _StandIn:
    """A stand-in decoder whose output depends on x_t, t, the tokens and z_i — and counts its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, x, t, tokens, image_embed):
        self.calls += 1
        text = tokens.float().mean(1)[:, None, None, None]  # [B, 1, 1, 1]
        image = image_embed.sum(1)[:, None, None, None]
        return 0.5 * x + 0.01 * t.float()[:, None, None, None] + 0.1 * text + 0.3 * image


def _guided_cases():
    g = seeded(83)
    tokens = torch.randint(3, 40, (2, 5), generator=g)
    empty = torch.tensor([1, 2, 0, 0, 0])
    for scale in (3.0, 1.25):
        yield Case((_StandIn(), torch.randn(2, 3, 4, 4, generator=g), torch.tensor([10, 500]), tokens,
                    torch.randn(2, 6, generator=g), empty, scale), name=f"scale {scale}")


EX_GUIDED = Exercise(
    "ch08.guided_prediction", guided_prediction, _guided_cases,
    hint="Stack the batch with its unconditional copy: x2 = torch.cat([x_t, x_t]), t2 = torch.cat([t, t]), "
         "tokens2 = torch.cat([tokens, empty.expand_as(tokens)]), z2 = torch.cat([image_embed, "
         "torch.zeros_like(image_embed)]); split the output with .chunk(2) into (cond, uncond) and return "
         "uncond + scale * (cond - uncond).")


def test_guided_prediction(fn) -> bool:
    return EX_GUIDED.check(fn)


# --- 5. One BSR degradation: the anisotropic blur ---------------------------------------------------
def anisotropic_blur(images, sigma_x, sigma_y, theta):
    """Reference: ``images`` [B, C, H, W] convolved, channel by channel, with the normalised kernel
    k(u) ∝ exp(-½ uᵀ Σ⁻¹ u), Σ = R(θ) diag(σ_x², σ_y²) R(θ)ᵀ, u = (x, y) offsets in
    [-r, r]², r = ceil(3 max σ) (at least 1, below the image side), borders reflected."""
    return package_anisotropic_blur(images, sigma_x, sigma_y, theta)


def _blur_cases():
    g = seeded(84)
    yield Case((torch.rand(2, 3, 12, 12, generator=g), 1.5, 0.5, 0.6), name="elongated, rotated 0.6 rad")
    yield Case((torch.rand(1, 3, 10, 10, generator=g), 0.8, 0.8, 0.0), name="isotropic")
    yield Case((torch.rand(1, 1, 9, 9, generator=g), 0.4, 1.2, 2.0), name="one channel, tall")


EX_BLUR = Exercise(
    "ch08.anisotropic_blur", anisotropic_blur, _blur_cases,
    hint="r = max(1, math.ceil(3 * max(sigma_x, sigma_y))), capped at min(H, W) - 1. Offsets o = torch.arange(-r, r + 1.); "
         "y, x = torch.meshgrid(o, o, indexing='ij'). R = [[cos θ, -sin θ], [sin θ, cos θ]], Σ = R diag(σx², σy²) Rᵀ, "
         "P = Σ⁻¹; the exponent is -½ (P00 x² + 2 P01 x y + P11 y²). Divide the kernel by its sum, pad with "
         "F.pad(images, (r,) * 4, mode='reflect') and F.conv2d(padded, kernel.expand(C, 1, K, K), groups=C).")


def test_anisotropic_blur(fn) -> bool:
    return EX_BLUR.check(fn)


check = checker("ch08")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
