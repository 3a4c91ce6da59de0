"""Plausible wrong answers to chapter 04's exercises (loaded by test_exercises.py)."""
import torch


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


WRONG_ANSWERS = {
    "ch04.q_sample": [q_sample_no_sqrt, q_sample_variance_as_std, q_sample_alpha_t, q_sample_one_based],
    "ch04.posterior_mean": [posterior_swapped, posterior_prev_wraps, posterior_alpha_bar_for_alpha,
                            posterior_ab_t_for_prev],
    "ch04.ddim_step": [ddim_prev_wraps, ddim_noise_scale_of_t, ddim_clipped, ddim_ratio_shortcut],
}
