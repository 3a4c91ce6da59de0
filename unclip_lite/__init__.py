"""unclip_lite: DALL·E 2 rebuilt from scratch, small enough to train on a laptop CPU.

Data flows text -> CLIP -> prior -> decoder -> upsamplers -> image; each stage is a small
module of this package, built chapter by chapter in ``notebooks/``.
"""
from unclip_lite.profiles import get_profile

__version__ = "0.1.0"
__all__ = ["get_profile", "__version__"]
