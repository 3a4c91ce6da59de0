"""Plausible wrong answers to chapter 07's exercises; tests/test_exercises.py loads this file."""
import torch
import torch.nn.functional as F


# --- ch07.prior_sequence -----------------------------------------------------------------------
def _mask(text_mask, causal=True, hide_padding=True):
    B, L = text_mask.shape
    S = L + 4
    keys = torch.cat([text_mask if hide_padding else torch.ones_like(text_mask), torch.ones(B, 4, dtype=torch.bool)], 1)
    allowed = torch.ones(S, S, dtype=torch.bool)
    allowed = allowed.tril() if causal else allowed
    return (allowed[None] & keys[:, None, :])[:, None]


def sequence_time_first(caption, text_embed, time, noised, query, text_mask):  # timestep before z_t
    B = len(caption)
    seq = torch.cat([caption, time[:, None], text_embed[:, None], noised[:, None], query.expand(B, 1, -1)], 1)
    return seq, _mask(text_mask)


def sequence_sees_padding(caption, text_embed, time, noised, query, text_mask):  # forgets the caption's padding
    B = len(caption)
    seq = torch.cat([caption, text_embed[:, None], time[:, None], noised[:, None], query.expand(B, 1, -1)], 1)
    return seq, _mask(text_mask, hide_padding=False)


def sequence_not_causal(caption, text_embed, time, noised, query, text_mask):  # every token sees every token
    B = len(caption)
    seq = torch.cat([caption, text_embed[:, None], time[:, None], noised[:, None], query.expand(B, 1, -1)], 1)
    return seq, _mask(text_mask, causal=False)


def sequence_query_first(caption, text_embed, time, noised, query, text_mask):  # the query leads the sequence
    B = len(caption)
    seq = torch.cat([query.expand(B, 1, -1), caption, text_embed[:, None], time[:, None], noised[:, None]], 1)
    return seq, _mask(text_mask)


# --- ch07.x0_loss -----------------------------------------------------------------------------
def _noised(diffusion, x0, t, noise):
    ab = diffusion.alphas_cumprod[t].float()[:, None]
    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise


def loss_against_noise(model_fn, diffusion, x0, t, noise):  # the ε-objective of the image models
    return ((model_fn(_noised(diffusion, x0, t, noise), t) - noise) ** 2).mean()


def loss_variance_not_std(model_fn, diffusion, x0, t, noise):  # ᾱ and 1 − ᾱ without the square roots
    ab = diffusion.alphas_cumprod[t].float()[:, None]
    return ((model_fn(ab * x0 + (1 - ab) * noise, t) - x0) ** 2).mean()


def loss_uses_beta(model_fn, diffusion, x0, t, noise):  # one step's β_t in place of the cumulative ᾱ_t
    a = (1 - diffusion.betas[t]).float()[:, None]
    return ((model_fn(a.sqrt() * x0 + (1 - a).sqrt() * noise, t) - x0) ** 2).mean()


# --- ch07.pca_codes ---------------------------------------------------------------------------
def codes_not_centred(z, mean, components, low, high, buckets):  # forgets to subtract the mean
    c = z @ components.T
    return ((c - low) / (high - low) * buckets).floor().clamp(0, buckets - 1).long()


def codes_rounded(z, mean, components, low, high, buckets):  # rounds to the nearest edge instead of flooring
    c = (z - mean) @ components.T
    return ((c - low) / (high - low) * buckets).round().clamp(0, buckets - 1).long()


def codes_unclamped(z, mean, components, low, high, buckets):  # lets values outside the range escape
    c = (z - mean) @ components.T
    return ((c - low) / (high - low) * buckets).floor().long()


# --- ch07.codes_to_embedding ------------------------------------------------------------------
def decode_bin_edge(codes, mean, components, low, high, buckets):  # the bin's lower edge, not its centre
    c = low + codes.float() / buckets * (high - low)
    return F.normalize(mean + c @ components, dim=-1)


def decode_no_mean(codes, mean, components, low, high, buckets):  # forgets to add the mean back
    c = low + (codes.float() + 0.5) / buckets * (high - low)
    return F.normalize(c @ components, dim=-1)


def decode_not_unit(codes, mean, components, low, high, buckets):  # forgets to normalise
    c = low + (codes.float() + 0.5) / buckets * (high - low)
    return mean + c @ components


# --- ch07.keep_best ---------------------------------------------------------------------------
def best_by_cosine(candidates, text_embed):  # the angle alone: ignores how long each candidate is
    scores = F.cosine_similarity(candidates, text_embed[:, None], dim=-1)
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]


def best_is_worst(candidates, text_embed):  # argmin
    scores = (candidates * text_embed[:, None]).sum(-1)
    return candidates[torch.arange(len(candidates)), scores.argmin(1)]


def best_by_distance(candidates, text_embed):  # the nearest candidate in Euclidean distance
    distance = (candidates - text_embed[:, None]).norm(dim=-1)
    return candidates[torch.arange(len(candidates)), distance.argmin(1)]


def best_first_candidate(candidates, text_embed):  # never chooses
    return candidates[:, 0]


WRONG_ANSWERS = {
    "ch07.prior_sequence": [sequence_time_first, sequence_sees_padding, sequence_not_causal, sequence_query_first],
    "ch07.x0_loss": [loss_against_noise, loss_variance_not_std, loss_uses_beta],
    "ch07.pca_codes": [codes_not_centred, codes_rounded, codes_unclamped],
    "ch07.codes_to_embedding": [decode_bin_edge, decode_no_mean, decode_not_unit],
    "ch07.keep_best": [best_by_cosine, best_is_worst, best_by_distance, best_first_candidate],
}
