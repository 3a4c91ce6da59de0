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
    "ch06.classifier_log_prob": [log_prob_raw_logits, log_prob_probabilities, log_prob_mean_over_heads,
                                 log_prob_batch_softmax],
    "ch06.inpaint_input": [inpaint_unmasked_image, inpaint_inverted_mask, inpaint_condition_first],
    "ch06.paste_eps": [paste_into_eps, paste_no_clamp, paste_inverted_mask, paste_returns_x0],
    "ch06.upsampler_input": [upsample_nearest, upsample_swapped, upsample_align_corners, upsample_bicubic],
}
