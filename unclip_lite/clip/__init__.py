"""CLIP (Radford et al. 2021): the image and text encoders every later stage builds on.

- :mod:`~unclip_lite.clip.configs`: typed configs and the presets by name.
- :mod:`~unclip_lite.clip.vision`: ViT and ModifiedResNet image towers.
- :mod:`~unclip_lite.clip.text`: the causal text transformer.
- :mod:`~unclip_lite.clip.model`: :class:`CLIP`, :func:`build_clip`, :func:`count_parameters`.
- :mod:`~unclip_lite.clip.interop`: weights and configs to and from open_clip / OpenAI.
"""
from unclip_lite.clip.configs import (
    CONFIG_NAMES,
    PAPER_CONFIGS,
    CLIPConfig,
    TextConfig,
    VisionConfig,
    get_config,
    list_configs,
)
from unclip_lite.clip.interop import (
    config_from_open_clip,
    from_open_clip_state_dict,
    load_open_clip_pretrained,
    to_open_clip_config,
    to_open_clip_state_dict,
)
from unclip_lite.clip.model import CLIP, build_clip, count_parameters
from unclip_lite.clip.text import TextTransformer
from unclip_lite.clip.vision import ModifiedResNet, VisionTransformer

__all__ = [
    "CLIP",
    "CLIPConfig",
    "CONFIG_NAMES",
    "PAPER_CONFIGS",
    "ModifiedResNet",
    "TextConfig",
    "TextTransformer",
    "VisionConfig",
    "VisionTransformer",
    "build_clip",
    "config_from_open_clip",
    "count_parameters",
    "from_open_clip_state_dict",
    "get_config",
    "list_configs",
    "load_open_clip_pretrained",
    "to_open_clip_config",
    "to_open_clip_state_dict",
]
