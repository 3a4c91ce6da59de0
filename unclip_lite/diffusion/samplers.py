"""Sampling: DDPM ancestral steps, DDIM steps, their loops, and DDIM inversion.

Each loop is a generator, ``*_sample_loop_progressive``, that yields every intermediate sample
and x̂_0 (to watch or plot a run); ``ddpm_sample_loop`` / ``ddim_sample_loop`` run it to the end.

Every loop needs only ``model_fn(x, t) -> output`` where ``t`` is a ``[B]`` long tensor of
*model* timesteps (the original ones, even on a respaced process). Classifier-free guidance,
class conditioning, etc. are layered on by wrapping the network in such a function, e.g.::

    def guided(x, t):                      # GLIDE §3.2 / Ho & Salimans 2022
        eps_c, eps_u = net(x, t, text), net(x, t, empty)
        return eps_u + scale * (eps_c - eps_u)

Step functions work on indices into ``diffusion``'s own schedule (0 … K-1 for a respaced one).
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import NamedTuple

import torch
from tqdm.auto import tqdm

from unclip_lite.diffusion.gaussian import GaussianDiffusion, ModelFn

SAMPLERS = ("ddpm", "ddim")


class StepOutput(NamedTuple):
    prev_sample: torch.Tensor  # x_{t-1}  [B, C, H, W]
    pred_x0: torch.Tensor      # x̂_0 used for the step


def _timestep_tensor(t: int | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=like.device, dtype=torch.long).reshape(-1)
    return t.expand(len(like)) if t.numel() == 1 else t  # [B]


def _randn(shape: Sequence[int], generator: torch.Generator | None, device, dtype) -> torch.Tensor:
    """Gaussian noise drawn on the generator's device (so seeds reproduce), then moved."""
    gen_device = generator.device if generator is not None else device
    return torch.randn(tuple(shape), generator=generator, device=gen_device, dtype=dtype).to(device)


def ddpm_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, xt: torch.Tensor,
              t: int | torch.Tensor, noise: torch.Tensor, clip_denoised: bool | float = True) -> StepOutput:
    """One ancestral step x_{t-1} = μ_θ(x_t, t) + σ_t z (DDPM Algorithm 2, eq. 11 via the
    posterior of eqs. 6–7); no noise is added at t = 0."""
    t = _timestep_tensor(t, xt)
    p = diffusion.p_mean_variance(model_output, xt, t, clip_denoised)
    nonzero = (t != 0).to(xt.dtype).view(-1, *([1] * (xt.dim() - 1)))  # [B, 1, 1, 1]
    return StepOutput(p.mean + nonzero * torch.exp(0.5 * p.log_variance) * noise, p.pred_x0)


def ddim_sigma(diffusion: GaussianDiffusion, t: torch.Tensor, t_prev: torch.Tensor,
               eta: float, like: torch.Tensor) -> torch.Tensor:
    """σ_t(η) = η √((1-ᾱ_prev)/(1-ᾱ_t)) √(1-ᾱ_t/ᾱ_prev) (DDIM eq. 16); η = 1 is DDPM's β̃."""
    ab_t = diffusion._extract(diffusion.alphas_cumprod, t, like)
    ab_prev = _alpha_bar_at(diffusion, t_prev, like)
    return eta * ((1 - ab_prev) / (1 - ab_t) * (1 - ab_t / ab_prev)).sqrt()


def _alpha_bar_at(diffusion: GaussianDiffusion, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """ᾱ_t, with ᾱ = 1 for t < 0 (the clean data; diffusers' ``set_alpha_to_one=True``)."""
    padded = torch.cat([diffusion.alphas_cumprod.new_ones(1), diffusion.alphas_cumprod])
    return diffusion._extract(padded, t.clamp(min=-1) + 1, like)


def ddim_step(diffusion: GaussianDiffusion, model_output: torch.Tensor, xt: torch.Tensor,
              t: int | torch.Tensor, t_prev: int | torch.Tensor, eta: float = 0.0,
              noise: torch.Tensor | None = None, clip_denoised: bool | float = True) -> StepOutput:
    """One DDIM step from t to t_prev < t (Song et al. 2021, eq. 12)::

        x_prev = √ᾱ_prev x̂_0 + √(1 - ᾱ_prev - σ²) ε̂ + σ z,   σ = σ_t(η) of eq. 16

    η = 0 is the deterministic DDIM sampler; η = 1 with consecutive steps is DDPM.
    ``t_prev = -1`` steps to the clean data (ᾱ = 1). ``noise`` is z, needed when η > 0.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    t, t_prev = _timestep_tensor(t, xt), _timestep_tensor(t_prev, xt)
    if bool((t_prev >= t).any()):
        raise ValueError("ddim_step goes backwards in time: need t_prev < t")
    pred_x0, pred_eps = diffusion.predict_x0_eps(model_output, xt, t, clip_denoised)
    ab_prev = _alpha_bar_at(diffusion, t_prev, xt)  # [B, 1, 1, 1]
    sigma = ddim_sigma(diffusion, t, t_prev, eta, xt)
    x_prev = ab_prev.sqrt() * pred_x0 + (1 - ab_prev - sigma ** 2).clamp(min=0).sqrt() * pred_eps
    if eta > 0:
        if noise is None:
            raise ValueError("ddim_step with eta > 0 needs `noise`")
        x_prev = x_prev + sigma * noise
    return StepOutput(x_prev, pred_x0)


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """DDIM's evenly strided steps ``[0, k, 2k, …]`` with k = T // steps, ascending (diffusers'
    ``timestep_spacing="leading"``; for T = 1000 and 50 steps the same as ``"ddim50"``)."""
    if not isinstance(steps, int) or not 0 < steps <= num_timesteps:
        raise ValueError(f"steps must be an int in 1..{num_timesteps}, got {steps!r}")
    stride = num_timesteps // steps
    return [i * stride for i in range(steps)]


def _check_timesteps(diffusion: GaussianDiffusion, steps: int | None,
                     timesteps: Sequence[int] | None) -> list[int]:
    """Ascending, unique timesteps of ``diffusion`` from ``steps`` or an explicit list."""
    if (steps is None) == (timesteps is None):
        raise ValueError("pass exactly one of `steps` or `timesteps`")
    if timesteps is None:
        return ddim_timesteps(diffusion.num_timesteps, steps)
    ts = sorted({int(t) for t in timesteps})
    if not ts or ts[0] < 0 or ts[-1] >= diffusion.num_timesteps:
        raise ValueError(f"timesteps must be a non-empty subset of 0..{diffusion.num_timesteps - 1}")
    return ts


class SampleStep(NamedTuple):
    """What a progressive loop yields after each step (improved-diffusion's
    ``p_sample_loop_progressive`` yields the same, as a dict)."""
    t: int                 # the model timestep this step started from (original process)
    x_t: torch.Tensor      # the sample after the step, x_{t_prev}  [B, C, H, W]
    pred_x0: torch.Tensor  # x̂_0 the step moved toward  [B, C, H, W]


def _final_sample(steps: Iterator[SampleStep]) -> torch.Tensor:
    """Run a progressive loop to its end and return the last sample (loops take >= 1 step)."""
    for step in steps:
        pass
    return step.x_t


def ddpm_sample_loop_progressive(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], *,
                                 x_T: torch.Tensor | None = None, generator: torch.Generator | None = None,
                                 device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                                 clip_denoised: bool | float = True, progress: bool = True) -> Iterator[SampleStep]:
    """Ancestral sampling through *every* step of ``diffusion`` (DDPM Algorithm 2), yielding a
    :class:`SampleStep` after each one.

    For fewer steps respace first: ``ddpm_sample_loop(diffusion.respaced("100"), ...)``.
    Noise is drawn from ``generator`` as x_T first, then once per step with t > 0.
    """
    x = _randn(shape, generator, device, dtype) if x_T is None else x_T  # [B, C, H, W]
    for i in tqdm(range(diffusion.num_timesteps - 1, -1, -1), disable=not progress, desc="DDPM"):
        t = _timestep_tensor(i, x)
        noise = _randn(x.shape, generator, x.device, x.dtype) if i > 0 else torch.zeros_like(x)
        step = ddpm_step(diffusion, model_fn(x, diffusion.model_timesteps(t)), x, t, noise, clip_denoised)
        x = step.prev_sample
        yield SampleStep(int(diffusion.timestep_map[i]), x, step.pred_x0)


def ddpm_sample_loop(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int],
                     **kwargs) -> torch.Tensor:
    """The final sample x_0 of :func:`ddpm_sample_loop_progressive` (same keyword arguments)."""
    return _final_sample(ddpm_sample_loop_progressive(diffusion, model_fn, shape, **kwargs))


def ddim_sample_loop_progressive(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int], *,
                                 steps: int | None = None, timesteps: Sequence[int] | None = None,
                                 eta: float = 0.0, x_T: torch.Tensor | None = None,
                                 generator: torch.Generator | None = None, device: torch.device | str = "cpu",
                                 dtype: torch.dtype = torch.float32, clip_denoised: bool | float = True,
                                 progress: bool = True) -> Iterator[SampleStep]:
    """DDIM sampling (Song et al. 2021, eq. 12) over ``steps`` strided steps or explicit
    ``timesteps``, from the largest down to x_0, yielding a :class:`SampleStep` after each one.
    With η > 0 noise is drawn every step. Arguments are checked at the first ``next()``."""
    if eta < 0:
        raise ValueError(f"eta must be >= 0, got {eta}")
    ts = _check_timesteps(diffusion, steps, timesteps)
    x = _randn(shape, generator, device, dtype) if x_T is None else x_T  # [B, C, H, W]
    for i in tqdm(range(len(ts) - 1, -1, -1), disable=not progress, desc="DDIM"):
        t = _timestep_tensor(ts[i], x)
        t_prev = ts[i - 1] if i > 0 else -1
        noise = _randn(x.shape, generator, x.device, x.dtype) if eta > 0 else None
        out = model_fn(x, diffusion.model_timesteps(t))
        step = ddim_step(diffusion, out, x, t, t_prev, eta, noise, clip_denoised)
        x = step.prev_sample
        yield SampleStep(int(diffusion.timestep_map[ts[i]]), x, step.pred_x0)


def ddim_sample_loop(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int],
                     **kwargs) -> torch.Tensor:
    """The final sample x_0 of :func:`ddim_sample_loop_progressive` (same keyword arguments)."""
    return _final_sample(ddim_sample_loop_progressive(diffusion, model_fn, shape, **kwargs))


def sample(diffusion: GaussianDiffusion, model_fn: ModelFn, shape: Sequence[int],
           sampler: str = "ddim", steps: int | None = None, **kwargs) -> torch.Tensor:
    """``sampler="ddpm"`` (all steps of ``diffusion``, or ``steps`` evenly respaced ones) or
    ``"ddim"`` (``steps`` strided steps, default 50); ``kwargs`` go to the loop."""
    if sampler == "ddpm":
        if steps is not None:
            _check_timesteps(diffusion, steps, None)
            diffusion = diffusion.respaced(str(steps))
        return ddpm_sample_loop(diffusion, model_fn, shape, **kwargs)
    if sampler == "ddim":
        if kwargs.get("timesteps") is None:
            kwargs["steps"] = min(50, diffusion.num_timesteps) if steps is None else steps
        return ddim_sample_loop(diffusion, model_fn, shape, **kwargs)
    raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


@torch.no_grad()
def ddim_invert(diffusion: GaussianDiffusion, model_fn: ModelFn, x0: torch.Tensor, *,
                steps: int | None = None, timesteps: Sequence[int] | None = None,
                fixed_point_iters: int = 0, progress: bool = True) -> torch.Tensor:
    """Run deterministic DDIM (η = 0) backwards: x_0 → x_T, the latent that DDIM sampling over the
    same timesteps maps back to ≈ x_0 (Song et al. 2021 §4.3, eq. 14; unCLIP §3 uses the DDIM
    latent of an image's decoder for variations and interpolations).

    Solving the step t_prev → t of eq. 12 for x_t::

        x_t = √ᾱ_t (x_prev - √(1-ᾱ_prev) ε̂)/√ᾱ_prev + √(1-ᾱ_t) ε̂,   ε̂ = ε_θ(x_t, t)

    is implicit in x_t; the usual approximation evaluates ε̂ at (x_prev, t). Each of
    ``fixed_point_iters`` extra rounds re-evaluates ε̂ at the current x_t estimate, which makes
    the inversion exact in the limit (at one extra model call per round). No clipping is
    applied, so sample back with ``clip_denoised=False``.
    """
    if fixed_point_iters < 0:
        raise ValueError(f"fixed_point_iters must be >= 0, got {fixed_point_iters}")
    ts = _check_timesteps(diffusion, steps, timesteps)
    x = x0  # [B, C, H, W]
    for i in tqdm(range(len(ts)), disable=not progress, desc="DDIM inversion"):
        t = _timestep_tensor(ts[i], x)
        t_prev = _timestep_tensor(ts[i - 1] if i > 0 else -1, x)
        ab_t, ab_prev = _alpha_bar_at(diffusion, t, x), _alpha_bar_at(diffusion, t_prev, x)
        xt = x
        for _ in range(fixed_point_iters + 1):
            _, eps = diffusion.predict_x0_eps(model_fn(xt, diffusion.model_timesteps(t)), xt, t, False)
            x0_hat = (x - (1 - ab_prev).sqrt() * eps) / ab_prev.sqrt()
            xt = ab_t.sqrt() * x0_hat + (1 - ab_t).sqrt() * eps
        x = xt
    return x


@torch.no_grad()
def ddim_reconstruct(diffusion: GaussianDiffusion, model_fn: ModelFn, x0: torch.Tensor, *,
                     steps: int | None = None, timesteps: Sequence[int] | None = None,
                     fixed_point_iters: int = 0, progress: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x_T, x0_rec)``: invert x_0 with DDIM, then sample back deterministically.
    ``(x0_rec - x0).abs().max()`` measures how invertible the sampler is for this model."""
    x_T = ddim_invert(diffusion, model_fn, x0, steps=steps, timesteps=timesteps,
                      fixed_point_iters=fixed_point_iters, progress=progress)
    x0_rec = ddim_sample_loop(diffusion, model_fn, x0.shape, steps=steps, timesteps=timesteps,
                              eta=0.0, x_T=x_T, clip_denoised=False, progress=progress)
    return x_T, x0_rec
