"""Noise schedules β₁…β_T and respacing them to fewer steps.

The forward process adds a little Gaussian noise at every step (Ho et al. 2020, eq. 2)::

    q(x_t | x_{t-1}) = N(√(1-β_t) x_{t-1}, β_t I)

so everything downstream depends on the schedule only through ``ᾱ_t = ∏_{s≤t} (1-β_s)``
(eq. 4: ``x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε``). Two schedules are in common use:

* **linear** (DDPM §4): β rises linearly from 1e-4 to 0.02 over T = 1000 steps. For other T
  both ends are scaled by 1000/T, as improved-diffusion does, so the total noise stays similar.
* **cosine** (Nichol & Dhariwal 2021, §3.2, eq. 17): ᾱ_t = f(t)/f(0) with
  f(t) = cos²((t/T + s)/(1 + s) · π/2); β_t = 1 - ᾱ_t/ᾱ_{t-1}, clipped at 0.999 so the last
  steps stay finite. diffusers calls it ``"squaredcos_cap_v2"``.

**Respacing** (improved DDPM §4, GLIDE): a model trained with T steps can be sampled with a
subset S = {τ₁ < … < τ_K} of them. Keeping ᾱ at the kept steps and setting
``β'_k = 1 - ᾱ_{τ_k}/ᾱ_{τ_{k-1}}`` gives a K-step process with the *same* marginals q(x_{τ_k}|x_0);
the model is still fed the original timestep τ_k (the ``timestep_map``).

Everything here is float64: ᾱ_t for t near T is ~1e-5 and float32 round-off in the cumulative
product is visible in samples.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch

SCHEDULES = ("linear", "cosine")
FAST27_SECTIONS = "10,10,3,2,2"  # GLIDE's upsampler preset, see space_timesteps


def linear_betas(num_timesteps: int, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020, §4), rescaled by 1000/T as in improved-diffusion.

    ``start``/``end`` are the values *for T = 1000*; at T = 1000 this is exactly
    ``torch.linspace(1e-4, 0.02, 1000)`` (diffusers' ``beta_schedule="linear"``).
    """
    _check_num_timesteps(num_timesteps)
    scale = 1000.0 / num_timesteps
    return torch.linspace(scale * start, scale * end, num_timesteps, dtype=torch.float64)  # [T]


def cosine_alpha_bar(t: float, s: float = 0.008) -> float:
    """f(t) of improved DDPM eq. 17 for continuous t ∈ [0, 1] (unnormalised ᾱ)."""
    return math.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Cosine schedule (Nichol & Dhariwal 2021, §3.2): β_t = min(1 - f(t/T)/f((t-1)/T), max_beta).

    The offset ``s`` keeps β near t = 0 from being vanishingly small; ``max_beta`` < 1 prevents
    the singularity at t = T (their eq. 17 and the paragraph after it).
    """
    _check_num_timesteps(num_timesteps)
    betas = [min(1.0 - cosine_alpha_bar((i + 1) / num_timesteps, s) / cosine_alpha_bar(i / num_timesteps, s),
                 max_beta) for i in range(num_timesteps)]
    return torch.tensor(betas, dtype=torch.float64)  # [T]


def get_betas(name: str, num_timesteps: int) -> torch.Tensor:
    """The named schedule: ``"linear"`` or ``"cosine"`` (alias ``"squaredcos_cap_v2"``)."""
    if name == "linear":
        return linear_betas(num_timesteps)
    if name in ("cosine", "squaredcos_cap_v2"):
        return cosine_betas(num_timesteps)
    raise ValueError(f"unknown beta schedule {name!r}; expected one of {SCHEDULES}")


def space_timesteps(num_timesteps: int, spec: str | Sequence[int]) -> list[int]:
    """Which of the original timesteps 0…T-1 to keep, sorted ascending.

    ``spec`` is one of (the conventions of improved-diffusion / GLIDE ``respace.py``):

    * ``"K"`` or ``"K1,K2,…"``: split 0…T-1 into equal sections (the first ``T % n`` one step
      longer) and take K_i evenly spaced steps, ends included, from section i. ``"100"`` is
      100 evenly spaced steps over the whole range.
    * ``"ddimK"``: DDIM's striding (Song et al. 2021, §4.2) ``range(0, T, stride)`` with the
      integer stride that gives exactly K steps; a ValueError if no stride does.
    * ``"fast27"``: GLIDE's 27-step upsampler preset: sections ``"10,10,3,2,2"``, then the last
      step T-1 is swapped for T-3 ("to reduce DDIM artifacts from the noisiest timesteps").
    * an explicit sequence of timesteps.
    """
    _check_num_timesteps(num_timesteps)
    if not isinstance(spec, str):
        steps = sorted({int(s) for s in spec})
        if not steps or steps[0] < 0 or steps[-1] >= num_timesteps:
            raise ValueError(f"explicit timesteps must be a non-empty subset of 0..{num_timesteps - 1}, "
                             f"got {list(spec)}")
        return steps
    spec = spec.strip()
    if spec.startswith("ddim"):
        count = _parse_count(spec[len("ddim"):], spec)
        for stride in range(1, num_timesteps + 1):
            if len(range(0, num_timesteps, stride)) == count:
                return list(range(0, num_timesteps, stride))
        raise ValueError(f"{spec!r}: no integer stride gives exactly {count} of {num_timesteps} steps; "
                         f"use a section spec such as '{count}' instead")
    if spec == "fast27":
        steps = set(space_timesteps(num_timesteps, FAST27_SECTIONS))
        steps.discard(num_timesteps - 1)
        steps.add(num_timesteps - 3)
        return sorted(steps)
    if spec.startswith("fast"):
        raise ValueError(f"{spec!r}: the only 'fast' preset is GLIDE's 'fast27'")
    counts = [_parse_count(part, spec) for part in spec.split(",")]
    size_per, extra = divmod(num_timesteps, len(counts))
    steps, start = [], 0
    for i, count in enumerate(counts):
        size = size_per + (1 if i < extra else 0)
        if count > size:
            raise ValueError(f"{spec!r}: cannot take {count} steps from a section of {size} "
                             f"(T={num_timesteps}, {len(counts)} sections)")
        stride = (size - 1) / (count - 1) if count > 1 else 1.0
        steps += [start + round(j * stride) for j in range(count)]
        start += size
    return sorted(set(steps))


def respace(betas: torch.Tensor, spec: str | Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Betas of the process that only visits ``space_timesteps(T, spec)``, and the map back.

    Returns ``(new_betas [K] float64, timestep_map [K] long)`` where
    ``new_betas[k] = 1 - ᾱ[τ_k] / ᾱ[τ_{k-1}]`` (ᾱ[τ_{-1}] = 1), so the respaced process has
    ᾱ'_k = ᾱ[τ_k] exactly, and ``timestep_map[k] = τ_k`` is the timestep to show the model.
    """
    betas = torch.as_tensor(betas, dtype=torch.float64)
    kept = space_timesteps(len(betas), spec)
    alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)  # [T]
    kept_ab = alphas_cumprod[kept]  # [K]
    prev_ab = torch.cat([kept_ab.new_ones(1), kept_ab[:-1]])  # [K]
    return 1.0 - kept_ab / prev_ab, torch.tensor(kept, dtype=torch.long)


def _check_num_timesteps(num_timesteps: int) -> None:
    if not isinstance(num_timesteps, int) or num_timesteps <= 0:
        raise ValueError(f"num_timesteps must be a positive int, got {num_timesteps!r}")


def _parse_count(text: str, spec: str) -> int:
    try:
        count = int(text.strip())
    except ValueError:
        raise ValueError(f"bad respacing spec {spec!r}: expected 'K', 'K1,K2,...', 'ddimK' or "
                         f"'fast27' with positive integers K") from None
    if count <= 0:
        raise ValueError(f"bad respacing spec {spec!r}: step counts must be positive, got {count}")
    return count
