"""Our :class:`~unclip_lite.unclip.prior.DiffusionPrior` to and from diffusers' ``PriorTransformer``
(the architecture of Karlo's released prior), as a config dict plus a state dict: no diffusers
import here, and a local diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)
loads without a download or pickle.

Where the two differ: diffusers projects the caption tokens with ``Linear(embedding_dim, ...)``,
so its text tokens must be as wide as the CLIP embedding (Karlo: 768 and 768); ours has a
separate ``text_width`` and can hold either. diffusers applies the causal mask only when an
``attention_mask`` is passed; ours always does. diffusers keeps separate q, k, v projections,
ours one fused ``qkv``: the conversion concatenates and splits them.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

from unclip_lite.unclip.prior import EXTRA_TOKENS, DiffusionPrior, PriorConfig

# ours -> diffusers, for the parameters that only change name
_RENAMES = {
    "time_embed.0": "time_embedding.linear_1", "time_embed.2": "time_embedding.linear_2",
    "image_embed_proj": "proj_in", "text_embed_proj": "embedding_proj", "text_embed_norm": "embedding_proj_norm",
    "text_tokens_proj": "encoder_hidden_states_proj", "norm_in": "norm_in", "norm_out": "norm_out",
    "out_proj": "proj_to_clip_embeddings",
}
_BLOCK_RENAMES = {"ln_1": "norm1", "attn.out_proj": "attn1.to_out.0", "ln_2": "norm3",
                  "mlp.c_fc": "ff.net.0.proj", "mlp.c_proj": "ff.net.2"}


def diffusers_config(config: PriorConfig) -> dict:
    """The ``PriorTransformer(**kwargs)`` that has our architecture."""
    if config.text_width != config.embed_dim:
        raise ValueError(f"diffusers' PriorTransformer reads caption tokens as wide as the embedding "
                         f"({config.embed_dim}); this prior's are {config.text_width}")
    return {"num_attention_heads": config.heads, "attention_head_dim": config.width // config.heads,
            "num_layers": config.layers, "embedding_dim": config.embed_dim, "num_embeddings": config.context_length,
            "additional_embeddings": EXTRA_TOKENS, "time_embed_dim": config.time_embed_dim,
            "norm_in_type": "layer" if config.norm_in else None,
            "embedding_proj_norm_type": "layer" if config.text_embed_norm else None,
            "encoder_hid_proj_type": "linear", "added_emb_type": "prd", "dropout": 0.0, "time_embed_act_fn": "silu"}


def config_from_diffusers(kwargs: dict, **ours) -> PriorConfig:
    """Our config for a ``PriorTransformer`` config dict (``ours``: fields diffusers lacks, e.g. scaling)."""
    unsupported = {k: kwargs.get(k) for k, ok in (("additional_embeddings", EXTRA_TOKENS), ("added_emb_type", "prd"),
                                                  ("encoder_hid_proj_type", "linear"), ("time_embed_act_fn", "silu"))
                   if kwargs.get(k, ok) != ok}
    for key in ("embedding_proj_dim", "clip_embed_dim"):
        if kwargs.get(key) not in (None, kwargs.get("embedding_dim", 768)):
            unsupported[key] = kwargs[key]
    if unsupported:
        raise ValueError(f"a PriorTransformer with {unsupported} has no equivalent here")
    heads, head_dim = kwargs.get("num_attention_heads", 32), kwargs.get("attention_head_dim", 64)
    embed = kwargs.get("embedding_dim", 768)
    return PriorConfig(embed_dim=embed, text_width=embed, context_length=kwargs.get("num_embeddings", 77),
                       width=heads * head_dim, layers=kwargs.get("num_layers", 20), heads=heads,
                       time_embed_dim=kwargs.get("time_embed_dim") or heads * head_dim,
                       norm_in=kwargs.get("norm_in_type") == "layer",
                       text_embed_norm=kwargs.get("embedding_proj_norm_type") == "layer", **ours)


def to_diffusers_state_dict(prior: DiffusionPrior) -> dict[str, torch.Tensor]:
    """Our weights under diffusers' names (q, k, v split; clip_mean / clip_std as [1, E])."""
    out = {}
    for name, value in prior.state_dict().items():
        if name in ("clip_mean", "clip_std"):
            out[name] = value[None].clone()
        elif name == "query":
            out["prd_embedding"] = value.clone()
        elif name == "positional_embedding":
            out[name] = value.clone()
        elif name.startswith("transformer.blocks."):
            index, rest = name[len("transformer.blocks."):].split(".", 1)
            stem, leaf = rest.rsplit(".", 1)
            base = f"transformer_blocks.{index}."
            if stem == "attn.qkv":
                for part, chunk in zip(("to_q", "to_k", "to_v"), value.chunk(3, dim=0)):
                    out[f"{base}attn1.{part}.{leaf}"] = chunk.clone()
            else:
                out[f"{base}{_BLOCK_RENAMES[stem]}.{leaf}"] = value.clone()
        else:
            stem, leaf = name.rsplit(".", 1)
            out[f"{_RENAMES[stem]}.{leaf}"] = value.clone()
    return out


def from_diffusers_state_dict(state: dict[str, torch.Tensor], config: PriorConfig) -> DiffusionPrior:
    """A :class:`DiffusionPrior` holding a ``PriorTransformer``'s weights; every weight must be used."""
    prior = DiffusionPrior(config)
    inverse = {v: k for k, v in _RENAMES.items()}
    block_inverse = {v: k for k, v in _BLOCK_RENAMES.items()}
    ours, qkv = {}, {}
    for name, value in state.items():
        if name in ("clip_mean", "clip_std"):
            ours[name] = value.reshape(-1)
        elif name == "prd_embedding":
            ours["query"] = value
        elif name == "positional_embedding":
            ours[name] = value
        elif name.startswith("transformer_blocks."):
            index, rest = name[len("transformer_blocks."):].split(".", 1)
            stem, leaf = rest.rsplit(".", 1)
            if stem in ("attn1.to_q", "attn1.to_k", "attn1.to_v"):
                qkv.setdefault((index, leaf), {})[stem[-1]] = value
            elif stem in block_inverse:
                ours[f"transformer.blocks.{index}.{block_inverse[stem]}.{leaf}"] = value
            else:
                raise ValueError(f"unexpected diffusers weight {name!r}")
        else:
            stem, leaf = name.rsplit(".", 1)
            if stem not in inverse:
                raise ValueError(f"unexpected diffusers weight {name!r}")
            ours[f"{inverse[stem]}.{leaf}"] = value
    for (index, leaf), parts in qkv.items():
        ours[f"transformer.blocks.{index}.attn.qkv.{leaf}"] = torch.cat([parts["q"], parts["k"], parts["v"]])
    prior.load_state_dict(ours, strict=True)
    return prior


def load_diffusers_prior(folder: str | Path, **ours) -> DiffusionPrior:
    """A prior from a local diffusers folder (``config.json`` + ``diffusion_pytorch_model.safetensors``)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    weights = folder / "diffusion_pytorch_model.safetensors"
    if not (folder / "config.json").is_file() or not weights.is_file():
        raise FileNotFoundError(f"{folder} is not a diffusers PriorTransformer folder (config.json and "
                                f"diffusion_pytorch_model.safetensors)")
    kwargs = json.loads((folder / "config.json").read_text())
    return from_diffusers_state_dict(load_file(str(weights)), config_from_diffusers(kwargs, **ours)).eval()
