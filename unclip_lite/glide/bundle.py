"""A GLIDE ready to draw: the text-to-image model, its vocabulary and its diffusion, saved as one.

::

    glide = load_glide("glide-shapes-tiny")
    images = glide.sample(["a red star", "a blue circle"], guidance=3.0, steps=50, seed=0)  # [2, 3, 32, 32] in [0, 1]

:meth:`GlideBundle.sample` checks every knob before any work starts (sampler name, step
count, guidance scale, prompt length), so a typo costs an error message, not minutes.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from unclip_lite.checkpoints import load_checkpoint, load_state_into, save_checkpoint
from unclip_lite.diffusion import SAMPLERS, GaussianDiffusion, sample
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.text2im import Text2Im, Text2ImConfig, encode_prompts
from unclip_lite.tokenizer import CompactVocab


@dataclass
class DiffusionConfig:
    """How the model was trained to denoise: the schedule and what the network predicts."""

    schedule: str = "cosine"
    num_timesteps: int = 1000
    parameterization: str = "eps"

    def build(self) -> GaussianDiffusion:
        return GaussianDiffusion.from_schedule(self.schedule, self.num_timesteps,
                                               parameterization=self.parameterization)


@dataclass
class GlideBundle:
    model: Text2Im
    vocab: CompactVocab
    diffusion_config: DiffusionConfig = field(default_factory=DiffusionConfig)
    extra: dict = field(default_factory=dict)  # saved alongside: how it was trained
    manifest: dict = field(default_factory=dict)  # of the checkpoint it was loaded from

    def __post_init__(self):
        self.diffusion = self.diffusion_config.build()

    @property
    def image_size(self) -> int:
        return self.model.config.unet.image_size

    @property
    def context_length(self) -> int:
        return self.model.config.context_length

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def tokenize(self, prompts: str | Sequence[str]) -> torch.Tensor:
        """Token ids ``[N, context_length]``; over-long prompts raise ``PromptTooLongError``."""
        return encode_prompts(self.vocab, prompts, self.context_length)

    def check_sampling(self, sampler: str, steps: int | None) -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {', '.join(SAMPLERS)}")
        T = self.diffusion.num_timesteps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T):
            raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")

    def respaced(self, respacing: str | None) -> GaussianDiffusion:
        """The diffusion to sample with: the trained one, or a respaced subset ("100", "ddim50", "fast27")."""
        if respacing is None:
            return self.diffusion
        try:
            return self.diffusion.respaced(respacing)
        except ValueError as err:
            raise ValueError(f"bad respacing {respacing!r}: {err}") from None

    @torch.no_grad()
    def sample(self, prompts: str | Sequence[str], guidance: float = 3.0, sampler: str = "ddim",
               steps: int | None = 50, seed: int = 0, batch_size: int = 256, precision: str = "fp32",
               respacing: str | None = None, progress: bool = False) -> torch.Tensor:
        """Images ``[N, 3, R, R]`` in [0, 1] for ``prompts``, guided with scale ``guidance``.

        ``sampler="ddim"`` takes ``steps`` strided steps (η = 0); ``"ddpm"`` ancestral steps over
        all ``num_timesteps`` (``steps=None``) or ``steps`` respaced ones. Or give ``respacing``
        (a :func:`~unclip_lite.diffusion.space_timesteps` spec such as ``"fast27"``, with
        ``steps=None``) and the sampler walks every step of that respaced process. The same
        ``seed``, prompts and batch size give the same images. ``precision="bf16"`` runs the
        network under autocast (about 1.8× faster on CPUs with bf16 support).
        """
        self.check_sampling(sampler, steps)
        diffusion = self.respaced(respacing)
        if respacing is not None:
            if steps is not None:
                raise ValueError("pass either steps or respacing, not both")
            steps = diffusion.num_timesteps if sampler == "ddim" else None
        if precision not in ("fp32", "bf16"):
            raise ValueError(f"precision must be 'fp32' or 'bf16', got {precision!r}")
        tokens = self.tokenize(prompts).to(self.device)  # [N, L]; raises before any sampling
        classifier_free_guidance(self.model, tokens[:1], guidance)  # validates the scale now
        self.model.eval()
        generator = torch.Generator(self.device).manual_seed(seed)
        autocast = (torch.autocast(self.device.type, dtype=torch.bfloat16) if precision == "bf16"
                    else contextlib.nullcontext())
        chunks = []
        for chunk in tokens.split(batch_size):
            model_fn = classifier_free_guidance(self.model, chunk, guidance)

            def fn(x, t, model_fn=model_fn):
                with autocast:
                    return model_fn(x, t).float()

            shape = (len(chunk), self.model.config.unet.in_channels, self.image_size, self.image_size)
            x = sample(diffusion, fn, shape, sampler=sampler, steps=steps, generator=generator,
                       device=self.device, progress=progress)  # [n, 3, R, R] in [-1, 1]
            chunks.append(((x + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(chunks)

    def config_dict(self) -> dict:
        return {"text2im": self.model.config.to_dict(), "vocab": self.vocab.to_dict(),
                "diffusion": vars(self.diffusion_config).copy(), "extra": self.extra}

    def save(self, path: str | Path, manifest: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        return save_checkpoint(path, self.model.state_dict(), self.config_dict(), kind="glide",
                               manifest=manifest, dtype=dtype)


def bundle_from_config(config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> GlideBundle:
    """Rebuild a bundle from :meth:`GlideBundle.config_dict` (and load weights if given)."""
    model = Text2Im(Text2ImConfig.from_dict(config["text2im"]))
    if state_dict is not None:
        load_state_into(model, state_dict, source=source)
    return GlideBundle(model.eval(), CompactVocab.from_dict(config["vocab"]),
                       DiffusionConfig(**config["diffusion"]), config.get("extra", {}))


def load_glide(name_or_path: str | Path, device: str | torch.device | None = None) -> GlideBundle:
    """A trained GLIDE from the registry (``"glide-shapes-tiny"``) or a path, in eval mode."""
    ckpt = load_checkpoint(name_or_path, kind="glide")
    bundle = bundle_from_config(ckpt.config, {k: v.float() for k, v in ckpt.state_dict.items()}, str(ckpt.path))
    bundle.manifest = ckpt.manifest
    if device is not None:
        bundle.model.to(device)
    return bundle
