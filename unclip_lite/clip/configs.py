"""CLIP configurations as typed dataclasses, and the presets by name.

Radford et al. 2021, §2.4 and Appendix F (Tables 19-20) list the image encoders: five
ResNets (RN50, RN101 and the EfficientNet-style scaled RN50x4, RN50x16, RN50x64) and three
Vision Transformers (ViT-B/32, ViT-B/16, ViT-L/14, plus ViT-L/14 fine-tuned at 336 px).
Every model pairs one with a 12-layer causal text transformer over a 49,408-token BPE vocab
and a 77-token context. unCLIP (Ramesh et al. 2022, training details in the appendix)
trains a larger ViT-H/16 at 256 px with a 24-layer, width-1024 text tower.

The tiny presets are ours: the same architecture shrunk until it trains on a laptop CPU.

    cfg = get_config("shapes-tiny")
    cfg.text.vocab_size = len(vocab)    # presets are fresh copies: edit freely
    model = build_clip(cfg)             # in unclip_lite.clip.model
"""
from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

from unclip_lite.utils import config_from_dict


@dataclass
class VisionConfig:
    """The image tower. ``layers`` picks the kind: one int is a ViT's depth, four ints are
    the blocks per stage of a ModifiedResNet."""

    image_size: int = 224
    layers: int | tuple[int, int, int, int] = 12
    width: int = 768        # ViT: residual width. ResNet: stem width (final features: 32 * width)
    heads: int = 12         # ViT: per block. ResNet: in the attention-pooling layer
    patch_size: int | None = 32  # ViT only (None for a ResNet)
    mlp_ratio: float = 4.0  # ViT only
    # ViT only: also read a diffusion timestep, for a noise-aware CLIP that sees x_t (GLIDE §2.4)
    timestep_conditioned: bool = False

    @property
    def is_resnet(self) -> bool:
        return not isinstance(self.layers, int)

    def __post_init__(self) -> None:
        if isinstance(self.layers, list):
            self.layers = tuple(self.layers)
        self.validate()

    def validate(self) -> None:
        if self.is_resnet:
            if self.timestep_conditioned:
                raise ValueError("timestep_conditioned is implemented for ViT image towers only")
            if len(self.layers) != 4:
                raise ValueError(f"a ResNet needs 4 stage depths, got layers={self.layers}")
            if self.image_size % 32 != 0:
                raise ValueError(f"ResNet image_size must be a multiple of 32 (its total stride), got {self.image_size}")
            if (32 * self.width) % self.heads != 0:
                raise ValueError(f"ResNet feature width {32 * self.width} is not divisible by heads={self.heads}")
        else:
            if not self.patch_size or self.image_size % self.patch_size != 0:
                raise ValueError(
                    f"ViT image_size ({self.image_size}) must be a multiple of patch_size ({self.patch_size})"
                )
            if self.width % self.heads != 0:
                raise ValueError(f"ViT width {self.width} is not divisible by heads={self.heads}")


@dataclass
class TextConfig:
    """The text tower: a causal transformer read out at the end-of-text token."""

    context_length: int = 77
    vocab_size: int = 49408
    width: int = 512
    heads: int = 8
    layers: int = 12
    mlp_ratio: float = 4.0
    # Where to read the features. None: at the largest id, CLIP's [EOS] (49407). A compact
    # vocabulary (unclip_lite.tokenizer.CompactVocab) puts [EOS] at id 2 instead.
    eot_token_id: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        if self.eot_token_id is not None and not 0 <= self.eot_token_id < self.vocab_size:
            raise ValueError(f"eot_token_id {self.eot_token_id} is outside the vocabulary [0, {self.vocab_size})")
        if self.width % self.heads != 0:
            raise ValueError(f"text width {self.width} is not divisible by heads={self.heads}")


@dataclass
class CLIPConfig:
    """Both towers, the shared embedding size, and the contrastive temperature."""

    embed_dim: int = 512
    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    activation: str = "gelu"  # "quick_gelu" for OpenAI's released weights, "gelu" otherwise
    init_logit_scale: float = math.log(1 / 0.07)  # τ = 0.07 (§2.5)
    max_logit_scale: float = 100.0  # exp(logit_scale) is clipped here (§2.5)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Re-check the invariants (call after editing fields; ``CLIP`` does)."""
        self.vision.validate()
        self.text.validate()
        if self.activation not in ("gelu", "quick_gelu"):
            raise ValueError(f"activation must be 'gelu' or 'quick_gelu', got {self.activation!r}")

    def to_dict(self) -> dict:
        """Plain nested dict (JSON-safe; ResNet ``layers`` become a list)."""
        d = asdict(self)
        if isinstance(d["vision"]["layers"], tuple):
            d["vision"]["layers"] = list(d["vision"]["layers"])
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "CLIPConfig":
        """Inverse of :meth:`to_dict`; unknown keys are an error, not silently dropped."""
        d = dict(d)
        kwargs = {}
        for key, sub_cls in (("vision", VisionConfig), ("text", TextConfig)):
            if key in d:
                kwargs[key] = config_from_dict(sub_cls, d.pop(key), f"CLIPConfig.{key}")
        return config_from_dict(cls, {**d, **kwargs}, "CLIPConfig")


# ----------------------------------------------------------------------------- presets


def _vit(embed_dim, image_size, patch_size, width, layers, heads, text_width, text_layers, text_heads):
    return CLIPConfig(
        embed_dim=embed_dim,
        vision=VisionConfig(image_size=image_size, layers=layers, width=width, heads=heads, patch_size=patch_size),
        text=TextConfig(width=text_width, layers=text_layers, heads=text_heads),
        activation="quick_gelu",
    )


def _resnet(embed_dim, image_size, layers, width, text_width, text_heads):
    return CLIPConfig(
        embed_dim=embed_dim,
        # attention pooling uses 64-wide heads over the 32 * width ResNet features
        vision=VisionConfig(image_size=image_size, layers=layers, width=width, heads=width // 2, patch_size=None),
        text=TextConfig(width=text_width, layers=12, heads=text_heads),
        activation="quick_gelu",
    )


# The paper-size presets use QuickGELU, as OpenAI trained them, so OpenAI's released weights
# load as-is (open_clip calls these "<name>-quickgelu"; its plain names use nn.GELU).
_PRESETS: dict[str, CLIPConfig] = {
    # Appendix F, Table 19: the ResNets. RN50x4/16/64 scale width, depth and resolution together.
    "RN50": _resnet(1024, 224, (3, 4, 6, 3), 64, 512, 8),
    "RN101": _resnet(512, 224, (3, 4, 23, 3), 64, 512, 8),
    "RN50x4": _resnet(640, 288, (4, 6, 10, 6), 80, 640, 10),
    "RN50x16": _resnet(768, 384, (6, 8, 18, 8), 96, 768, 12),
    "RN50x64": _resnet(1024, 448, (3, 15, 36, 10), 128, 1024, 16),
    # Appendix F, Table 20: the Vision Transformers (64-wide heads throughout).
    "ViT-B-32": _vit(512, 224, 32, 768, 12, 12, 512, 12, 8),
    "ViT-B-16": _vit(512, 224, 16, 768, 12, 12, 512, 12, 8),
    "ViT-L-14": _vit(768, 224, 14, 1024, 24, 16, 768, 12, 12),
    "ViT-L-14-336": _vit(768, 336, 14, 1024, 24, 16, 768, 12, 12),
    # unCLIP's training details: "ViT-H/16 ... 256x256 ... width 1280 with 32 Transformer blocks;
    # the text encoder ... width 1024 and 24 Transformer blocks" (16 heads of 80 / of 64).
    "ViT-H-16-256": _vit(1024, 256, 16, 1280, 32, 16, 1024, 24, 16),
    # Ours: laptop-CPU sizes. 8x8 = 64 patches + 1 class token; 16-token captions over a
    # compact vocabulary (set text.vocab_size from the tokenizer you build).
    "shapes-tiny": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=32, layers=4, width=128, heads=4, patch_size=4),
        text=TextConfig(context_length=16, vocab_size=512, width=128, heads=4, layers=4, eot_token_id=2),
    ),
    # shapes-tiny reading captions of up to 20 tokens: the longest two-object caption is 17
    # ("a picture of a cyan triangle to the right of a cyan square"); unCLIP's CLIP reads them
    "shapes-tiny-pairs": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=32, layers=4, width=128, heads=4, patch_size=4),
        text=TextConfig(context_length=20, vocab_size=512, width=128, heads=4, layers=4, eot_token_id=2),
    ),
    # shapes-tiny whose image tower also reads the diffusion timestep: CLIP guidance (GLIDE §2.4)
    "shapes-tiny-noised": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=32, layers=4, width=128, heads=4, patch_size=4, timestep_conditioned=True),
        text=TextConfig(context_length=16, vocab_size=512, width=128, heads=4, layers=4, eot_token_id=2),
    ),
    "emoji-tiny": CLIPConfig(
        embed_dim=128,
        vision=VisionConfig(image_size=64, layers=4, width=128, heads=4, patch_size=8),
        text=TextConfig(context_length=16, vocab_size=512, width=128, heads=4, layers=4, eot_token_id=2),
    ),
}

PAPER_CONFIGS = tuple(name for name in _PRESETS if "tiny" not in name)
CONFIG_NAMES = tuple(_PRESETS)


def get_config(name: str) -> CLIPConfig:
    """A fresh copy of the preset called ``name`` (safe to modify)."""
    if name not in _PRESETS:
        raise ValueError(f"unknown CLIP config {name!r}; valid names: {', '.join(CONFIG_NAMES)}")
    return copy.deepcopy(_PRESETS[name])


def list_configs() -> list[str]:
    return list(CONFIG_NAMES)
