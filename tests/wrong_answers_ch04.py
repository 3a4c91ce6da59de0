"""Plausible wrong answers to chapter 04's exercises (loaded by test_exercises.py)."""
import math

import torch
import torch.nn.functional as F

from unclip_lite.exercises.ch04 import ResBlock


def _b(values, like):  # [B] -> [B, 1, 1, 1]
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


# --- q_sample -------------------------------------------------------------------------------
def q_sample_no_sqrt(x0, t, noise, alphas_cumprod):  # ᾱ instead of √ᾱ on both terms
    ab = _b(alphas_cumprod[t], x0)
    return ab * x0 + (1 - ab) * noise


def q_sample_variance_as_std(x0, t, noise, alphas_cumprod):  # forgot the sqrt on the noise term
    ab = _b(alphas_cumprod[t], x0)
    return ab.sqrt() * x0 + (1 - ab) * noise


def q_sample_alpha_t(x0, t, noise, alphas_cumprod):  # used α_t = 1 - β_t (one step) instead of ᾱ_t
    prev = torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod[:-1]])
    a = _b(alphas_cumprod[t] / prev[t], x0)
    return a.sqrt() * x0 + (1 - a).sqrt() * noise


def q_sample_one_based(x0, t, noise, alphas_cumprod):  # treats t as the paper's 1-based t
    ab = _b(alphas_cumprod[t - 1], x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


# --- posterior_mean -------------------------------------------------------------------------
def _ab_prev(alphas_cumprod, t):
    return torch.cat([alphas_cumprod.new_ones(1), alphas_cumprod])[t]


def posterior_swapped(x0, xt, t, betas, alphas_cumprod):  # x_0's coefficient on x_t and back
    ab, ab_prev, beta = alphas_cumprod[t], _ab_prev(alphas_cumprod, t), betas[t]
    c0 = _b(ab_prev.sqrt() * beta / (1 - ab), x0)
    ct = _b((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab), x0)
    return ct * x0 + c0 * xt


def posterior_prev_wraps(x0, xt, t, betas, alphas_cumprod):  # ᾱ_{t-1} = table[t-1]: wraps at t = 0
    ab, ab_prev, beta = alphas_cumprod[t], alphas_cumprod[t - 1], betas[t]
    c0 = _b(ab_prev.sqrt() * beta / (1 - ab), x0)
    ct = _b((1 - beta).sqrt() * (1 - ab_prev) / (1 - ab), x0)
    return c0 * x0 + ct * xt


def posterior_alpha_bar_for_alpha(x0, xt, t, betas, alphas_cumprod):  # √ᾱ_t where √α_t belongs
    ab, ab_prev, beta = alphas_cumprod[t], _ab_prev(alphas_cumprod, t), betas[t]
    c0 = _b(ab_prev.sqrt() * beta / (1 - ab), x0)
    ct = _b(ab.sqrt() * (1 - ab_prev) / (1 - ab), x0)
    return c0 * x0 + ct * xt


def posterior_ab_t_for_prev(x0, xt, t, betas, alphas_cumprod):  # ᾱ_t used where ᾱ_{t-1} belongs
    ab, beta = alphas_cumprod[t], betas[t]
    c0 = _b(ab.sqrt() * beta / (1 - ab), x0)
    ct = _b((1 - beta).sqrt() * (1 - ab) / (1 - ab), x0)
    return c0 * x0 + ct * xt


# --- ddim_step ------------------------------------------------------------------------------
def ddim_prev_wraps(eps, xt, t, t_prev, alphas_cumprod):  # table[-1] is ᾱ_{T-1}, not 1
    ab, ab_prev = _b(alphas_cumprod[t], xt), _b(alphas_cumprod[t_prev], xt)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps


def ddim_noise_scale_of_t(eps, xt, t, t_prev, alphas_cumprod):  # rebuilt with √(1-ᾱ_t), not √(1-ᾱ_prev)
    ab, ab_prev = _b(alphas_cumprod[t], xt), _b(_ab_prev(alphas_cumprod, t_prev + 1), xt)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    return ab_prev.sqrt() * x0 + (1 - ab).sqrt() * eps


def ddim_clipped(eps, xt, t, t_prev, alphas_cumprod):  # clips x̂_0 to [-1, 1] (the exercise says not to)
    ab, ab_prev = _b(alphas_cumprod[t], xt), _b(_ab_prev(alphas_cumprod, t_prev + 1), xt)
    x0 = ((xt - (1 - ab).sqrt() * eps) / ab.sqrt()).clamp(-1, 1)
    return ab_prev.sqrt() * x0 + (1 - ab_prev).sqrt() * eps


def ddim_ratio_shortcut(eps, xt, t, t_prev, alphas_cumprod):  # scales x_t by √(ᾱ_prev/ᾱ_t) and stops
    ab, ab_prev = _b(alphas_cumprod[t], xt), _b(_ab_prev(alphas_cumprod, t_prev + 1), xt)
    return (ab_prev / ab).sqrt() * xt



# --- diffusion_loss ---------------------------------------------------------------------------
def _q(x0, t, noise, alphas_cumprod):
    ab = _b(alphas_cumprod[t], x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def loss_target_x0(model, x0, t, noise, alphas_cumprod):  # regresses onto the clean image, not the noise
    return ((x0 - model(_q(x0, t, noise, alphas_cumprod), t)) ** 2).mean()


def loss_clean_input(model, x0, t, noise, alphas_cumprod):  # shows the model x_0 instead of x_t
    return ((noise - model(x0, t)) ** 2).mean()


def loss_summed(model, x0, t, noise, alphas_cumprod):  # sums over pixels: the scale grows with the image
    return ((noise - model(_q(x0, t, noise, alphas_cumprod), t)) ** 2).sum()


def loss_detached(model, x0, t, noise, alphas_cumprod):  # computed without a graph: nothing trains
    with torch.no_grad():
        return ((noise - model(_q(x0, t, noise, alphas_cumprod), t)) ** 2).mean()


# --- ddpm_step --------------------------------------------------------------------------------
def _tables(alphas_cumprod, t, like):
    ab_prev = _ab_prev(alphas_cumprod, t)
    ab = alphas_cumprod[t]
    beta = 1 - ab / ab_prev
    return tuple(_b(v, like) for v in (ab, ab_prev, beta))


def _mean_and_var(model, xt, t, alphas_cumprod):
    ab, ab_prev, beta = _tables(alphas_cumprod, t, xt)
    eps = model(xt, t)
    x0 = (xt - (1 - ab).sqrt() * eps) / ab.sqrt()
    mean = ab_prev.sqrt() * beta / (1 - ab) * x0 + (1 - beta).sqrt() * (1 - ab_prev) / (1 - ab) * xt
    return mean, beta * (1 - ab_prev) / (1 - ab), beta


def ddpm_noise_at_zero(model, xt, t, alphas_cumprod, noise):  # adds σ z at t = 0 too (no t > 0 mask), with
    mean, var, _ = _mean_and_var(model, xt, t, alphas_cumprod)  # the variance table improved-diffusion keeps
    var_1 = _mean_and_var(model, xt, torch.ones_like(t), alphas_cumprod)[1]  # for logs: β̃_0 := β̃_1 (not 0)
    return mean + torch.where((t == 0).view(-1, 1, 1, 1), var_1, var).sqrt() * noise


def ddpm_large_variance(model, xt, t, alphas_cumprod, noise):  # σ² = β_t instead of the posterior's β̃_t
    mean, _, beta = _mean_and_var(model, xt, t, alphas_cumprod)
    return mean + (t > 0).view(-1, 1, 1, 1) * beta.sqrt() * noise


def ddpm_no_eps_correction(model, xt, t, alphas_cumprod, noise):  # μ = x_t/√α_t: forgot the ε̂ term of eq. 11
    _, var, beta = _mean_and_var(model, xt, t, alphas_cumprod)
    return xt / (1 - beta).sqrt() + (t > 0).view(-1, 1, 1, 1) * var.sqrt() * noise


def ddpm_variance_as_std(model, xt, t, alphas_cumprod, noise):  # multiplies the noise by β̃_t, not √β̃_t
    mean, var, _ = _mean_and_var(model, xt, t, alphas_cumprod)
    return mean + (t > 0).view(-1, 1, 1, 1) * var * noise


# --- sample_loop ------------------------------------------------------------------------------
def _step(model, x, t, alphas_cumprod, noise):
    mean, var, _ = _mean_and_var(model, x, t, alphas_cumprod)
    return (mean + (t > 0).view(-1, 1, 1, 1) * var.sqrt() * noise).float()


def loop_from_zeros(model, shape, alphas_cumprod, generator):  # starts from x_T = 0, not from N(0, I)
    x = torch.zeros(shape)
    for i in reversed(range(len(alphas_cumprod))):
        noise = torch.randn(shape, generator=generator) if i > 0 else torch.zeros(shape)
        x = _step(model, x, torch.full((shape[0],), i), alphas_cumprod, noise)
    return x


def loop_skips_last_step(model, shape, alphas_cumprod, generator):  # stops at t = 1: x_0 is never reached
    x = torch.randn(shape, generator=generator)
    for i in reversed(range(1, len(alphas_cumprod))):
        x = _step(model, x, torch.full((shape[0],), i), alphas_cumprod, torch.randn(shape, generator=generator))
    return x


def loop_forward_in_time(model, shape, alphas_cumprod, generator):  # walks t = 0 … T-1 instead of T-1 … 0
    x = torch.randn(shape, generator=generator)
    for i in range(len(alphas_cumprod)):
        noise = torch.randn(shape, generator=generator) if i > 0 else torch.zeros(shape)
        x = _step(model, x, torch.full((shape[0],), i), alphas_cumprod, noise)
    return x


def loop_one_noise(model, shape, alphas_cumprod, generator):  # draws one noise tensor and reuses it every step
    x = torch.randn(shape, generator=generator)
    z = torch.randn(shape, generator=generator)
    for i in reversed(range(len(alphas_cumprod))):
        x = _step(model, x, torch.full((shape[0],), i), alphas_cumprod, z if i > 0 else torch.zeros(shape))
    return x


# --- timestep_embedding -----------------------------------------------------------------------
def _args(t, half, max_period, denominator):
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32) / denominator)
    return t.float()[:, None] * freqs[None]


def embedding_sin_first(t, dim, max_period=10000):  # [sin, cos] instead of ADM's [cos, sin]
    half = dim // 2
    args = _args(t, half, max_period, half)
    return F.pad(torch.cat([torch.sin(args), torch.cos(args)], -1), (0, dim % 2))


def embedding_half_minus_one(t, dim, max_period=10000):  # exponent over half - 1 (the lowest w is 1/max_period)
    half = dim // 2
    args = _args(t, half, max_period, max(half - 1, 1))
    return F.pad(torch.cat([torch.cos(args), torch.sin(args)], -1), (0, dim % 2))


def embedding_interleaved(t, dim, max_period=10000):  # cos and sin interleaved, pair by pair
    half = dim // 2
    args = _args(t, half, max_period, half)
    return F.pad(torch.stack([torch.cos(args), torch.sin(args)], -1).flatten(1), (0, dim % 2))


def embedding_odd_unpadded(t, dim, max_period=10000):  # an odd dim comes back one column short
    half = dim // 2
    args = _args(t, half, max_period, half)
    return torch.cat([torch.cos(args), torch.sin(args)], -1)


# --- ResBlock ---------------------------------------------------------------------------------
class ResBlockScaleNoOne(ResBlock):  # norm(h) · scale + shift: a fresh projection (scale ≈ 0) kills h
    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h) * scale + shift)))
        return self.skip(x) + h


class ResBlockShiftFirst(ResBlock):  # takes the first half as the shift and the second as the scale
    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        shift, scale = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h) * (1 + scale) + shift)))
        return self.skip(x) + h


class ResBlockNoSkipProjection(ResBlock):  # an identity skip even when the width changes
    def __init__(self, channels, emb_dim, out_channels=None, dropout=0.0, num_groups=32):
        super().__init__(channels, emb_dim, out_channels, dropout, num_groups)
        self.skip = torch.nn.Identity()

    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h) * (1 + scale) + shift)))
        return (x if x.shape[1] == h.shape[1] else 0) + h


class ResBlockNoResidual(ResBlock):  # returns the branch alone: no skip path at all
    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        return self.out_conv(self.dropout(F.silu(self.out_norm(h) * (1 + scale) + shift)))


class ResBlockRawEmbedding(ResBlock):  # projects the embedding without the SiLU in front
    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(emb)[:, :, None, None].chunk(2, dim=1)
        h = self.out_conv(self.dropout(F.silu(self.out_norm(h) * (1 + scale) + shift)))
        return self.skip(x) + h


ResBlockScaleNoOne.__name__ = ResBlockShiftFirst.__name__ = ResBlockNoSkipProjection.__name__ = "ResBlock"
ResBlockNoResidual.__name__ = ResBlockRawEmbedding.__name__ = "ResBlock"


WRONG_ANSWERS = {
    "ch04.q_sample": [q_sample_no_sqrt, q_sample_variance_as_std, q_sample_alpha_t, q_sample_one_based],
    "ch04.posterior_mean": [posterior_swapped, posterior_prev_wraps, posterior_alpha_bar_for_alpha,
                            posterior_ab_t_for_prev],
    "ch04.ddim_step": [ddim_prev_wraps, ddim_noise_scale_of_t, ddim_clipped, ddim_ratio_shortcut],
    "ch04.diffusion_loss": [loss_target_x0, loss_clean_input, loss_summed, loss_detached],
    "ch04.ddpm_step": [ddpm_noise_at_zero, ddpm_large_variance, ddpm_no_eps_correction, ddpm_variance_as_std],
    "ch04.sample_loop": [loop_from_zeros, loop_skips_last_step, loop_forward_in_time, loop_one_noise],
    "ch04.timestep_embedding": [embedding_sin_first, embedding_half_minus_one, embedding_interleaved,
                                embedding_odd_unpadded],
    "ch04.ResBlock": [ResBlockScaleNoOne, ResBlockShiftFirst, ResBlockNoSkipProjection, ResBlockNoResidual,
                      ResBlockRawEmbedding],
}
