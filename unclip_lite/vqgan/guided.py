"""VQGAN-CLIP as a checkpoint: the VQGAN it steers, the CLIP that steers it, the settings.

Like ``clipdraw-shapes-tiny`` (:mod:`unclip_lite.clipdraw.bundle`), ``vqgan-clip-shapes-tiny``
holds no weights: both networks by name and sha256, the
:class:`~unclip_lite.vqgan.vqgan_clip.VQGANClipConfig` as JSON::

    method = VQGANClipBundle.load("vqgan-clip-shapes-tiny")
    image = method.draw(["a red star:1", "a blue star:-0.5"], seed=0)   # [3, 32, 32]
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from unclip_lite.bundle import ComposedBundle
from unclip_lite.checkpoints import component_entry
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clipdraw.bundle import judged_metrics, load_components
from unclip_lite.utils import config_from_dict
from unclip_lite.vqgan.bundle import VQGANBundle
from unclip_lite.vqgan.vqgan_clip import VQGANClipConfig, check_sizes, evaluate_vqgan_clip, vqgan_clip


@dataclass
class VQGANClipBundle(ComposedBundle):
    kind = "vqgan-clip"
    vqgan: VQGANBundle
    clip: CLIPBundle
    config: VQGANClipConfig = field(default_factory=VQGANClipConfig)
    components: dict = field(default_factory=dict)  # {"vqgan": {"name", "sha256"}, "clip": {…}}
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def model(self) -> torch.nn.Module:
        return self.vqgan.model

    def config_dict(self) -> dict:
        return {"components": self.components, "vqgan_clip": asdict(self.config), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> VQGANClipBundle:
        components = load_components(config["components"], source)
        settings = config_from_dict(VQGANClipConfig, config.get("vqgan_clip", {}), where=f"{source}: vqgan_clip")
        vqgan, clip = VQGANBundle.load(components["vqgan"]["name"]), CLIPBundle.load(components["clip"]["name"])
        return cls(vqgan, clip, settings, components, config.get("extra", {}))

    @classmethod
    def compose(cls, vqgan: str = "vqgan-shapes-tiny", clip: str = "clip-shapes-tiny",
                config: VQGANClipConfig | None = None) -> VQGANClipBundle:
        """VQGAN-CLIP on these shipped checkpoints (loaded and size-checked, so a misfit fails here)."""
        vqgan_bundle, clip_bundle = VQGANBundle.load(vqgan), CLIPBundle.load(clip)
        check_sizes(vqgan_bundle.image_size, int(clip_bundle.image_size))
        return cls(vqgan_bundle, clip_bundle, config or VQGANClipConfig(),
                   {"vqgan": component_entry(vqgan), "clip": component_entry(clip)})

    def draw(self, prompts: str | Sequence[str], seed: int = 0, init_image: torch.Tensor | None = None,
             progress: bool = False, **overrides) -> torch.Tensor:
        """One image ``[3, R, R]`` in [0, 1] for weighted prompts ``"text:weight"``."""
        image, _ = vqgan_clip(self.vqgan, self.clip, [prompts] if isinstance(prompts, str) else list(prompts),
                              replace(self.config, seed=seed, **overrides), init_image=init_image, progress=progress)
        return image

    def evaluate(self, judge, n_prompts: int = 40, seeds: int = 2, progress: bool = False, **overrides) -> dict:
        """:func:`~unclip_lite.vqgan.vqgan_clip.evaluate_vqgan_clip` on the first ``n_prompts``
        colour × shape prompts × ``seeds`` seeds (the prompts and seeds CLIPDraw is measured on)."""
        from unclip_lite.data import shapes

        pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES][:n_prompts]
        results = evaluate_vqgan_clip(self.vqgan, self.clip, judge, replace(self.config, **overrides),
                                      prompts=pairs, seeds=tuple(range(seeds)), progress=progress)
        return judged_metrics({**results, "guide": self.components["clip"]["name"],
                               "vqgan": self.components["vqgan"]["name"],
                               "steps": overrides.get("steps", self.config.steps)})


def compose_vqgan_clip(path: str | Path, vqgan: str = "vqgan-shapes-tiny", clip: str = "clip-shapes-tiny",
                       manifest: dict | None = None) -> Path:
    return VQGANClipBundle.compose(vqgan, clip).save(path, manifest=manifest)


__all__ = ["VQGANClipBundle", "compose_vqgan_clip"]
