"""unCLIP's diffusion prior network (Ramesh et al. 2022, §2.2 and Appendix C).

The prior turns a caption into a CLIP *image* embedding. It is a decoder-only transformer
with a causal mask over one sequence per example::

    [ caption tokens (L) | z_t, the CLIP text embedding | timestep | noised z_i | query ]
      <- text tower's per-token outputs, projected ->     <- one token each ------------->

and the output at the final, learned query token predicts the *clean* image embedding
(x₀-prediction, MSE loss; §2.2: "we find it better to predict the unnoised z_i directly").
The caption tokens are the frozen CLIP text tower's per-token outputs, as Karlo and
diffusers' ``PriorTransformer`` use them; the paper trains a text encoder inside the prior.

Embeddings enter in a *diffusion space*: unit-norm CLIP embeddings have per-dimension
std ≈ 1/√d, badly scaled for Gaussian noise of std 1. ``PriorConfig.scaling`` picks the
paper's fixed factor (``"scale"``: multiply by ``scale``, 17.2 in the paper) or Karlo's
per-dimension standardisation (``"standardise"``: (z − mean) / std with stored statistics).
:meth:`DiffusionPrior.to_diffusion_space` / :meth:`from_diffusion_space` convert.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from unclip_lite.nn import LayerNorm, Transformer, timestep_embedding
from unclip_lite.utils import config_from_dict

SCALINGS = ("scale", "standardise")
EXTRA_TOKENS = 4  # z_t, timestep, noised z_i, query: diffusers' ``additional_embeddings``


@dataclass
class PriorConfig:
    embed_dim: int = 64  # CLIP embedding width: z_t in, z_i in and out
    text_width: int | None = None  # width of the text tower's per-token outputs (None: embed_dim)
    context_length: int = 24  # caption tokens
    width: int = 256
    layers: int = 4
    heads: int = 4
    mlp_ratio: float = 4.0
    time_embed_dim: int | None = None  # hidden width of the timestep MLP (None: width)
    norm_in: bool = False  # LayerNorm on the sequence before the blocks (diffusers norm_in_type="layer")
    text_embed_norm: bool = False  # LayerNorm on z_t before its projection (diffusers embedding_proj_norm)
    scaling: str = "standardise"  # how embeddings enter the diffusion space (see the module docstring)
    scale: float = 17.2  # for scaling="scale": the paper's factor (Appendix C)

    def __post_init__(self):
        self.text_width = self.text_width or self.embed_dim
        self.time_embed_dim = self.time_embed_dim or self.width
        for name in ("embed_dim", "text_width", "context_length", "width", "layers", "heads", "time_embed_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"PriorConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by {self.heads} heads")
        if self.scaling not in SCALINGS:
            raise ValueError(f"scaling must be one of {SCALINGS}, got {self.scaling!r}")
        if self.scale <= 0:
            raise ValueError(f"scale must be positive, got {self.scale}")

    @property
    def sequence_length(self) -> int:
        return self.context_length + EXTRA_TOKENS

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PriorConfig:
        return config_from_dict(cls, d)


PRIOR_CONFIGS: dict[str, PriorConfig] = {
    # Shapes: the embeddings of the 128-d shapes-tiny CLIPs, captions of up to 16 tokens
    "shapes-tiny": PriorConfig(embed_dim=128, context_length=16, width=256, layers=4, heads=4),
    # Karlo's released prior (diffusers PriorTransformer defaults): ViT-L/14 embeddings of 768,
    # 77 caption tokens, width 32 heads × 64, 20 layers; Karlo standardises the embeddings
    "karlo": PriorConfig(embed_dim=768, context_length=77, width=2048, layers=20, heads=32, scaling="standardise"),
    # the paper's 1B diffusion prior (Table 3: "1B"): ViT-H/16 embeddings of 1,024, a caption
    # context of 256 (Appendix C), width 2048; 20 blocks put it at 1.0B (24 would be 1.2B)
    "paper-1b": PriorConfig(embed_dim=1024, context_length=256, width=2048, layers=20, heads=32, scaling="scale"),
}


def get_prior_config(name: str) -> PriorConfig:
    """A fresh copy of the preset called ``name``."""
    if name not in PRIOR_CONFIGS:
        raise ValueError(f"unknown prior config {name!r}; choose one of {sorted(PRIOR_CONFIGS)}")
    return PriorConfig.from_dict(PRIOR_CONFIGS[name].to_dict())


def causal_mask(text_mask: torch.Tensor, extra_tokens: int = EXTRA_TOKENS) -> torch.Tensor:
    """``[B, 1, S, S]`` bool, True where attention is allowed: token i sees tokens j <= i, and
    no one sees caption padding (``text_mask`` [B, L], True = a real token); the
    ``extra_tokens`` after the caption are always visible to the tokens after them."""
    B, L = text_mask.shape
    S = L + extra_tokens
    keys = torch.cat([text_mask.bool(), text_mask.new_ones(B, extra_tokens, dtype=torch.bool)], dim=1)  # [B, S]
    lower = torch.ones(S, S, dtype=torch.bool, device=text_mask.device).tril()  # [S, S]
    return (lower[None] & keys[:, None, :])[:, None]  # [B, 1, S, S]


class DiffusionPrior(nn.Module):
    """The prior network: ``forward(z_noisy, t, text_embed, text_tokens, text_mask) -> ẑ_0``, all
    embeddings in the diffusion space (see :meth:`to_diffusion_space`)."""

    def __init__(self, config: PriorConfig):
        super().__init__()
        self.config = cfg = config
        W = cfg.width
        self.time_embed = nn.Sequential(nn.Linear(W, cfg.time_embed_dim), nn.SiLU(), nn.Linear(cfg.time_embed_dim, W))
        self.text_tokens_proj = nn.Linear(cfg.text_width, W)  # caption tokens -> width
        self.text_embed_norm = LayerNorm(cfg.embed_dim) if cfg.text_embed_norm else None
        self.text_embed_proj = nn.Linear(cfg.embed_dim, W)  # z_t -> one token
        self.image_embed_proj = nn.Linear(cfg.embed_dim, W)  # noised z_i -> one token
        self.query = nn.Parameter(torch.zeros(1, 1, W))  # the token whose output is the prediction
        self.positional_embedding = nn.Parameter(torch.zeros(1, cfg.sequence_length, W))
        self.norm_in = LayerNorm(W) if cfg.norm_in else None
        self.transformer = Transformer(W, cfg.layers, cfg.heads, cfg.mlp_ratio, "gelu")
        self.norm_out = LayerNorm(W)
        self.out_proj = nn.Linear(W, cfg.embed_dim)
        # the standardisation statistics (scaling="standardise"), set from data before training
        self.register_buffer("clip_mean", torch.zeros(cfg.embed_dim))
        self.register_buffer("clip_std", torch.ones(cfg.embed_dim))
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.query, std=0.01)
        self.transformer.init_weights()

    # ------------------------------------------------------------------ the diffusion space
    def to_diffusion_space(self, z: torch.Tensor) -> torch.Tensor:
        """CLIP embeddings [B, E] -> the space the prior diffuses in."""
        if self.config.scaling == "scale":
            return z * self.config.scale
        return (z - self.clip_mean) / self.clip_std

    def from_diffusion_space(self, x: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`to_diffusion_space`."""
        if self.config.scaling == "scale":
            return x / self.config.scale
        return x * self.clip_std + self.clip_mean

    @torch.no_grad()
    def set_statistics(self, image_embeddings: torch.Tensor) -> None:
        """Store the per-dimension mean and std of training image embeddings [N, E] (Karlo)."""
        self.check_embedding(image_embeddings, "image_embeddings")
        if len(image_embeddings) < 2:
            raise ValueError("set_statistics needs at least 2 embeddings")
        self.clip_mean.copy_(image_embeddings.float().mean(0))
        self.clip_std.copy_(image_embeddings.float().std(0).clamp_min(1e-6))

    def check_embedding(self, z: torch.Tensor, name: str) -> None:
        if z.dim() != 2 or z.shape[1] != self.config.embed_dim:
            raise ValueError(f"{name} must be [B, {self.config.embed_dim}] (this prior's CLIP embedding "
                             f"width), got {tuple(z.shape)}")

    # ------------------------------------------------------------------ the caption, or none
    @staticmethod
    def null_conditioning(text_embed: torch.Tensor, text_tokens: torch.Tensor,
                          text_mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """∅, the dropped caption (classifier-free guidance): z_t and every caption token zeroed,
        and only the first caption slot visible (a row with no visible key would be NaN)."""
        mask = torch.zeros_like(text_mask, dtype=torch.bool)
        mask[:, 0] = True
        return {"text_embed": torch.zeros_like(text_embed), "text_tokens": torch.zeros_like(text_tokens),
                "text_mask": mask}

    @classmethod
    def drop_text(cls, conditioning: dict[str, torch.Tensor], drop: torch.Tensor) -> dict[str, torch.Tensor]:
        """``conditioning`` with the examples where ``drop`` [B] is True replaced by ∅ (§2.2: the
        prior is trained with the text conditioning dropped 10% of the time)."""
        null = cls.null_conditioning(**conditioning)
        return {k: torch.where(drop.view(-1, *[1] * (v.dim() - 1)), null[k], v) for k, v in conditioning.items()}

    # ------------------------------------------------------------------ the network
    def forward(self, z_noisy: torch.Tensor, t: torch.Tensor, text_embed: torch.Tensor,
                text_tokens: torch.Tensor, text_mask: torch.Tensor) -> torch.Tensor:
        """ẑ_0 [B, E] from the noised image embedding ``z_noisy`` [B, E] at timesteps ``t`` [B],
        given the CLIP text embedding ``text_embed`` [B, E] and the text tower's per-token outputs
        ``text_tokens`` [B, L, text_width] with ``text_mask`` [B, L] (True = a real token)."""
        cfg = self.config
        self.check_embedding(z_noisy, "z_noisy")
        self.check_embedding(text_embed, "text_embed")
        B, L = text_mask.shape
        if text_tokens.shape != (B, L, cfg.text_width) or L != cfg.context_length or len(z_noisy) != B:
            raise ValueError(f"expected text_tokens [B, {cfg.context_length}, {cfg.text_width}] and text_mask "
                             f"[B, {cfg.context_length}] for B = {len(z_noisy)}, got {tuple(text_tokens.shape)} "
                             f"and {tuple(text_mask.shape)}")
        t = t.expand(B) if t.dim() == 0 else t
        time = self.time_embed(timestep_embedding(t, cfg.width).to(z_noisy.dtype))  # [B, W]
        if self.text_embed_norm is not None:
            text_embed = self.text_embed_norm(text_embed)
        seq = torch.cat([self.text_tokens_proj(text_tokens),  # [B, L, W]
                         self.text_embed_proj(text_embed)[:, None],  # [B, 1, W]
                         time[:, None],  # [B, 1, W]
                         self.image_embed_proj(z_noisy)[:, None],  # [B, 1, W]
                         self.query.expand(B, -1, -1)], dim=1)  # [B, S, W]
        seq = seq + self.positional_embedding
        if self.norm_in is not None:
            seq = self.norm_in(seq)
        seq = self.transformer(seq, attn_mask=causal_mask(text_mask))  # [B, S, W]
        return self.out_proj(self.norm_out(seq[:, -1]))  # [B, E]: the query token's output


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
