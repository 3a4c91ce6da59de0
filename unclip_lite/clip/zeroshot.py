"""Using a trained CLIP: zero-shot classification, ranking, retrieval, linear probes (§3).

Everything here works on a :class:`~unclip_lite.clip.bundle.CLIPBundle` (a model with its
tokenizer and pixel normalisation), so callers pass images in [0, 1] and plain strings.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from unclip_lite.clip.bundle import CLIPBundle


@torch.no_grad()
def zero_shot_classifier(bundle: CLIPBundle, class_names: Sequence[str],
                         templates: Sequence[str] = ("a photo of a {}.",)) -> torch.Tensor:
    """Class embeddings ``[C, E]``: every template filled with the class name, embedded,
    averaged and renormalised (§3.1.4, prompt ensembling)."""
    if len(class_names) == 0:
        raise ValueError("zero-shot classification needs at least one class name")
    if len(templates) == 0 or any("{}" not in t for t in templates):
        raise ValueError("every template must contain '{}' where the class name goes")
    texts = [t.format(name) for name in class_names for t in templates]
    features = bundle.encode_texts(texts).view(len(class_names), len(templates), -1)  # [C, T, E]
    return ensemble_embeddings(features)


def ensemble_embeddings(features: torch.Tensor) -> torch.Tensor:
    """``[C, T, E]`` embeddings of C classes under T templates → one unit vector per class.

    Each embedding is normalised first (so no template outweighs another), then averaged,
    then renormalised (the mean of unit vectors is shorter than one).
    """
    return F.normalize(F.normalize(features, dim=-1).mean(1), dim=-1)  # [C, E]


@torch.no_grad()
def zero_shot_logits(bundle: CLIPBundle, images: torch.Tensor, classifier: torch.Tensor,
                     batch_size: int = 512) -> torch.Tensor:
    """Cosine similarity of each image with each class embedding: ``[N, C]``."""
    features = bundle.encode_images(images, batch_size=batch_size)  # [N, E]
    return features @ classifier.T


def accuracy_at_k(logits: torch.Tensor, labels: torch.Tensor, ks: Sequence[int] = (1, 5)) -> dict:
    """Top-k accuracies ``{"top1": ..., "top5": ...}`` of ``[N, C]`` scores."""
    out = {}
    for k in ks:
        k_eff = min(k, logits.shape[1])
        hit = (logits.topk(k_eff, dim=1).indices == labels[:, None]).any(1)
        out[f"top{k}"] = hit.float().mean().item()
    return out


@torch.no_grad()
def rank_images(bundle: CLIPBundle, images: torch.Tensor, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's first job: sort candidate images by how well they match one caption.

    Returns ``(order, scores)``: indices best first, and the cosine similarity of each image.
    DALL·E (2021) drew 512 samples per prompt and kept the ones CLIP ranked highest.
    """
    scores = bundle.encode_images(images) @ bundle.encode_texts([caption])[0]  # [N]
    return scores.argsort(descending=True), scores


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor,
                      ks: Sequence[int] = (1, 5, 10)) -> dict:
    """Recall@k for image→text and text→image retrieval; pair i is the only correct match.

    ``image_features`` and ``text_features`` are unit vectors ``[N, E]``. Recall@k is the
    fraction of queries whose match is among the k most similar candidates.
    """
    if image_features.shape != text_features.shape:
        raise ValueError(f"need as many images as texts, got {tuple(image_features.shape)} "
                         f"and {tuple(text_features.shape)}")
    sims = image_features @ text_features.T  # [N, N]
    out = {}
    for direction, matrix in (("image_to_text", sims), ("text_to_image", sims.T)):
        for k in ks:
            out[f"{direction}_R@{k}"] = recall_at_k(matrix, k)
    return out


def recall_at_k(similarities: torch.Tensor, k: int) -> float:
    """Fraction of rows i whose match (column i) is among the k highest-scoring columns.

    The rank of the match is the number of columns scoring strictly higher, so ties are
    resolved in the match's favour.
    """
    target = torch.arange(len(similarities))
    correct = similarities[target, target][:, None]  # [N, 1]
    rank = (similarities > correct).sum(1)  # [N]
    return (rank < k).float().mean().item()


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor,
                 test_y: torch.Tensor, weight_decay: float = 1e-3, steps: int = 200) -> dict:
    """Logistic regression on frozen features (§3.2): how linearly readable is the label?

    Full-batch L-BFGS on standardised features, as CLIP's probes did with scikit-learn.
    Returns train and test accuracy and the number of classes.
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("features and labels must have the same length")
    mean, std = train_x.mean(0), train_x.std(0).clamp(min=1e-6)
    xtr, xte = (train_x - mean) / std, (test_x - mean) / std
    n_classes = int(max(train_y.max(), test_y.max())) + 1
    linear = torch.nn.Linear(xtr.shape[1], n_classes)
    optimizer = torch.optim.LBFGS(linear.parameters(), lr=1.0, max_iter=steps, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        loss = F.cross_entropy(linear(xtr), train_y) + weight_decay * linear.weight.square().sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        optimizer.step(closure)
    with torch.no_grad():
        return {"train_accuracy": (linear(xtr).argmax(1) == train_y).float().mean().item(),
                "test_accuracy": (linear(xte).argmax(1) == test_y).float().mean().item(),
                "n_classes": n_classes}
