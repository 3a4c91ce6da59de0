"""Gaussian diffusion: parity with diffusers' schedulers, closed forms, DDIM inversion, bad inputs.

Parity tests build our process from diffusers' own (float32) betas upcast to float64, and
upcast the scheduler's ᾱ table too, so they compare the *formulas* at ~1e-12; the schedules
themselves are compared separately at float32 precision.
"""
from __future__ import annotations

import math

import pytest
import torch

from unclip_lite.diffusion import (GaussianDiffusion, cosine_betas, ddim_invert, ddim_reconstruct,
                                   ddim_sample_loop, ddim_step, ddim_timesteps, ddpm_sample_loop, ddpm_step,
                                   discretized_gaussian_log_likelihood, get_betas, linear_betas, mean_flat,
                                   normal_kl, respace, sample, space_timesteps, threshold_x0)


class _Diffusers:
    """diffusers, imported by the first test that compares with it: without it only those tests
    are skipped, and the closed-form ones still run."""

    def __getattr__(self, name):
        return getattr(pytest.importorskip("diffusers"), name)


diffusers = _Diffusers()

T = 1000
SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
PREDICTIONS = {"eps": "epsilon", "x0": "sample", "v": "v_prediction"}
SHAPE = (2, 3, 4, 4)


def _ours(schedule: str, **kwargs) -> GaussianDiffusion:
    return GaussianDiffusion(get_betas(schedule, T), **kwargs)


def _float64(scheduler):
    """Upcast a diffusers scheduler's tables so step formulas can be compared at 1e-10."""
    scheduler.betas = scheduler.betas.double()
    scheduler.alphas = 1.0 - scheduler.betas
    scheduler.alphas_cumprod = torch.cumprod(scheduler.alphas, 0)
    scheduler.one = torch.tensor(1.0, dtype=torch.float64)
    scheduler.final_alpha_cumprod = torch.tensor(1.0, dtype=torch.float64)
    return scheduler


def _toy_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Any smooth fixed function of (x, t) will do for comparing samplers."""
    tt = (t.to(x.dtype) / T).view(-1, *([1] * (x.dim() - 1)))
    return torch.tanh(0.7 * x + tt) - 0.2 * x * torch.cos(3 * tt)


# -- 1. parity with diffusers ---------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_betas_match_diffusers(schedule):
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule])
    ours = _ours(schedule)
    assert (ours.betas - ref.betas.double()).abs().max() < 1e-7
    assert (ours.alphas_cumprod - ref.alphas_cumprod.double()).abs().max() < 1e-5


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("clip", [True, False])
def test_ddpm_step_matches_diffusers(schedule, prediction, clip):
    ref = _float64(diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule],
                                           variance_type="fixed_small", clip_sample=clip,
                                           prediction_type=PREDICTIONS[prediction]))
    ours = GaussianDiffusion(ref.betas, parameterization=prediction)
    # the posterior variance diffusers uses for "fixed_small" is ours, β̃_t
    var_ref = torch.stack([ref._get_variance(int(t)) for t in (1, 10, 500, 999)])
    assert (ours.posterior_variance[[1, 10, 500, 999]] - var_ref).abs().max() < 1e-12
    g = torch.Generator().manual_seed(0)
    x, out = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for t in (0, 1, 10, 500, 999):
        expected = ref.step(out, t, x, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        got = ddpm_step(ours, out, x, t, noise, clip_denoised=clip)
        assert (got.pred_x0 - expected.pred_original_sample).abs().max() < 1e-10
        assert (got.prev_sample - expected.prev_sample).abs().max() < 1e-10


def test_ddpm_learned_range_step_matches_diffusers():
    ref = _float64(diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                                           variance_type="learned_range"))
    ours = GaussianDiffusion(ref.betas, learned_range=True)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    eps, v = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.rand(SHAPE, generator=g, dtype=torch.float64)
    for t in (1, 100, 999):
        # diffusers (like OpenAI's code) reads a raw output r ∈ [-1, 1] as v = (r + 1)/2
        expected = ref.step(torch.cat([eps, 2 * v - 1], 1), t, x, generator=torch.Generator().manual_seed(t))
        noise = torch.randn(SHAPE, generator=torch.Generator().manual_seed(t), dtype=torch.float64)
        got = ddpm_step(ours, torch.cat([eps, v], 1), x, t, noise)
        assert (got.prev_sample - expected.prev_sample).abs().max() < 1e-10


@pytest.mark.parametrize("prediction", ["eps", "v"])
def test_respaced_ddpm_loop_matches_diffusers(prediction):
    ref = _float64(diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="linear",
                                           prediction_type=PREDICTIONS[prediction]))
    full = GaussianDiffusion(ref.betas, parameterization=prediction)
    spaced = full.respaced("ddim10")  # 0, 100, …, 900 = diffusers' "leading" spacing for 10 steps
    ref.set_timesteps(10)
    assert spaced.timestep_map.tolist() == sorted(ref.timesteps.tolist())
    assert (spaced.alphas_cumprod - full.alphas_cumprod[spaced.timestep_map]).abs().max() < 1e-15
    g = torch.Generator().manual_seed(2)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for t in ref.timesteps:
        x = ref.step(_toy_model(x, t.expand(len(x))), int(t), x, generator=g).prev_sample
    got = ddpm_sample_loop(spaced, _toy_model, SHAPE, generator=torch.Generator().manual_seed(2),
                           dtype=torch.float64, progress=False)
    assert (got - x).abs().max() < 1e-10


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("clip", [True, False])
def test_ddim_step_matches_diffusers(schedule, prediction, eta, clip):
    ref = _float64(diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule=SCHEDULES[schedule],
                                           clip_sample=clip, set_alpha_to_one=True, steps_offset=0,
                                           timestep_spacing="leading", prediction_type=PREDICTIONS[prediction]))
    ref.set_timesteps(50)
    ours = GaussianDiffusion(ref.betas, parameterization=prediction)
    assert ddim_timesteps(T, 50) == sorted(ref.timesteps.tolist()) == space_timesteps(T, "ddim50")
    g = torch.Generator().manual_seed(3)
    x, out, z = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
    for t in (980, 500, 20, 0):
        # ours always re-derives ε̂ from the clipped x̂_0, as GLIDE/improved-diffusion do
        expected = ref.step(out, t, x, eta=eta, use_clipped_model_output=True,
                            variance_noise=z if eta > 0 else None)
        got = ddim_step(ours, out, x, t, t - 20 if t > 0 else -1, eta=eta, noise=z, clip_denoised=clip)
        assert (got.pred_x0 - expected.pred_original_sample).abs().max() < 1e-10
        assert (got.prev_sample - expected.prev_sample).abs().max() < 1e-10


@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_loop_matches_diffusers(eta):
    ref = _float64(diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2",
                                           clip_sample=True, set_alpha_to_one=True))
    ref.set_timesteps(7)  # stride 142: not a divisor of T
    ours = GaussianDiffusion(ref.betas)
    g = torch.Generator().manual_seed(4)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for t in ref.timesteps:
        x = ref.step(_toy_model(x, t.expand(len(x))), int(t), x, eta=eta, use_clipped_model_output=True,
                     generator=g).prev_sample
    got = ddim_sample_loop(ours, _toy_model, SHAPE, steps=7, eta=eta, generator=torch.Generator().manual_seed(4),
                           dtype=torch.float64, progress=False)
    assert (got - x).abs().max() < 1e-10


def test_forward_process_and_velocity_match_diffusers():
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2")
    ours = GaussianDiffusion(ref.betas.double())
    g = torch.Generator().manual_seed(5)
    x0, noise = torch.randn(SHAPE, generator=g), torch.randn(SHAPE, generator=g)
    t = torch.tensor([3, 900])
    assert (ours.q_sample(x0, t, noise) - ref.add_noise(x0, noise, t)).abs().max() < 1e-5
    assert (ours.v_target(x0, noise, t) - ref.get_velocity(x0, noise, t)).abs().max() < 1e-5
    assert ours.q_sample(x0, t, noise).dtype == torch.float32


# -- 2. closed forms ----------------------------------------------------------------------------
def test_q_sample_moments():
    d = _ours("linear")
    x0 = torch.linspace(-1, 1, 5).repeat(200_000, 1)  # [N, 5]
    t = torch.full((len(x0),), 300)
    xt = d.q_sample(x0, t, torch.randn(x0.shape, generator=torch.Generator().manual_seed(6)))
    ab = d.alphas_cumprod[300].item()
    assert torch.allclose(xt.mean(0), math.sqrt(ab) * x0[0], atol=0.01)
    assert torch.allclose(xt.var(0), torch.full((5,), 1 - ab), atol=0.01)
    mean, var, log_var = d.q_mean_variance(x0[:2], t[:2])
    assert torch.allclose(mean, math.sqrt(ab) * x0[:2]) and torch.allclose(log_var.exp(), var)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_posterior_is_bayes_rule(schedule):
    """q(x_{t-1}|x_t,x_0) ∝ q(x_t|x_{t-1}) q(x_{t-1}|x_0): precision α_t/β_t + 1/(1-ᾱ_{t-1})."""
    d = _ours(schedule)
    g = torch.Generator().manual_seed(7)
    x0, xt = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    for t in (1, 250, 999):
        beta, ab_prev = d.betas[t], d.alphas_cumprod[t - 1]
        var = 1.0 / ((1 - beta) / beta + 1.0 / (1 - ab_prev))
        mean = var * ((1 - beta).sqrt() / beta * xt + ab_prev.sqrt() / (1 - ab_prev) * x0)
        got_mean, got_var, got_log_var = d.q_posterior_mean_variance(x0, xt, torch.tensor([t, t]))
        assert (got_mean - mean).abs().max() < 1e-10
        assert (got_var - var).abs().max() < 1e-12 and (got_log_var.exp() - var).abs().max() < 1e-12


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_parameterizations_round_trip(schedule):
    d = _ours(schedule)
    g = torch.Generator().manual_seed(8)
    x0, eps = torch.randn(SHAPE, generator=g, dtype=torch.float64), torch.randn(SHAPE, generator=g, dtype=torch.float64)
    t = torch.tensor([0, 700])
    xt = d.q_sample(x0, t, eps)
    v = d.v_target(x0, eps, t)
    assert (d.predict_x0_from_eps(xt, t, eps) - x0).abs().max() < 1e-10
    assert (d.predict_eps_from_x0(xt, t, x0) - eps).abs().max() < 1e-10
    assert (d.predict_x0_from_v(xt, t, v) - x0).abs().max() < 1e-12
    assert (d.predict_eps_from_v(xt, t, v) - eps).abs().max() < 1e-12
    for p, out in (("eps", eps), ("x0", x0), ("v", v)):
        got_x0, got_eps = GaussianDiffusion(d.betas, parameterization=p).predict_x0_eps(out, xt, t, False)
        assert (got_x0 - x0).abs().max() < 1e-10 and (got_eps - eps).abs().max() < 1e-10


def test_space_timesteps_conventions():
    assert space_timesteps(T, "fast27") == [0, 22, 44, 66, 88, 111, 133, 155, 177, 199,
                                            200, 222, 244, 266, 288, 311, 333, 355, 377, 399,
                                            400, 500, 599, 600, 799, 800, 997]
    assert space_timesteps(10, "3") == [0, 4, 9]
    assert space_timesteps(10, "2,1") == [0, 4, 5]
    assert space_timesteps(T, " 1000 ") == list(range(T))
    betas, kept = respace(linear_betas(T), "100")
    assert len(betas) == 100 and kept[0] == 0 and kept[-1] == T - 1
    assert (torch.cumprod(1 - betas, 0) - torch.cumprod(1 - linear_betas(T), 0)[kept]).abs().max() < 1e-15
    assert cosine_betas(T).max() == 0.999 and linear_betas(100)[-1] == pytest.approx(0.2)


def test_dynamic_thresholding_matches_diffusers():
    ref = diffusers.DDPMScheduler(num_train_timesteps=T, thresholding=True, dynamic_thresholding_ratio=0.9,
                                  sample_max_value=1e9)
    x0 = 3 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(9))
    assert (threshold_x0(x0, 0.9) - ref._threshold_sample(x0)).abs().max() < 1e-6


# -- 3. DDIM inversion --------------------------------------------------------------------------
def _gaussian_denoiser(d: GaussianDiffusion, m: float, s: float):
    """The exact ε-predictor for data x_0 ~ N(m, s²) per element: E[ε | x_t]."""
    def model_fn(x, t):
        ab = d._extract(d.alphas_cumprod, t, x)
        return (1 - ab).sqrt() * (x - ab.sqrt() * m) / (ab * s ** 2 + 1 - ab)
    return model_fn


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_ddim_inversion_reconstructs(schedule):
    d = _ours(schedule)
    x0 = (0.3 + 0.5 * torch.randn(SHAPE, generator=torch.Generator().manual_seed(10), dtype=torch.float64)).clamp(-1, 1)
    model = _gaussian_denoiser(d, m=0.3, s=0.5)
    # plain inversion evaluates ε̂ at the wrong point (x_prev instead of x_t): first-order error
    x_T, rec = ddim_reconstruct(d, model, x0, steps=50)  # max error 8.1e-2 linear, 5.9e-2 cosine
    _, rec_200 = ddim_reconstruct(d, model, x0, steps=200)  # 2.1e-2, 1.7e-2
    assert (rec - x0).abs().max() < 0.1
    assert (rec_200 - x0).abs().max() < 0.4 * (rec - x0).abs().max()
    assert x_T.std() > 0.5  # it really went to noise
    # a few fixed-point rounds solve the implicit step: 5.6e-7 linear, 1.2e-4 cosine
    _, rec_fp = ddim_reconstruct(d, model, x0, steps=50, fixed_point_iters=5)
    assert (rec_fp - x0).abs().max() < 1e-3
    # the latent is a fixed point: inverting and sampling twice changes nothing
    assert torch.equal(ddim_invert(d, model, x0, steps=50, progress=False), x_T)


# -- 4. learned variance and the hybrid loss ----------------------------------------------------
def test_learned_range_endpoints():
    d = _ours("cosine", learned_range=True)
    xt, eps = torch.randn(SHAPE, dtype=torch.float64), torch.randn(SHAPE, dtype=torch.float64)
    t = torch.tensor([1, 600])
    ones = d.p_mean_variance(torch.cat([eps, torch.ones_like(eps)], 1), xt, t)
    zeros = d.p_mean_variance(torch.cat([eps, torch.zeros_like(eps)], 1), xt, t)
    assert (ones.variance - d.betas[t].view(-1, 1, 1, 1)).abs().max() < 1e-15
    assert (zeros.variance - d.posterior_variance[t].view(-1, 1, 1, 1)).abs().max() < 1e-15


def test_hybrid_loss():
    d = _ours("cosine", learned_range=True)
    g = torch.Generator().manual_seed(11)
    x0 = torch.randint(0, 256, SHAPE, generator=g).double() / 127.5 - 1  # 8-bit levels
    noise = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    output = torch.cat([torch.randn(SHAPE, generator=g, dtype=torch.float64),
                        torch.rand(SHAPE, generator=g, dtype=torch.float64)], 1).requires_grad_()
    t = torch.tensor([0, 400])
    terms = d.training_losses(lambda x, tt: output, x0, t, noise)
    assert all(torch.isfinite(v).all() for v in terms.values())
    assert torch.allclose(terms["loss"], terms["mse"] + 1e-3 * T * terms["vb"])
    # t = 0: the discretised-Gaussian decoder NLL of DDPM eq. 13, checked against a direct bin mass
    p = d.p_mean_variance(output.detach(), d.q_sample(x0, t, noise), t, clip_denoised=False)
    normal = torch.distributions.Normal(p.mean[0], p.variance[0].sqrt())
    lo = torch.where(x0[0] < -0.999, torch.zeros_like(x0[0]), normal.cdf(x0[0] - 1 / 255))
    hi = torch.where(x0[0] > 0.999, torch.ones_like(x0[0]), normal.cdf(x0[0] + 1 / 255))
    assert terms["vb"][0].item() == pytest.approx(-torch.log(hi - lo).mean().item() / math.log(2), rel=1e-6)
    # t > 0: KL(posterior ‖ p_θ) in bits/dim
    mean, var, _ = d.q_posterior_mean_variance(x0, d.q_sample(x0, t, noise), t)
    kl = torch.distributions.kl_divergence(torch.distributions.Normal(mean[1], var[1].sqrt()),
                                           torch.distributions.Normal(p.mean[1], p.variance[1].sqrt()))
    assert terms["vb"][1].item() == pytest.approx(kl.mean().item() / math.log(2), rel=1e-6)
    # stop-gradient: the VLB term trains only the variance channels
    terms["loss"].sum().backward()
    C = SHAPE[1]
    expected_mean_grad = 2 * (output[:, :C].detach() - noise) / (C * 16)
    assert (output.grad[:, :C] - expected_mean_grad).abs().max() < 1e-12
    assert output.grad[:, C:].abs().sum() > 0


def test_simple_loss_and_timesteps():
    d = _ours("linear", parameterization="v")
    x0 = torch.randn(SHAPE)
    t = d.sample_timesteps(len(x0), generator=torch.Generator().manual_seed(12))
    assert t.dtype == torch.long and bool(((t >= 0) & (t < T)).all())
    terms = d.training_losses(lambda x, tt: torch.zeros_like(x), x0, t)
    assert set(terms) == {"loss", "mse"} and terms["loss"].shape == (len(x0),)
    assert torch.allclose(normal_kl(x0, x0 * 0, x0, x0 * 0), torch.zeros_like(x0))
    assert mean_flat(discretized_gaussian_log_likelihood(x0.clamp(-1, 1), x0, x0 * 0 - 9)).max() <= 0


# -- 5. bad inputs ------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", ["", "abc", "0", "10,-1", "2000", "ddim", "ddim0", "ddim300", "fast10",
                                  "ddim1001", [], [0, 1000]])
def test_bad_respacing_specs(spec):
    with pytest.raises(ValueError):
        space_timesteps(T, spec)


def test_bad_inputs():
    d = _ours("linear")
    x = torch.zeros(SHAPE)
    with pytest.raises(ValueError, match="linear"):
        get_betas("quadratic", T)
    with pytest.raises(ValueError):
        linear_betas(0)
    with pytest.raises(ValueError, match="parameterization"):
        GaussianDiffusion(d.betas, parameterization="score")
    with pytest.raises(ValueError, match="sampler"):
        sample(d, _toy_model, SHAPE, sampler="euler")
    for steps in (0, -3, T + 1):
        with pytest.raises(ValueError, match="steps"):
            ddim_sample_loop(d, _toy_model, SHAPE, steps=steps, progress=False)
        with pytest.raises(ValueError, match="steps"):
            sample(d, _toy_model, SHAPE, sampler="ddpm", steps=steps, progress=False)
    with pytest.raises(ValueError, match="eta"):
        ddim_sample_loop(d, _toy_model, SHAPE, steps=5, eta=-0.1, progress=False)
    with pytest.raises(ValueError, match="eta"):
        ddim_step(d, x, x, 10, 5, eta=0.5)  # no noise given
    with pytest.raises(ValueError, match="t_prev"):
        ddim_step(d, x, x, 10, 10)
    with pytest.raises(ValueError, match="clip_denoised"):
        d.p_mean_variance(x, x, torch.tensor([1, 1]), clip_denoised=1.5)
    with pytest.raises(ValueError, match="2C"):
        GaussianDiffusion(d.betas, learned_range=True).p_mean_variance(x, x, torch.tensor([1, 1]))


def test_float32_sampling_smoke():
    d = GaussianDiffusion.from_schedule("cosine", 100, parameterization="eps")
    for sampler, steps in (("ddpm", 10), ("ddim", 10), ("ddpm", None)):
        out = sample(d, _toy_model, SHAPE, sampler=sampler, steps=steps, generator=torch.Generator().manual_seed(0),
                     progress=False)
        assert out.dtype == torch.float32 and out.shape == SHAPE and out.abs().max() <= 1.0 + 1e-5
