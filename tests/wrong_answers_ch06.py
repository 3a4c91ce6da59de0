"""Plausible wrong answers to chapter 06's exercises; tests/test_exercises.py loads this file."""
import torch
import torch.nn.functional as F


def _b(values, like):  # [B] -> [B, 1, 1, 1]
    return values.to(like.dtype).view(-1, *([1] * (like.dim() - 1)))


# --- ch06.gradient_guided_eps ----------------------------------------------------------------
def guided_eps_plus(eps, grad, sqrt_one_minus_ab, scale):  # adds the gradient: walks down log p
    return eps + _b(sqrt_one_minus_ab, eps) * scale * grad


def guided_eps_no_sigma(eps, grad, sqrt_one_minus_ab, scale):  # forgets the √(1−ᾱ_t) factor
    return eps - scale * grad


def guided_eps_variance(eps, grad, sqrt_one_minus_ab, scale):  # (1−ᾱ_t), the variance, not the std
    return eps - _b(sqrt_one_minus_ab, eps) ** 2 * scale * grad


def guided_eps_divides(eps, grad, sqrt_one_minus_ab, scale):  # divides by the std, as for a score
    return eps - scale * grad / _b(sqrt_one_minus_ab, eps)


# --- ch06.guide_gradient ----------------------------------------------------------------------
def _grad_of(log_prob_fn, x_t, t, reduce=torch.sum, sign=1.0, create_graph=False):
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        return torch.autograd.grad(sign * reduce(log_prob_fn(x, t)), x, create_graph=create_graph)[0]


def gradient_of_mean(log_prob_fn, x_t, t):  # the mean over the batch: every gradient shrinks by 1/B
    return _grad_of(log_prob_fn, x_t, t, reduce=torch.mean)


def gradient_no_detach(log_prob_fn, x_t, t):  # switches on requires_grad of the sampler's own x_t
    with torch.enable_grad():
        x_t.requires_grad_(True)
        return torch.autograd.grad(log_prob_fn(x_t, t).sum(), x_t)[0]


def gradient_wrong_tensor(log_prob_fn, x_t, t):  # log p evaluated at x_t, differentiated wrt the copy x
    with torch.enable_grad():
        x = x_t.detach().requires_grad_(True)
        return torch.autograd.grad(log_prob_fn(x_t, t).sum(), x)[0]


def gradient_of_loss(log_prob_fn, x_t, t):  # ∇ of −log p, as for a loss: the sign flipped
    return _grad_of(log_prob_fn, x_t, t, sign=-1.0)


def gradient_without_enable_grad(log_prob_fn, x_t, t):  # forgets that the sampler runs under no_grad
    x = x_t.detach().requires_grad_(True)
    return torch.autograd.grad(log_prob_fn(x, t).sum(), x)[0]


def gradient_keeps_graph(log_prob_fn, x_t, t):  # create_graph=True: returns a tensor still in a graph
    return _grad_of(log_prob_fn, x_t, t, create_graph=True)


# --- ch06.guided_ddim_step --------------------------------------------------------------------
def _reference_grad(log_prob_fn, x_t, t):
    return _grad_of(log_prob_fn, x_t, t)


def _sigma(diffusion, t, like):
    return diffusion.sqrt_one_minus_alphas_cumprod[t].to(like.dtype).view(-1, 1, 1, 1)


def _ddim(diffusion, out, x_t, t, t_prev):
    from unclip_lite.diffusion.samplers import ddim_step
    return ddim_step(diffusion, out, x_t, t, t_prev).prev_sample


def step_output_as_eps(diffusion, model_fn, log_prob_fn, x_t, t, t_prev, scale):  # shifts the raw output
    out = model_fn(x_t, t)  # as if every model predicted ε: wrong for x_0- and v-models
    return _ddim(diffusion, out - _sigma(diffusion, t, x_t) * scale * _reference_grad(log_prob_fn, x_t, t),
                 x_t, t, t_prev)


def step_at_t_prev(diffusion, model_fn, log_prob_fn, x_t, t, t_prev, scale):  # the guide read at t_prev
    eps = diffusion.eps_from_output(x_t, t, model_fn(x_t, t))
    t_read = t_prev.clamp(min=0)
    eps = eps - _sigma(diffusion, t_read, x_t) * scale * _reference_grad(log_prob_fn, x_t, t_read)
    return _ddim(diffusion, diffusion.output_from_eps(x_t, t, eps), x_t, t, t_prev)


def step_shifts_input(diffusion, model_fn, log_prob_fn, x_t, t, t_prev, scale):  # nudges x_t, not ε̂
    x = x_t + _sigma(diffusion, t, x_t) ** 2 * scale * _reference_grad(log_prob_fn, x_t, t)
    return _ddim(diffusion, model_fn(x, t), x, t, t_prev)


def step_guides_after(diffusion, model_fn, log_prob_fn, x_t, t, t_prev, scale):  # plain step, then a push
    x_prev = _ddim(diffusion, model_fn(x_t, t), x_t, t, t_prev)
    return x_prev + scale * _reference_grad(log_prob_fn, x_t, t)


# --- ch06.classifier_log_prob ------------------------------------------------------------------
def log_prob_raw_logits(logits, labels):  # the logit at the label, not normalised
    return sum(logits[k].gather(1, y.view(-1, 1)).squeeze(1) for k, y in labels.items())


def log_prob_probabilities(logits, labels):  # softmax probabilities, without the log
    return sum(logits[k].softmax(-1).gather(1, y.view(-1, 1)).squeeze(1) for k, y in labels.items())


def log_prob_mean_over_heads(logits, labels):  # averages the heads instead of adding them
    parts = [F.log_softmax(logits[k], -1).gather(1, y.view(-1, 1)).squeeze(1) for k, y in labels.items()]
    return torch.stack(parts).mean(0)


def log_prob_batch_softmax(logits, labels):  # normalises over the batch instead of the classes
    return sum(F.log_softmax(logits[k], 0).gather(1, y.view(-1, 1)).squeeze(1) for k, y in labels.items())


# --- ch06.inpaint_input --------------------------------------------------------------------------
def inpaint_unmasked_image(x_t, image, mask):  # gives the model the pixels it must replace
    return torch.cat([x_t, image, mask], dim=1)


def inpaint_inverted_mask(x_t, image, mask):  # keeps the hole and erases the rest
    return torch.cat([x_t, image * (1 - mask), 1 - mask], dim=1)


def inpaint_condition_first(x_t, image, mask):  # the condition before x_t
    return torch.cat([image * mask, mask, x_t], dim=1)


# --- ch06.paste_eps ------------------------------------------------------------------------------
def paste_into_eps(diffusion, x_t, t, eps, image, mask):  # pastes pixels into ε itself
    return mask * image + (1 - mask) * eps


def paste_no_clamp(diffusion, x_t, t, eps, image, mask):  # forgets to clamp x̂_0 to [-1, 1]
    x0 = diffusion.predict_x0_from_eps(x_t, t, eps)
    return diffusion.predict_eps_from_x0(x_t, t, mask * image + (1 - mask) * x0)


def paste_inverted_mask(diffusion, x_t, t, eps, image, mask):  # pastes the image into the hole
    x0 = diffusion.predict_x0_from_eps(x_t, t, eps).clamp(-1, 1)
    return diffusion.predict_eps_from_x0(x_t, t, (1 - mask) * image + mask * x0)


def paste_returns_x0(diffusion, x_t, t, eps, image, mask):  # returns x̂_0, not the ε pointing at it
    x0 = diffusion.predict_x0_from_eps(x_t, t, eps).clamp(-1, 1)
    return mask * image + (1 - mask) * x0


# --- ch06.upsampler_input ------------------------------------------------------------------------
def upsample_nearest(x_t, low_res):  # blocky nearest-neighbour upsampling
    return torch.cat([x_t, F.interpolate(low_res, size=x_t.shape[-2:], mode="nearest")], dim=1)


def upsample_swapped(x_t, low_res):  # the low-res condition before x_t
    return torch.cat([F.interpolate(low_res, size=x_t.shape[-2:], mode="bilinear", align_corners=False), x_t], 1)


def upsample_align_corners(x_t, low_res):  # bilinear, but with corner pixels aligned
    return torch.cat([x_t, F.interpolate(low_res, size=x_t.shape[-2:], mode="bilinear", align_corners=True)], 1)


def upsample_bicubic(x_t, low_res):  # bicubic: sharper, and not what the model was trained on
    return torch.cat([x_t, F.interpolate(low_res, size=x_t.shape[-2:], mode="bicubic", align_corners=False)], 1)


WRONG_ANSWERS = {
    "ch06.gradient_guided_eps": [guided_eps_plus, guided_eps_no_sigma, guided_eps_variance, guided_eps_divides],
    "ch06.guide_gradient": [gradient_of_mean, gradient_no_detach, gradient_wrong_tensor, gradient_of_loss,
                            gradient_without_enable_grad, gradient_keeps_graph],
    "ch06.guided_ddim_step": [step_output_as_eps, step_at_t_prev, step_shifts_input, step_guides_after],
    "ch06.classifier_log_prob": [log_prob_raw_logits, log_prob_probabilities, log_prob_mean_over_heads,
                                 log_prob_batch_softmax],
    "ch06.inpaint_input": [inpaint_unmasked_image, inpaint_inverted_mask, inpaint_condition_first],
    "ch06.paste_eps": [paste_into_eps, paste_no_clamp, paste_inverted_mask, paste_returns_x0],
    "ch06.upsampler_input": [upsample_nearest, upsample_swapped, upsample_align_corners, upsample_bicubic],
}
