"""A trained VQGAN as a checkpoint, and its pixel conventions in one place.

The network works on images in [-1, 1] (:mod:`unclip_lite.vqgan.model`); the rest of the
course passes images in [0, 1]. :class:`VQGANBundle` converts at the border::

    vqgan = VQGANBundle.load("runs/vqgan/vqgan.safetensors")
    codes = vqgan.encode(images)            # [B, h, w] code indices of images in [0, 1]
    again = vqgan.decode_indices(codes)     # [B, 3, R, R] in [0, 1]

Only the encoder, codebook and decoder are saved: the discriminator exists to train them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.utils import config_from_dict
from unclip_lite.vqgan.model import VQGAN, VQGANConfig


def to_model_range(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] → [-1, 1]."""
    return images * 2 - 1


def to_image_range(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] → [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0, 1)


@dataclass
class VQGANBundle(Bundle):
    kind = "vqgan"
    model: VQGAN
    extra: dict = field(default_factory=dict)  # saved with the config: how it was trained
    manifest: dict = field(default_factory=dict)  # of the checkpoint it was loaded from

    @property
    def config(self) -> VQGANConfig:
        return self.model.config

    @property
    def image_size(self) -> int:
        return self.config.image_size

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Code indices ``[B, h, w]`` of images ``[B, 3, R, R]`` in [0, 1]."""
        self.model.eval()
        _, _, info = self.model.encode(to_model_range(images.to(self.device)))
        return info["indices"]

    @torch.no_grad()
    def decode_indices(self, indices: torch.Tensor) -> torch.Tensor:
        """Images ``[B, 3, R, R]`` in [0, 1] from code indices ``[B, h, w]``."""
        self.model.eval()
        return to_image_range(self.model.decode_indices(indices.to(self.device)))

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        """Encode, quantise and decode images in [0, 1] → ``[B, 3, R, R]`` in [0, 1]."""
        self.model.eval()
        out = [to_image_range(self.model(to_model_range(chunk.to(self.device)))[0])
               for chunk in images.split(batch_size)]
        return torch.cat(out)

    def config_dict(self) -> dict:
        return {"vqgan": self.config.to_dict(), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> VQGANBundle:
        model = VQGAN(config_from_dict(VQGANConfig, config["vqgan"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), config.get("extra", {}))


def load_vqgan(name_or_path: str | Path, device: str | torch.device | None = None) -> VQGANBundle:
    """A VQGAN checkpoint by name or path, in eval mode."""
    return VQGANBundle.load(name_or_path, device)


__all__ = ["VQGANBundle", "load_vqgan", "to_image_range", "to_model_range"]
