"""unCLIP (Ramesh et al. 2022): caption -> prior -> CLIP image embedding -> decoder -> upsamplers.

* :mod:`.prior` — the diffusion prior network and its presets;
* :mod:`.ar_prior` — the autoregressive prior: PCA, buckets, the causal transformer over codes;
* :mod:`.bundle` — both priors ready to sample, each with the CLIP it was trained on;
* :mod:`.recipes` — how the shipped priors are trained and evaluated;
* :mod:`.convert` — to and from diffusers' ``PriorTransformer`` (Karlo's architecture);
* :mod:`.decoder`, :mod:`.decoder_recipes` — the decoder: a GLIDE that also reads z_i;
* :mod:`.degradations`, :mod:`.upsampler`, :mod:`.upsampler_recipes` — the cascade's upsamplers and
  the corruptions (blur, BSR) they train on;
* :mod:`.pipeline` — the whole system, composed from checkpoints; :mod:`.compare` — unCLIP beside GLIDE.
"""
from unclip_lite.unclip.ar_prior import AR_PRIOR_CONFIGS, ARPrior, ARPriorConfig, get_ar_prior_config
from unclip_lite.unclip.prior import (PRIOR_CONFIGS, DiffusionPrior, PriorConfig, causal_mask, count_parameters,
                                      get_prior_config)

__all__ = ["PRIOR_CONFIGS", "DiffusionPrior", "PriorConfig", "causal_mask", "count_parameters", "get_prior_config",
           "AR_PRIOR_CONFIGS", "ARPrior", "ARPriorConfig", "get_ar_prior_config"]
