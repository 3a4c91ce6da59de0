"""One base for everything a checkpoint holds: a model plus what it takes to use it.

A *bundle* is a trained network together with the small things that make it usable on its
own — a CLIP with its tokenizer and pixel normalisation, a GLIDE with its vocabulary and
diffusion, a classifier with the diffusion whose x_t it reads. Every bundle saves to and
loads from the same two-file checkpoint (:mod:`unclip_lite.checkpoints`: safetensors
weights with the config in the header, a JSON manifest beside it), so a subclass says only
two things: how its config is written (:meth:`Bundle.config_dict`) and how a model is
rebuilt from it (:meth:`Bundle.from_config`)::

    clip = CLIPBundle.load("clip-shapes-tiny")     # checks the sha256 and the kind
    clip.save("runs/copy.safetensors", manifest={"command": "…"}, dtype=torch.float16)

open_clip's ``create_model_and_transforms`` and diffusers' ``from_pretrained`` play the same
role; here the file never executes code (safetensors, not pickle).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import ClassVar

import torch

from unclip_lite.checkpoints import load_checkpoint, save_checkpoint
from unclip_lite.hardware import hardware


class Bundle:
    """Base of CLIPBundle, GlideBundle, ClassifierBundle and JudgeBundle.

    Subclasses are dataclasses with (at least) ``model``, ``extra`` (saved with the config:
    how it was trained) and ``manifest`` (of the checkpoint it was loaded from) fields, and a
    class-level ``kind`` — the name written into the checkpoint, so that loading a GLIDE as a
    CLIP fails with a clear message instead of a shape error.
    """

    kind: ClassVar[str]
    model: torch.nn.Module
    extra: dict
    manifest: dict

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def config_dict(self) -> dict:
        """Everything but the weights that it takes to rebuild this bundle (JSON-able)."""
        raise NotImplementedError

    @classmethod
    def from_config(cls, config: dict, state_dict: dict[str, torch.Tensor] | None = None,
                    source: str = "checkpoint") -> Bundle:
        """Rebuild a bundle from :meth:`config_dict` (and load weights if given)."""
        raise NotImplementedError

    def save(self, path: str | Path, manifest: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        """Write the weights (optionally as ``dtype``, e.g. fp16) and the manifest, atomically."""
        return save_checkpoint(path, self.model.state_dict(), self.config_dict(), kind=self.kind,
                               manifest=manifest, dtype=dtype)

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | torch.device | None = None):
        """A shipped checkpoint by name (``"glide-shapes-tiny"``) or a path, in eval mode.

        Weights stored in fp16 are widened to the model's fp32 on load.
        """
        ckpt = load_checkpoint(name_or_path, kind=cls.kind)
        state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
        bundle = cls.from_config(ckpt.config, state, source=str(ckpt.path))
        bundle.manifest = ckpt.manifest
        bundle.model.eval()
        if device is not None:
            bundle.model.to(device)
        return bundle


class ComposedBundle(Bundle):
    """A checkpoint with no weights of its own, only the checkpoints it is composed of (each
    by name and sha256, :func:`~unclip_lite.checkpoints.component_entry`) and its settings:
    the unCLIP pipeline, CLIPDraw, VQGAN-CLIP. Loading it loads and checks the components, so
    its recorded numbers always belong to the exact weights they were measured with."""

    def save(self, path: str | Path, manifest: dict | None = None, dtype: torch.dtype | None = None) -> Path:
        return save_checkpoint(path, {}, self.config_dict(), kind=self.kind, manifest=manifest)

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | torch.device | None = None, **options):
        ckpt = load_checkpoint(name_or_path, kind=cls.kind)
        bundle = cls.from_config(ckpt.config, source=str(ckpt.path), **options)
        bundle.manifest = ckpt.manifest
        if device is not None:
            bundle.model.to(device)
        return bundle


def manifest_for(trainer, command: str, metrics: dict, overrides: dict | None = None) -> dict:
    """The manifest of a freshly trained checkpoint: the exact command and the recipe fields
    it overrode, training time and steps, the machine and the precision it ran in, metrics."""
    return {"command": command, "overrides": overrides or {},
            "train_seconds": round(trainer.elapsed, 1), "train_minutes": round(trainer.elapsed / 60, 2),
            "steps": trainer.step, "hardware": hardware(), "precision": trainer.precision, "metrics": metrics,
            "created": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "final_loss": trainer.history[-1]["loss"] if trainer.history else None,
            # what the recipe's evaluate hook measured during training (the learning curve)
            "curve": [{k: v for k, v in h.items() if k == "step" or k.startswith("eval_")}
                      for h in trainer.history if any(k.startswith("eval_") for k in h)]}

