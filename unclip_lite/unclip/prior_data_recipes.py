"""unCLIP's priors on real (image, caption) data, at the paper's configurations (Ramesh et al.
2022, §2.2, Appendix C, Table 3).

    unclip-lite train prior --config paper --data 'shards/{00000..00999}.tar' --clip runs/clip.safetensors
    unclip-lite train ar-prior --config paper --data 'shards/{00000..00999}.tar' --clip runs/clip.safetensors

The frozen CLIP (``--clip``) gives, on the fly, everything the prior reads and predicts: z_i,
the embedding of the image (the target), and of the caption z_t with the text tower's
per-token outputs (:func:`~unclip_lite.unclip.bundle.caption_conditioning`, truncated at the
CLIP's context). The image is resized and center-cropped to the CLIP's size, as the CLIP's own
evaluation transform does. The caption is dropped 10% of the time (§2.2, for guidance).

* Diffusion prior (``paper``, Table 3): the 1B decoder-only transformer (``paper-1b``),
  predicting z_i itself (x₀, MSE) over 1,000 cosine steps, embeddings ×17.2 into the
  diffusion space (Appendix C); batch 4096 (512 per GPU × 8 GPUs), 600K iterations, AdamW lr
  1.1e-4, β₂ 0.96, ε 1e-6, weight decay 6.0e-2, EMA 0.9999.
* AR prior (``paper``, Table 3, Appendix C): z_i reduced by PCA to the fewest components
  that keep its reconstruction error under 1% (the paper: 319 of 1,024), each quantised into
  1,024 buckets, predicted one by one by a transformer of width 1,664, 24 blocks, 26 heads;
  batch 4096, 1M iterations, lr 1.6e-4, β₂ 0.91, ε 1e-10, weight decay 4.0e-2, EMA 0.999.
  The PCA and bucket ranges are fitted on ``statistics_n`` training pairs before step 0.

The paper's CLIP is a ViT-H/16 of 1,024 dimensions, so a CLIP of another width is refused
unless ``--set clip_dim=none``. The checkpoint records the CLIP (path and sha256), and loading
the prior beside another CLIP is refused (:meth:`~unclip_lite.unclip.bundle.CaptionPrior.attach_clip`).
``paper-tiny-data`` is the same path at CPU size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.data_recipes import PairData
from unclip_lite.glide.data_recipes import (batch_generator, check_crop, fit, paper_train_config, require_data,
                                            square_images)
from unclip_lite.hardware import autocast
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.train.trainer import distributed_setup
from unclip_lite.unclip.ar_prior import (ARPrior, ARPriorConfig, choose_components, fit_pca, get_ar_prior_config,
                                         pca_error_curve)
from unclip_lite.unclip.bundle import ARPriorBundle, CaptionPrior, PriorBundle, caption_conditioning
from unclip_lite.unclip.data_recipes import clip_reference, frozen_clip, image_embeddings
from unclip_lite.unclip.prior import DiffusionPrior, PriorConfig, get_prior_config
from unclip_lite.unclip.recipes import ar_prior_loss, prior_loss
from unclip_lite.utils import pick_device

# CPU-size stand-ins of the paper's networks (their widths set from the CLIP at build time)
TINY_PRIORS = {"tiny-data": lambda: PriorConfig(width=64, layers=1, heads=2)}
TINY_AR_PRIORS = {"tiny-data": lambda: ARPriorConfig(components=4, buckets=16, dot_buckets=8, width=64, layers=1,
                                                     heads=2)}


@dataclass
class PriorDataRecipe:
    model: str = "paper-1b"  # a PriorConfig preset, or "tiny-data"
    clip: str = ""  # --clip: the frozen CLIP whose embeddings it learns
    clip_dim: int | None = 1024  # Table 3: ViT-H/16's width; None: the CLIP's
    scaling: str = "scale"  # Appendix C: z x 17.2 ("standardise": Karlo's per-dimension mean and std)
    text_drop: float = 0.1  # §2.2: captions dropped 10% of the time
    crop: str = "center"
    statistics_n: int = 4096  # training pairs the standardisation is fitted on (scaling="standardise")
    data: PairData = field(default_factory=lambda: PairData(batch_size=512, workers=8))
    train: TrainConfig = field(default_factory=lambda: paper_train_config(
        600_000, 1.1e-4, betas=(0.9, 0.96), eps=1e-6, weight_decay=6.0e-2))

    def __post_init__(self):
        check_crop(self.crop)
        if not 0.0 <= self.text_drop <= 1.0 or self.statistics_n < 2:
            raise ValueError(f"need text_drop in [0, 1] and statistics_n >= 2, got {self.text_drop}, "
                             f"{self.statistics_n}")


@dataclass
class ARPriorDataRecipe:
    model: str = "paper-1b"  # an ARPriorConfig preset, or "tiny-data"
    clip: str = ""
    clip_dim: int | None = 1024
    max_pca_error: float = 0.01  # Appendix C: the fewest components below 1% reconstruction error
    text_drop: float = 0.1
    crop: str = "center"
    statistics_n: int = 16_384  # training pairs the PCA and the bucket ranges are fitted on (ours)
    data: PairData = field(default_factory=lambda: PairData(batch_size=512, workers=8))
    train: TrainConfig = field(default_factory=lambda: paper_train_config(
        1_000_000, 1.6e-4, betas=(0.9, 0.91), eps=1e-10, weight_decay=4.0e-2, ema_decay=0.999))

    def __post_init__(self):
        check_crop(self.crop)
        if not 0.0 <= self.text_drop <= 1.0 or self.statistics_n < 2 or not 0 < self.max_pca_error < 1:
            raise ValueError(f"need text_drop in [0, 1], statistics_n >= 2 and max_pca_error in (0, 1), got "
                             f"{self.text_drop}, {self.statistics_n}, {self.max_pca_error}")


def _tiny(recipe):
    return replace(recipe, model="tiny-data", clip_dim=None, statistics_n=16,
                   data=PairData(batch_size=8, workers=0, shuffle_buffer=64),
                   train=replace(recipe.train, steps=200, lr=5e-4, ema_decay=0.99, log_every=10, checkpoint_every=100))


PRIOR_DATA_RECIPES: dict[str, Callable[[], PriorDataRecipe]] = {
    "paper": PriorDataRecipe, "paper-tiny-data": lambda: _tiny(PriorDataRecipe())}
AR_PRIOR_DATA_RECIPES: dict[str, Callable[[], ARPriorDataRecipe]] = {
    "paper": ARPriorDataRecipe, "paper-tiny-data": lambda: _tiny(ARPriorDataRecipe())}


def prior_data_batches(clip: CLIPBundle, recipe: PriorDataRecipe | ARPriorDataRecipe,
                       device: torch.device | str = "cpu"):
    """``batches(index, rank, world)`` -> ``(z_i [B, E], conditioning, dropped [B])``, all from the
    frozen CLIP (:func:`~unclip_lite.unclip.recipes.prior_batches`' layout): this rank's micro-batch,
    the dropped captions' conditioning replaced by ∅. A pure function of the index."""
    require_data(recipe.data, "an unCLIP prior")
    pairs = square_images(recipe.data, clip.image_size, recipe.crop)
    precision = recipe.train.precision

    def batches(index: int, rank: int = 0, world: int = 1):
        images, captions = pairs(index, rank, world)  # [B, 3, S, S] in [0, 1], B strings
        z_i = image_embeddings(clip, images, precision)  # [B, E]
        with torch.no_grad(), autocast(precision, clip.device):
            cond = caption_conditioning(clip, captions, truncate=True)  # z_t [B, E], tokens [B, L, W], mask [B, L]
        cond = {k: v.float() if v.is_floating_point() else v for k, v in cond.items()}
        drop = torch.rand(len(captions), generator=batch_generator(recipe.data.seed, index, rank)) < recipe.text_drop
        cond = DiffusionPrior.drop_text(cond, drop.to(z_i.device))
        return z_i.to(device), {k: v.to(device) for k, v in cond.items()}, drop.to(device)

    batches.pairs = pairs
    return batches


@torch.no_grad()
def training_embeddings(clip: CLIPBundle, recipe: PriorDataRecipe | ARPriorDataRecipe
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(z_i, z_t)`` [n, E] of ``statistics_n`` training pairs (another shuffle than the batches', the
    same on every rank): what the standardisation, the PCA and the bucket ranges are fitted on."""
    data = replace(recipe.data, seed=recipe.data.seed + 10_007, workers=0)
    pairs = square_images(data, clip.image_size, recipe.crop)
    z_i, z_t, count, index = [], [], 0, 0
    while count < recipe.statistics_n:
        images, captions = pairs(index)
        z_i.append(image_embeddings(clip, images, recipe.train.precision))
        with autocast(recipe.train.precision, clip.device):
            z_t.append(clip.encode_texts(captions).float())
        count, index = count + len(captions), index + 1
    return torch.cat(z_i)[:recipe.statistics_n].cpu(), torch.cat(z_t)[:recipe.statistics_n].cpu()


def _widths(config, clip_dim: int, text_width: int, context_length: int):
    """The prior reads the CLIP's embeddings and its text tower's per-token outputs."""
    config.embed_dim, config.text_width, config.context_length = clip_dim, text_width, context_length
    return config


def data_prior_config(recipe: PriorDataRecipe, clip_dim: int, text_width: int, context_length: int) -> PriorConfig:
    config = TINY_PRIORS[recipe.model]() if recipe.model in TINY_PRIORS else get_prior_config(recipe.model)
    config.scaling = recipe.scaling
    return PriorConfig.from_dict(_widths(config, clip_dim, text_width, context_length).to_dict())


def data_ar_prior_config(recipe: ARPriorDataRecipe, clip_dim: int, text_width: int, context_length: int,
                         components: int | None = None) -> ARPriorConfig:
    """``components=None`` keeps the preset's (the paper's 319, for counting it)."""
    config = TINY_AR_PRIORS[recipe.model]() if recipe.model in TINY_AR_PRIORS else get_ar_prior_config(recipe.model)
    config.components = components or config.components
    return ARPriorConfig.from_dict(_widths(config, clip_dim, text_width, context_length).to_dict())


def new_data_prior(recipe: PriorDataRecipe | ARPriorDataRecipe, clip: CLIPBundle,
                   device: torch.device | str = "cpu") -> CaptionPrior:
    """A fresh prior on ``clip``'s embeddings, its statistics (standardisation; AR: PCA and buckets)
    fitted on ``statistics_n`` training pairs where it needs them."""
    widths = (clip.dim, clip.model.config.text.width, clip.context_length)
    ar = isinstance(recipe, ARPriorDataRecipe)
    statistics = training_embeddings(clip, recipe) if ar or recipe.scaling == "standardise" else None
    torch.manual_seed(recipe.train.seed)
    if ar:
        z_i, z_t = statistics
        _, _, eigenvalues = fit_pca(z_i)
        k = choose_components(pca_error_curve(eigenvalues, (z_i ** 2).sum(1).mean().item()), recipe.max_pca_error)
        model = ARPrior(data_ar_prior_config(recipe, *widths, components=k))
        model.set_codec(z_i, z_t)
        bundle = ARPriorBundle(model.to(device), clip_reference(recipe.clip), clip.manifest["sha256"])
    else:
        with torch.device(device):
            model = DiffusionPrior(data_prior_config(recipe, *widths))
        if statistics is not None:
            model.set_statistics(statistics[0].to(device))
        bundle = PriorBundle(model, clip_reference(recipe.clip), clip.manifest["sha256"])
    return bundle.attach_clip(clip)  # the CLIP it reads captions with: sha256 and width checked


def train_data_prior(recipe: PriorDataRecipe | ARPriorDataRecipe | None = None, out_dir: str | Path | None = None,
                     resume: bool = True, max_minutes: float | None = None, live_plot: bool = False
                     ) -> tuple[CaptionPrior, Trainer]:
    """Train a diffusion prior (or, given an :class:`ARPriorDataRecipe`, an AR prior) on
    ``recipe.data`` with the frozen ``recipe.clip``. The data and the CLIP are checked before
    anything is built: bad input fails at once and writes nothing."""
    recipe = recipe or PriorDataRecipe()
    require_data(recipe.data, "an unCLIP prior")
    distributed_setup()
    device = pick_device()
    clip = frozen_clip(recipe.clip, recipe.clip_dim, f"prior recipe {recipe.model!r}", device)
    batches = prior_data_batches(clip, recipe, device)
    bundle = new_data_prior(recipe, clip, device)
    bundle.model.train()
    ar = isinstance(recipe, ARPriorDataRecipe)
    loss = ar_prior_loss if ar else prior_loss(bundle.diffusion)
    record = {**asdict(recipe), "samples": int(batches.pairs.catalog.sizes.sum())}
    return fit(bundle, loss, batches, recipe.train, record, out_dir, resume, max_minutes, live_plot)
