"""Checkpoints: safetensors weights + a JSON config, written atomically, loaded safely.

A checkpoint is two files side by side:

* ``NAME.safetensors``: the tensors, plus the model's config as JSON in the header's
  metadata, so the weights alone are enough to rebuild the model. safetensors holds only
  tensors, so loading never executes code (unlike ``pickle``).
* ``NAME.json``: the manifest: what the model is, the config, the exact command that
  produced it, training time and hardware, metrics, and the sha256 of the weights file.

Shipped reference checkpoints live in ``data/checkpoints/`` (the registry) and are
loaded by name: ``load_checkpoint("clip-shapes-tiny")``. Any path works too.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

REGISTRY_DIR = Path(os.environ.get(
    "UNCLIP_LITE_CHECKPOINTS", Path(__file__).resolve().parents[1] / "data" / "checkpoints"))
SUFFIX = ".safetensors"


class CheckpointError(RuntimeError):
    """A checkpoint is missing, corrupt, truncated or does not fit the model."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's tensors or config do not match the model they are loaded into."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    state_dict: dict[str, torch.Tensor]
    config: dict[str, Any]
    kind: str
    manifest: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


def atomic_write(path: str | Path, write) -> Path:
    """Call ``write(tmp_path)`` then rename the result onto ``path`` in one step.

    A crash mid-write leaves the old file intact instead of a truncated one: the rename is
    atomic on POSIX filesystems because the temporary file sits in the same folder.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a checkpoint should not be
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(path: str | Path, state_dict: dict[str, torch.Tensor], config: dict,
                    kind: str, manifest: dict | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write ``path`` (``.safetensors``) and its manifest ``.json``, both atomically.

    ``kind`` names the model family (``"clip"``, ``"glide"`` …) so that loading a GLIDE
    checkpoint as a CLIP fails with a clear message. ``dtype`` (e.g. ``torch.float16``)
    converts floating-point tensors to save space.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != SUFFIX:
        path = path.with_suffix(SUFFIX)
    tensors = {}
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"state_dict[{key!r}] is a {type(value).__name__}, not a tensor")
        value = value.detach().cpu()
        if dtype is not None and value.is_floating_point():
            value = value.to(dtype)
        tensors[key] = value.contiguous()
    metadata = {"kind": kind, "config": json.dumps(config, sort_keys=True)}
    atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))
    full_manifest = {"name": path.stem, "kind": kind, "config": config, **(manifest or {}),
                     "file": path.name, "sha256": sha256(path),
                     "n_params": sum(t.numel() for t in tensors.values())}
    text = json.dumps(full_manifest, indent=2, sort_keys=True) + "\n"
    atomic_write(path.with_suffix(".json"), lambda tmp: Path(tmp).write_text(text))
    return path


def update_manifest(name_or_path: str | Path, **fields) -> Path:
    """Merge ``fields`` into a checkpoint's manifest (atomically), e.g. the metrics of a
    separate, longer evaluation; the weights file and its sha256 are untouched."""
    path = resolve(name_or_path).with_suffix(".json")
    manifest = {**read_manifest(path.with_suffix(SUFFIX)), **fields}
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def resolve(name_or_path: str | Path) -> Path:
    """A registry name (``"clip-shapes-tiny"``) or a path, to an existing weights file."""
    candidates = [Path(name_or_path)]
    if candidates[0].suffix != SUFFIX:
        candidates.append(candidates[0].with_name(candidates[0].name + SUFFIX))
    candidates.append(REGISTRY_DIR / f"{name_or_path}{SUFFIX}")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    shipped = ", ".join(list_checkpoints()) or "none"
    raise CheckpointError(
        f"no checkpoint {str(name_or_path)!r}: not a file, and not a shipped name "
        f"(shipped in {REGISTRY_DIR}: {shipped})")


def list_checkpoints() -> list[str]:
    """Names of the shipped checkpoints (those with weights in the registry folder)."""
    return sorted(p.stem for p in REGISTRY_DIR.glob(f"*{SUFFIX}")) if REGISTRY_DIR.is_dir() else []


def read_manifest(name_or_path: str | Path) -> dict:
    path = resolve(name_or_path).with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise CheckpointError(f"manifest {path} is not valid JSON ({err})") from err


def component_entry(name_or_path: str | Path) -> dict:
    """``{"name", "sha256"}`` of a checkpoint that another one is composed from (a pipeline, a
    CLIP-guided method): the hash pins the exact weights the composition was measured with."""
    found = read_manifest(name_or_path)
    if not found or not found.get("sha256"):
        raise FileNotFoundError(f"no checkpoint {str(name_or_path)!r} (or its manifest has no sha256)")
    return {"name": str(name_or_path), "sha256": found["sha256"]}


def check_component(entry: dict, source: str = "checkpoint") -> None:
    """Refuse a component retrained (or replaced) since it was composed: its sha256 differs."""
    found = read_manifest(entry["name"]).get("sha256")
    if found != entry["sha256"]:
        raise ValueError(
            f"{source}: component {entry['name']!r} has sha256 {str(found)[:12]}…, but this checkpoint was "
            f"composed with {entry['sha256'][:12]}… — compose it again with the current component")


def load_checkpoint(name_or_path: str | Path, kind: str | None = None,
                    verify: bool = True) -> Checkpoint:
    """Load weights and config; check the hash against the manifest and the kind.

    Raises :class:`CheckpointError` with the file name and the reason for a missing,
    truncated or corrupt file, a hash that differs from the manifest (the file was changed
    or half-copied), or a checkpoint of another kind of model.
    """
    from safetensors import safe_open

    path = resolve(name_or_path)
    manifest = read_manifest(path)
    if verify and manifest.get("sha256") and manifest["sha256"] != sha256(path):
        raise CheckpointError(
            f"{path} does not match the sha256 in its manifest: the file is corrupt, "
            "truncated or was replaced. Re-copy it, or re-create it with the command in "
            f"{path.with_suffix('.json')}.")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            state = {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises several types for bad headers/data
        raise CheckpointError(f"{path} is not a readable safetensors file "
                              f"(corrupt or truncated?): {err}") from err
    found_kind = metadata.get("kind", manifest.get("kind", "unknown"))
    if kind is not None and found_kind != kind:
        raise CheckpointMismatchError(
            f"{path} holds a {found_kind!r} model, but a {kind!r} model was asked for")
    try:
        config = json.loads(metadata["config"]) if "config" in metadata else manifest.get("config", {})
    except json.JSONDecodeError as err:
        raise CheckpointError(f"{path}: the config in its header is not valid JSON ({err})") from err
    return Checkpoint(state, config, found_kind, manifest, path)


def load_state_into(model: torch.nn.Module, state_dict: dict[str, torch.Tensor],
                    source: str = "checkpoint") -> torch.nn.Module:
    """``model.load_state_dict`` that explains every mismatch at once, then casts dtypes.

    Missing keys, unexpected keys and shape differences usually mean the checkpoint was
    made with another config: the message lists them so that is easy to see.
    """
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    reshaped = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
                for k in sorted(set(own) & set(state_dict)) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or reshaped:
        def show(items):
            return ", ".join(items[:6]) + (f" … (+{len(items) - 6} more)" if len(items) > 6 else "")
        problems = [f"{label} ({len(items)}): {show(items)}" for label, items in
                    (("missing", missing), ("unexpected", unexpected), ("wrong shape", reshaped))
                    if items]
        raise CheckpointMismatchError(
            f"{source} does not fit this model (was it made with another config?)\n  "
            + "\n  ".join(problems))
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()})
    return model
