"""Plausible wrong answers to chapter 05's exercises; tests/test_exercises.py loads this file."""
import torch

PAD, SOT, EOT = 0, 1, 2


# --- ch05.guided_eps -------------------------------------------------------------------------
def eps_from_conditional(eps_cond, eps_uncond, scale):  # starts from ε(c) instead of ε(∅)
    return eps_cond + scale * (eps_cond - eps_uncond)


def eps_swapped(eps_cond, eps_uncond, scale):  # pushes away from the caption
    return eps_cond + scale * (eps_uncond - eps_cond)


def eps_average(eps_cond, eps_uncond, scale):  # a weighted average that forgets to extrapolate
    return (eps_uncond + scale * eps_cond) / (1 + scale)


# --- ch05.drop_captions ----------------------------------------------------------------------
def drop_all_pad(tokens, drop_mask):  # the empty caption without its start and end tokens
    return torch.where(drop_mask[:, None], torch.zeros_like(tokens), tokens)


def drop_keeps_old_words(tokens, drop_mask):  # writes SOT, EOT but leaves the old words after them
    out = tokens.clone()
    out[drop_mask, 0], out[drop_mask, 1] = SOT, EOT
    return out


def drop_pads_with_eot(tokens, drop_mask):  # forgets the PAD after EOT
    empty = torch.full_like(tokens, EOT)
    empty[:, 0] = SOT
    return torch.where(drop_mask[:, None], empty, tokens)


def drop_inverted_mask(tokens, drop_mask):  # drops the rows that should be kept
    empty = torch.full_like(tokens, PAD)
    empty[:, 0], empty[:, 1] = SOT, EOT
    return torch.where(drop_mask[:, None], tokens, empty)


# --- ch05.guided_output ----------------------------------------------------------------------
def output_guides_variance(out, scale, channels):  # guides the variance channels too
    B = len(out) // 2
    return out[B:] + scale * (out[:B] - out[B:])


def output_halves_swapped(out, scale, channels):  # takes the first half as unconditional
    B = len(out) // 2
    eps_u, eps_c = out[:B, :channels], out[B:, :channels]
    return torch.cat([eps_u + scale * (eps_c - eps_u), out[B:, channels:]], dim=1)


def output_uncond_variance(out, scale, channels):  # keeps the unconditional variance half
    B = len(out) // 2
    eps_c, eps_u = out[:B, :channels], out[B:, :channels]
    return torch.cat([eps_u + scale * (eps_c - eps_u), out[B:, channels:]], dim=1)


def output_drops_variance(out, scale, channels):  # returns ε only, losing the learned σ
    B = len(out) // 2
    eps_c, eps_u = out[:B, :channels], out[B:, :channels]
    return eps_u + scale * (eps_c - eps_u)


# --- ch05.min_snr_weight ---------------------------------------------------------------------
def snr_weight_x0_form(diffusion, t, gamma):  # the weight for an x_0 loss, not an ε loss
    ab = diffusion.alphas_cumprod[t]
    return (ab / (1 - ab)).clamp(max=gamma)


def snr_weight_inverted(diffusion, t, gamma):  # SNR upside down: noise over signal
    ab = diffusion.alphas_cumprod[t]
    snr = (1 - ab) / ab
    return snr.clamp(max=gamma) / snr


def snr_weight_amplitude(diffusion, t, gamma):  # the square root of ᾱ, an amplitude ratio
    ab = diffusion.alphas_cumprod[t]
    snr = ab.sqrt() / (1 - ab).sqrt()
    return snr.clamp(max=gamma) / snr


WRONG_ANSWERS = {
    "ch05.guided_eps": [eps_from_conditional, eps_swapped, eps_average],
    "ch05.drop_captions": [drop_all_pad, drop_keeps_old_words, drop_pads_with_eot, drop_inverted_mask],
    "ch05.guided_output": [output_guides_variance, output_halves_swapped, output_uncond_variance,
                           output_drops_variance],
    "ch05.min_snr_weight": [snr_weight_x0_form, snr_weight_inverted, snr_weight_amplitude],
}
