"""ADM's noised classifier (Dhariwal & Nichol 2021, §4.1): the U-Net's down half and middle
block, then attention pooling, trained to read labels off noisy images x_t at any timestep.

It is the same :class:`~unclip_lite.unet.UNet` built ``encoder_only`` (no decoder, no output conv), and
the same attention pool CLIP's ResNet uses (:class:`~unclip_lite.clip.vision.AttentionPool2d`).
On Shapes it predicts each attribute with its own head, so guiding toward "a red star" is
log p(colour = red | x_t) + log p(shape = star | x_t)::

    x_t [B, 3, H, W], t [B] --down half + middle--> [B, ch, H/f, W/f] --norm, SiLU, attention pool--> [B, ch]
        --one Linear per head--> {"colour": [B, 8], "shape": [B, 5]}
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.clip.vision import AttentionPool2d
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.unet import UNet, UNetConfig, group_norm
from unclip_lite.utils import config_from_dict


@dataclass
class ClassifierConfig:
    unet: UNetConfig
    heads: dict[str, int] = field(default_factory=lambda: {"colour": 8, "shape": 5})  # name -> classes
    pool_heads: int = 4

    def __post_init__(self):
        if isinstance(self.unet, dict):
            self.unet = UNetConfig.from_dict(self.unet)
        if not self.heads or min(self.heads.values()) < 2:
            raise ValueError(f"heads must name at least one label with >= 2 classes, got {self.heads}")
        width = self.unet.model_channels * self.unet.channel_mult[-1]
        if width % self.pool_heads:
            raise ValueError(f"pool width {width} is not divisible by pool_heads {self.pool_heads}")

    def to_dict(self) -> dict:
        return {"unet": self.unet.to_dict(), "heads": dict(self.heads), "pool_heads": self.pool_heads}

    @classmethod
    def from_dict(cls, d: dict) -> ClassifierConfig:
        return config_from_dict(cls, {**d, "unet": UNetConfig.from_dict(dict(d["unet"]))})


CLASSIFIER_CONFIGS: dict[str, ClassifierConfig] = {
    # 32 px Shapes, colour and shape heads
    "shapes-tiny": ClassifierConfig(UNetConfig(model_channels=32, channel_mult=(1, 2, 4), num_res_blocks=1,
                                               attention_resolutions=(8,), num_head_channels=32, image_size=32)),
    # ADM's 128 px ImageNet classifier: 128 channels, mult (1, 1, 2, 3, 4), 2 blocks, attention at 32/16/8
    "adm-imagenet-128": ClassifierConfig(
        UNetConfig(model_channels=128, channel_mult=(1, 1, 2, 3, 4), num_res_blocks=2,
                   attention_resolutions=(32, 16, 8), num_head_channels=64, use_scale_shift_norm=True,
                   resblock_updown=True, image_size=128), {"label": 1000}, pool_heads=8),
}


def get_classifier_config(name: str) -> ClassifierConfig:
    if name not in CLASSIFIER_CONFIGS:
        raise ValueError(f"unknown classifier config {name!r}; choose one of {sorted(CLASSIFIER_CONFIGS)}")
    return ClassifierConfig.from_dict(CLASSIFIER_CONFIGS[name].to_dict())


class NoisedClassifier(nn.Module):
    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        self.encoder = UNet(config.unet, encoder_only=True)
        width, grid = self.encoder.out_channels, config.unet.image_size // config.unet.downsample_factor
        self.norm = group_norm(width, config.unet.num_groups)
        self.pool = AttentionPool2d(grid, width, config.pool_heads, width)
        nn.init.normal_(self.pool.positional_embedding, std=width ** -0.5)
        self.heads = nn.ModuleDict({name: nn.Linear(width, n) for name, n in config.heads.items()})

    def forward(self, x_t: torch.Tensor, t: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head, ``{name: [B, classes]}``, for noisy images x_t [B, C, H, W] at timesteps t [B]."""
        h, _, _ = self.encoder.encode(x_t, t)  # [B, ch, H/f, W/f]
        z = self.pool(F.silu(self.norm(h)))  # [B, ch]
        return {name: head(z) for name, head in self.heads.items()}

    def log_prob(self, x_t: torch.Tensor, t: torch.Tensor, labels: dict[str, torch.Tensor]) -> torch.Tensor:
        """log p(labels | x_t) = Σ over the given heads of log softmax at the label: ``[B]``."""
        unknown = set(labels) - set(self.heads)
        if unknown:
            raise ValueError(f"unknown label heads {sorted(unknown)}; this classifier has {sorted(self.heads)}")
        logits = self(x_t, t)
        return sum(F.log_softmax(logits[name].float(), dim=-1).gather(1, y.view(-1, 1).long()).squeeze(1)
                   for name, y in labels.items())


@dataclass
class ClassifierBundle(Bundle):
    """A trained noised classifier and the diffusion whose x_t it reads, saved as one."""

    kind = "classifier"
    model: NoisedClassifier
    diffusion_config: DiffusionConfig = field(default_factory=DiffusionConfig)
    extra: dict = field(default_factory=dict)  # saved alongside: how it was trained
    manifest: dict = field(default_factory=dict)  # of the checkpoint it was loaded from

    @property
    def image_size(self) -> int:
        return self.model.config.unet.image_size

    def config_dict(self) -> dict:
        return {"classifier": self.model.config.to_dict(), "diffusion": vars(self.diffusion_config).copy(),
                "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> ClassifierBundle:
        model = NoisedClassifier(ClassifierConfig.from_dict(config["classifier"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source)
        return cls(model.eval(), DiffusionConfig(**config["diffusion"]), config.get("extra", {}))


def load_classifier(name_or_path) -> ClassifierBundle:
    """A trained noised classifier from the registry (``"classifier-noised-shapes-tiny"``) or a path."""
    return ClassifierBundle.load(name_or_path)
