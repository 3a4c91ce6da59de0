"""GLIDE (Nichol et al. 2021): the ADM U-Net with text conditioning.

* :mod:`.unet`: :class:`UNetConfig`, :class:`UNet` and its blocks, presets in :data:`UNET_CONFIGS`.
"""
from unclip_lite.glide.unet import (UNET_CONFIGS, AttentionBlock, Downsample, ResBlock, UNet, UNetConfig,
                                    Upsample, count_parameters, get_unet_config, timestep_embedding)

__all__ = [
    "UNet", "UNetConfig", "UNET_CONFIGS", "get_unet_config", "count_parameters",
    "ResBlock", "AttentionBlock", "Downsample", "Upsample", "timestep_embedding",
]
