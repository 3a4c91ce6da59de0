"""How ``classifier-noised-shapes-tiny``, ADM's noised classifier on Shapes, is trained and
judged, and how it guides: chapter 06's second gradient guide (the first, the noise-aware
CLIP, lives with CLIP in :mod:`unclip_lite.clip.noised`).

It reads noisy images x_t from the very diffusion ``glide-shapes-tiny`` was trained on
(cosine, 1000 steps), at timesteps drawn uniformly, so its gradients mean something at every
step of sampling. ``unclip-lite train classifier --config shapes-tiny`` calls
:func:`train_noised_classifier`; ``unclip-lite eval`` calls :func:`evaluate_classifier`.

A guide is handed to :meth:`GlideBundle.sample` as ``guide(prompts) -> log_prob_fn(x_t, t)``
(:func:`classifier_guide`; :func:`~unclip_lite.clip.noised.clip_guide`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip_lite.clip.noised import EVAL_TIMESTEPS, noised
from unclip_lite.data import shapes
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.classifier import ClassifierBundle, NoisedClassifier, get_classifier_config
from unclip_lite.train import TrainConfig, Trainer


# ----------------------------------------------------------------------------- classifier


@dataclass
class ClassifierData:
    batch_size: int = 64
    seed: int = 0
    hue_jitter: float = 10.0  # the hues GLIDE's training images have, give or take


@dataclass
class ClassifierRecipe:
    model: str = "shapes-tiny"
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: ClassifierData = field(default_factory=ClassifierData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, lr=1e-3, warmup=100, weight_decay=0.05, log_every=25, checkpoint_every=250))


CLASSIFIER_RECIPES = {"shapes-tiny": ClassifierRecipe}


def classifier_batches(diffusion, data: ClassifierData) -> Callable:
    """``batches(index, rank, world) -> (x_t, t, {"colour": [B], "shape": [B]})``: single-object
    Shapes renders (training pairs only) noised at uniform timesteps, seeded by the index."""
    stream = shapes.ShapesStream(data.batch_size, 32, seed=data.seed, hue_jitter=data.hue_jitter)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, _, (scenes,) = stream.batch(index)  # one part: single-object scenes only
        gen = torch.Generator().manual_seed(data.seed * 7919 + index)
        t = torch.randint(0, diffusion.num_timesteps, (len(images),), generator=gen)  # [B]
        x_t = diffusion.q_sample(images * 2 - 1, t, torch.randn(images.shape, generator=gen))
        labels = {"colour": scenes.colour[:, 0], "shape": scenes.shape[:, 0]}
        mine = slice(rank * len(t) // world, (rank + 1) * len(t) // world)
        return x_t[mine], t[mine], {k: v[mine] for k, v in labels.items()}

    return batches


def classifier_loss(model: NoisedClassifier, batch) -> tuple[torch.Tensor, dict]:
    """Cross-entropy summed over the heads; accuracy per head for the progress bar."""
    x_t, t, labels = batch
    device = next(model.parameters()).device
    logits = model(x_t.to(device), t.to(device))
    loss = sum(F.cross_entropy(logits[k].float(), y.to(device)) for k, y in labels.items())
    return loss, {f"{k}_acc": (logits[k].argmax(1).cpu() == y).float().mean().item() for k, y in labels.items()}


def train_noised_classifier(recipe: ClassifierRecipe | None = None, out_dir: str | Path | None = None,
                            resume: bool = True, max_minutes: float | None = None, live_plot: bool = False
                            ) -> tuple[ClassifierBundle, Trainer]:
    recipe = recipe or ClassifierRecipe()
    torch.manual_seed(recipe.train.seed)
    model = NoisedClassifier(get_classifier_config(recipe.model))
    diffusion = recipe.diffusion.build()
    trainer = Trainer(model, classifier_loss, classifier_batches(diffusion, recipe.data), recipe.train,
                      out_dir=out_dir, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle = ClassifierBundle(model.eval(), recipe.diffusion)
    bundle.extra = {"recipe": {"model": recipe.model, "diffusion": asdict(recipe.diffusion),
                               "data": asdict(recipe.data), "train": asdict(recipe.train)}}
    return bundle, trainer


@torch.no_grad()
def evaluate_classifier(bundle: ClassifierBundle, n: int = 500, timesteps: Sequence[int] = EVAL_TIMESTEPS) -> dict:
    """Accuracy of each head on x_t at each timestep, ``t{t}_{colour,shape}``, over ``n``
    single-object images of all pairs (held-out ones included)."""
    diffusion = bundle.diffusion_config.build()
    images, scenes = shapes.eval_set("all", n, resolution=bundle.image_size)
    metrics = {}
    for t in timesteps:
        logits = bundle.model(noised(images, diffusion, t), torch.full((n,), t))
        metrics[f"t{t}_colour"] = round((logits["colour"].argmax(1) == scenes.colour[:, 0]).float().mean().item(), 4)
        metrics[f"t{t}_shape"] = round((logits["shape"].argmax(1) == scenes.shape[:, 0]).float().mean().item(), 4)
    return metrics


def prompt_labels(prompts: Sequence[str]) -> dict[str, torch.Tensor]:
    """``{"colour": [N], "shape": [N]}`` named by single-object prompts ("a red star")."""
    colours, shape_ids = [], []
    for text in prompts:
        objects = shapes.parse_caption(text)["objects"]
        if len(objects) != 1 or "colour" not in objects[0] or "shape" not in objects[0]:
            raise ValueError(f"classifier guidance needs one colour and one shape per prompt, got {text!r}")
        colours.append(shapes.colour_index(objects[0]["colour"]))
        shape_ids.append(shapes.shape_index(objects[0]["shape"]))
    return {"colour": torch.tensor(colours), "shape": torch.tensor(shape_ids)}


def classifier_guide(bundle: ClassifierBundle) -> Callable[[Sequence[str]], Callable]:
    """``guide(prompts) -> log_prob_fn``: log p(colour | x_t) + log p(shape | x_t) for each prompt."""
    model = bundle.model.eval().requires_grad_(False)

    def guide(prompts: Sequence[str]) -> Callable:
        labels = prompt_labels(prompts)

        def log_prob(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(len(x_t))
            return model.log_prob(x_t, t, {k: v.to(x_t.device) for k, v in labels.items()})

        return log_prob

    return guide
