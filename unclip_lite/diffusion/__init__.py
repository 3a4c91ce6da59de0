"""Gaussian diffusion (DDPM / improved DDPM / DDIM), one concept per function.

* :mod:`.schedule`: β schedules (linear, cosine) and respacing to fewer steps.
* :mod:`.gaussian`: :class:`GaussianDiffusion`: q(x_t | x_0), the posterior, p_θ and the loss.
* :mod:`.losses`: Gaussian KL and the discretised decoder likelihood of the VLB.
* :mod:`.samplers`: DDPM and DDIM steps and loops (also step by step), DDIM inversion.

Typical use::

    diffusion = GaussianDiffusion.from_schedule("cosine", 1000)
    t = diffusion.sample_timesteps(len(x0), device=x0.device)
    loss = diffusion.training_losses(model, x0, t)["loss"].mean()
    images = ddim_sample_loop(diffusion, model, (16, 3, 32, 32), steps=50)
"""
from unclip_lite.diffusion.gaussian import (FIXED_VARIANCES, PARAMETERIZATIONS, GaussianDiffusion,
                                            PMeanVariance, threshold_x0)
from unclip_lite.diffusion.losses import discretized_gaussian_log_likelihood, mean_flat, normal_kl
from unclip_lite.diffusion.samplers import (SAMPLERS, SampleStep, StepOutput, ddim_invert, ddim_reconstruct,
                                            ddim_sample_loop, ddim_sample_loop_progressive, ddim_sigma, ddim_step,
                                            ddim_timesteps, ddpm_sample_loop, ddpm_sample_loop_progressive,
                                            ddpm_step, sample)
from unclip_lite.diffusion.schedule import (SCHEDULES, cosine_alpha_bar, cosine_betas, get_betas, linear_betas,
                                            respace, space_timesteps)

__all__ = [
    "GaussianDiffusion", "PMeanVariance", "threshold_x0", "PARAMETERIZATIONS", "FIXED_VARIANCES",
    "normal_kl", "discretized_gaussian_log_likelihood", "mean_flat",
    "ddpm_step", "ddim_step", "ddim_sigma", "ddim_timesteps", "ddpm_sample_loop", "ddim_sample_loop",
    "ddpm_sample_loop_progressive", "ddim_sample_loop_progressive", "SampleStep",
    "sample", "ddim_invert", "ddim_reconstruct", "StepOutput", "SAMPLERS",
    "linear_betas", "cosine_betas", "cosine_alpha_bar", "get_betas", "space_timesteps", "respace", "SCHEDULES",
]
