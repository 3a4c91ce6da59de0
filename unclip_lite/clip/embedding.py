"""The CLIP-embedding interface that guides, the unCLIP prior and the decoder take.

Anything with ``dim``, ``image_size``, ``embed_text(texts)`` and ``embed_image(images)`` will
do: our :class:`~unclip_lite.clip.bundle.CLIPBundle` meets it, and :class:`OpenCLIPEmbedder`
wraps an open_clip model a user has locally (e.g. ViT-L/14 weights loaded with
``open_clip.create_model_and_transforms(name, pretrained="/path/to/weights.bin")`` — this
package never downloads them), so the later stages run on either without a branch.

Images go in as pixels in [0, 1] ``[N, 3, H, W]``; each embedder resizes and normalises them
its own way. Embeddings come back unit-norm by default, as unCLIP's prior and decoder use them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@runtime_checkable
class CLIPEmbedder(Protocol):
    dim: int         # embedding width E
    image_size: int  # the side its image tower reads

    def embed_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:  # [N, E]
        ...

    def embed_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:  # [N, E]
        ...


class OpenCLIPEmbedder:
    """An ``open_clip`` CLIP behind :class:`CLIPEmbedder`.

    ``tokenizer(texts) -> [N, L]`` is open_clip's (``open_clip.get_tokenizer(name)``); images
    are resized (bicubic, like open_clip's eval transform on square inputs) to the model's
    ``image_size`` and normalised with ``mean`` / ``std`` (OpenAI's by default).
    """

    def __init__(self, model: torch.nn.Module, tokenizer: Callable, image_size: int | None = None,
                 mean: Sequence[float] = OPENAI_MEAN, std: Sequence[float] = OPENAI_STD):
        self.model = model.eval()
        self.tokenizer = tokenizer
        size = image_size or getattr(model.visual, "image_size", None)
        self.image_size = int(size[0] if isinstance(size, (tuple, list)) else size)
        self.mean, self.std = tuple(mean), tuple(std)
        self.dim = int(model.text_projection.shape[1])

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def embed_text(self, texts: Sequence[str], normalize: bool = True) -> torch.Tensor:
        tokens = self.tokenizer([texts] if isinstance(texts, str) else list(texts)).to(self.device)  # [N, L]
        features = self.model.encode_text(tokens).float()  # [N, E]
        return F.normalize(features, dim=-1) if normalize else features

    @torch.no_grad()
    def embed_image(self, images: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        images = images.to(self.device).float()  # [N, 3, H, W] in [0, 1]
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(images, size=(self.image_size,) * 2, mode="bicubic", align_corners=False)
        mean = torch.tensor(self.mean, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(self.std, device=images.device).view(1, 3, 1, 1)
        features = self.model.encode_image((images - mean) / std).float()  # [N, E]
        return F.normalize(features, dim=-1) if normalize else features
