"""The noise-aware CLIP of GLIDE §2.4: trained on noised images x_t, it scores how well a
noisy image matches a caption, and CLIP guidance climbs that score.

A noise-aware CLIP (``VisionConfig(timestep_conditioned=True)``: its image tower also reads
t) gives the "log-probability" handed to :func:`~unclip_lite.diffusion.guidance.gradient_guidance`:

    log p(c | x_t) ≈ exp(τ) · f(x_t, t) · g(c)        (unit vectors f, g; τ the CLIP temperature)

A CLIP trained on clean images only would see noise at large t and give useless gradients;
that is why GLIDE trains its CLIP on noised images (:func:`noised_clip_batches`), at timesteps
drawn uniformly from the very diffusion the guided model was trained on (cosine, 1000 steps).
``unclip-lite train clip --config shapes-tiny-noised`` runs :func:`train_noised_clip`;
``unclip-lite eval clip-noised-shapes-tiny`` runs :func:`evaluate_noised_clip`. A guide is
handed to a sampler as ``guide(prompts) -> log_prob_fn(x_t, t)`` (:func:`clip_guide`).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from unclip_lite.checkpoints import load_checkpoint
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.loss import distributed_clip_loss
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.recipes import ShapesData, new_clip, shapes_batches, shapes_vocab, zero_shot_prompts
from unclip_lite.data import shapes
from unclip_lite.diffusion import GaussianDiffusion
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.train import TrainConfig, Trainer

EVAL_TIMESTEPS = (0, 250, 500, 750, 900)  # noise levels the guides are scored at (of 1000, cosine)


def check_noise_aware(bundle: CLIPBundle) -> None:
    if not bundle.model.config.vision.timestep_conditioned:
        raise ValueError("CLIP guidance needs a noise-aware CLIP (vision.timestep_conditioned=True); "
                         "a CLIP trained on clean images cannot read x_t")


def clip_log_prob(bundle: CLIPBundle, texts: Sequence[str] | torch.Tensor) -> Callable:
    """``log_prob_fn(x_t, t) -> [B]``: exp(τ) · cos(f(x_t, t), g(text)) for x_t in [-1, 1].

    ``texts`` are strings (encoded once here) or precomputed unit text embeddings [B, E].
    """
    check_noise_aware(bundle)
    model = bundle.model
    text_features = texts if isinstance(texts, torch.Tensor) else bundle.encode_texts(list(texts))  # [B, E]

    def log_prob(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        if len(x_t) != len(text_features):
            raise ValueError(f"x_t has batch {len(x_t)} but there are {len(text_features)} texts")
        images = bundle.normalize_pixels((x_t + 1) / 2)  # the CLIP's own pixel scale
        t = torch.as_tensor(t, device=x_t.device).reshape(-1).expand(len(x_t))
        image_features = model.encode_image(images, normalize=True, t=t)  # [B, E]
        return model.scale() * (image_features * text_features.to(image_features)).sum(-1)  # [B]

    return log_prob


def noised_clip_batches(bundle: CLIPBundle, clean_batches: Callable, diffusion: GaussianDiffusion,
                        seed: int = 0) -> Callable:
    """Wrap a CLIP training stream ``batches(index, rank, world) -> (pixels, tokens)`` of clean,
    normalised images into one of ``(x_t pixels, tokens, t)``: each image noised by q(x_t | x_0)
    at a uniform timestep, drawn from a generator seeded by the batch index (resumable)."""
    mean = torch.tensor(bundle.mean).view(1, 3, 1, 1)
    std = torch.tensor(bundle.std).view(1, 3, 1, 1)

    def batches(index: int, rank: int = 0, world: int = 1):
        pixels, tokens = clean_batches(index, rank, world)
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index * world + rank)
        x0 = (pixels * std + mean) * 2 - 1  # back to [-1, 1]
        t = torch.randint(0, diffusion.num_timesteps, (len(x0),), generator=gen)  # [B]
        x_t = diffusion.q_sample(x0, t, torch.randn(x0.shape, generator=gen))
        return bundle.normalize_pixels((x_t + 1) / 2), tokens, t

    return batches


def noised_contrastive_step(model, batch):
    """The CLIP loss on noisy images: the trainer's ``loss_fn`` for a noise-aware CLIP."""
    images, tokens, t = batch
    image_features, text_features, scale = model(images, tokens, t)
    return distributed_clip_loss(image_features, text_features, scale), {"scale": scale.item()}


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
