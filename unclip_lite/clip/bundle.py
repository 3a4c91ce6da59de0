"""A CLIP ready to use: the model, its tokenizer and its pixel normalisation, saved as one.

Later chapters (guidance, the unCLIP prior and decoder) need CLIP embeddings of images in
[0, 1] and of plain strings; :class:`CLIPBundle` gives exactly that, and
:func:`load_clip` loads one by name from the shipped checkpoints::

    clip = load_clip("clip-shapes-tiny")
    clip.encode_images(images)          # [N, E] unit vectors
    clip.encode_texts(["a red star"])   # [1, E] unit vectors
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.clip.configs import CLIPConfig
from unclip_lite.clip.model import CLIP
from unclip_lite.tokenizer import CompactVocab, get_tokenizer



@dataclass
class CLIPBundle(Bundle):
    kind = "clip"
    model: CLIP
    vocab: CompactVocab | None = None  # None: CLIP's full BPE vocabulary
    mean: Sequence[float] = (0.5, 0.5, 0.5)
    std: Sequence[float] = (0.5, 0.5, 0.5)
    extra: dict = field(default_factory=dict)  # saved alongside, e.g. how the data was made
    manifest: dict = field(default_factory=dict)  # of the checkpoint it was loaded from

    @property
    def context_length(self) -> int:
        return self.model.config.text.context_length

    @property
    def image_size(self) -> int:
        return self.model.config.vision.image_size

    def tokenize(self, texts: str | Sequence[str], truncate: bool = True) -> torch.Tensor:
        """Token ids ``[N, context_length]`` in this model's vocabulary."""
        if self.vocab is not None:
            return self.vocab(texts, context_length=self.context_length, truncate=truncate)
        return get_tokenizer()(texts, context_length=self.context_length, truncate=truncate)

    def normalize_pixels(self, images: torch.Tensor) -> torch.Tensor:
        """Images in [0, 1] ``[N, 3, S, S]`` to the model's input scale."""
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        return (images - mean) / std

    @property
    def dim(self) -> int:
        """The embedding width E (the :class:`~unclip_lite.clip.embedding.CLIPEmbedder` interface)."""
        return self.model.config.embed_dim

    def embed_image(self, images: torch.Tensor, normalize: bool = True, batch_size: int = 512) -> torch.Tensor:
        """Image embeddings ``[N, E]`` (unit vectors unless ``normalize=False``) of images in [0, 1], no gradient."""
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            out = torch.cat([
                self.model.encode_image(self.normalize_pixels(chunk.to(self.device)), normalize=normalize)
                for chunk in images.split(batch_size)])
        self.model.train(was_training)
        return out

    def embed_text(self, texts: Sequence[str], normalize: bool = True, batch_size: int = 512) -> torch.Tensor:
        """Text embeddings ``[N, E]`` (unit vectors unless ``normalize=False``) of strings, no gradient."""
        if isinstance(texts, str):
            texts = [texts]
        was_training = self.model.training
        self.model.eval()
        with torch.no_grad():
            tokens = self.tokenize(list(texts)).to(self.device)
            out = torch.cat([self.model.encode_text(chunk, normalize=normalize) for chunk in tokens.split(batch_size)])
        self.model.train(was_training)
        return out

    def encode_images(self, images: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Unit image embeddings ``[N, E]`` of images in [0, 1] (``embed_image``, normalised)."""
        return self.embed_image(images, batch_size=batch_size)

    def encode_texts(self, texts: Sequence[str], batch_size: int = 512) -> torch.Tensor:
        """Unit text embeddings ``[N, E]`` of strings (``embed_text``, normalised)."""
        return self.embed_text(texts, batch_size=batch_size)

    def config_dict(self) -> dict:
        return {"clip": self.model.config.to_dict(),
                "vocab": self.vocab.to_dict() if self.vocab is not None else None,
                "mean": list(self.mean), "std": list(self.std), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> CLIPBundle:
        model = CLIP(CLIPConfig.from_dict(config["clip"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        vocab = CompactVocab.from_dict(config["vocab"]) if config.get("vocab") else None
        return cls(model.eval(), vocab, tuple(config["mean"]), tuple(config["std"]), config.get("extra", {}))


def load_clip(name_or_path: str | Path, device: str | torch.device | None = None) -> CLIPBundle:
    """A shipped CLIP by name (``"clip-shapes-tiny"``) or a checkpoint path, ready to use."""
    return CLIPBundle.load(name_or_path, device)
