"""unCLIP end to end (Ramesh et al. 2022, Figure 2): caption → prior → CLIP image embedding → decoder → upsamplers.

::

    caption --CLIP text tower--> z_t, tokens --prior--> z_i --decoder (caption + z_i)--> 32 px
            --upsampler 1 (no text)--> 64 px --upsampler 2--> 128 px

    pipe = load_unclip("unclip-shapes-tiny")                     # the components it names, checked
    out = pipe("a red star in the top left", num_images_per_prompt=4, seed=0)
    out.images            # [4, 3, 128, 128] in [0, 1]; out.stages: every resolution on the way

Keyword names follow diffusers' ``UnCLIPPipeline`` where they mean the same thing
(``prior_guidance_scale``, ``decoder_guidance_scale``, ``prior_num_inference_steps``,
``decoder_num_inference_steps``, ``super_res_num_inference_steps``, ``num_images_per_prompt``).
``rerank=N`` draws N images per requested one and keeps the one whose CLIP image embedding has
the highest dot product with the caption's (the paper reranks for its figures; it is done at the
decoder's resolution, before the upsamplers, so the N - 1 rejected ones cost no upsampling).

A pipeline checkpoint holds no weights: like diffusers' ``model_index.json`` it names its
components — both priors, the decoder, the upsamplers — with each one's sha256, so that
loading refuses a component that was retrained since (:class:`UnCLIPBundle`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F

from unclip_lite.bundle import ComposedBundle
from unclip_lite.checkpoints import check_component, component_entry
from unclip_lite.diffusion.free_guidance import MAX_SCALE
from unclip_lite.unclip.bundle import ARPriorBundle, CaptionPrior, PriorBundle
from unclip_lite.unclip.decoder import DecoderBundle
from unclip_lite.unclip.upsampler import UpsamplerBundle, check_cascade

PRIOR_KINDS = {"diffusion": PriorBundle, "ar": ARPriorBundle}


@dataclass
class UnCLIPOutput:
    images: torch.Tensor                # [N, 3, S, S] in [0, 1], the last stage's
    image_embeds: torch.Tensor          # [N, E] the prior's z_i behind each image
    stages: list[torch.Tensor]          # the decoder's images, then each upsampler's
    clip_scores: torch.Tensor           # [N] z_i(image) · z_t(caption) of each kept decoder image
    seconds_per_image: dict[str, float]  # prior, decoder, super_res_1, ... (reranked draws included)


def _check_int(name: str, value, low: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")


@dataclass
class UnCLIP:
    """A prior (its CLIP attached), a decoder that reads that CLIP's embeddings, and upsamplers
    each taking the size the stage below makes — all checked when composed."""

    prior: CaptionPrior
    decoder: DecoderBundle
    super_res: list[UpsamplerBundle] = field(default_factory=list)

    def __post_init__(self):
        if self.prior.clip is None:
            raise ValueError("the prior has no CLIP attached (load it with PriorBundle.load)")
        self.decoder.check_clip(self.prior.clip)
        check_cascade(self.decoder.image_size, self.super_res)

    @property
    def clip(self):
        return self.prior.clip

    def eval(self) -> UnCLIP:
        for part in (self.prior, self.decoder, *self.super_res):
            part.model.eval()
        return self

    def parameters(self):
        return self.decoder.model.parameters()

    def clip_scores(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """z_i(image) · z_t(caption) per image [N] (CLIP score without the 100×)."""
        if images.shape[-1] != self.clip.image_size:
            images = F.interpolate(images, size=self.clip.image_size, mode="bilinear", antialias=True,
                                   align_corners=False)
        return (self.clip.encode_images(images) * self.clip.encode_texts(list(prompts))).sum(-1)

    @torch.no_grad()
    def __call__(self, prompt: str | Sequence[str], num_images_per_prompt: int = 1,
                 prior_num_inference_steps: int = 64, decoder_num_inference_steps: int = 50,
                 super_res_num_inference_steps: int | str = "fast27", prior_guidance_scale: float = 2.0,
                 decoder_guidance_scale: float = 3.0, prior_candidates: int = 2, rerank: int = 1,
                 num_stages: int | None = None, seed: int = 0, precision: str = "auto",
                 progress: bool = False) -> UnCLIPOutput:
        """Images for ``prompt``; every knob is checked before any sampling. ``num_stages``: how many
        upsamplers to run (default all). ``prior_num_inference_steps`` is ignored by the AR prior
        (it draws one code per step)."""
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        if not prompts:
            raise ValueError("give at least one prompt")
        for name, value in (("num_images_per_prompt", num_images_per_prompt), ("rerank", rerank),
                            ("prior_num_inference_steps", prior_num_inference_steps),
                            ("decoder_num_inference_steps", decoder_num_inference_steps)):
            _check_int(name, value)
        self.prior.check_sampling(prior_guidance_scale, prior_candidates)
        if not 0 <= decoder_guidance_scale <= MAX_SCALE:
            raise ValueError(f"decoder_guidance_scale must be in [0, {MAX_SCALE}], got {decoder_guidance_scale}")
        self.decoder.check_sampling("ddim", decoder_num_inference_steps)
        stages = self.super_res[:len(self.super_res) if num_stages is None else num_stages]
        if num_stages is not None:
            _check_int("num_stages", num_stages, low=0)
            if num_stages > len(self.super_res):
                raise ValueError(f"num_stages {num_stages}: this pipeline has {len(self.super_res)} upsamplers")
        respacing = (str(super_res_num_inference_steps) if isinstance(super_res_num_inference_steps, int)
                     else super_res_num_inference_steps)
        for stage in stages:  # a bad respacing spec fails here, not after the decoder ran
            try:
                stage.diffusion.respaced(respacing)
            except ValueError as err:
                raise ValueError(f"bad super_res_num_inference_steps {respacing!r}: {err}") from None
        expanded = [p for p in prompts for _ in range(num_images_per_prompt)]  # [N]
        drawn = [p for p in expanded for _ in range(rerank)]                      # [N · rerank]
        self.decoder.tokenize(drawn)  # an over-long caption fails here
        seconds = {}

        start = time.perf_counter()
        kwargs = {"steps": prior_num_inference_steps} if isinstance(self.prior, PriorBundle) else {}
        z_i = self.prior.sample(drawn, prior_guidance_scale, prior_candidates, seed=seed, **kwargs)  # [N·r, E]
        seconds["prior"] = (time.perf_counter() - start) / len(expanded)
        start = time.perf_counter()
        base = self.decoder.sample(drawn, decoder_guidance_scale, "ddim", decoder_num_inference_steps, seed=seed,
                                   image_embed=z_i, precision=precision, progress=progress)  # [N·r, 3, R, R]
        scores = self.clip_scores(base, drawn).view(len(expanded), rerank)  # [N, r]
        best = scores.argmax(1) + torch.arange(len(expanded)) * rerank     # [N] rows of the kept draws
        images, z_i, scores = base[best], z_i[best], scores.max(1).values
        seconds["decoder"] = (time.perf_counter() - start) / len(expanded)
        out = [images]
        for i, stage in enumerate(stages):
            start = time.perf_counter()
            out.append(stage.sample(out[-1], respacing=respacing, seed=seed + i + 1, precision=precision,
                                    progress=progress))
            seconds[f"super_res_{i + 1}"] = (time.perf_counter() - start) / len(expanded)
        return UnCLIPOutput(out[-1], z_i, out, scores, {k: round(v, 3) for k, v in seconds.items()})


@dataclass
class UnCLIPBundle(ComposedBundle):
    """A pipeline checkpoint: no weights, the names and sha256s of its components."""

    kind = "unclip"
    model: UnCLIP
    prior_kind: str = "diffusion"
    components: dict = field(default_factory=dict)  # {"prior": …, "ar_prior": …, "decoder": …, "super_res": […]}
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def config_dict(self) -> dict:
        return {"components": self.components, "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint",
                    prior: str = "diffusion") -> UnCLIPBundle:
        if prior not in PRIOR_KINDS:
            raise ValueError(f"prior must be one of {', '.join(PRIOR_KINDS)}, got {prior!r}")
        components = config["components"]
        for entry in _components(components):  # refuse a component retrained since
            check_component(entry, source)
        prior_bundle = PRIOR_KINDS[prior].load(components["priors"][prior]["name"])
        pipe = UnCLIP(prior_bundle, DecoderBundle.load(components["decoder"]["name"]),
                      [UpsamplerBundle.load(c["name"]) for c in components["super_res"]])
        return cls(pipe, prior, components, config.get("extra", {}))


def _components(components: dict) -> list[dict]:
    return [*components["priors"].values(), components["decoder"], *components["super_res"]]


def compose_unclip(path: str | Path, prior: str = "prior-shapes-tiny", ar_prior: str = "ar-prior-shapes-tiny",
                   decoder: str = "decoder-shapes-tiny",
                   super_res: Sequence[str] = ("upsampler-shapes-64", "upsampler-shapes-128"),
                   manifest: dict | None = None) -> Path:
    """Write a pipeline checkpoint naming these shipped components (checked to fit together first)."""
    entry = component_entry
    components = {"priors": {"diffusion": entry(prior), "ar": entry(ar_prior)}, "decoder": entry(decoder),
                  "super_res": [entry(name) for name in super_res]}
    bundle = UnCLIPBundle.from_config({"components": components})  # loads and checks every piece
    UnCLIPBundle.from_config({"components": components}, prior="ar")
    return bundle.save(path, manifest=manifest)


def load_unclip(name_or_path: str | Path = "unclip-shapes-tiny", prior: str = "diffusion") -> UnCLIP:
    """The composed pipeline, with the ``"diffusion"`` or ``"ar"`` prior."""
    return UnCLIPBundle.load(name_or_path, prior=prior).model


def paper_system_parameters() -> dict[str, int]:
    """unCLIP at the paper's size, counted on the meta device (nothing allocated): CLIP ViT-H/16's
    image and text towers, the 1B diffusion prior, the 3.5B decoder and the two upsamplers —
    about 6.5B in all (§2 and Table 3: 632M + 340M + 1B + 3.5B + 700M + 300M)."""
    from unclip_lite.clip.model import build_clip
    from unclip_lite.unclip.decoder import Decoder, paper_decoder_config
    from unclip_lite.unclip.prior import DiffusionPrior, get_prior_config
    from unclip_lite.unclip.upsampler import Upsampler, paper_upsampler_configs

    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    with torch.device("meta"):
        clip = build_clip("ViT-H-16-256")
        parts = {"clip_image": count(clip.visual), "clip_text": count(clip.text),
                 "prior": count(DiffusionPrior(get_prior_config("paper-1b"))),
                 "decoder": count(Decoder(paper_decoder_config()))}
        parts.update({f"upsampler_{name}": count(Upsampler(cfg)) for name, cfg in paper_upsampler_configs().items()})
    return {**parts, "total": sum(parts.values())}


def main(argv: list[str] | None = None) -> None:
    """``python -m unclip_lite.unclip.pipeline --name unclip-shapes-tiny``: compose the shipped parts."""
    import argparse
    import sys

    from unclip_lite.checkpoints import REGISTRY_DIR
    from unclip_lite.hardware import hardware

    parser = argparse.ArgumentParser(description=compose_unclip.__doc__)
    parser.add_argument("--name", default="unclip-shapes-tiny")
    parser.add_argument("--prior", default="prior-shapes-tiny")
    parser.add_argument("--ar-prior", default="ar-prior-shapes-tiny")
    parser.add_argument("--decoder", default="decoder-shapes-tiny")
    parser.add_argument("--super-res", nargs="*", default=["upsampler-shapes-64", "upsampler-shapes-128"])
    args = parser.parse_args(argv)
    command = "python -m unclip_lite.unclip.pipeline " + " ".join(sys.argv[1:] if argv is None else argv)
    path = compose_unclip(REGISTRY_DIR / f"{args.name}.safetensors", args.prior, args.ar_prior, args.decoder,
                          args.super_res, manifest={"command": command.strip(), "hardware": hardware(),
                                                    "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
