"""GLIDE (Nichol et al. 2021): the ADM U-Net with text conditioning.

* :mod:`.unet`: :class:`UNetConfig`, :class:`UNet` and its blocks, presets in :data:`UNET_CONFIGS`.
* :mod:`.text2im`: the text encoder and :class:`Text2Im` (U-Net + text), presets in :data:`TEXT2IM_CONFIGS`.
* :mod:`.guidance`: classifier-free guidance as a ``model_fn(x, t)`` for the samplers.
"""
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.text2im import (TEXT2IM_CONFIGS, Text2Im, Text2ImConfig, TextEncoder, drop_captions,
                                       empty_tokens, encode_prompts, get_text2im_config)
from unclip_lite.glide.unet import (UNET_CONFIGS, AttentionBlock, Downsample, ResBlock, UNet, UNetConfig,
                                    Upsample, count_parameters, get_unet_config, timestep_embedding)

__all__ = [
    "UNet", "UNetConfig", "UNET_CONFIGS", "get_unet_config", "count_parameters",
    "ResBlock", "AttentionBlock", "Downsample", "Upsample", "timestep_embedding",
    "Text2Im", "Text2ImConfig", "TextEncoder", "TEXT2IM_CONFIGS", "get_text2im_config",
    "empty_tokens", "drop_captions", "encode_prompts", "classifier_free_guidance",
]
