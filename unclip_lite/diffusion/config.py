"""What a checkpoint records about the diffusion its model was trained on."""
from __future__ import annotations

from dataclasses import dataclass

from unclip_lite.diffusion.gaussian import GaussianDiffusion


@dataclass
class DiffusionConfig:
    """How the model was trained to denoise: the schedule and what the network predicts."""

    schedule: str = "cosine"
    num_timesteps: int = 1000
    parameterization: str = "eps"  # "eps", "x0" or "v"

    def build(self, learned_range: bool = False) -> GaussianDiffusion:
        """The diffusion; ``learned_range``: the model also outputs its variance (the model's
        config says so, e.g. ``UNetConfig.learn_sigma``, so it is not stored twice here)."""
        return GaussianDiffusion.from_schedule(self.schedule, self.num_timesteps,
                                               parameterization=self.parameterization, learned_range=learned_range)
