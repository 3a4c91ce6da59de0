"""Plausible wrong answers to chapter 09's exercises; tests/test_exercises.py loads this file."""
import torch
import torch.nn.functional as F


def _theta(theta, like):
    theta = torch.as_tensor(theta, dtype=like.dtype)
    return theta[:, None] if theta.dim() else theta


# --- ch09.slerp -------------------------------------------------------------------------------------
def slerp_linear(a, b, theta):  # straight line: cuts through the sphere
    t = _theta(theta, a)
    return (1 - t) * a + t * b


def slerp_normalised_lerp(a, b, theta):  # nlerp: on the sphere, but not at constant speed, and loses the norms
    t = _theta(theta, a)
    return F.normalize((1 - t) * a + t * b, dim=-1)


def slerp_swapped_weights(a, b, theta):  # θ = 0 gives b
    t = _theta(theta, a)
    omega = torch.arccos((F.normalize(a, dim=-1) * F.normalize(b, dim=-1)).sum(-1, keepdim=True).clamp(-1, 1))
    return (torch.sin(t * omega) * a + torch.sin((1 - t) * omega) * b) / torch.sin(omega)


def slerp_raw_dot(a, b, theta):  # angle from the unnormalised dot product
    t = _theta(theta, a)
    omega = torch.arccos((a * b).sum(-1, keepdim=True).clamp(-1, 1))
    return (torch.sin((1 - t) * omega) * a + torch.sin(t * omega) * b) / torch.sin(omega)


# --- ch09.text_diff_direction ------------------------------------------------------------------------
def diff_unnormalised(z_target, z_source):
    return z_target - z_source


def diff_reversed(z_target, z_source):
    return F.normalize(z_source - z_target, dim=-1)


def diff_target_only(z_target, z_source):  # just the target caption: no direction from the image's caption
    return F.normalize(z_target, dim=-1)


# --- ch09.ddim_eta_step ---------------------------------------------------------------------------------
def eta_ignores_eta(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):  # always deterministic
    x0 = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


def eta_keeps_full_direction(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):  # adds σz without taking σ² away
    x0 = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    sigma = eta * ((1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)) ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps + sigma * noise


def eta_sigma_squared(x_t, eps, alpha_bar_t, alpha_bar_prev, eta, noise):  # η multiplies the variance, not σ
    x0 = (x_t - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    var = eta * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * (1 - alpha_bar_t / alpha_bar_prev)
    return alpha_bar_prev ** 0.5 * x0 + max(1 - alpha_bar_prev - var, 0.0) ** 0.5 * eps + var ** 0.5 * noise


# --- ch09.ddim_inversion_step --------------------------------------------------------------------------
def inversion_sampling_direction(x_prev, eps, alpha_bar_prev, alpha_bar_t):  # the times swapped: denoises
    x0 = (x_prev - (1 - alpha_bar_t) ** 0.5 * eps) / alpha_bar_t ** 0.5
    return alpha_bar_prev ** 0.5 * x0 + (1 - alpha_bar_prev) ** 0.5 * eps


def inversion_x_prev_as_x0(x_prev, eps, alpha_bar_prev, alpha_bar_t):  # treats x_prev as clean
    return alpha_bar_t ** 0.5 * x_prev + (1 - alpha_bar_t) ** 0.5 * eps


def inversion_forward_noising(x_prev, eps, alpha_bar_prev, alpha_bar_t):  # q(x_t | x_prev) mean, not DDIM
    return (alpha_bar_t / alpha_bar_prev) ** 0.5 * x_prev


WRONG_ANSWERS = {
    "ch09.slerp": [slerp_linear, slerp_normalised_lerp, slerp_swapped_weights, slerp_raw_dot],
    "ch09.text_diff_direction": [diff_unnormalised, diff_reversed, diff_target_only],
    "ch09.ddim_eta_step": [eta_ignores_eta, eta_keeps_full_direction, eta_sigma_squared],
    "ch09.ddim_inversion_step": [inversion_sampling_direction, inversion_x_prev_as_x0, inversion_forward_noising],
}
