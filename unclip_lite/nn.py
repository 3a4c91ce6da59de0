"""Shared building blocks: LayerNorm, activations, attention, MLP, the pre-LN transformer, and
the sinusoidal timestep embedding of every diffusion model and noise-aware encoder.

CLIP's two towers (Radford et al. 2021, §2.4), the unCLIP prior (Ramesh et al. 2022, §2.2)
and GLIDE's text encoder (Nichol et al. 2021) are all stacks of the same block::

    x = x + attn(ln_1(x))      # multi-head self-attention, optionally causal
    x = x + mlp(ln_2(x))       # Linear -> GELU -> Linear, 4x wider in the middle

The parameter names (``ln_1``, ``attn.out_proj``, ``mlp.c_fc``, ``mlp.c_proj``) follow
OpenAI's CLIP release so pretrained weights map onto ours almost one-to-one; the two places
we differ (``blocks`` for ``resblocks``, one ``attn.qkv`` Linear for ``in_proj_weight`` and
``in_proj_bias``) are listed in :mod:`unclip_lite.clip.interop`.

Every residual block of the package (this :class:`Block`, the U-Net's ``ResBlock`` and
``AttentionBlock``, the ResNet's ``Bottleneck``) is a :class:`CheckpointableBlock`: one switch,
:func:`set_grad_checkpointing`, makes a model recompute its blocks in the backward pass instead
of keeping their activations, and :func:`repeated_blocks` lists the same blocks as the units
FSDP shards one by one.
"""
from __future__ import annotations

import contextlib
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint


class LayerNorm(nn.LayerNorm):
    """LayerNorm that normalises in float32 and casts back to the input dtype.

    Under fp16/bf16 the mean/variance of a wide activation loses precision; computing the
    statistics in fp32 costs nothing measurable and keeps half-precision runs stable.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        out = F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps)
        return out.to(x.dtype)


class QuickGELU(nn.Module):
    """``x * sigmoid(1.702 x)``: the sigmoid approximation of GELU OpenAI's CLIP was trained with.

    Pretrained OpenAI weights need it (swapping in the exact GELU shifts their embeddings);
    for models trained from scratch ``nn.GELU`` is as good and faster.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


ACTIVATIONS = {"gelu": nn.GELU, "quick_gelu": QuickGELU}


def make_activation(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


class MultiheadAttention(nn.Module):
    """Multi-head self-attention (Vaswani et al. 2017, §3.2) through ``F.scaled_dot_product_attention``.

    One Linear makes queries, keys and values together (``qkv``, laid out ``[q; k; v]`` along
    its output dimension, exactly like PyTorch's ``nn.MultiheadAttention.in_proj_weight``);
    ``out_proj`` mixes the heads back.
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads != 0:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out_proj = nn.Linear(dim, dim)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Attend over ``x`` [B, L, D].

        ``causal``: position i sees only positions <= i (for left-to-right text).
        ``attn_mask``: broadcastable to [B, heads, L, L]; a bool mask is True where attention
        is *allowed*, a float mask is added to the logits (``-inf`` blocks). Give one or the other.
        """
        if causal and attn_mask is not None:
            raise ValueError("pass either causal=True or an attn_mask, not both (fold causality into the mask)")
        q, k, v = rearrange(self.qkv(x), "b l (three h d) -> three b h l d", three=3, h=self.heads)
        if attn_mask is not None and attn_mask.dtype != torch.bool:
            attn_mask = attn_mask.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=causal)  # [B, H, L, d]
        return self.out_proj(rearrange(y, "b h l d -> b l (h d)"))  # [B, L, D]


class MLP(nn.Module):
    """The position-wise feed-forward network: Linear -> activation -> Linear."""

    def __init__(self, dim: int, hidden: int, activation: str = "gelu"):
        super().__init__()
        self.c_fc = nn.Linear(dim, hidden)
        self.act = make_activation(activation)
        self.c_proj = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.c_proj(self.act(self.c_fc(x)))


@contextlib.contextmanager
def _buffers_restored(module: nn.Module):
    """Put ``module``'s buffers back as they were on exit (BatchNorm's running statistics: a
    recomputation must not count the batch a second time)."""
    before = [(buffer, buffer.clone()) for buffer in module.buffers()]
    try:
        yield
    finally:
        with torch.no_grad():
            for buffer, value in before:
                buffer.copy_(value)


class CheckpointableBlock(nn.Module):
    """A residual block whose activations can be recomputed in the backward pass instead of kept.

    Activation checkpointing (Chen et al. 2016, "Training Deep Nets with Sublinear Memory Cost";
    open_clip's ``set_grad_checkpointing``): with ``grad_checkpointing`` set, a training forward
    keeps only the block's inputs, and autograd runs the block's forward again when the backward
    pass reaches it. Memory: one block's internals at a time instead of every block's; cost: a
    second forward through every block (about a third more compute per step).

    A block writes its computation as a method and returns ``self.maybe_checkpoint(method, ...)``
    from ``forward``. Only a training forward with grad enabled is checkpointed: under
    ``torch.no_grad()`` nothing is saved anyway, and an eval-mode model is not being trained (a
    guidance gradient through one runs each block once, as without the flag).
    """

    grad_checkpointing: bool = False

    def maybe_checkpoint(self, body: Callable[..., torch.Tensor], *args, **kwargs) -> torch.Tensor:
        if not (self.grad_checkpointing and self.training and torch.is_grad_enabled()):
            return body(*args, **kwargs)
        recompute = {}
        if not torch.compiler.is_compiling() and next(self.buffers(), None) is not None:
            # eager recomputation runs BatchNorm again, in train mode: keep it from updating the
            # running statistics twice. (A compiled graph recomputes only pure ops; its buffer
            # updates stay in the forward graph.)
            recompute["context_fn"] = lambda: (contextlib.nullcontext(), _buffers_restored(self))
        # use_reentrant=False: keyword arguments, inputs that need no grad, and torch.compile
        # all work, and the RNG state is replayed, so dropout draws the same mask twice
        return checkpoint(body, *args, use_reentrant=False, **recompute, **kwargs)


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost :class:`CheckpointableBlock` s of ``model`` (none inside another), in module order.

    These are the units of both per-block checkpointing and FSDP2's ``fully_shard`` (each block's
    weights gathered just before it runs, freed after; the rest of the model is the root unit)."""
    found: list[tuple[str, nn.Module]] = []
    for name, module in model.named_modules():
        if isinstance(module, CheckpointableBlock) and not any(name.startswith(outer + ".") for outer, _ in found):
            found.append((name, module))
    return [module for _, module in found]


def set_grad_checkpointing(model: nn.Module, enabled: bool = True) -> int:
    """Turn activation checkpointing of ``model``'s blocks on (or off); returns how many blocks it
    switched: on, the outermost ones (:func:`repeated_blocks`); off, every block.

    Only the outermost blocks are checkpointed: a block inside one of them is recomputed with it,
    and its own flag would only make it run a third time."""
    outermost = {id(block) for block in repeated_blocks(model)}
    if enabled and not outermost:
        raise ValueError(f"{type(model).__name__} has no checkpointable block (a CheckpointableBlock: the "
                         "transformer Block, the U-Net's ResBlock and AttentionBlock, the ResNet's Bottleneck), "
                         "so there is nothing to recompute; checkpoint a model that has them")
    blocks = [module for module in model.modules() if isinstance(module, CheckpointableBlock)]
    for block in blocks:
        block.grad_checkpointing = enabled and id(block) in outermost
    return len(outermost) if enabled else len(blocks)


class Block(CheckpointableBlock):
    """A pre-LN residual block: ``x + attn(ln_1(x))`` then ``x + mlp(ln_2(x))``.

    Normalising the input of each branch, not the residual stream (GPT-2, Radford et al. 2019),
    keeps deep stacks trainable without warm-up tricks.
    """

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, activation: str = "gelu"):
        super().__init__()
        self.ln_1 = LayerNorm(dim)
        self.attn = MultiheadAttention(dim, heads)
        self.ln_2 = LayerNorm(dim)
        self.mlp = MLP(dim, int(dim * mlp_ratio), activation)

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return self.maybe_checkpoint(self._residual, x, causal, attn_mask)

    def _residual(self, x: torch.Tensor, causal: bool, attn_mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), causal=causal, attn_mask=attn_mask)  # [B, L, D]
        x = x + self.mlp(self.ln_2(x))  # [B, L, D]
        return x


class Transformer(nn.Module):
    """``layers`` pre-LN blocks of width ``width`` (no embeddings, no final norm)."""

    def __init__(
        self,
        width: int,
        layers: int,
        heads: int,
        mlp_ratio: float = 4.0,
        activation: str = "gelu",
    ):
        super().__init__()
        self.width = width
        self.blocks = nn.ModuleList(
            [Block(width, heads, mlp_ratio, activation) for _ in range(layers)]
        )

    def forward(
        self,
        x: torch.Tensor,
        causal: bool = False,
        attn_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        for block in self.blocks:
            x = block(x, causal=causal, attn_mask=attn_mask)  # [B, L, D]
        return x

    @torch.no_grad()
    def init_weights(self) -> None:
        """GPT-2-style init (what OpenAI's CLIP uses for its text transformer).

        Projections that write into the residual stream get a smaller std, scaled by
        ``1/sqrt(2 * layers)``, so the stream's variance stays flat with depth.
        """
        width, layers = self.width, max(len(self.blocks), 1)
        attn_std = width**-0.5
        proj_std = attn_std * (2 * layers) ** -0.5
        fc_std = (2 * width) ** -0.5
        for block in self.blocks:
            nn.init.normal_(block.attn.qkv.weight, std=attn_std)
            nn.init.zeros_(block.attn.qkv.bias)
            nn.init.normal_(block.attn.out_proj.weight, std=proj_std)
            nn.init.zeros_(block.attn.out_proj.bias)
            nn.init.normal_(block.mlp.c_fc.weight, std=fc_std)
            nn.init.normal_(block.mlp.c_proj.weight, std=proj_std)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of (possibly fractional) timesteps t [B].

    ``[cos(t w_0), ..., cos(t w_{h-1}), sin(t w_0), ..., sin(t w_{h-1})]``, w_i = max_period^(-i/h),
    h = dim // 2 (Transformer positions, Vaswani et al. 2017 §3.5, in ADM's cos-first order).
    """
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]  # [B, half]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)  # [B, 2 * half]
    return F.pad(emb, (0, dim % 2))  # [B, dim]
