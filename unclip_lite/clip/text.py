"""CLIP's text encoder (Radford et al. 2021, §2.4).

"The text encoder is a Transformer ... The text sequence is bracketed with [SOS] and [EOS]
tokens and the activations of the highest layer of the transformer at the [EOS] token are
treated as the feature representation of the text which is layer normalized and then
linearly projected into the multi-modal embedding space. Masked self-attention was used."

In CLIP's vocabulary [EOS] has the largest id, so its position is ``tokens.argmax(-1)``. A
compact vocabulary numbers it differently: the config's ``eot_token_id`` then names it and the
features are read at its first occurrence.
"""
from __future__ import annotations

import torch
from torch import nn

from unclip_lite.clip.configs import TextConfig
from unclip_lite.nn import LayerNorm, Transformer


def check_tokens(tokens: torch.Tensor, context_length: int, vocab_size: int) -> None:
    """Raise a ValueError naming expected vs got unless ``tokens`` is [B, L<=context] of valid ids."""
    if not isinstance(tokens, torch.Tensor):
        raise ValueError(f"expected a token tensor of shape [B, {context_length}], got {type(tokens).__name__}")
    if tokens.ndim != 2 or not 1 <= tokens.shape[1] <= context_length:
        raise ValueError(
            f"expected tokens of shape [B, L] with L <= context_length={context_length}, got {list(tokens.shape)}"
        )
    if tokens.dtype.is_floating_point or tokens.dtype == torch.bool or tokens.is_complex():
        raise ValueError(f"expected integer token ids, got dtype {tokens.dtype}")
    if tokens.numel() and tokens.device.type != "meta":
        lo, hi = int(tokens.min()), int(tokens.max())
        if lo < 0 or hi >= vocab_size:
            raise ValueError(f"token ids must lie in [0, vocab_size={vocab_size}), got ids in [{lo}, {hi}]")


class TextTransformer(nn.Module):
    """Token + position embeddings -> causal transformer -> LayerNorm -> [EOS] -> projection."""

    def __init__(self, cfg: TextConfig, embed_dim: int, activation: str = "gelu"):
        super().__init__()
        self.context_length = cfg.context_length
        self.vocab_size = cfg.vocab_size
        self.eot_token_id = cfg.eot_token_id
        self.token_embedding = nn.Embedding(cfg.vocab_size, cfg.width)
        self.positional_embedding = nn.Parameter(torch.empty(cfg.context_length, cfg.width))
        self.transformer = Transformer(cfg.width, cfg.layers, cfg.heads, cfg.mlp_ratio, activation)
        self.ln_final = LayerNorm(cfg.width)
        self.proj = nn.Parameter(torch.empty(cfg.width, embed_dim))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        # OpenAI's init: small embeddings, GPT-2-style blocks, projection ~ N(0, 1/width)
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        self.transformer.init_weights()
        nn.init.normal_(self.proj, std=self.proj.shape[0] ** -0.5)

    def forward_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Per-token features after ``ln_final`` [B, L, width] (GLIDE and unCLIP condition on these)."""
        check_tokens(tokens, self.context_length, self.vocab_size)
        L = tokens.shape[1]
        # shorter inputs are fine: under the causal mask, padding after [EOS] changes nothing before it
        x = self.token_embedding(tokens) + self.positional_embedding[:L]  # [B, L, D]
        x = self.transformer(x, causal=True)  # [B, L, D]
        return self.ln_final(x)  # [B, L, D]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.forward_tokens(tokens)  # [B, L, D]
        if self.eot_token_id is None:
            eot = tokens.argmax(dim=-1)  # [B] position of [EOS] (the largest id)
        else:
            eot = (tokens == self.eot_token_id).int().argmax(dim=-1)  # [B] its first occurrence
        x = x[torch.arange(x.shape[0], device=x.device), eot]  # [B, D]
        return x @ self.proj  # [B, E]
