"""unCLIP's upsamplers: the decoder's 64 px image to 256 and then 1024 (Ramesh et al. 2022, §2.1, Table 3).

Unlike GLIDE's upsampler (:mod:`unclip_lite.glide.upsample`) they read no caption and have no
attention — the low-resolution image says almost everything, and without attention the
network is fully convolutional: it trains on random crops a quarter of the target size (a
sixteenth of the pixels, so 16× cheaper steps) and then runs on whole images::

    x_t [B, 3, S, S] ⊕ bilinear(low_res [B, 3, S/f, S/f] -> S) [B, 3, S, S]  --U-Net (no attention)-->  ε or v [B, 3, S, S]

Their conditioning image is corrupted during training (:mod:`~unclip_lite.unclip.degradations`):
Gaussian blur for the first stage, BSR for the second, so that they tolerate the stage
below's samples. On Shapes: 32 → 64 (blur) and 64 → 128 (BSR); the paper's two are
:func:`paper_upsampler_configs` (700M and 300M parameters).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.diffusion import sample
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.hardware import autocast, resolve_precision
from unclip_lite.unclip.degradations import DEGRADATIONS
from unclip_lite.unet import UNet, UNetConfig
from unclip_lite.utils import config_from_dict


@dataclass
class UpsamplerConfig:
    low_res_size: int = 32
    image_size: int = 64  # the output side; a multiple of low_res_size
    model_channels: int = 32
    channel_mult: tuple[int, ...] = (1, 2, 2)
    num_res_blocks: int = 2
    resblock_updown: bool = False
    degradation: str = "blur"  # how its conditioning was corrupted in training: blur | bsr | none
    bsr_p: float = 0.5  # BSR: the probability of each degradation step (degradations.bsr_degrade)
    # the training crop side as a fraction of image_size (the paper: a quarter of the target size)
    crop_fraction: float = 0.25
    # diffuse the residual x - up(low_res) instead of x (SRDiff, Li et al. 2022): what is left to
    # draw is the edges the interpolation blurred, and at t = T the model starts from up(low_res)
    # rather than from grey; a tiny model on a CPU budget learns that far sooner (the paper: False)
    residual: bool = False
    dropout: float = 0.0  # in the ResBlocks (Table 3: 0.1 for 64 -> 256, none for 256 -> 1024)

    def __post_init__(self):
        self.channel_mult = tuple(int(m) for m in self.channel_mult)
        if self.low_res_size < 1 or self.image_size % self.low_res_size or self.image_size == self.low_res_size:
            raise ValueError(f"image_size {self.image_size} must be a multiple > 1 of low_res_size {self.low_res_size}")
        if self.degradation not in DEGRADATIONS:
            raise ValueError(f"unknown degradation {self.degradation!r}; expected one of {', '.join(DEGRADATIONS)}")
        if not 0 <= self.bsr_p <= 1:
            raise ValueError(f"bsr_p must be in [0, 1], got {self.bsr_p}")
        if not 0 < self.crop_fraction <= 1:
            raise ValueError(f"crop_fraction must be in (0, 1], got {self.crop_fraction}")
        factor = self.scale * 2 ** (len(self.channel_mult) - 1)
        if self.crop_size % factor:
            raise ValueError(f"the training crop ({self.crop_size} px) must be a multiple of {factor} "
                             f"(scale × the U-Net's downsampling)")

    @property
    def scale(self) -> int:
        return self.image_size // self.low_res_size

    @property
    def crop_size(self) -> int:
        return round(self.image_size * self.crop_fraction)

    def unet_config(self) -> UNetConfig:
        return UNetConfig(in_channels=6, out_channels=3, model_channels=self.model_channels,
                          channel_mult=self.channel_mult, num_res_blocks=self.num_res_blocks,
                          attention_resolutions=(), middle_attention=False, resblock_updown=self.resblock_updown,
                          image_size=self.image_size, dropout=self.dropout)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> UpsamplerConfig:
        return config_from_dict(cls, d)


def paper_upsampler_configs() -> dict[str, UpsamplerConfig]:
    """unCLIP's two upsamplers as Table 3 gives them (channels / depth / multipliers, BigGAN
    up/down blocks as in ADM): 64 → 256 (700M) and 256 → 1024 (300M). Build on the meta device."""
    return {"64->256": UpsamplerConfig(64, 256, 320, (1, 2, 3, 4), 3, True, "blur", dropout=0.1),
            "256->1024": UpsamplerConfig(256, 1024, 192, (1, 1, 2, 2, 4, 4), 2, True, "bsr")}


class Upsampler(nn.Module):
    """The U-Net of :class:`UpsamplerConfig`, reading x_t and the low-res image (no text)."""

    def __init__(self, config: UpsamplerConfig):
        super().__init__()
        self.config = config
        self.unet = UNet(config.unet_config())

    def forward(self, x: torch.Tensor, t: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
        """``x`` [B, 3, S, S] (any S divisible by the U-Net's downsampling), ``low_res``
        [B, 3, S/scale, S/scale] in [-1, 1]: the prediction [B, 3, S, S]."""
        if low_res.shape[0] != x.shape[0] or low_res.shape[-1] * self.config.scale != x.shape[-1]:
            raise ValueError(f"low_res {tuple(low_res.shape)} does not match x {tuple(x.shape)} "
                             f"at scale {self.config.scale}")
        return self.unet(torch.cat([x, upsampled(low_res, x.shape[-1]).to(x)], dim=1), t)


def upsampled(low_res: torch.Tensor, size: int) -> torch.Tensor:
    """``low_res`` [B, 3, s, s] resized bilinearly to [B, 3, size, size] (the conditioning channels)."""
    return F.interpolate(low_res, size=(size, size), mode="bilinear", align_corners=False)


def diffusion_target(config: UpsamplerConfig, image: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """The diffusion's x_0 for a training ``image`` [B, 3, S, S] in [-1, 1]: the image, or its residual."""
    return image - upsampled(low_res, image.shape[-1]) if config.residual else image


def image_from(config: UpsamplerConfig, x0: torch.Tensor, low_res: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`diffusion_target`: what the diffusion drew, as an image in [-1, 1]."""
    return (upsampled(low_res, x0.shape[-1]) + x0).clamp(-1, 1) if config.residual else x0


def check_low_res(images: torch.Tensor, size: int) -> None:
    """A clear error, before any sampling, for an input the upsampler cannot take."""
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"expected low-res images [B, 3, {size}, {size}], got {shape}")
    if tuple(images.shape[-2:]) != (size, size):
        raise ValueError(f"this upsampler takes {size} px images, got {tuple(images.shape[-2:])}")
    if not images.is_floating_point() or images.min() < 0 or images.max() > 1:
        raise ValueError("expected floating-point low-res images in [0, 1]")


@dataclass
class UpsamplerBundle(Bundle):
    kind = "upsampler"
    model: Upsampler
    diffusion_config: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(parameterization="v"))
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)

    def __post_init__(self):
        self.diffusion = self.diffusion_config.build()

    @property
    def config(self) -> UpsamplerConfig:
        return self.model.config

    @torch.no_grad()
    def sample(self, low_res: torch.Tensor, respacing: str = "fast27", seed: int = 0, batch_size: int = 64,
               precision: str = "auto", progress: bool = False) -> torch.Tensor:
        """Upsampled images [N, 3, S, S] in [0, 1] from ``low_res`` [N, 3, s, s] in [0, 1]: DDIM
        (η = 0) over every step of the ``respacing`` schedule (the paper: 27 steps, "fast27")."""
        check_low_res(low_res, self.config.low_res_size)
        if precision not in ("auto", "fp32", "bf16"):
            raise ValueError(f"precision must be 'auto', 'fp32' or 'bf16', got {precision!r}")
        try:
            diffusion = self.diffusion.respaced(respacing)
        except ValueError as err:
            raise ValueError(f"bad respacing {respacing!r}: {err}") from None
        precision = resolve_precision(precision, self.device)
        generator = torch.Generator(self.device).manual_seed(seed)
        self.model.eval()
        out = []
        for start in range(0, len(low_res), batch_size):
            low = low_res[start:start + batch_size].to(self.device) * 2 - 1  # [b, 3, s, s] in [-1, 1]

            def fn(x, t, low=low):
                with autocast(precision, self.device):
                    return self.model(x, t, low).float()

            S = self.config.image_size
            x = sample(diffusion, fn, (len(low), 3, S, S), "ddim", diffusion.num_timesteps, generator=generator,
                       device=self.device, progress=progress,
                       clip_denoised=not self.config.residual)  # a residual spans [-2, 2]: clamp the image instead
            out.append(((image_from(self.config, x, low) + 1) / 2).clamp(0, 1).cpu())
        return torch.cat(out)

    def config_dict(self) -> dict:
        return {"upsampler": self.config.to_dict(), "diffusion": vars(self.diffusion_config).copy(),
                "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> UpsamplerBundle:
        model = Upsampler(UpsamplerConfig.from_dict(config["upsampler"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), DiffusionConfig(**config["diffusion"]), config.get("extra", {}))


def check_cascade(base_size: int, stages: list[UpsamplerBundle]) -> None:
    """A clear error if a stage cannot take the stage below's output (before any sampling)."""
    size = base_size
    for i, stage in enumerate(stages):
        if stage.config.low_res_size != size:
            raise ValueError(f"upsampler {i + 1} takes {stage.config.low_res_size} px images, but the stage "
                             f"below it makes {size} px ones")
        size = stage.config.image_size


def load_upsampler(name_or_path: str | Path, device: str | torch.device | None = None) -> UpsamplerBundle:
    return UpsamplerBundle.load(name_or_path, device)
