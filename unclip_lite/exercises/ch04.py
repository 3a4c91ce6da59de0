"""Chapter 04 exercises: the machinery of a diffusion model, piece by piece.

The forward process (``q_sample``), the posterior mean, the training loss, one ancestral step, the
whole sampling loop, the timestep embedding, the U-Net's residual block and a DDIM step. Every
reference is the package's own implementation (:class:`~unclip_lite.diffusion.GaussianDiffusion`,
:mod:`unclip_lite.diffusion.samplers`, :func:`unclip_lite.nn.timestep_embedding`,
:class:`unclip_lite.unet.ResBlock`), rebuilt from the ᾱ table the learner is given, so the
exercises and the code the rest of the course runs cannot drift apart.

Timesteps are 0-based indices into the schedule, as in the package: ``t ∈ {0, …, T-1}``.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from unclip_lite.diffusion import GaussianDiffusion, ddpm_sample_loop, get_betas
from unclip_lite.diffusion import ddim_step as _ddim_step
from unclip_lite.diffusion import ddpm_step as _ddpm_step
from unclip_lite.diffusion.toy import GaussianMixture
from unclip_lite.exercises.core import Case, Exercise, ModuleExercise, checker, compare_outputs, seeded
from unclip_lite.nn import timestep_embedding as _timestep_embedding
from unclip_lite.unet import ResBlock as _PackageResBlock


def _diffusion_from_alphas_cumprod(alphas_cumprod: torch.Tensor) -> GaussianDiffusion:
    """The process whose ᾱ table is ``alphas_cumprod`` (β_t = 1 - ᾱ_t / ᾱ_{t-1})."""
    ab = torch.as_tensor(alphas_cumprod, dtype=torch.float64)
    prev = torch.cat([ab.new_ones(1), ab[:-1]])
    return GaussianDiffusion(1.0 - ab / prev)


def _schedule(name: str, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(betas, alphas_cumprod)``, both ``[T]`` float64."""
    betas = get_betas(name, T)
    return betas, torch.cumprod(1.0 - betas, dim=0)


def _t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long)


# --- 1. Sampling q(x_t | x_0) in one shot ---------------------------------------------------
def q_sample(x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
             alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε for images ``[B, C, H, W]`` and timesteps ``[B]``
    (DDPM eq. 4), via :meth:`GaussianDiffusion.q_sample`."""
    return _diffusion_from_alphas_cumprod(alphas_cumprod).q_sample(x0, t, noise)


def _q_sample_cases():
    g = seeded(40)
    _, cosine = _schedule("cosine", 1000)
    _, linear = _schedule("linear", 1000)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((x0, _t(250, 250, 250, 250), eps, cosine), name="one t for the whole batch")
    yield Case((x0, _t(0, 999, 500, 10), eps, cosine), name="mixed t: 0, T-1, 500, 10")
    yield Case((x0, _t(0, 0, 0, 0), eps, linear), name="t = 0 (almost clean)")
    yield Case((x0, _t(999, 999, 999, 999), eps, linear), name="t = T-1 (almost pure noise)")
    x1, e1 = 2 * torch.rand(3, 1, 5, 7, generator=g) - 1, torch.randn(3, 1, 5, 7, generator=g)
    _, short = _schedule("linear", 20)
    yield Case((x1, _t(3, 19, 1), e1, short), name="T = 20, non-square images")


EX_Q_SAMPLE = Exercise("ch04.q_sample", q_sample, _q_sample_cases,
                       hint="look up ab = alphas_cumprod[t] (one value per example), reshape it to "
                            "[B, 1, 1, 1] so it broadcasts over the image, then "
                            "ab.sqrt() * x0 + (1 - ab).sqrt() * noise.")


def test_q_sample(fn) -> bool:
    return EX_Q_SAMPLE.check(fn)


# --- 2. The posterior mean μ̃_t(x_t, x_0) ----------------------------------------------------
def posterior_mean(x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, betas: torch.Tensor,
                   alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: the mean of q(x_{t-1} | x_t, x_0) (DDPM eq. 7), with ᾱ_{-1} = 1, via
    :meth:`GaussianDiffusion.q_posterior_mean_variance`."""
    return GaussianDiffusion(betas).q_posterior_mean_variance(x0, xt, t)[0]


def _posterior_cases():
    g = seeded(41)
    betas, ab = _schedule("cosine", 1000)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    xt = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((x0, xt, _t(400, 400, 400, 400), betas, ab), name="one t for the whole batch")
    yield Case((x0, xt, _t(1, 999, 600, 50), betas, ab), name="mixed t: 1, T-1, 600, 50")
    yield Case((x0, xt, _t(0, 0, 0, 0), betas, ab), name="t = 0 (the mean is x_0 itself)")
    lb, lab = _schedule("linear", 1000)
    yield Case((x0, xt, _t(0, 1, 998, 999), lb, lab), name="linear schedule, both ends")
    sb, sab = _schedule("cosine", 10)
    x1, y1 = torch.randn(2, 1, 3, 5, generator=g), torch.randn(2, 1, 3, 5, generator=g)
    yield Case((x1, y1, _t(9, 4), sb, sab), name="T = 10, non-square images")


EX_POSTERIOR = Exercise("ch04.posterior_mean", posterior_mean, _posterior_cases, atol=1e-4, rtol=2e-3,
                        hint="ᾱ_{t-1} is alphas_cumprod[t - 1] for t ≥ 1 and 1 at t = 0 (pad the table "
                             "with a leading 1). x_0's coefficient is √ᾱ_{t-1} β_t / (1 - ᾱ_t); x_t's is "
                             "√α_t (1 - ᾱ_{t-1}) / (1 - ᾱ_t) with α_t = 1 - β_t. Shape both [B, 1, 1, 1], and "
                             "compute them in float64 (1 - ᾱ_t is tiny near t = 0).")


def test_posterior_mean(fn) -> bool:
    return EX_POSTERIOR.check(fn)


class _TinyEpsNet(nn.Module):
    """A small stand-in ε-network for the checks: a 3×3 conv of x_t plus a learned vector per
    timestep (through the sinusoidal embedding), so a wrong x_t or a wrong t both show."""

    def __init__(self, channels: int):
        super().__init__()
        with torch.random.fork_rng(devices=[]):  # the same weights every time; the caller's RNG untouched
            torch.manual_seed(4)
            self.conv = nn.Conv2d(channels, channels, 3, padding=1)
            self.time = nn.Linear(16, channels)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = _timestep_embedding(t, 16, max_period=1000)  # [B, 16]
        return self.conv(x) + self.time(emb)[:, :, None, None]  # [B, C, H, W]


# --- 3. The training loss L_simple --------------------------------------------------------------
def diffusion_loss(model, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: L_simple = mean ‖ε - ε_θ(x_t, t)‖² over the batch and every pixel, with
    x_t = q_sample(x0, t, noise) (DDPM eq. 14, Algorithm 1), a scalar that backpropagates to the
    model, via :meth:`GaussianDiffusion.training_losses` (its per-example ``"mse"``, averaged)."""
    return _diffusion_from_alphas_cumprod(alphas_cumprod).training_losses(model, x0, t, noise)["mse"].mean()


class _LossExercise(Exercise):
    """A training step's loss: its value and the gradient it sends to every model parameter."""

    def run(self, fn, case):
        model, *rest = copy.deepcopy(case.args)
        loss = fn(model, *rest, **copy.deepcopy(case.kwargs))
        if isinstance(loss, torch.Tensor) and loss.requires_grad:
            loss.backward()
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for _, p in sorted(model.named_parameters())]
        return loss, grads


def _compare_loss(got, expected):
    (loss, grads), (want, want_grads) = got, expected
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        return f"expected a scalar tensor (0-dim), got {type(loss).__name__} " + (
            f"of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
    problem = compare_outputs(loss, want, atol=1e-5, rtol=1e-4)
    if problem:
        return f"the loss: {problem}"
    problem = compare_outputs(grads, want_grads, atol=1e-5, rtol=1e-3)
    return f"the gradient reaching the model's parameters: {problem}" if problem else None


def _loss_cases():
    g = seeded(43)
    _, cosine = _schedule("cosine", 1000)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    eps = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((_TinyEpsNet(3), x0, _t(0, 999, 500, 10), eps, cosine), name="mixed t: 0, T-1, 500, 10")
    yield Case((_TinyEpsNet(3), x0, _t(300, 300, 300, 300), eps, cosine), name="one t for the whole batch")
    _, short = _schedule("linear", 20)
    x1, e1 = 2 * torch.rand(3, 1, 5, 7, generator=g) - 1, torch.randn(3, 1, 5, 7, generator=g)
    yield Case((_TinyEpsNet(1), x1, _t(19, 0, 7), e1, short), name="T = 20, non-square images")


EX_LOSS = _LossExercise("ch04.diffusion_loss", diffusion_loss, _loss_cases, compare=_compare_loss, kind="step",
                        hint="noise the images with your q_sample at t (same noise), ask the model for its "
                             "prediction model(xt, t), and return ((noise - prediction) ** 2).mean(): one scalar, "
                             "still attached to the graph (no .item(), no torch.no_grad()).")


def test_diffusion_loss(fn) -> bool:
    return EX_LOSS.check(fn)


# --- 4. One ancestral (DDPM) step ----------------------------------------------------------------
def ddpm_step(model, xt: torch.Tensor, t: torch.Tensor, alphas_cumprod: torch.Tensor,
              noise: torch.Tensor) -> torch.Tensor:
    """Reference: x_{t-1} = μ̃_t(x̂_0, x_t) + σ_t z with x̂_0 from ε̂ = model(x_t, t), σ_t² = β̃_t (the
    posterior variance, the package's default ``fixed_variance="small"``), no noise where t = 0, and
    no clipping of x̂_0 (DDPM Algorithm 2), via :func:`unclip_lite.diffusion.ddpm_step`."""
    diffusion = _diffusion_from_alphas_cumprod(alphas_cumprod)
    return _ddpm_step(diffusion, model(xt, t), xt, t, noise, clip_denoised=False).prev_sample


def _ddpm_cases():
    g = seeded(44)
    _, cosine = _schedule("cosine", 1000)
    xt, z = torch.randn(4, 3, 8, 8, generator=g), torch.randn(4, 3, 8, 8, generator=g)
    net = _TinyEpsNet(3)
    yield Case((net, xt, _t(0, 1, 500, 999), cosine, z), name="mixed t: 0 (no noise), 1, 500, T-1")
    yield Case((net, xt, _t(1, 2, 3, 10), cosine, z), name="small t, where β̃_t and β_t differ most")
    yield Case((net, xt, _t(0, 0, 0, 0), cosine, z), name="t = 0 everywhere: no noise at all")
    _, short = _schedule("linear", 20)
    ring = GaussianMixture(torch.tensor([[1.0, 0.0], [-0.5, 0.8]]), 0.1)
    x2, z2 = torch.randn(5, 2, 1, 1, generator=g), torch.randn(5, 2, 1, 1, generator=g)
    yield Case((ring.eps_model(short), x2, _t(19, 10, 3, 1, 0), short, z2),
               name="T = 20, 2-D points as [B, 2, 1, 1] with the exact ε of a mixture")


EX_DDPM = Exercise("ch04.ddpm_step", ddpm_step, _ddpm_cases, atol=1e-4, rtol=2e-3, kind="step",
                   hint="β_t = 1 - ᾱ_t/ᾱ_{t-1} (ᾱ_{-1} = 1). ε̂ = model(xt, t); x̂_0 = (xt - √(1-ᾱ_t) ε̂)/√ᾱ_t (no "
                        "clipping); the mean is your posterior_mean(x̂_0, xt, t, betas, alphas_cumprod); the "
                        "variance is β̃_t = β_t (1-ᾱ_{t-1})/(1-ᾱ_t), not β_t; add √β̃_t · noise only where t > 0.")


def test_ddpm_step(fn) -> bool:
    return EX_DDPM.check(fn)


# --- 5. The whole ancestral sampling loop -------------------------------------------------------
def sample_loop(model, shape, alphas_cumprod: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Reference: DDPM Algorithm 2 from x_T ~ N(0, I) through every step t = T-1, …, 0 of the table,
    drawing from ``generator`` x_T first, then one noise tensor of ``shape`` per step with t > 0 (none
    at t = 0), via :func:`unclip_lite.diffusion.ddpm_sample_loop` (no clipping)."""
    diffusion = _diffusion_from_alphas_cumprod(alphas_cumprod)
    return ddpm_sample_loop(diffusion, model, tuple(shape), generator=generator, clip_denoised=False,
                            progress=False)


def _loop_cases():
    _, cosine = _schedule("cosine", 40)
    two = GaussianMixture(torch.tensor([[1.0, 0.5], [-1.0, -0.5]]), 0.2)
    yield Case((two.eps_model(cosine), (6, 2, 1, 1), cosine, seeded(45)),
               name="T = 40, six 2-D points, the exact ε of a two-mode mixture")
    _, linear = _schedule("linear", 25)
    four = GaussianMixture(torch.randn(3, 4, generator=seeded(46)), 0.3)
    yield Case((four.eps_model(linear), (3, 1, 2, 2), linear, seeded(47)),
               name="T = 25, three 1×2×2 images, a mixture in 4-D")
    _, short = _schedule("cosine", 6)
    yield Case((_TinyEpsNet(3), (2, 3, 4, 4), short, seeded(48)), name="T = 6, a small conv net")


EX_LOOP = Exercise("ch04.sample_loop", sample_loop, _loop_cases, atol=1e-3, rtol=1e-3, kind="loop",
                   hint="x = torch.randn(shape, generator=generator) first; then for i in reversed(range(T)): "
                        "t = torch.full((shape[0],), i, dtype=torch.long); noise = torch.randn(shape, "
                        "generator=generator) if i > 0 else torch.zeros(shape); x = ddpm_step(model, x, t, "
                        "alphas_cumprod, noise). Draw in exactly this order, or the seeded noise differs.")


def test_sample_loop(fn) -> bool:
    return EX_LOOP.check(fn)


# --- 6. The sinusoidal timestep embedding ------------------------------------------------------
def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000) -> torch.Tensor:
    """Reference: ``[B, dim]`` float32, ``[cos(t w_0) … cos(t w_{h-1}), sin(t w_0) … sin(t w_{h-1})]``
    with h = dim // 2 and w_i = max_period^(-i/h), a zero column appended when ``dim`` is odd
    (Vaswani et al. 2017 §3.5 in ADM's cos-first order), via :func:`unclip_lite.nn.timestep_embedding`."""
    return _timestep_embedding(t, dim, max_period)


def _embedding_cases():
    g = seeded(49)
    yield Case((_t(0, 1, 10, 999), 8), name="integer timesteps, dim 8")
    yield Case((torch.tensor([0.5, 2.25, 123.7]), 16), name="fractional timesteps, dim 16")
    yield Case((_t(3, 400), 7), name="odd dim 7: a zero column at the end")
    yield Case((_t(5, 50, 500), 6), {"max_period": 100}, name="max_period = 100")
    yield Case((torch.randint(0, 1000, (5,), generator=g), 64), name="dim 64, as in a U-Net")


EX_EMBEDDING = Exercise("ch04.timestep_embedding", timestep_embedding, _embedding_cases, atol=2e-4, rtol=1e-3,
                        hint="half = dim // 2; freqs = exp(-log(max_period) · arange(half) / half) (w_0 = 1); "
                             "args = t.float()[:, None] * freqs[None]; torch.cat([cos(args), sin(args)], -1) "
                             "(cos first, not interleaved); for an odd dim append a column of zeros "
                             "(F.pad(emb, (0, 1))).")


def test_timestep_embedding(fn) -> bool:
    return EX_EMBEDDING.check(fn)


# --- 7. The U-Net's residual block ---------------------------------------------------------------
class ResBlock(_PackageResBlock):
    """Reference: ADM's residual block with scale-shift norm (Dhariwal & Nichol 2021 §3, "adaptive
    group normalisation"), the package's :class:`unclip_lite.unet.ResBlock` without resampling::

        h = in_conv(SiLU(in_norm(x)))                      [B, C_out, H, W]
        scale, shift = chunk(emb_proj(SiLU(emb)), 2)       [B, C_out, 1, 1] each
        h = out_conv(dropout(SiLU(out_norm(h) · (1 + scale) + shift)))
        return skip(x) + h                                 skip: identity, or a 1×1 conv when C changes

    ``out_conv`` starts at zero, so a fresh block is its skip path.
    """

    def __init__(self, channels: int, emb_dim: int, out_channels: int | None = None, dropout: float = 0.0,
                 num_groups: int = 32):
        super().__init__(channels, emb_dim, out_channels, dropout, use_scale_shift_norm=True, num_groups=num_groups)


class _ResBlockExercise(ModuleExercise):
    """:class:`ModuleExercise` with every weight of the reference drawn at random before it is copied
    into the learner's block: with ``out_conv`` at zero the whole residual branch would be invisible."""

    def prepare(self, reference):
        g = seeded(50)
        with torch.no_grad():
            for name, p in sorted(reference.named_parameters()):
                p.copy_(0.4 * torch.randn(p.shape, generator=g) + (1.0 if "norm.weight" in name else 0.0))


def _resblock_cases():
    g = seeded(51)
    yield Case(({"channels": 8, "emb_dim": 12, "out_channels": 16, "num_groups": 4},
                torch.randn(2, 8, 6, 6, generator=g), torch.randn(2, 12, generator=g)),
               name="8 → 16 channels (the skip is a 1×1 conv), 4 groups")
    yield Case(({"channels": 16, "emb_dim": 8},
                torch.randn(3, 16, 4, 5, generator=g), torch.randn(3, 8, generator=g)),
               name="16 → 16 channels (identity skip), 32 groups asked for: gcd(32, 16) = 16")
    yield Case(({"channels": 6, "emb_dim": 4, "out_channels": 12},
                torch.randn(1, 6, 3, 3, generator=g), torch.randn(1, 4, generator=g)),
               name="6 → 12 channels: gcd(32, 6) = 2 groups in, gcd(32, 12) = 4 out")


EX_RESBLOCK = _ResBlockExercise(
    "ch04.ResBlock", ResBlock, _resblock_cases, atol=1e-4, rtol=1e-3, kind="module",
    hint="GroupNorm(math.gcd(num_groups, C), C) for both norms; emb_proj maps emb_dim → 2·out_channels, "
         "scale, shift = e.chunk(2, dim=1) in that order (scale first), shaped [B, C_out, 1, 1]; "
         "h = out_norm(h) * (1 + scale) + shift; the skip is nn.Identity() when the widths agree, else "
         "nn.Conv2d(channels, out_channels, 1); return skip(x) + h.")


def test_ResBlock(cls) -> bool:
    return EX_RESBLOCK.check(cls)


# --- 8. One deterministic DDIM step -----------------------------------------------------------
def ddim_step(eps: torch.Tensor, xt: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor,
              alphas_cumprod: torch.Tensor) -> torch.Tensor:
    """Reference: DDIM's η = 0 update from t to t_prev < t (Song et al. 2021, eq. 12)::

        x̂_0 = (x_t - √(1-ᾱ_t) ε) / √ᾱ_t,     x_prev = √ᾱ_prev x̂_0 + √(1-ᾱ_prev) ε

    with ᾱ_prev = 1 when t_prev = -1 and no clipping of x̂_0, via :func:`unclip_lite.diffusion.ddim_step`.
    """
    diffusion = _diffusion_from_alphas_cumprod(alphas_cumprod)
    return _ddim_step(diffusion, eps, xt, t, t_prev, eta=0.0, clip_denoised=False).prev_sample


def _ddim_cases():
    g = seeded(42)
    _, ab = _schedule("cosine", 1000)
    eps = torch.randn(4, 3, 8, 8, generator=g)
    x0 = 2 * torch.rand(4, 3, 8, 8, generator=g) - 1
    t = _t(500, 500, 500, 500)
    xt = q_sample(x0, t, eps, ab)
    yield Case((eps, xt, t, _t(480, 480, 480, 480), ab), name="a consistent x_t, 500 → 480")
    xr = torch.randn(4, 3, 8, 8, generator=g)
    yield Case((eps, xr, _t(999, 700, 20, 0), _t(899, 600, -1, -1), ab),
               name="mixed steps: T-1 → 899, 700 → 600, 20 → clean, 0 → clean")
    yield Case((eps, xr, _t(0, 0, 0, 0), _t(-1, -1, -1, -1), ab), name="t = 0 → t_prev = -1 (ᾱ = 1)")
    _, lab = _schedule("linear", 1000)
    yield Case((eps, xr, _t(999, 999, 1, 600), _t(998, 0, 0, 300), lab), name="linear schedule, long and short jumps")


EX_DDIM = Exercise("ch04.ddim_step", ddim_step, _ddim_cases, atol=1e-4, rtol=2e-3, kind="step",
                   hint="ᾱ_prev is alphas_cumprod[t_prev] for t_prev ≥ 0 and 1 for t_prev = -1 (pad the "
                        "table with a leading 1 and index it at t_prev + 1). First recover x̂_0 from ε, "
                        "then rebuild the point at t_prev with the *same* ε; do not clip x̂_0.")


def test_ddim_step(fn) -> bool:
    return EX_DDIM.check(fn)


check = checker("ch04")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
