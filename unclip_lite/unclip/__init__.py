"""unCLIP (Ramesh et al. 2022): the priors that turn a caption into a CLIP image embedding.

* :mod:`.prior` — the diffusion prior network and its presets;
* :mod:`.ar_prior` — the autoregressive prior: PCA, buckets, the causal transformer over codes;
* :mod:`.bundle` — both priors ready to sample, each with the CLIP it was trained on;
* :mod:`.recipes` — how the shipped priors are trained and evaluated;
* :mod:`.convert` — to and from diffusers' ``PriorTransformer`` (Karlo's architecture).
"""
from unclip_lite.unclip.ar_prior import AR_PRIOR_CONFIGS, ARPrior, ARPriorConfig, get_ar_prior_config
from unclip_lite.unclip.prior import (PRIOR_CONFIGS, DiffusionPrior, PriorConfig, causal_mask, count_parameters,
                                      get_prior_config)

__all__ = ["PRIOR_CONFIGS", "DiffusionPrior", "PriorConfig", "causal_mask", "count_parameters", "get_prior_config",
           "AR_PRIOR_CONFIGS", "ARPrior", "ARPriorConfig", "get_ar_prior_config"]
