"""Small things every chapter needs: reproducible seeds and the best available device."""
from __future__ import annotations

import os
import random
from dataclasses import fields

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch (all devices); return a torch Generator seeded alike.

    Prefer passing the returned generator to samplers explicitly: it keeps randomness
    local, so adding a cell to a notebook does not change what a later cell draws.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def pick_device(preference: str | None = None) -> torch.device:
    """``cuda`` if present, else Apple's ``mps``, else ``cpu``; or the one asked for.

    ``preference`` (or ``$UNCLIP_LITE_DEVICE``) may name a device; asking for one that is
    not available is an error rather than a silent fallback.
    """
    preference = preference or os.environ.get("UNCLIP_LITE_DEVICE")
    if preference:
        device = torch.device(preference)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {preference!r} asked for, but CUDA is not available here")
        if device.type == "mps" and not torch.backends.mps.is_available():
            raise RuntimeError(f"device {preference!r} asked for, but MPS is not available here")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def config_from_dict(cls, d: dict, where: str | None = None):
    """``cls(**d)`` for a config dataclass, refusing unknown keys instead of dropping them.

    A checkpoint made by a newer or older version of a model must fail loudly here, not
    build a different model quietly.
    """
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ValueError(f"unknown {where or cls.__name__} field(s) {unknown}; expected some of {sorted(known)}")
    return cls(**d)
