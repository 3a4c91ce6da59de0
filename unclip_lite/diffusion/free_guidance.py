"""Classifier-free guidance over any conditioning (Ho & Salimans 2021; GLIDE §2.4, eq. 4)::

    ε̂(x_t | c) = ε_θ(x_t | ∅) + s · (ε_θ(x_t | c) - ε_θ(x_t | ∅))

s = 1 is the plain conditional model, s = 0 the unconditional one, s > 1 pushes samples toward
the condition. What "c" and "∅" are is the model's business: GLIDE's caption and the empty
caption; unCLIP's decoder a CLIP image embedding and a zeroed (or learned null) one; the prior a
caption and a dropped one. The model says so by a method ``null_conditioning(**conditioning)
-> dict`` that returns the ∅ version of its conditioning keywords; this function needs nothing
else. Both predictions come from one batched forward over [x; x] with [c; ∅]; keyword inputs
that are not conditioning (an inpainting image, an upsampler's low-res input) go to both halves.

The combination is applied to the model's own output, whatever it predicts: at a fixed x_t and t,
ε̂, x̂_0 and v are affine in each other with the same coefficients for both halves, so combining
outputs gives exactly the ε̂ that combining ε̂'s would (unlike gradient guidance, which must go
through ε̂). With a learned variance (2C outputs) only the first C channels are guided; the
variance half is the conditional one, as in glide-text2im.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from unclip_lite.diffusion.guidance import check_guidance_scale

MAX_SCALE = 50.0


def classifier_free_guidance(model, scale: float, conditioning: dict[str, torch.Tensor],
                             learned_variance: bool = False, **shared) -> Callable[[torch.Tensor, torch.Tensor],
                                                                                     torch.Tensor]:
    """A ``model_fn(x, t)`` for the samplers: ``model(x, t, **conditioning, **shared)`` guided with
    ``scale`` away from ``model.null_conditioning(**conditioning)``.

    Every tensor in ``conditioning`` and ``shared`` has the batch first, and the same batch B.
    ``learned_variance``: the output's second half is a variance, taken from the conditional
    half (so s = 0 still runs both halves).
    """
    scale = check_guidance_scale(scale, MAX_SCALE)
    if not conditioning:
        raise ValueError("classifier-free guidance needs at least one conditioning input")
    sizes = {name: len(value) for name, value in {**conditioning, **shared}.items() if isinstance(value, torch.Tensor)}
    B = next(iter(sizes.values()))
    for name, size in sizes.items():
        if size != B:
            raise ValueError(f"{name} has batch {size} but {next(iter(sizes))} has {B}")
    null = model.null_conditioning(**conditioning)  # the same keys, each [B, ...]
    if set(null) != set(conditioning):
        raise ValueError(f"null_conditioning returned {sorted(null)} for {sorted(conditioning)}")
    both = {k: torch.cat([conditioning[k], null[k]]) for k in conditioning}  # [2B, ...] each
    both_shared = {k: torch.cat([v, v]) if isinstance(v, torch.Tensor) else v for k, v in shared.items()}

    def model_fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        n, C = x.shape[:2]
        if n != B:
            raise ValueError(f"x has batch {n} but guidance was built for a batch of {B}")
        t = torch.as_tensor(t, device=x.device).reshape(-1).expand(n)  # [B]
        if scale == 1.0 or (scale == 0.0 and not learned_variance):  # one half is all the formula needs
            return model(x, t, **(null if scale == 0 else conditioning), **shared)
        out = model(torch.cat([x, x]), torch.cat([t, t]), **both, **both_shared)  # [2B, C or 2C, H, W]
        guided_part, rest = out[:, :C], out[:, C:]
        cond, uncond = guided_part[:B], guided_part[B:]  # [B, C, ...] each
        return torch.cat([uncond + scale * (cond - uncond), rest[:B]], dim=1)

    return model_fn
