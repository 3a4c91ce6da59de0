"""unCLIP's autoregressive prior (Ramesh et al. 2022, §2.2 and Appendix C).

The AR prior turns the CLIP image embedding into a short sequence of discrete codes and
predicts them one by one, like a language model:

1. **PCA.** The embeddings' principal components, in order of decreasing eigenvalue; only the
   first k are kept (the paper: 319 of 1,024 at < 1% mean squared reconstruction error).
   :func:`fit_pca` and :func:`pca_error_curve` give the components and the error for every k.
2. **Quantisation.** Each kept coefficient is cut into ``buckets`` equal bins between its
   observed extremes (1,024 in the paper) and replaced by its bin's index: the codes.
3. **A causal transformer** reads ``[caption tokens | z_t | dot token | c_1 … c_k]`` and
   predicts each code from everything before it. The *dot token* is the quantised z_i · z_t;
   conditioning on it lets sampling ask for an image embedding that matches its caption well
   (the paper draws it from the top half of its distribution). The output at z_t predicts
   the dot token, so the model learns that distribution too.

Text is dropped 10% of the time (z_t and the caption tokens zeroed, and the dot token set to
a "none" index), which gives classifier-free guidance on the logits at sampling.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.nn import functional as F

from unclip_lite.nn import LayerNorm, Transformer
from unclip_lite.unclip.prior import DiffusionPrior, causal_mask
from unclip_lite.utils import config_from_dict


@dataclass
class ARPriorConfig:
    embed_dim: int = 128  # CLIP embedding width E
    text_width: int | None = None  # width of the text tower's per-token outputs (None: embed_dim)
    context_length: int = 16  # caption tokens
    components: int = 32  # k: principal components kept (codes per embedding)
    buckets: int = 64  # bins per component
    dot_buckets: int = 32  # bins of z_i · z_t
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0

    def __post_init__(self):
        self.text_width = self.text_width or self.embed_dim
        for name in ("embed_dim", "text_width", "context_length", "components", "width", "layers", "heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"ARPriorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.components > self.embed_dim:
            raise ValueError(f"cannot keep {self.components} principal components of a {self.embed_dim}-d embedding")
        if self.buckets < 2 or self.dot_buckets < 2:
            raise ValueError(f"need at least 2 buckets, got buckets={self.buckets}, dot_buckets={self.dot_buckets}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")

    @property
    def sequence_length(self) -> int:
        return self.context_length + 2 + self.components

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ARPriorConfig:
        return config_from_dict(cls, d)


AR_PRIOR_CONFIGS: dict[str, ARPriorConfig] = {
    "shapes-tiny": ARPriorConfig(embed_dim=128, context_length=16, components=32, buckets=64),
    # the paper's AR prior (Appendix C): ViT-H/16 embeddings (1,024), 319 components × 1,024
    # buckets; its latent decoder has context 384, width 1,664, 24 layers, 26 heads
    "paper-1b": ARPriorConfig(embed_dim=1024, context_length=256, components=319, buckets=1024, dot_buckets=1024,
                              width=1664, layers=24, heads=26),
}


def get_ar_prior_config(name: str) -> ARPriorConfig:
    if name not in AR_PRIOR_CONFIGS:
        raise ValueError(f"unknown AR prior config {name!r}; choose one of {sorted(AR_PRIOR_CONFIGS)}")
    return ARPriorConfig.from_dict(AR_PRIOR_CONFIGS[name].to_dict())


# ----------------------------------------------------------------------------- PCA + buckets

def fit_pca(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(mean [E], components [E, E] (rows, by decreasing eigenvalue), eigenvalues [E])`` of
    embeddings ``z`` [N, E]; eigenvalues of the covariance with denominator N."""
    if z.dim() != 2 or len(z) < 2:
        raise ValueError(f"fit_pca needs embeddings [N >= 2, E], got {tuple(z.shape)}")
    z = z.double()
    mean = z.mean(0)
    eigenvalues, vectors = torch.linalg.eigh((z - mean).T @ (z - mean) / len(z))  # ascending
    order = eigenvalues.argsort(descending=True)
    return mean.float(), vectors[:, order].T.float().contiguous(), eigenvalues[order].clamp_min(0).float()


def pca_error_curve(eigenvalues: torch.Tensor, mean_square_norm: float = 1.0) -> torch.Tensor:
    """``[E + 1]``: the mean squared reconstruction error when keeping k = 0 … E components,
    relative to the embeddings' mean squared norm (1 for unit vectors): the eigenvalues left out."""
    left_out = eigenvalues.flip(0).cumsum(0).flip(0)  # [E]: sum of λ_j for j >= k
    return torch.cat([left_out, left_out.new_zeros(1)]) / mean_square_norm


def choose_components(errors: torch.Tensor, max_error: float = 0.01) -> int:
    """The smallest k whose relative error is below ``max_error`` (the paper's 1% rule)."""
    below = (errors < max_error).nonzero()
    if not len(below):
        raise ValueError(f"no number of components reaches an error below {max_error}")
    return max(1, int(below[0]))


def quantise(values: torch.Tensor, low: torch.Tensor, high: torch.Tensor, buckets: int) -> torch.Tensor:
    """Bin indices in [0, buckets) of ``values`` [..., k] on ``buckets`` equal bins per column
    between ``low`` and ``high`` [k] (values outside go to the end bins)."""
    scaled = (values - low) / (high - low) * buckets
    return scaled.floor().clamp(0, buckets - 1).long()


def dequantise(codes: torch.Tensor, low: torch.Tensor, high: torch.Tensor, buckets: int) -> torch.Tensor:
    """The centre of each code's bin: the inverse of :func:`quantise` up to half a bin."""
    return low + (codes.float() + 0.5) / buckets * (high - low)


def top_half(probs: torch.Tensor) -> torch.Tensor:
    """``probs`` [B, D] over bins in increasing order of value, restricted to the top half of
    the mass (the highest bins whose mass from the top reaches 1/2, the crossing bin included)
    and renormalised."""
    from_top = probs.flip(1).cumsum(1).flip(1)  # [B, D]: mass of this bin and every higher one
    keep = (from_top - probs) < 0.5  # the bins above hold less than half the mass
    kept = probs * keep
    return kept / kept.sum(1, keepdim=True)


class ARPrior(nn.Module):
    """``forward(codes, dot, text_embed, text_tokens, text_mask) -> (dot logits [B, D],
    code logits [B, k, buckets])``; code j's logits see codes < j only."""

    def __init__(self, config: ARPriorConfig):
        super().__init__()
        self.config = cfg = config
        W = cfg.width
        self.text_tokens_proj = nn.Linear(cfg.text_width, W)
        self.text_embed_proj = nn.Linear(cfg.embed_dim, W)
        self.dot_embedding = nn.Embedding(cfg.dot_buckets + 1, W)  # the last index: "none" (text dropped)
        self.code_embedding = nn.Embedding(cfg.buckets, W)
        self.positional_embedding = nn.Parameter(torch.randn(1, cfg.sequence_length, W) * 0.01)
        self.transformer = Transformer(W, cfg.layers, cfg.heads, cfg.mlp_ratio, "gelu")
        self.norm_out = LayerNorm(W)
        self.dot_head = nn.Linear(W, cfg.dot_buckets)
        self.code_head = nn.Linear(W, cfg.buckets)
        k, E = cfg.components, cfg.embed_dim
        # the codec, fitted on training embeddings (set_codec) and saved with the weights
        self.register_buffer("pca_mean", torch.zeros(E))
        self.register_buffer("pca_components", torch.eye(E)[:k].clone())  # [k, E]
        self.register_buffer("code_low", -torch.ones(k))
        self.register_buffer("code_high", torch.ones(k))
        self.register_buffer("dot_range", torch.tensor([-1.0, 1.0]))
        nn.init.normal_(self.code_embedding.weight, std=0.02)
        nn.init.normal_(self.dot_embedding.weight, std=0.02)
        self.transformer.init_weights()

    null_conditioning = staticmethod(DiffusionPrior.null_conditioning)
    drop_text = DiffusionPrior.drop_text

    # ------------------------------------------------------------------ the codec
    @torch.no_grad()
    def set_codec(self, z_i: torch.Tensor, z_t: torch.Tensor) -> None:
        """Fit PCA, the code ranges and the dot-product range on training embeddings [N, E]."""
        mean, components, _ = fit_pca(z_i)
        self.pca_mean.copy_(mean)
        self.pca_components.copy_(components[:self.config.components])
        coefficients = (z_i - mean) @ self.pca_components.T  # [N, k]
        self.code_low.copy_(coefficients.min(0).values)
        self.code_high.copy_(coefficients.max(0).values.clamp_min(self.code_low + 1e-6))
        dots = (z_i * z_t).sum(1)
        self.dot_range.copy_(torch.stack([dots.min(), dots.max().clamp_min(dots.min() + 1e-6)]))

    def encode(self, z: torch.Tensor) -> torch.Tensor:
        """Embeddings [B, E] -> codes [B, k]."""
        coefficients = (z - self.pca_mean) @ self.pca_components.T  # [B, k]
        return quantise(coefficients, self.code_low, self.code_high, self.config.buckets)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes [B, k] -> unit embeddings [B, E]."""
        coefficients = dequantise(codes, self.code_low, self.code_high, self.config.buckets)
        return F.normalize(self.pca_mean + coefficients @ self.pca_components, dim=-1)

    def dot_token(self, z_i: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
        """The quantised z_i · z_t [B]."""
        dots = (z_i * z_t).sum(1, keepdim=True)
        return quantise(dots, self.dot_range[:1], self.dot_range[1:], self.config.dot_buckets)[:, 0]

    # ------------------------------------------------------------------ the network
    def forward(self, codes: torch.Tensor, dot: torch.Tensor, text_embed: torch.Tensor, text_tokens: torch.Tensor,
                text_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        cfg = self.config
        B, L = text_mask.shape
        if text_embed.shape != (B, cfg.embed_dim) or text_tokens.shape != (B, L, cfg.text_width) \
                or L != cfg.context_length:
            raise ValueError(f"expected text_embed [B, {cfg.embed_dim}], text_tokens [B, {cfg.context_length}, "
                             f"{cfg.text_width}], got {tuple(text_embed.shape)} and {tuple(text_tokens.shape)}")
        if codes.dim() != 2 or codes.shape[0] != B or codes.shape[1] > cfg.components:
            raise ValueError(f"codes must be [B, <= {cfg.components}], got {tuple(codes.shape)}")
        seq = torch.cat([self.text_tokens_proj(text_tokens),  # [B, L, W]
                         self.text_embed_proj(text_embed)[:, None],  # [B, 1, W]
                         self.dot_embedding(dot)[:, None],  # [B, 1, W]
                         self.code_embedding(codes)], dim=1)  # [B, j, W]
        S = seq.shape[1]
        seq = seq + self.positional_embedding[:, :S]
        mask = causal_mask(text_mask, extra_tokens=S - L)
        h = self.norm_out(self.transformer(seq, attn_mask=mask))  # [B, S, W]
        return self.dot_head(h[:, L]), self.code_head(h[:, L + 1:L + 1 + cfg.components])  # the next-token heads
