"""CLIPDraw as a checkpoint: the CLIP that guides it and the method's settings, no weights.

CLIPDraw trains nothing, yet its numbers (CLIP score, the judge's reading) belong to one
guide and one set of settings. ``clipdraw-shapes-tiny`` names both — the CLIP by name and
sha256, the :class:`~unclip_lite.clipdraw.optimize.ClipDrawConfig` as JSON — so that
``unclip-lite sample clipdraw`` and ``unclip-lite eval clipdraw --record`` work like every
other model's, and a recorded evaluation cannot silently outlive a retrained CLIP::

    method = ClipDrawBundle.load("clipdraw-shapes-tiny")
    image = method.draw("a red star", seed=0)            # [3, 32, 32] in [0, 1]
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from unclip_lite.bundle import ComposedBundle
from unclip_lite.checkpoints import check_component, component_entry
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clipdraw.optimize import ClipDrawConfig, clipdraw, evaluate_clipdraw
from unclip_lite.utils import config_from_dict


def load_components(components: dict, source: str) -> dict[str, dict]:
    """Check every ``{"role": {"name", "sha256"}}`` entry against the shipped manifests."""
    for entry in components.values():
        check_component(entry, source)
    return components


def judged_metrics(results: dict) -> dict:
    """The JSON part of an evaluation: everything but the images, floats rounded."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if not isinstance(v, torch.Tensor)}
        return round(value, 4) if isinstance(value, float) else value
    return clean(results)


@dataclass
class ClipDrawBundle(ComposedBundle):
    kind = "clipdraw"
    clip: CLIPBundle
    config: ClipDrawConfig = field(default_factory=ClipDrawConfig)
    components: dict = field(default_factory=dict)  # {"clip": {"name", "sha256"}}
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    @property
    def model(self) -> torch.nn.Module:
        return self.clip.model

    def config_dict(self) -> dict:
        return {"components": self.components, "clipdraw": asdict(self.config), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> ClipDrawBundle:
        components = load_components(config["components"], source)
        settings = config_from_dict(ClipDrawConfig, config.get("clipdraw", {}), where=f"{source}: clipdraw")
        return cls(CLIPBundle.load(components["clip"]["name"]), settings, components, config.get("extra", {}))

    @classmethod
    def compose(cls, clip: str = "clip-shapes-tiny", config: ClipDrawConfig | None = None) -> ClipDrawBundle:
        """CLIPDraw guided by the shipped CLIP ``clip`` (loaded, so a wrong name fails here)."""
        return cls(CLIPBundle.load(clip), config or ClipDrawConfig(), {"clip": component_entry(clip)})

    def draw(self, prompt: str, seed: int = 0, progress: bool = False, **overrides) -> torch.Tensor:
        """One drawing ``[3, R, R]`` in [0, 1]; ``overrides``: ClipDrawConfig fields (``steps=…``)."""
        image, _, _ = clipdraw(self.clip, prompt, replace(self.config, seed=seed, **overrides), progress=progress)
        return image

    def evaluate(self, judge, n_prompts: int = 40, seeds: int = 2, progress: bool = False, **overrides) -> dict:
        """:func:`~unclip_lite.clipdraw.optimize.evaluate_clipdraw` on the first ``n_prompts`` of
        the 40 colour × shape prompts × ``seeds`` seeds, with and without augmentation."""
        from unclip_lite.data import shapes

        pairs = [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES][:n_prompts]
        results = evaluate_clipdraw(self.clip, judge, replace(self.config, **overrides), prompts=pairs,
                                    seeds=tuple(range(seeds)), progress=progress)
        return judged_metrics({**results, "guide": self.components["clip"]["name"],
                               "steps": overrides.get("steps", self.config.steps)})


def compose_clipdraw(path: str | Path, clip: str = "clip-shapes-tiny", manifest: dict | None = None) -> Path:
    return ClipDrawBundle.compose(clip).save(path, manifest=manifest)


__all__ = ["ClipDrawBundle", "compose_clipdraw", "judged_metrics", "load_components"]
