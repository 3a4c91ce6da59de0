"""GLIDE (Nichol et al. 2021): the ADM U-Net (:mod:`unclip_lite.unet`) with text conditioning.

* :mod:`.text2im`: the text encoder and :class:`Text2Im` (U-Net + text), presets in :data:`TEXT2IM_CONFIGS`.
* :mod:`.guidance`: classifier-free guidance toward a caption, as a ``model_fn(x, t)`` for the samplers.
* :mod:`.bundle`: a trained GLIDE with its vocabulary and diffusion: save, load, sample.
* :mod:`.inpaint`, :mod:`.upsample`: the inputs of the inpainting model and the upsampler.
* :mod:`.classifier`, :mod:`.guide_recipes`: ADM's noised classifier and classifier guidance.
"""
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.text2im import (TEXT2IM_CONFIGS, Text2Im, Text2ImConfig, TextEncoder, drop_captions,
                                       empty_tokens, encode_prompts, get_text2im_config)

__all__ = [
    "Text2Im", "Text2ImConfig", "TextEncoder", "TEXT2IM_CONFIGS", "get_text2im_config",
    "empty_tokens", "drop_captions", "encode_prompts", "classifier_free_guidance",
]
