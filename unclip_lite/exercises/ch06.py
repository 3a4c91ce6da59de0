"""Chapter 06 exercises: gradient guidance, the classifier's log-probability, and the extra
inputs and paste-back of GLIDE's inpainting and upsampling models.

Every reference runs the package's own code, so the exercises and the samplers the course
uses cannot drift apart: :func:`unclip_lite.diffusion.guidance.gradient_guidance` (with a
stand-in model and log-probability), :meth:`unclip_lite.glide.classifier.NoisedClassifier.log_prob`
(on a stand-in that returns fixed logits), :func:`unclip_lite.glide.inpaint.inpaint_channels`,
:func:`unclip_lite.glide.inpaint.paste_known` and :func:`unclip_lite.glide.upsample.upsample_channels`.
"""
from __future__ import annotations

from types import SimpleNamespace

import torch

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.guidance import gradient_guidance
from unclip_lite.exercises.core import Case, Exercise, seeded
from unclip_lite.glide.classifier import NoisedClassifier
from unclip_lite.glide.inpaint import inpaint_channels, paste_known
from unclip_lite.glide.upsample import upsample_channels


# --- 1. The gradient-guidance shift of ε ---------------------------------------------------
def gradient_guided_eps(eps: torch.Tensor, grad: torch.Tensor, sqrt_one_minus_ab: torch.Tensor,
                        scale: float) -> torch.Tensor:
    """Reference: ε̂ = ε − √(1−ᾱ_t) · s · ∇ log p(y | x_t) (Dhariwal & Nichol 2021, Algorithm 2;
    GLIDE's CLIP guidance). ``eps``, ``grad`` [B, C, H, W]; ``sqrt_one_minus_ab`` [B], one per image."""
    B = len(eps)
    # an ε-model: its output is already ε̂, so both conversions are the identity
    diffusion = SimpleNamespace(parameterization="eps", sqrt_one_minus_alphas_cumprod=sqrt_one_minus_ab,
                                eps_from_output=lambda x, t, out: out, output_from_eps=lambda x, t, eps: eps)
    # a log-probability whose gradient with respect to x is exactly ``grad``: Σ x · grad
    log_prob = lambda x, t: (x * grad.to(x)).flatten(1).sum(1)  # noqa: E731
    guided = gradient_guidance(diffusion, lambda x, t: eps, log_prob, scale)
    return guided(torch.zeros_like(eps), torch.arange(B))


def _guided_eps_cases():
    g = seeded(0)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    sigma = lambda B: 0.05 + 0.9 * torch.rand(B, generator=g)  # noqa: E731
    yield Case((r(2, 3, 4, 4), r(2, 3, 4, 4), sigma(2), 3.0), name="two images, scale 3")
    yield Case((r(4, 3, 2, 2), r(4, 3, 2, 2), torch.tensor([0.02, 0.3, 0.7, 0.999]), 10.0),
               name="four noise levels, scale 10")
    yield Case((r(1, 3, 8, 8), r(1, 3, 8, 8), torch.tensor([0.5]), 0.0), name="scale 0: ε unchanged")
    yield Case((r(3, 1, 4, 4), torch.zeros(3, 1, 4, 4), sigma(3), 5.0), name="zero gradient: no push")
    yield Case((r(2, 3, 4, 4), r(2, 3, 4, 4) * 4, torch.tensor([1.0, 1.0]), 0.5),
               name="pure noise (√(1−ᾱ) = 1), scale 0.5")


EX_GUIDED_EPS = Exercise(
    "ch06.gradient_guided_eps", gradient_guided_eps, _guided_eps_cases,
    hint="ε points *against* the score, so climbing log p means subtracting: "
         "eps - sqrt_one_minus_ab[:, None, None, None] * scale * grad (reshape the [B] factor to broadcast).")


def test_gradient_guided_eps(fn) -> bool:
    return EX_GUIDED_EPS.check(fn)


# --- 2. The classifier's log-probability -----------------------------------------------------
class _FixedLogits:
    """Stands in for a NoisedClassifier: whatever it is asked, it returns ``logits``."""

    def __init__(self, logits: dict[str, torch.Tensor]):
        self.logits = logits
        self.heads = dict.fromkeys(logits)

    def __call__(self, x_t, t):
        return self.logits


def classifier_log_prob(logits: dict[str, torch.Tensor], labels: dict[str, torch.Tensor]) -> torch.Tensor:
    """Reference: log p(labels | x_t) = Σ over the labelled heads of log softmax(logits[head])[label]: [B].
    ``logits`` maps head -> [B, classes]; ``labels`` maps some of those heads -> [B] class indices."""
    return NoisedClassifier.log_prob(_FixedLogits(logits), None, None, labels)


def _log_prob_cases():
    g = seeded(1)
    r = lambda *shape: torch.randn(*shape, generator=g) * 3  # noqa: E731
    pick = lambda n, B: torch.randint(n, (B,), generator=g)  # noqa: E731
    yield Case(({"colour": r(4, 8), "shape": r(4, 5)}, {"colour": pick(8, 4), "shape": pick(5, 4)}),
               name="colour and shape heads, 4 images")
    yield Case(({"colour": r(3, 8), "shape": r(3, 5)}, {"colour": pick(8, 3)}),
               name="only the colour is asked for")
    yield Case(({"colour": r(2, 8) + 50, "shape": r(2, 5) - 20}, {"colour": pick(8, 2), "shape": pick(5, 2)}),
               name="large logits (a stable log softmax is needed)")
    yield Case(({"label": r(5, 10)}, {"label": pick(10, 5)}), name="one head with 10 classes")
    yield Case(({"colour": r(1, 8), "shape": r(1, 5)}, {"colour": torch.tensor([2]), "shape": torch.tensor([4])}),
               name="one image")


EX_LOG_PROB = Exercise(
    "ch06.classifier_log_prob", classifier_log_prob, _log_prob_cases,
    hint="for each head in labels: F.log_softmax(logits[head], dim=-1) picked at the label "
         "(.gather(1, y[:, None]).squeeze(1)); add the heads up.")


def test_classifier_log_prob(fn) -> bool:
    return EX_LOG_PROB.check(fn)


# --- 3. The inpainting model's input -------------------------------------------------------------
def inpaint_input(x_t: torch.Tensor, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference: x_t [B, 3, H, W] ⊕ image · mask [B, 3, H, W] ⊕ mask [B, 1, H, W] -> [B, 7, H, W]
    (image in [-1, 1], mask 1 = keep, 0 = fill)."""
    return torch.cat([x_t, inpaint_channels(image, mask)], dim=1)


def _image_and_mask(g, B: int, size: int):
    image = torch.rand(B, 3, size, size, generator=g) * 2 - 1
    mask = torch.ones(B, 1, size, size)
    for b in range(B):
        top, left = torch.randint(0, size // 2, (2,), generator=g).tolist()
        mask[b, :, top:top + size // 2, left:left + size // 2] = 0
    return image, mask


def _inpaint_cases():
    g = seeded(2)
    for B, size in ((2, 8), (3, 4), (1, 16)):
        image, mask = _image_and_mask(g, B, size)
        yield Case((torch.randn(B, 3, size, size, generator=g), image, mask), name=f"{B} images of {size} px")
    image, _ = _image_and_mask(g, 2, 8)
    yield Case((torch.randn(2, 3, 8, 8, generator=g), image, torch.zeros(2, 1, 8, 8)),
               name="erase everything (text-to-image)")


EX_INPAINT_INPUT = Exercise(
    "ch06.inpaint_input", inpaint_input, _inpaint_cases,
    hint="torch.cat([x_t, image * mask, mask], dim=1): the noisy image first, then the known pixels "
         "(zero in the hole) and the mask itself.")


def test_inpaint_input(fn) -> bool:
    return EX_INPAINT_INPUT.check(fn)


# --- 4. Pasting the known pixels into the prediction -------------------------------------------
def paste_eps(diffusion: GaussianDiffusion, x_t: torch.Tensor, t: torch.Tensor, eps: torch.Tensor,
              image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Reference: x̂_0 from ε (clamped to [-1, 1]), x̂_0 ← mask · image + (1 − mask) · x̂_0, and the
    ε that points from x_t at that x̂_0. Shapes [B, 3, H, W] (mask [B, 1, H, W]), t [B]."""
    return paste_known(diffusion, lambda x, t: eps, image, mask)(x_t, t)


def _paste_cases():
    g = seeded(3)
    cosine = GaussianDiffusion.from_schedule("cosine", 1000)
    linear = GaussianDiffusion.from_schedule("linear", 200)
    for diffusion, t, size, name in ((cosine, [20, 400], 8, "cosine, t = 20 and 400"),
                                     (cosine, [999, 700, 100], 4, "cosine, t = 999, 700, 100"),
                                     (linear, [150], 8, "linear, 200 steps, t = 150")):
        B = len(t)
        image, mask = _image_and_mask(g, B, size)
        x_t = torch.randn(B, 3, size, size, generator=g)
        yield Case((diffusion, x_t, torch.tensor(t), torch.randn(B, 3, size, size, generator=g), image, mask),
                   name=name)
    image, _ = _image_and_mask(g, 2, 4)
    yield Case((cosine, torch.randn(2, 3, 4, 4, generator=g), torch.tensor([300, 800]),
                torch.randn(2, 3, 4, 4, generator=g), image, torch.ones(2, 1, 4, 4)),
               name="nothing to fill: x̂_0 is the image everywhere")


EX_PASTE = Exercise(
    "ch06.paste_eps", paste_eps, _paste_cases, atol=1e-4, rtol=1e-3,
    hint="x0 = diffusion.predict_x0_from_eps(x_t, t, eps).clamp(-1, 1); "
         "x0 = mask * image + (1 - mask) * x0; return diffusion.predict_eps_from_x0(x_t, t, x0).")


def test_paste_eps(fn) -> bool:
    return EX_PASTE.check(fn)


# --- 5. The upsampler's input ------------------------------------------------------------------
def upsampler_input(x_t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """Reference: x_t [B, 3, S, S] ⊕ bilinear(low_res [B, 3, s, s] -> S, align_corners=False) -> [B, 6, S, S]."""
    return torch.cat([x_t, upsample_channels(low_res, x_t.shape[-1])], dim=1)


def _upsample_cases():
    g = seeded(4)
    for B, s, S in ((2, 4, 8), (1, 8, 32), (3, 4, 16), (2, 6, 6)):
        low = torch.rand(B, 3, s, s, generator=g) * 2 - 1
        yield Case((torch.randn(B, 3, S, S, generator=g), low), name=f"{B} images, {s} px -> {S} px")


EX_UPSAMPLER_INPUT = Exercise(
    "ch06.upsampler_input", upsampler_input, _upsample_cases,
    hint="F.interpolate(low_res, size=(S, S), mode=\"bilinear\", align_corners=False) with S = x_t.shape[-1], "
         "then torch.cat([x_t, upsampled], dim=1): the noisy image first.")


def test_upsampler_input(fn) -> bool:
    return EX_UPSAMPLER_INPUT.check(fn)
