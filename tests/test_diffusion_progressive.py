"""The progressive sampling loops, and the plain loops that now run them to their end.

The plain loops must stay bit for bit what they were: each is compared with the loop as it was
written before (copied below) under the same generator seeds.
"""
from __future__ import annotations

import pytest
import torch

from unclip_lite.diffusion import (GaussianDiffusion, SampleStep, ddim_sample_loop, ddim_sample_loop_progressive,
                                   ddim_step, ddim_timesteps, ddpm_sample_loop, ddpm_sample_loop_progressive,
                                   ddpm_step)

SHAPE = (2, 3, 4, 4)


def toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Any smooth fixed function of (x, t) will do for comparing loops."""
    tt = (t.to(x.dtype) / 1000).view(-1, 1, 1, 1)
    return torch.tanh(0.7 * x + tt) - 0.2 * x * torch.cos(3 * tt)


def seeded() -> torch.Generator:
    return torch.Generator().manual_seed(7)


# -- the loops as written before the progressive versions (the reference for "bit-identical") --
def old_ddpm_loop(diffusion, model_fn, shape, generator, clip_denoised=True):
    x = torch.randn(shape, generator=generator)
    for i in range(diffusion.num_timesteps - 1, -1, -1):
        t = torch.full((len(x),), i, dtype=torch.long)
        noise = torch.randn(x.shape, generator=generator) if i > 0 else torch.zeros_like(x)
        x = ddpm_step(diffusion, model_fn(x, diffusion.model_timesteps(t)), x, t, noise, clip_denoised).prev_sample
    return x


def old_ddim_loop(diffusion, model_fn, shape, steps, eta, generator, clip_denoised=True):
    ts = ddim_timesteps(diffusion.num_timesteps, steps)
    x = torch.randn(shape, generator=generator)
    for i in range(len(ts) - 1, -1, -1):
        t = torch.full((len(x),), ts[i], dtype=torch.long)
        noise = torch.randn(x.shape, generator=generator) if eta > 0 else None
        out = model_fn(x, diffusion.model_timesteps(t))
        x = ddim_step(diffusion, out, x, t, ts[i - 1] if i > 0 else -1, eta, noise, clip_denoised).prev_sample
    return x


@pytest.mark.parametrize("parameterization", ["eps", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_loop_is_bit_identical_to_before(parameterization, eta):
    d = GaussianDiffusion.from_schedule("cosine", 100, parameterization=parameterization)
    got = ddim_sample_loop(d, toy_model, SHAPE, steps=9, eta=eta, generator=seeded(), progress=False)
    assert torch.equal(got, old_ddim_loop(d, toy_model, SHAPE, 9, eta, seeded()))


@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_loop_is_bit_identical_to_before_on_a_respaced_process(clip):
    d = GaussianDiffusion.from_schedule("linear", 100, respacing="12")
    got = ddpm_sample_loop(d, toy_model, SHAPE, generator=seeded(), clip_denoised=clip, progress=False)
    assert torch.equal(got, old_ddpm_loop(d, toy_model, SHAPE, seeded(), clip))


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_progressive_yields_every_step_and_ends_at_the_plain_loop(eta):
    d = GaussianDiffusion.from_schedule("cosine", 100).respaced("50")  # model timesteps != indices
    steps = list(ddim_sample_loop_progressive(d, toy_model, SHAPE, steps=7, eta=eta, generator=seeded(),
                                              progress=False))
    assert len(steps) == 7 and all(isinstance(s, SampleStep) for s in steps)
    indices = ddim_timesteps(d.num_timesteps, 7)[::-1]  # descending, into the respaced schedule
    assert [s.t for s in steps] == d.timestep_map[indices].tolist()
    final = ddim_sample_loop(d, toy_model, SHAPE, steps=7, eta=eta, generator=seeded(), progress=False)
    assert torch.equal(steps[-1].x_t, final)
    # each yield is one ddim_step from the previous sample, with the x̂_0 that step used
    x_prev, t, t_prev = steps[-2].x_t, indices[-1], -1
    last = ddim_step(d, toy_model(x_prev, d.model_timesteps(torch.tensor([t, t]))), x_prev, t, t_prev)
    if eta == 0.0:
        assert torch.equal(last.prev_sample, steps[-1].x_t)
    assert torch.equal(last.pred_x0, steps[-1].pred_x0)


def test_ddpm_progressive_yields_every_step_and_ends_at_the_plain_loop():
    d = GaussianDiffusion.from_schedule("cosine", 100, parameterization="x0").respaced("10")
    steps = list(ddpm_sample_loop_progressive(d, toy_model, SHAPE, generator=seeded(), progress=False))
    assert len(steps) == d.num_timesteps == 10
    assert [s.t for s in steps] == d.timestep_map.flip(0).tolist()
    assert torch.equal(steps[-1].x_t, ddpm_sample_loop(d, toy_model, SHAPE, generator=seeded(), progress=False))
    assert all(s.x_t.shape == s.pred_x0.shape == SHAPE for s in steps)
    # the last step adds no noise and its posterior mean (eq. 7 at t = 0) is x̂_0 itself
    torch.testing.assert_close(steps[-1].x_t, steps[-1].pred_x0)


def test_progressive_loops_check_their_arguments_and_stop_early():
    d = GaussianDiffusion.from_schedule("cosine", 20)
    with pytest.raises(ValueError, match="eta"):
        next(ddim_sample_loop_progressive(d, toy_model, SHAPE, steps=5, eta=-0.1, progress=False))
    with pytest.raises(ValueError, match="exactly one"):
        next(ddim_sample_loop_progressive(d, toy_model, SHAPE, progress=False))
    calls = []

    def counting(x, t):
        calls.append(int(t[0]))
        return toy_model(x, t)

    first = next(ddim_sample_loop_progressive(d, counting, SHAPE, steps=5, progress=False))
    assert calls == [first.t] == [16]  # a generator: one model call per step asked for
