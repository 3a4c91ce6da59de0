"""Chapter 02 exercises: the contrastive loss and using a trained CLIP."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from unclip_lite.clip.loss import clip_loss as _clip_loss
from unclip_lite.clip.zeroshot import ensemble_embeddings, recall_at_k as _recall_at_k
from unclip_lite.exercises.core import Case, Exercise, seeded


def _unit(g, n, e):
    return F.normalize(torch.randn(n, e, generator=g), dim=-1)


# --- 1. Symmetric InfoNCE ----------------------------------------------------------------
def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference: ½ (CE over rows + CE over columns) of ``scale · I Tᵀ``; pair i is the match."""
    return _clip_loss(image_features, text_features, scale)


def _loss_cases():
    g = seeded(0)
    yield Case((_unit(g, 4, 8), _unit(g, 4, 8), 14.3), name="random pairs")
    x = _unit(g, 5, 8)
    yield Case((x, x, 100.0), name="perfect matches")
    yield Case((_unit(g, 3, 2), _unit(g, 3, 2), 1.0), name="asymmetric logits")
    img = _unit(g, 6, 4)
    yield Case((img, F.normalize(img + torch.randn(6, 4, generator=g), dim=-1), 30.0), name="noisy matches")


EX_LOSS = Exercise("ch02.clip_loss", clip_loss, _loss_cases,
                   hint="logits = scale * img @ txt.T; labels = arange(N); average "
                        "F.cross_entropy(logits, labels) and F.cross_entropy(logits.T, labels).")


def test_clip_loss(fn) -> bool:
    return EX_LOSS.check(fn)


# --- 2. Prompt ensembling -----------------------------------------------------------------
def ensemble(features: torch.Tensor) -> torch.Tensor:
    """Reference: ``[C, T, E]`` text embeddings (C classes × T templates) → ``[C, E]`` unit vectors."""
    return ensemble_embeddings(features)


def _ensemble_cases():
    g = seeded(1)
    yield Case((torch.randn(3, 4, 8, generator=g),), name="3 classes, 4 templates")
    yield Case((5 * torch.randn(2, 1, 6, generator=g),), name="one template, long vectors")
    f = torch.randn(2, 3, 4, generator=g)
    f[:, 0] *= 10
    yield Case((f,), name="one template much longer than the others")


EX_ENSEMBLE = Exercise("ch02.ensemble", ensemble, _ensemble_cases,
                       hint="normalise each embedding, average over templates (dim 1), then "
                            "normalise the average again.")


def test_ensemble(fn) -> bool:
    return EX_ENSEMBLE.check(fn)


# --- 3. Recall@k ---------------------------------------------------------------------------
def recall_at_k(similarities: torch.Tensor, k: int) -> float:
    """Reference: fraction of rows i whose match, column i, is among the k best columns."""
    return _recall_at_k(similarities, k)


def _recall_cases():
    g = seeded(2)
    yield Case((torch.randn(10, 10, generator=g), 1), name="random, k=1")
    yield Case((torch.randn(10, 10, generator=g), 5), name="random, k=5")
    yield Case((torch.eye(6) + 0.01 * torch.randn(6, 6, generator=g), 1), name="nearly perfect")
    s = torch.randn(8, 8, generator=g)
    s.fill_diagonal_(-10)
    yield Case((s, 3), name="every match ranked last")


EX_RECALL = Exercise("ch02.recall_at_k", recall_at_k, _recall_cases, atol=1e-6,
                     hint="the match of row i is column i; it is retrieved at k when fewer than k "
                          "columns score higher; return a Python float.")


def test_recall_at_k(fn) -> bool:
    return EX_RECALL.check(fn)
