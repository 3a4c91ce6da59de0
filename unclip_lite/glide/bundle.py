"""A GLIDE ready to draw: the text-to-image model, its vocabulary and its diffusion, saved as one.

::

    glide = load_glide("glide-shapes-tiny")
    images = glide.sample(["a red star", "a blue circle"], guidance=3.0, steps=50, seed=0)  # [2, 3, 32, 32] in [0, 1]

:meth:`GlideBundle.sample` checks every knob before any work starts (sampler name, step
count, guidance scale, prompt length), so a typo costs an error message, not minutes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.diffusion import SAMPLERS, GaussianDiffusion, sample
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.diffusion.guidance import MAX_GRADIENT_SCALE, check_guidance_scale, gradient_guidance
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.inpaint import check_inpaint_inputs, paste_known, paste_result
from unclip_lite.glide.text2im import EXTRA_CHANNELS, Text2Im, Text2ImConfig, encode_prompts
from unclip_lite.hardware import autocast, resolve_precision
from unclip_lite.tokenizer import CompactVocab


@dataclass
class GlideBundle(Bundle):
    kind = "glide"
    model: Text2Im
    vocab: CompactVocab
    diffusion_config: DiffusionConfig = field(default_factory=DiffusionConfig)
    extra: dict = field(default_factory=dict)  # saved alongside: how it was trained
    manifest: dict = field(default_factory=dict)  # of the checkpoint it was loaded from

    def __post_init__(self):  # a model that learns its variance (2C outputs) needs a diffusion that reads it
        self.diffusion = self.diffusion_config.build(learned_range=self.model.config.unet.learn_sigma)

    @property
    def image_size(self) -> int:
        return self.model.config.unet.image_size

    @property
    def context_length(self) -> int:
        return self.model.config.context_length

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

    @property
    def conditioning(self) -> str:
        """What the model reads besides x_t and the caption, as its config declares it:
        ``"text"`` (nothing more), ``"inpaint"`` (image·mask ⊕ mask) or ``"low_res"`` (an upsampler's input)."""
        return self.model.config.conditioning

    @property
    def extra_channels(self) -> int:
        """Input channels beyond x_t: 0 (text-to-image), 4 (inpainting), 3 (upsampling)."""
        return EXTRA_CHANNELS[self.conditioning]

    @property
    def low_res_size(self) -> int | None:
        """An upsampler's input side, as its config declares it (None for other models)."""
        return self.model.config.low_res_size

    def conditioning_inputs(self, n: int, inpaint=None, low_res=None):
        """``(extra [n, E, R, R] or None, (image, mask) to paste back or None)`` in the model's
        [-1, 1] scale, from ``inpaint=(image, mask)`` or ``low_res`` images in [0, 1]."""
        if inpaint is not None:
            image, mask = inpaint
            inpaint = (image.to(self.device) * 2 - 1, mask.to(self.device))
        low_res = None if low_res is None else low_res.to(self.device) * 2 - 1
        extra = self.model.extra_inputs(n, inpaint=inpaint, low_res=low_res)
        known = None if inpaint is None else (inpaint[0], check_inpaint_inputs(*inpaint))
        return extra, known

    @torch.no_grad()
    def sample(self, prompts: str | Sequence[str], guidance: float = 3.0, sampler: str = "ddim",
               steps: int | None = 50, seed: int = 0, batch_size: int = 256, precision: str = "auto",
               respacing: str | None = None, progress: bool = False, inpaint=None,
               low_res: torch.Tensor | None = None, guide=None, guide_scale: float = 0.0,
               extra_conditioning: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Images ``[N, 3, R, R]`` in [0, 1] for ``prompts``, guided with scale ``guidance``.

        ``sampler="ddim"`` takes ``steps`` strided steps (η = 0); ``"ddpm"`` ancestral steps over
        all ``num_timesteps`` (``steps=None``) or ``steps`` respaced ones. Or give ``respacing``
        (a :func:`~unclip_lite.diffusion.space_timesteps` spec such as ``"fast27"``, with
        ``steps=None``) and the sampler walks every step of that respaced process. The same
        ``seed``, prompts and batch size give the same images. ``precision="auto"`` runs the
        network under bf16 autocast where the hardware computes bf16 natively (about 1.8×
        faster on such CPUs) and in fp32 elsewhere (where bf16 is emulated, ~44× slower);
        ``"fp32"`` or ``"bf16"`` forces one (:mod:`unclip_lite.hardware`).

        An inpainting model needs ``inpaint=(image, mask)`` (image in [0, 1], mask 1 = keep,
        0 = fill; the kept pixels come back exactly); an upsampler needs ``low_res`` images.

        ``guide(prompts) -> log_prob_fn(x_t, t)`` adds gradient guidance with ``guide_scale`` on
        top of classifier-free guidance: CLIP guidance or classifier guidance (chapter 06,
        :func:`~unclip_lite.clip.noised.clip_guide`, :func:`~unclip_lite.glide.guide_recipes.classifier_guide`). With
        ``guidance=0`` the text-to-image model is unconditional and the guide alone steers.

        ``extra_conditioning``: tensors [N, ...] the model reads beside the caption and guides with it
        (unCLIP's decoder: ``{"image_embed": z_i}``; the model's ``null_conditioning`` gives ∅).
        """

        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if guide is not None:
            check_guidance_scale(guide_scale, MAX_GRADIENT_SCALE)
            if not callable(guide):
                raise ValueError("guide must be a callable guide(prompts) -> log_prob_fn(x_t, t)")

        self.check_sampling(sampler, steps)
        diffusion = self.respaced(respacing)
        if respacing is not None:
            if steps is not None:
                raise ValueError("pass either steps or respacing, not both")
            steps = diffusion.num_timesteps if sampler == "ddim" else None
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        tokens = self.tokenize(prompts).to(self.device)  # [N, L]; raises before any sampling
        first = {k: v[:1] for k, v in (extra_conditioning or {}).items()}
        classifier_free_guidance(self.model, tokens[:1], guidance, conditioning=first)  # validates the scale now
        extra, known = self.conditioning_inputs(len(tokens), inpaint, low_res)
        self.model.eval()
        generator = torch.Generator(self.device).manual_seed(seed)
        precision = resolve_precision(precision, self.device)
        chunks = []
        for start in range(0, len(tokens), batch_size):
            part = slice(start, start + batch_size)
            kwargs = {} if extra is None else {"extra": extra[part]}
            cond = {k: v[part] for k, v in (extra_conditioning or {}).items()}
            guided = classifier_free_guidance(self.model, tokens[part], guidance, conditioning=cond, **kwargs)

            def fn(x, t, guided=guided):
                with autocast(precision, self.device):
                    return guided(x, t).float()

            if guide is not None and guide_scale > 0:  # CLIP or classifier guidance
                fn = gradient_guidance(self.diffusion, fn, guide(prompts[part]), guide_scale)
            if known is not None:  # inpainting: the known pixels go into every predicted x_0
                fn = paste_known(self.diffusion, fn, known[0][part], known[1][part])
            shape = (len(tokens[part]), self.model.config.unet.out_channels, self.image_size, self.image_size)
            x = sample(diffusion, fn, shape, sampler=sampler, steps=steps, generator=generator,
                       device=self.device, progress=progress)  # [n, 3, R, R] in [-1, 1]
            x = ((x + 1) / 2).clamp(0, 1)  # [n, 3, R, R] in [0, 1]
            if known is not None:  # and the kept pixels come back bit for bit
                x = paste_result(x, inpaint[0][part].to(x), known[1][part])
            chunks.append(x.cpu())
        return torch.cat(chunks)

    def config_dict(self) -> dict:
        return {"text2im": self.model.config.to_dict(), "vocab": self.vocab.to_dict(),
                "diffusion": vars(self.diffusion_config).copy(), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> GlideBundle:
        model = Text2Im(Text2ImConfig.from_dict(_declared(config)))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), CompactVocab.from_dict(config["vocab"]), DiffusionConfig(**config["diffusion"]),
                   config.get("extra", {}))


def _declared(config: dict) -> dict:
    """The Text2Im config of a checkpoint, with ``conditioning`` and ``low_res_size`` filled in for
    checkpoints saved before models declared them (every one shipped before this field existed):
    read off the channel count and the training recipe, once, here."""
    text2im = dict(config["text2im"])
    if "conditioning" not in text2im:
        unet = text2im["unet"]
        extra = unet["in_channels"] - unet.get("out_channels", 3)
        text2im["conditioning"] = {v: k for k, v in EXTRA_CHANNELS.items()}[extra]
        if text2im["conditioning"] == "low_res":
            recipe_data = config.get("extra", {}).get("recipe", {}).get("data", {})
            text2im["low_res_size"] = recipe_data.get("low_res_size", unet["image_size"] // 2)
    return text2im


def load_glide(name_or_path: str | Path, device: str | torch.device | None = None) -> GlideBundle:
    """A trained GLIDE from the registry (``"glide-shapes-tiny"``) or a path, in eval mode."""
    return GlideBundle.load(name_or_path, device)
