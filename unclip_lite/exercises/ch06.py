"""Chapter 06 exercises: gradient guidance (the ε update, the guide's gradient by autograd, one guided
DDIM step), the classifier's log-probability, and the extra inputs and paste-back of GLIDE's inpainting
and upsampling models.

Every reference runs the package's own code, so the exercises and the samplers the course
uses cannot drift apart: :func:`unclip_lite.diffusion.guidance.gradient_guidance` (with a
stand-in model and log-probability; it also computes the guide's gradient, and with
:func:`unclip_lite.diffusion.samplers.ddim_step` makes the guided step),
:meth:`unclip_lite.glide.classifier.NoisedClassifier.log_prob`
(on a stand-in that returns fixed logits), :func:`unclip_lite.glide.inpaint.inpaint_channels`,
:func:`unclip_lite.glide.inpaint.paste_known` and :func:`unclip_lite.glide.upsample.upsample_channels`.
tests/test_exercises_ch06.py checks the references against the samplers ``GlideBundle.sample`` runs.
"""
from __future__ import annotations

import copy
from collections.abc import Callable
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.guidance import gradient_guidance
from unclip_lite.diffusion.samplers import ddim_step
from unclip_lite.exercises.core import Case, Exercise, compare_outputs, seeded, checker
from unclip_lite.glide.classifier import ClassifierConfig, NoisedClassifier
from unclip_lite.glide.inpaint import inpaint_channels, paste_known
from unclip_lite.glide.upsample import upsample_channels
from unclip_lite.unet import UNetConfig

LogProbFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t [B, C, H, W], t [B]) -> log p(y | x_t) [B]
ModelFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (x_t, t) -> the network's output [B, C, H, W]


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


# --- 2. The guide's gradient, by autograd ---------------------------------------------------------
def guide_gradient(log_prob_fn: LogProbFn, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Reference: ∇_{x_t} log p(y | x_t) ``[B, C, H, W]`` for ``log_prob_fn(x, t) -> [B]``, one
    log-probability per image. The images are independent, so the gradient of the *sum* over the batch
    holds each image's own gradient. Samplers run under ``torch.no_grad()``, so autograd is switched
    back on here, on a detached copy of x_t (the caller's tensor is left alone), and the result is a
    plain tensor, not part of a graph (what :func:`gradient_guidance` does at every call)."""
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)  # a fresh leaf: the caller's x_t is untouched
        log_prob = log_prob_fn(x, t)  # [B]
        return torch.autograd.grad(log_prob.sum(), x)[0]  # [B, C, H, W], no graph


def tiny_classifier(seed: int = 0) -> NoisedClassifier:
    """A randomly initialised noised classifier (the package's ADM-style model) on 8 px images."""
    torch.manual_seed(seed)
    unet = UNetConfig(model_channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(4,),
                      num_head_channels=8, image_size=8, num_groups=4)
    return NoisedClassifier(ClassifierConfig(unet, {"colour": 8, "shape": 5}, pool_heads=2)).eval().requires_grad_(False)


def _quadratic(mu: torch.Tensor, weight: torch.Tensor, diffusion: GaussianDiffusion) -> LogProbFn:
    """log p = -½ w_b ‖x − μ‖² / (1 − ᾱ_t): gradient w_b (μ − x) / (1 − ᾱ_t), in closed form."""
    def log_prob(x, t):
        var = diffusion.one_minus_alphas_cumprod[t].to(x)  # [B]
        return -0.5 * weight * ((x - mu) ** 2).flatten(1).sum(1) / var
    return log_prob


def _linear_softmax(weight: torch.Tensor, labels: torch.Tensor) -> LogProbFn:
    """log softmax(W x)[y]: a linear classifier of the whole image."""
    return lambda x, t: F.log_softmax(x.flatten(1) @ weight.T, dim=-1).gather(1, labels[:, None]).squeeze(1)


def _classifier_log_prob(model: NoisedClassifier, labels: dict[str, torch.Tensor]) -> LogProbFn:
    return lambda x, t: model.log_prob(x, t, labels)


class _GradientExercise(Exercise):
    """Calls the candidate under ``torch.no_grad()``, as a sampler does, and returns its gradient with
    whether it is still attached to a graph and whether the caller's x_t was switched to requires_grad."""

    def run(self, fn, case):
        log_prob_fn, x_t, t = copy.deepcopy(case.args)
        with torch.no_grad():
            grad = fn(log_prob_fn, x_t, t)
        attached = isinstance(grad, torch.Tensor) and grad.requires_grad
        return grad, attached, x_t.requires_grad


def _compare_gradient(got, expected) -> str | None:
    grad, attached, touched = got
    if touched:
        return ("the caller's x_t now has requires_grad=True: differentiate with respect to a detached copy, "
                "x = x_t.detach().requires_grad_(True), so the sampler's tensors stay out of any graph")
    if attached:
        return "the gradient returned is still part of a graph (requires_grad=True): no create_graph, return it as is"
    return compare_outputs(grad, expected[0], atol=1e-5, rtol=1e-4)


def _gradient_cases():
    g = seeded(5)
    cosine = GaussianDiffusion.from_schedule("cosine", 1000)
    x, mu = torch.randn(3, 3, 4, 4, generator=g), torch.randn(3, 3, 4, 4, generator=g)
    yield Case((_quadratic(mu, torch.tensor([1.0, 0.5, 2.0]), cosine), x, torch.tensor([100, 500, 900])),
               name="a quadratic log p, 3 images (its gradient is w (μ − x) / (1 − ᾱ_t))")
    weight, labels = torch.randn(6, 48, generator=g), torch.randint(6, (4,), generator=g)
    yield Case((_linear_softmax(weight, labels), torch.randn(4, 3, 4, 4, generator=g), torch.tensor([10, 20, 30, 40])),
               name="a linear softmax classifier, 4 images")
    labels = {"colour": torch.tensor([2, 5]), "shape": torch.tensor([4, 0])}
    yield Case((_classifier_log_prob(tiny_classifier(), labels), torch.randn(2, 3, 8, 8, generator=g),
                torch.tensor([250, 750])), name="the package's noised classifier (random weights), 2 images")
    yield Case((_quadratic(mu[:1], torch.tensor([3.0]), cosine), x[:1], torch.tensor([999])), name="one image")


EX_GUIDE_GRADIENT = _GradientExercise(
    "ch06.guide_gradient", guide_gradient, _gradient_cases, compare=_compare_gradient,
    hint="with torch.enable_grad(): x = x_t.detach().requires_grad_(True); log_prob = log_prob_fn(x, t) "
         "([B]); return torch.autograd.grad(log_prob.sum(), x)[0]. The sum, not the mean: each image's "
         "gradient must not shrink with the batch. The check calls it under torch.no_grad(), as samplers do.")


def test_guide_gradient(fn) -> bool:
    return EX_GUIDE_GRADIENT.check(fn)


# --- 3. One guided DDIM step ----------------------------------------------------------------------
def guided_ddim_step(diffusion: GaussianDiffusion, model_fn: ModelFn, log_prob_fn: LogProbFn, x_t: torch.Tensor,
                     t: torch.Tensor, t_prev: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference: one deterministic DDIM step (η = 0) from t to t_prev < t (-1: to the clean image) whose
    ε̂ is pushed up ∇ log p(y | x_t) (ADM Algorithm 2): x_{t_prev} ``[B, C, H, W]``. ``model_fn(x, t)``
    outputs what ``diffusion.parameterization`` says (ε, x_0 or v), so the shift goes through ε̂ and back;
    ``t``, ``t_prev`` ``[B]`` index ``diffusion``'s own (unrespaced) schedule."""
    guided = gradient_guidance(diffusion, model_fn, log_prob_fn, scale)
    return ddim_step(diffusion, guided(x_t, t), x_t, t, t_prev).prev_sample


def _mixing_model(g: torch.Generator, C: int) -> ModelFn:
    """A stand-in network: a fixed mix of the channels, bent by tanh, plus a term in t."""
    mix, bias = torch.randn(C, C, generator=g) * 0.5, torch.randn(C, generator=g)
    return lambda x, t: torch.tanh(torch.einsum("dc,bchw->bdhw", mix, x)) \
        + bias.view(1, C, 1, 1) * (t.view(-1, 1, 1, 1).float() / 1000)


def _guided_step_cases():
    g = seeded(6)
    B, C, S = 2, 3, 4
    for parameterization, schedule, T, t, t_prev, scale in (
            ("eps", "cosine", 1000, [900, 300], [880, 280], 3.0),
            ("v", "cosine", 1000, [600, 600], [500, 500], 10.0),
            ("x0", "linear", 200, [150, 40], [120, 20], 5.0),
            ("eps", "cosine", 1000, [20, 20], [-1, -1], 50.0),
            ("eps", "linear", 200, [100, 199], [80, 150], 0.0)):
        diffusion = GaussianDiffusion.from_schedule(schedule, T, parameterization=parameterization)
        mu = torch.randn(B, C, S, S, generator=g) * 0.5
        log_prob = _quadratic(mu, torch.tensor([1.0, 0.3]), diffusion)
        if parameterization == "v":
            log_prob = _linear_softmax(torch.randn(5, C * S * S, generator=g), torch.tensor([1, 3]))
        yield Case((diffusion, _mixing_model(g, C), log_prob, torch.randn(B, C, S, S, generator=g),
                    torch.tensor(t), torch.tensor(t_prev), scale),
                   name=f"{parameterization}-model, {schedule} schedule, t = {t} -> {t_prev}, scale {scale:g}")


class _StepExercise(Exercise):
    """Runs the candidate step under ``torch.no_grad()``, as the sampling loop does."""

    def run(self, fn, case):
        with torch.no_grad():
            return super().run(fn, case)


EX_GUIDED_STEP = _StepExercise(
    "ch06.guided_ddim_step", guided_ddim_step, _guided_step_cases, atol=1e-4, rtol=1e-3, kind="step",
    hint="out = model_fn(x_t, t); eps = diffusion.eps_from_output(x_t, t, out); grad = guide_gradient(log_prob_fn, "
         "x_t, t) at x_t and t; eps = gradient_guided_eps(eps, grad, diffusion.sqrt_one_minus_alphas_cumprod[t].float(), "
         "scale); then ddim_step(diffusion, diffusion.output_from_eps(x_t, t, eps), x_t, t, t_prev).prev_sample.")


def test_guided_ddim_step(fn) -> bool:
    return EX_GUIDED_STEP.check(fn)


# --- 4. The classifier's log-probability -----------------------------------------------------
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


# --- 5. The inpainting model's input -------------------------------------------------------------
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


# --- 6. Pasting the known pixels into the prediction -------------------------------------------
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


# --- 7. The upsampler's input ------------------------------------------------------------------
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


check = checker("ch06")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
