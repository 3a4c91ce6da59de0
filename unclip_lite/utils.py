"""Small things every chapter needs: reproducible seeds, the best available device, and
config dataclasses read from dicts (checkpoints) and from ``key=value`` strings (the CLI)."""
from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import fields, is_dataclass
from types import UnionType
from typing import Union, get_args, get_origin, get_type_hints

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


def _leaves(config, prefix: str = "") -> dict[str, tuple[object, str]]:
    """``{dotted path: (owning dataclass, field name)}`` for every non-dataclass field, recursively."""
    out = {}
    for f in fields(config):
        value = getattr(config, f.name)
        path = f"{prefix}{f.name}"
        if is_dataclass(value) and not isinstance(value, type):
            out.update(_leaves(value, path + "."))
        else:
            out[path] = (config, f.name)
    return out


def _parse(raw: str, annotation, key: str):
    """``raw`` converted to ``annotation`` (int, float, bool, str, None, tuples, unions of these)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin in (Union, UnionType):
        if raw.lower() in ("none", "null") and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _parse(raw, arg, key)
            except ValueError as err:
                errors.append(str(err))
        raise ValueError("; ".join(errors))
    if origin is tuple:
        items = [item.strip() for item in raw.split(",") if item.strip()]
        kinds = [args[0]] * len(items) if len(args) == 2 and args[1] is Ellipsis else list(args)
        if len(kinds) != len(items):
            raise ValueError(f"{key} takes {len(kinds)} comma-separated values, got {raw!r}")
        return tuple(_parse(item, kind, key) for item, kind in zip(items, kinds))
    if annotation is bool:
        if raw.lower() in ("1", "true", "yes", "on"):
            return True
        if raw.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"{key} is true or false, got {raw!r}")
    if annotation is int:
        try:
            return int(raw.replace("_", ""))
        except ValueError:
            raise ValueError(f"{key} is an integer, got {raw!r}") from None
    if annotation is float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"{key} is a number, got {raw!r}") from None
        if not math.isfinite(value):
            raise ValueError(f"{key} must be finite, got {raw!r}")
        return value
    if annotation is str:
        return raw
    raise ValueError(f"{key} ({annotation}) cannot be set from the command line")


def override_fields(config, assignments: Sequence[str]) -> dict:
    """Apply ``"key=value"`` strings to a nested config dataclass in place; return what was set.

    ``key`` is a dotted path (``"train.lr"``, ``"data.batch_size"``) or a bare field name that
    occurs once in the tree (``"lr"``). Each value is parsed to the field's declared type and
    the owning dataclass re-validates itself (its ``__post_init__``), so an unknown key or a
    bad value is an error before any work starts — nanoGPT's configurator and
    improved-diffusion's ``add_dict_to_argparser``, typed.
    """
    leaves = _leaves(config)
    applied = {}
    for assignment in assignments:
        key, sep, raw = assignment.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set takes key=value, got {assignment!r}")
        matches = [path for path in leaves if path == key or path.endswith("." + key)]
        exact = [path for path in matches if path == key]
        if len(exact) == 1:
            matches = exact
        if not matches:
            raise ValueError(f"unknown recipe field {key!r}; fields: {', '.join(sorted(leaves))}")
        if len(matches) > 1:
            raise ValueError(f"{key!r} is ambiguous: {', '.join(matches)}; give the full path")
        owner, name = leaves[matches[0]]
        annotation = get_type_hints(type(owner))[name]
        value = _parse(raw.strip(), annotation, matches[0])
        old = getattr(owner, name)
        setattr(owner, name, value)
        try:
            if hasattr(owner, "__post_init__"):
                owner.__post_init__()  # the dataclass's own checks (e.g. TrainConfig's precision)
        except (ValueError, TypeError):
            setattr(owner, name, old)  # leave the recipe as it was
            raise
        applied[matches[0]] = value
    return applied
