"""What ``unclip-lite plan`` trains: each plannable model kind, its configs, and one training step's inputs.

A :class:`Workload` is a model plus what one training step feeds it and the loss it takes, so the
planner (:mod:`unclip_lite.planner`) can run that step on the ``meta`` device: shapes only, no
memory, so a 3.5B model "takes a step" on a laptop and a config error shows up there first.

The kinds are the package's models that have full-size configs (``clip``, ``glide``, ``prior``,
``ar-prior``, ``decoder``, ``upsampler``, ``classifier``); each also plans its tiny Shapes
configs, which is how the planner is checked against real CPU steps. The losses are the simplest
of the right shape (an MSE against a target for the diffusion models): memory and FLOPs do not
depend on the loss beyond its last few elementwise ops.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class Workload:
    """``loss(model(*inputs(batch)))`` is one training step's forward."""

    model: nn.Module
    inputs: Callable[[int, torch.device, torch.dtype], tuple[tuple, dict]]  # (batch, device, float dtype)
    loss: Callable[[object], torch.Tensor]
    unit: str = "image"  # what one batch element is (FLOPs are quoted per one)
    note: str = ""  # what the step trains on, when it is not the obvious thing


def _mse(out) -> torch.Tensor:
    out = out if isinstance(out, torch.Tensor) else torch.cat([o.flatten(1) for o in out], dim=1)
    return F.mse_loss(out.float(), torch.zeros_like(out, dtype=torch.float32))


def _steps(batch: int, device) -> torch.Tensor:
    return torch.randint(0, 1000, (batch,), device=device)


@lru_cache(maxsize=1)
def _shapes_vocab_size() -> int:
    from unclip_lite.clip.recipes import shapes_vocab
    with torch.device("cpu"):  # built once, outside the planner's meta context
        return shapes_vocab().size


# ----------------------------------------------------------------------------- the kinds


def _clip(name: str) -> Workload:
    from unclip_lite.clip import build_clip, get_config
    from unclip_lite.clip.loss import clip_loss

    cfg = get_config(name)
    model = build_clip(cfg)
    S, L, V = cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size

    def inputs(batch, device, dtype):
        return (torch.randn(batch, 3, S, S, device=device, dtype=dtype),
                torch.randint(0, V, (batch, L), device=device)), {}

    return Workload(model, inputs, lambda out: clip_loss(*out), "image-caption pair",
                    "the contrastive loss over the per-GPU batch (an all-gather adds a [b, B] logit matrix)")


def _text2im(cfg) -> tuple[nn.Module, Callable]:
    """A GLIDE-style model (Text2Im or Decoder) and a function of its extra inputs."""
    u = cfg.unet
    S, extra = u.image_size, u.in_channels - u.out_channels

    def inputs(batch, device, dtype):
        args = [torch.randn(batch, u.out_channels, S, S, device=device, dtype=dtype), _steps(batch, device),
                torch.randint(0, cfg.vocab_size, (batch, cfg.context_length), device=device)]
        if extra:
            args.append(torch.randn(batch, extra, S, S, device=device, dtype=dtype))
        return tuple(args), {}
    return inputs


def _glide(name: str) -> Workload:
    from unclip_lite.glide.text2im import Text2Im, get_text2im_config

    cfg = get_text2im_config(name)
    if cfg.vocab_size is None:
        cfg = get_text2im_config(name, vocab_size=_shapes_vocab_size())
    return Workload(Text2Im(cfg), _text2im(cfg), _mse)


def _decoder_configs() -> dict[str, Callable]:
    from unclip_lite.glide.text2im import get_text2im_config
    from unclip_lite.unclip.decoder import DecoderConfig, paper_decoder_config

    return {"shapes-tiny": lambda: DecoderConfig(get_text2im_config("shapes-tiny", vocab_size=_shapes_vocab_size()),
                                                 clip_dim=128),
            "paper-3.5b": paper_decoder_config}


def _decoder(name: str) -> Workload:
    from unclip_lite.unclip.decoder import Decoder

    cfg = _decoder_configs()[name]()
    glide_inputs = _text2im(cfg.glide)

    def inputs(batch, device, dtype):
        args, _ = glide_inputs(batch, device, dtype)
        return (*args, torch.randn(batch, cfg.clip_dim, device=device, dtype=dtype)), {}
    return Workload(Decoder(cfg), inputs, _mse)


def _prior(name: str) -> Workload:
    from unclip_lite.unclip.prior import DiffusionPrior, get_prior_config

    cfg = get_prior_config(name)

    def inputs(batch, device, dtype):
        E, L = cfg.embed_dim, cfg.context_length
        return (torch.randn(batch, E, device=device, dtype=dtype), _steps(batch, device),
                torch.randn(batch, E, device=device, dtype=dtype),
                torch.randn(batch, L, cfg.text_width, device=device, dtype=dtype),
                torch.ones(batch, L, dtype=torch.bool, device=device)), {}
    return Workload(DiffusionPrior(cfg), inputs, _mse, "caption → image embedding",
                    "caption tokens come from a frozen CLIP text tower, not trained here")


def _ar_prior(name: str) -> Workload:
    from unclip_lite.unclip.ar_prior import ARPrior, get_ar_prior_config

    cfg = get_ar_prior_config(name)

    def inputs(batch, device, dtype):
        E, L = cfg.embed_dim, cfg.context_length
        return (torch.randint(0, cfg.buckets, (batch, cfg.components), device=device),
                torch.randint(0, cfg.dot_buckets, (batch,), device=device),
                torch.randn(batch, E, device=device, dtype=dtype),
                torch.randn(batch, L, cfg.text_width, device=device, dtype=dtype),
                torch.ones(batch, L, dtype=torch.bool, device=device)), {}

    def loss(out):
        dot, codes = out
        return (F.cross_entropy(dot.float(), torch.zeros(len(dot), dtype=torch.long, device=dot.device))
                + F.cross_entropy(codes.float().flatten(0, 1),
                                  torch.zeros(codes.shape[0] * codes.shape[1], dtype=torch.long, device=dot.device)))
    return Workload(ARPrior(cfg), inputs, loss, "caption → image embedding",
                    "caption tokens come from a frozen CLIP text tower, not trained here")


def _upsampler_configs() -> dict[str, Callable]:
    from unclip_lite.unclip.upsampler import paper_upsampler_configs
    from unclip_lite.unclip.upsampler_recipes import RECIPES

    paper = {f"paper-{k.replace('->', '-')}": (lambda k=k: paper_upsampler_configs()[k])
             for k in paper_upsampler_configs()}
    return {**{name: (lambda make=make: make().model) for name, make in RECIPES.items()}, **paper}


def _upsampler(name: str) -> Workload:
    from unclip_lite.unclip.upsampler import Upsampler

    cfg = _upsampler_configs()[name]()
    crop = cfg.crop_size

    def inputs(batch, device, dtype):
        return (torch.randn(batch, 3, crop, crop, device=device, dtype=dtype), _steps(batch, device),
                torch.randn(batch, 3, crop // cfg.scale, crop // cfg.scale, device=device, dtype=dtype)), {}
    return Workload(Upsampler(cfg), inputs, _mse, "training crop",
                    f"trained on {crop} px crops of its {cfg.image_size} px output (crop_fraction "
                    f"{cfg.crop_fraction}): FLOPs and activations are per crop")


def _classifier(name: str) -> Workload:
    from unclip_lite.glide.classifier import NoisedClassifier, get_classifier_config

    cfg = get_classifier_config(name)
    u = cfg.unet

    def inputs(batch, device, dtype):
        return (torch.randn(batch, u.in_channels, u.image_size, u.image_size, device=device, dtype=dtype),
                _steps(batch, device)), {}

    def loss(out):
        return sum(F.cross_entropy(v.float(), torch.zeros(len(v), dtype=torch.long, device=v.device))
                   for v in out.values())
    return Workload(NoisedClassifier(cfg), inputs, loss)


@dataclass(frozen=True)
class PlanKind:
    build: Callable[[str], Workload]
    configs: Callable[[], list[str]]
    full_size: tuple[str, ...]  # the paper-size configs (what full_size_table lists)


def _names(module: str, attr: str) -> Callable[[], list[str]]:
    def names():
        import importlib
        return list(getattr(importlib.import_module(module), attr))
    return names


PLAN_KINDS: dict[str, PlanKind] = {
    "clip": PlanKind(_clip, _names("unclip_lite.clip.configs", "CONFIG_NAMES"), ("ViT-H-16-256",)),
    "glide": PlanKind(_glide, _names("unclip_lite.glide.text2im", "TEXT2IM_CONFIGS"),
                      ("glide-base-paper", "glide-upsample-paper")),
    "prior": PlanKind(_prior, _names("unclip_lite.unclip.prior", "PRIOR_CONFIGS"), ("paper-1b",)),
    "ar-prior": PlanKind(_ar_prior, _names("unclip_lite.unclip.ar_prior", "AR_PRIOR_CONFIGS"), ("paper-1b",)),
    "decoder": PlanKind(_decoder, lambda: list(_decoder_configs()), ("paper-3.5b",)),
    "upsampler": PlanKind(_upsampler, lambda: list(_upsampler_configs()), ("paper-64-256", "paper-256-1024")),
    "classifier": PlanKind(_classifier, _names("unclip_lite.glide.classifier", "CLASSIFIER_CONFIGS"),
                           ("adm-imagenet-128",)),
}


def build_workload(kind: str, config: str, device: str | torch.device = "meta") -> Workload:
    """The model of ``kind`` at ``config``, built on ``device`` (``meta``: nothing allocated)."""
    if kind not in PLAN_KINDS:
        raise ValueError(f"cannot plan model kind {kind!r}; plannable kinds: {', '.join(PLAN_KINDS)}")
    names = PLAN_KINDS[kind].configs()
    if config not in names:
        raise ValueError(f"unknown {kind} config {config!r}; choose one of {', '.join(names)}")
    with torch.device(device):
        return PLAN_KINDS[kind].build(config)
