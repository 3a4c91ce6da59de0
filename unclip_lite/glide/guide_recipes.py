"""How the two gradient guides of chapter 06 are trained and judged:
``clip-noised-shapes-tiny`` (CLIP guidance) and ``classifier-noised-shapes-tiny``
(classifier guidance).

Both read noisy images x_t from the very diffusion ``glide-shapes-tiny`` was trained on
(cosine, 1000 steps), at timesteps drawn uniformly, so their gradients mean something at
every step of sampling. ``unclip-lite train clip --config shapes-tiny-noised`` and
``unclip-lite train classifier --config shapes-tiny`` call :func:`train_noised_clip` and
:func:`train_noised_classifier`; ``unclip-lite eval`` calls the ``evaluate_*`` functions.

A guide is handed to :meth:`GlideBundle.sample` as ``guide(prompts) -> log_prob_fn(x_t, t)``
(:func:`clip_guide`, :func:`classifier_guide`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.recipes import ShapesData, new_clip, shapes_batches, shapes_vocab
from unclip_lite.data import shapes
from unclip_lite.glide.bundle import DiffusionConfig
from unclip_lite.glide.classifier import ClassifierBundle, NoisedClassifier, get_classifier_config
from unclip_lite.glide.clip_guidance import clip_log_prob, noised_clip_batches, noised_contrastive_step
from unclip_lite.train import TrainConfig, Trainer

EVAL_TIMESTEPS = (0, 250, 500, 750, 900)  # noise levels the guides are scored at (of 1000, cosine)


# ----------------------------------------------------------------------------- noised CLIP


@dataclass
class NoisedClipRecipe:
    model: str = "shapes-tiny-noised"
    init_from: str | None = "clip-shapes-tiny"  # fine-tune the clean CLIP (see warm_start_noised_clip)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    data: ShapesData = field(default_factory=ShapesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=500, lr=1e-3, warmup=50, weight_decay=0.1, log_every=10, checkpoint_every=100))


@torch.no_grad()
def warm_start_noised_clip(model: CLIP, clean_state: dict[str, torch.Tensor]) -> None:
    """Start a noise-aware CLIP from a clean one: every weight is copied except the new
    timestep MLP (kept at its init), and the positional table gets a zero row for the new
    timestep token, which sits between the class token and the patches.

    GLIDE trains its noised CLIP from scratch; on our CPU budget fine-tuning gets there in a
    few hundred steps, because at small t the task is the clean task.
    """
    own = model.state_dict()
    key = "visual.positional_embedding"
    for name, value in clean_state.items():
        if name not in own:
            raise ValueError(f"clean CLIP weight {name!r} has no place in the noise-aware model")
        if name == key:
            own[name].zero_()
            own[name][:1] = value[:1]   # class token
            own[name][2:] = value[1:]   # patches; row 1 (the timestep token) stays zero
        elif own[name].shape != value.shape:
            raise ValueError(f"{name}: clean {tuple(value.shape)} vs noise-aware {tuple(own[name].shape)}")
        else:
            own[name].copy_(value)


def train_noised_clip(recipe: NoisedClipRecipe | None = None, out_dir: str | Path | None = None,
                      resume: bool = True, max_minutes: float | None = None, live_plot: bool = False
                      ) -> tuple[CLIPBundle, Trainer]:
    """The CLIP trainer on noised Shapes images x_t (t uniform), as GLIDE trains its guide."""
    from unclip_lite.checkpoints import load_checkpoint

    recipe = recipe or NoisedClipRecipe()
    bundle = new_clip(recipe.model, shapes_vocab(), recipe.train.seed)
    if recipe.init_from:
        warm_start_noised_clip(bundle.model, {k: v.float() for k, v in
                                              load_checkpoint(recipe.init_from, kind="clip").state_dict.items()})
    diffusion = recipe.diffusion.build()
    batches = noised_clip_batches(bundle, shapes_batches(bundle, recipe.data), diffusion, recipe.data.seed)
    trainer = Trainer(bundle.model, noised_contrastive_step, batches, recipe.train, out_dir=out_dir,
                      after_step=CLIP.clamp_logit_scale_, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle.model.eval()
    bundle.extra = {"recipe": {"model": recipe.model, "init_from": recipe.init_from,
                               "diffusion": asdict(recipe.diffusion), "data": asdict(recipe.data),
                               "train": asdict(recipe.train)}}
    return bundle, trainer


def noised(images01: torch.Tensor, diffusion, t: int, seed: int = 0) -> torch.Tensor:
    """x_t in [-1, 1] for images in [0, 1], all at timestep ``t``, from a fixed seed."""
    x0 = images01 * 2 - 1
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(seed))
    return diffusion.q_sample(x0, torch.full((len(x0),), t, dtype=torch.long), noise)


@torch.no_grad()
def evaluate_noised_clip(bundle: CLIPBundle, n: int = 500, timesteps: Sequence[int] = EVAL_TIMESTEPS,
                         diffusion_config: DiffusionConfig | None = None) -> dict:
    """Zero-shot accuracy among the 40 "a {colour} {shape}" prompts on x_t at each timestep:
    ``t{t}_{joint,colour,shape}`` over ``n`` images of all pairs (held-out ones included)."""
    from unclip_lite.clip.recipes import zero_shot_prompts

    diffusion = (diffusion_config or DiffusionConfig()).build()
    prompts, pairs = zero_shot_prompts()
    classifier = bundle.encode_texts(prompts)  # [40, E]
    pair_colour = torch.tensor([c for c, _ in pairs])
    pair_shape = torch.tensor([s for _, s in pairs])
    images, scenes = shapes.eval_set("all", n, resolution=bundle.image_size)
    metrics = {}
    for t in timesteps:
        x_t = noised(images, diffusion, t)
        features = bundle.model.encode_image(bundle.normalize_pixels((x_t + 1) / 2), normalize=True,
                                             t=torch.full((n,), t))  # [n, E]
        predicted = (features @ classifier.T).argmax(1)
        colour_ok = pair_colour[predicted] == scenes.colour[:, 0]
        shape_ok = pair_shape[predicted] == scenes.shape[:, 0]
        metrics[f"t{t}_joint"] = round((colour_ok & shape_ok).float().mean().item(), 4)
        metrics[f"t{t}_colour"] = round(colour_ok.float().mean().item(), 4)
        metrics[f"t{t}_shape"] = round(shape_ok.float().mean().item(), 4)
    metrics["chance_joint"] = 1 / len(prompts)
    return metrics


def clip_guide(bundle: CLIPBundle) -> Callable[[Sequence[str]], Callable]:
    """``guide(prompts) -> log_prob_fn``: CLIP guidance toward each prompt."""
    bundle.model.eval().requires_grad_(False)
    return lambda prompts: clip_log_prob(bundle, prompts)


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
