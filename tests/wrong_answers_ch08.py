"""Plausible wrong answers to chapter 08's exercises; tests/test_exercises.py loads this file."""
import torch


# --- ch08.image_conditioning ---------------------------------------------------------------------
def conditioning_tokens_after_caption(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens):
    B = len(image_embed)
    tokens = to_tokens(image_embed).view(B, n_tokens, -1)
    return (pooled + to_cond(image_embed), torch.cat([xf_out, tokens], 1),
            torch.cat([text_mask, text_mask.new_ones(B, n_tokens)], 1))


def conditioning_replaces_pooled(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens):
    B = len(image_embed)  # z_i instead of the caption's pooled vector, not beside it
    tokens = to_tokens(image_embed).view(B, n_tokens, -1)
    return to_cond(image_embed), torch.cat([tokens, xf_out], 1), torch.cat([text_mask.new_ones(B, n_tokens), text_mask], 1)


def conditioning_interleaved_tokens(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens):
    B = len(image_embed)  # every n-th number to a token, not consecutive chunks
    tokens = to_tokens(image_embed).view(B, -1, n_tokens).transpose(1, 2)
    return (pooled + to_cond(image_embed), torch.cat([tokens, xf_out], 1),
            torch.cat([text_mask.new_ones(B, n_tokens), text_mask], 1))


def conditioning_hidden_tokens(image_embed, pooled, xf_out, text_mask, to_cond, to_tokens, n_tokens):
    B = len(image_embed)  # the image tokens added but masked out, so no pixel can read them
    tokens = to_tokens(image_embed).view(B, n_tokens, -1)
    return (pooled + to_cond(image_embed), torch.cat([tokens, xf_out], 1),
            torch.cat([text_mask.new_zeros(B, n_tokens), text_mask], 1))


# --- ch08.dual_dropout --------------------------------------------------------------------------
def dropout_one_draw(tokens, image_embed, empty, u, p_text, p_image):  # one draw decides both
    text, image = u[:, 0] < p_text, u[:, 0] < p_image
    return (torch.where(text[:, None], empty.expand_as(tokens), tokens),
            torch.where(image[:, None], torch.zeros_like(image_embed), image_embed))


def dropout_keeps_below(tokens, image_embed, empty, u, p_text, p_image):  # drops where u >= p
    text, image = u[:, 0] >= p_text, u[:, 1] >= p_image
    return (torch.where(text[:, None], empty.expand_as(tokens), tokens),
            torch.where(image[:, None], torch.zeros_like(image_embed), image_embed))


def dropout_zero_tokens(tokens, image_embed, empty, u, p_text, p_image):  # all-padding, not the empty caption
    text, image = u[:, 0] < p_text, u[:, 1] < p_image
    return (torch.where(text[:, None], torch.zeros_like(tokens), tokens),
            torch.where(image[:, None], torch.zeros_like(image_embed), image_embed))


# --- ch08.gated_attention -------------------------------------------------------------------------
def _weights(q, k, keep):
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return (logits - logits.amax(-1, keepdim=True)).exp()


def gated_after_softmax(q, k, v, keep, gate, gated):  # scales normalised weights: they no longer sum to 1
    w = _weights(q, k, keep)
    w = w / w.sum(-1, keepdim=True)
    w = torch.cat([w[..., :gated] * gate[None, :, None, None], w[..., gated:]], -1)
    return w @ v


def gated_logit_offset(q, k, v, keep, gate, gated):  # adds the gate to the logits instead of multiplying
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    logits = torch.cat([logits[..., :gated] + gate[None, :, None, None], logits[..., gated:]], -1)
    if keep is not None:
        logits = logits.masked_fill(~keep, float("-inf"))
    return logits.softmax(-1) @ v


def gated_last_keys(q, k, v, keep, gate, gated):  # gates the last keys (the pixels), not the first
    w = _weights(q, k, keep)
    w = torch.cat([w[..., :-gated], w[..., -gated:] * gate[None, :, None, None]], -1)
    return w @ v / w.sum(-1, keepdim=True)


# --- ch08.guided_prediction ------------------------------------------------------------------------
def _halves(model_fn, x_t, t, tokens, image_embed, null_tokens, null_embed):
    out = model_fn(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([tokens, null_tokens]),
                   torch.cat([image_embed, null_embed]))
    return out.chunk(2)


def guided_keeps_embedding(model_fn, x_t, t, tokens, image_embed, empty, scale):  # ∅ drops the caption only
    cond, uncond = _halves(model_fn, x_t, t, tokens, image_embed, empty.expand_as(tokens), image_embed)
    return uncond + scale * (cond - uncond)


def guided_keeps_caption(model_fn, x_t, t, tokens, image_embed, empty, scale):  # ∅ zeroes z_i only
    cond, uncond = _halves(model_fn, x_t, t, tokens, image_embed, tokens, torch.zeros_like(image_embed))
    return uncond + scale * (cond - uncond)


def guided_from_conditional(model_fn, x_t, t, tokens, image_embed, empty, scale):  # ε_c + s(ε_c − ε_∅)
    cond, uncond = _halves(model_fn, x_t, t, tokens, image_embed, empty.expand_as(tokens),
                           torch.zeros_like(image_embed))
    return cond + scale * (cond - uncond)




# --- ch08.anisotropic_blur --------------------------------------------------------------------------
def _blur_with(images, sigma_x, sigma_y, theta, *, inverse=True, rotate=True, normalise=True, pad="reflect"):
    import math

    import torch.nn.functional as F
    r = max(1, math.ceil(3 * max(sigma_x, sigma_y)))
    r = min(r, images.shape[-1] - 1, images.shape[-2] - 1)
    c, s = (math.cos(theta), math.sin(theta)) if rotate else (1.0, 0.0)
    rot = torch.tensor([[c, -s], [s, c]], dtype=torch.float64)
    cov = rot @ torch.diag(torch.tensor([sigma_x ** 2, sigma_y ** 2], dtype=torch.float64)) @ rot.T
    P = torch.linalg.inv(cov) if inverse else cov
    o = torch.arange(-r, r + 1, dtype=torch.float64)
    y, x = torch.meshgrid(o, o, indexing="ij")
    k = torch.exp(-0.5 * (P[0, 0] * x * x + 2 * P[0, 1] * x * y + P[1, 1] * y * y))
    k = (k / k.sum() if normalise else k).float()
    C = images.shape[1]
    padded = F.pad(images, (r,) * 4, mode="reflect") if pad == "reflect" else F.pad(images, (r,) * 4)
    return F.conv2d(padded, k.expand(C, 1, *k.shape), groups=C)


def blur_unnormalised(images, sigma_x, sigma_y, theta):  # the kernel does not sum to 1: brightness changes
    return _blur_with(images, sigma_x, sigma_y, theta, normalise=False)


def blur_covariance_not_inverse(images, sigma_x, sigma_y, theta):  # exp(-½ uᵀ Σ u): the wrong width
    return _blur_with(images, sigma_x, sigma_y, theta, inverse=False)


def blur_ignores_rotation(images, sigma_x, sigma_y, theta):  # always axis-aligned
    return _blur_with(images, sigma_x, sigma_y, theta, rotate=False)


def blur_zero_padding(images, sigma_x, sigma_y, theta):  # dark borders
    return _blur_with(images, sigma_x, sigma_y, theta, pad="zeros")


WRONG_ANSWERS = {
    "ch08.image_conditioning": [conditioning_tokens_after_caption, conditioning_replaces_pooled,
                                conditioning_interleaved_tokens, conditioning_hidden_tokens],
    "ch08.dual_dropout": [dropout_one_draw, dropout_keeps_below, dropout_zero_tokens],
    "ch08.gated_attention": [gated_after_softmax, gated_logit_offset, gated_last_keys],
    "ch08.guided_prediction": [guided_keeps_embedding, guided_keeps_caption, guided_from_conditional],
    "ch08.anisotropic_blur": [blur_unnormalised, blur_covariance_not_inverse, blur_ignores_rotation, blur_zero_padding],
}
