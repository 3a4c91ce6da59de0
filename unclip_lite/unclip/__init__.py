"""unCLIP (Ramesh et al. 2022): the prior that turns a caption into a CLIP image embedding.

* :mod:`.prior` — the diffusion prior network and its presets;
* :mod:`.convert` — to and from diffusers' ``PriorTransformer`` (Karlo's architecture).
"""
from unclip_lite.unclip.prior import (PRIOR_CONFIGS, DiffusionPrior, PriorConfig, causal_mask, count_parameters,
                                      get_prior_config)

__all__ = ["PRIOR_CONFIGS", "DiffusionPrior", "PriorConfig", "causal_mask", "count_parameters", "get_prior_config"]
