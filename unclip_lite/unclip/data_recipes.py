"""unCLIP's decoder and upsamplers on real (image, caption) data, at the paper's configurations
(Ramesh et al. 2022, §2.1 and Table 3). The priors: :mod:`.prior_data_recipes`.

    unclip-lite train decoder --config paper --data 'shards/{00000..00999}.tar' --clip runs/clip.safetensors
    unclip-lite train upsampler --config paper-256 --data 'shards/{00000..00999}.tar'
    unclip-lite train upsampler --config paper-1024 --data 'shards/{00000..00999}.tar'

**Decoder** (``paper``): the 3.5B GLIDE (:func:`~unclip_lite.unclip.decoder.paper_decoder_config`,
Table 3's text encoder context of 256) reading z_i, the frozen CLIP's embedding of the very
image it learns to draw, computed on the fly (``--clip``: a CLIP checkpoint; the paper's is a
ViT-H/16 of 1,024 dimensions, so a CLIP of another width is refused unless ``--set
clip_dim=none`` lets the decoder take the CLIP's). The CLIP sees the image at its own size,
the decoder the same crop at 64 px. §2.1's dropout: z_i zeroed 10% of the time, the caption
emptied 50%, independently. Table 3: 1,000 cosine steps with learned variance (L_hybrid),
dropout 0.1, batch 2048 (16 per GPU × 16 accumulated × 8 GPUs), 800K iterations, Adam lr
1.2e-4, β₂ 0.999, ε 1e-8, no weight decay, EMA 0.9999. The paper does not say it starts from
a trained GLIDE; ``--set init_from=CHECKPOINT`` does (the Shapes decoder's way, :mod:`.decoder`).

**Upsamplers** (``paper-256``: 64 → 256, Gaussian blur; ``paper-1024``: 256 → 1024, BSR): no
text, no attention, trained on random crops a quarter of the target side, aligned with the
corrupted low-res image (§2.1, Table 3: crop fraction 0.25). Table 3: 64 → 256: cosine, 700M,
dropout 0.1, batch 1024 (16 per GPU × 8 accumulated × 8 GPUs), 1M iterations, lr 1.2e-4;
256 → 1024: *linear* schedule, 300M, batch 512 (8 × 8 × 8), 1M iterations, lr 1.0e-4; both β₂
0.999, ε 1e-8, EMA 0.9999, no weight decay; ε-prediction of the image itself (the Shapes
stages' v-prediction and residual are ours, not the paper's). The whole image is resized and
center-cropped to the target size, corrupted, then cropped. Every learning rate here is
constant, without warmup (:func:`~unclip_lite.glide.data_recipes.paper_train_config`).

Every recipe has a ``-tiny-data`` twin: the same path at CPU size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import torch

from unclip_lite.checkpoints import REGISTRY_DIR, resolve, sha256
from unclip_lite.clip.bundle import CLIPBundle, load_clip
from unclip_lite.clip.data_recipes import PairData
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.bundle import load_glide
from unclip_lite.glide.data_recipes import (batch_generator, check_crop, fit, full_vocab, on_device, paper_train_config,
                                            require_data, resized, square_images, text2im_config)
from unclip_lite.glide.recipes import diffusion_loss, warm_start
from unclip_lite.glide.text2im import empty_tokens
from unclip_lite.hardware import autocast
from unclip_lite.tokenizer import CompactVocab
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.train.trainer import distributed_setup
from unclip_lite.unclip.decoder import Decoder, DecoderBundle, DecoderConfig, dual_dropout
from unclip_lite.unclip.upsampler import (Upsampler, UpsamplerBundle, UpsamplerConfig, diffusion_target,
                                          paper_upsampler_configs)
from unclip_lite.unclip.upsampler_recipes import corrupted_crops
from unclip_lite.utils import pick_device

# ----------------------------------------------------------------------------- the frozen CLIP


def clip_reference(name_or_path: str) -> str:
    """How a checkpoint records the CLIP it reads: a shipped name as it is, a file by its absolute path."""
    path = resolve(name_or_path)
    return name_or_path if path.parent.resolve() == REGISTRY_DIR.resolve() and path.stem == name_or_path \
        else str(path.resolve())


def frozen_clip(name_or_path: str, expected_dim: int | None, what: str, device: torch.device | str = "cpu"
                ) -> CLIPBundle:
    """The CLIP ``--clip`` names, frozen, on ``device``; a clear error if it is not given, is not a
    CLIP checkpoint, or embeds in another width than ``expected_dim`` (None: any)."""
    if not name_or_path:
        raise ValueError(f"{what} reads a frozen CLIP's embeddings: give --clip CHECKPOINT (a CLIP checkpoint file "
                         f"or shipped name, e.g. what `unclip-lite train clip --config ViT-B-32 --data ...` "
                         f"wrote)")
    clip = load_clip(name_or_path)  # CheckpointError: missing, corrupt, or not a CLIP
    if expected_dim is not None and clip.dim != expected_dim:
        raise ValueError(f"{what} reads {expected_dim}-d CLIP embeddings (the paper's ViT-H/16: 1024), but the CLIP "
                         f"{name_or_path!r} embeds in {clip.dim} dimensions: give a {expected_dim}-d CLIP, or "
                         f"--set clip_dim={clip.dim} (clip_dim=none: whatever the CLIP's width is)")
    if not clip.manifest.get("sha256"):  # a checkpoint without its manifest: pin the weights by their hash
        clip.manifest["sha256"] = sha256(resolve(name_or_path))
    clip.model.requires_grad_(False).to(device).eval()
    return clip


@torch.no_grad()
def image_embeddings(clip: CLIPBundle, images: torch.Tensor, precision: str) -> torch.Tensor:
    """z_i [B, E] (unit, fp32) of ``images`` [B, 3, S, S] in [0, 1], resized to the CLIP's size,
    its forward in ``precision`` (bf16 where the hardware has it under "auto")."""
    with autocast(precision, clip.device):
        return clip.encode_images(resized(images, clip.image_size)).float()


# ----------------------------------------------------------------------------- the decoder


@dataclass
class DecoderDataRecipe:
    model: str = "glide-base-paper"  # the GLIDE it extends: a Text2Im preset or a tiny one
    context_length: int = 256  # Table 3: the decoder's text encoder context
    clip: str = ""  # --clip: the frozen CLIP whose z_i it reads
    clip_dim: int | None = 1024  # Table 3: ViT-H/16's width; None: the CLIP's
    clip_tokens: int = 4  # §2.1: "four extra tokens of context"
    p_drop_image: float = 0.1  # §2.1
    p_drop_text: float = 0.5  # §2.1
    # a GLIDE checkpoint of the same model, vocabulary and context to start as (a base-64 GLIDE: 128 tokens,
    # so --set context_length=128 with it)
    init_from: str = ""
    crop: str = "center"
    data: PairData = field(default_factory=lambda: PairData(batch_size=16, workers=8))
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=lambda: paper_train_config(800_000, 1.2e-4, accumulate=16))

    def __post_init__(self):
        check_crop(self.crop)


DECODER_DATA_RECIPES: dict[str, Callable[[], DecoderDataRecipe]] = {
    "paper": DecoderDataRecipe,
    "paper-tiny-data": lambda: DecoderDataRecipe(
        model="tiny-data", context_length=32, clip_dim=None, data=PairData(batch_size=8, workers=0, shuffle_buffer=64),
        train=replace(paper_train_config(200, 5e-4), ema_decay=0.99, log_every=10, checkpoint_every=100)),
}


def data_decoder_config(recipe: DecoderDataRecipe, vocab: CompactVocab, clip_dim: int) -> DecoderConfig:
    glide = text2im_config(recipe.model, vocab.size)
    glide.context_length = recipe.context_length
    return DecoderConfig(glide, clip_dim, recipe.clip_tokens, recipe.p_drop_image, recipe.p_drop_text)


def new_data_decoder(recipe: DecoderDataRecipe, clip_dim: int, device: torch.device | str = "cpu") -> Decoder:
    """A fresh decoder (``device="meta"``: to count it), or ``recipe.init_from``'s GLIDE grown into one."""
    torch.manual_seed(recipe.train.seed)
    with torch.device(device):
        model = Decoder(data_decoder_config(recipe, full_vocab(), clip_dim))
    if recipe.init_from:
        warm_start(model, load_glide(recipe.init_from).model.state_dict(), gated=("image_to_tokens.",))
    else:  # from scratch nothing is to be kept: the new projections learn at the common rate
        model.lr_multipliers = {}
    return model


def decoder_data_batches(config: DecoderConfig, vocab: CompactVocab, clip: CLIPBundle, recipe: DecoderDataRecipe,
                         device: torch.device | str = "cpu"):
    """``batches(index, rank, world)`` -> ``(x0 [B, 3, R, R] in [-1, 1], tokens [B, L], z_i [B, E])``:
    this rank's micro-batch, z_i the frozen CLIP's embedding of the same crop, captions and
    embeddings dropped independently (§2.1). A pure function of the index."""
    require_data(recipe.data, "the unCLIP decoder")
    size = config.glide.unet.image_size
    tokenize = partial(vocab, context_length=config.glide.context_length, truncate=True)  # in the workers
    pairs = square_images(recipe.data, max(size, clip.image_size), recipe.crop, text_transform=tokenize)
    empty = empty_tokens(1, config.glide.context_length)[0]  # [L]

    def batches(index: int, rank: int = 0, world: int = 1):
        images, tokens = pairs(index, rank, world)  # [B, 3, V, V] in [0, 1], [B, L]
        gen = batch_generator(recipe.data.seed, index, rank)
        z_i = image_embeddings(clip, images, recipe.train.precision).to(device)  # [B, E]
        u = torch.stack([torch.rand(len(tokens), generator=gen) for _ in range(2)], dim=1)  # [B, 2]: text, z_i
        x0, tokens, u = on_device((resized(images, size) * 2 - 1, tokens, u), device)
        tokens, z_i = dual_dropout(tokens, z_i, empty.to(device), u, config.p_drop_text, config.p_drop_image)
        return x0, tokens, z_i

    batches.pairs = pairs
    return batches


def train_data_decoder(recipe: DecoderDataRecipe | None = None, out_dir: str | Path | None = None,
                       resume: bool = True, max_minutes: float | None = None, live_plot: bool = False
                       ) -> tuple[DecoderBundle, Trainer]:
    """Train unCLIP's decoder on ``recipe.data`` with z_i from the frozen ``recipe.clip``. The data
    and the CLIP are checked before the model is built: bad input fails at once, writes nothing."""
    recipe = recipe or DecoderDataRecipe()
    require_data(recipe.data, "the unCLIP decoder")
    distributed_setup()
    device = pick_device()
    clip = frozen_clip(recipe.clip, recipe.clip_dim, f"decoder recipe {recipe.model!r}", device)
    vocab = full_vocab()
    batches = decoder_data_batches(data_decoder_config(recipe, vocab, clip.dim), vocab, clip, recipe, device)
    model = new_data_decoder(recipe, clip.dim, device).train()
    bundle = DecoderBundle(model, vocab, recipe.diffusion, clip_name=clip_reference(recipe.clip),
                           clip_sha256=clip.manifest["sha256"])
    loss = diffusion_loss(bundle.diffusion, None, third="image_embed")  # L_hybrid
    record = {**asdict(recipe), "samples": int(batches.pairs.catalog.sizes.sum())}
    return fit(bundle, loss, batches, recipe.train, record, out_dir, resume, max_minutes, live_plot)


# ----------------------------------------------------------------------------- the upsamplers


@dataclass
class UpsamplerDataRecipe:
    model: UpsamplerConfig = field(default_factory=lambda: paper_upsampler_configs()["64->256"])
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # Table 3: 1,000 cosine steps
    crop: str = "center"  # how the whole image is cut square, before the random aligned crop
    data: PairData = field(default_factory=lambda: PairData(batch_size=16, workers=8))
    train: TrainConfig = field(default_factory=lambda: paper_train_config(1_000_000, 1.2e-4, accumulate=8))

    def __post_init__(self):
        check_crop(self.crop)


def _paper_1024() -> UpsamplerDataRecipe:
    # Table 3: a linear schedule, batch 512 (8 per GPU x 8 accumulated x 8 GPUs), lr 1.0e-4
    return UpsamplerDataRecipe(model=paper_upsampler_configs()["256->1024"], diffusion=DiffusionConfig("linear"),
                               data=PairData(batch_size=8, workers=8),
                               train=paper_train_config(1_000_000, 1.0e-4, accumulate=8))


def _tiny_upsampler(recipe: UpsamplerDataRecipe) -> UpsamplerDataRecipe:
    m = recipe.model  # x4 as the paper's stages, 8 -> 32 px, half-side crops (a quarter would be 8 px)
    model = UpsamplerConfig(8, 32, 16, (1, 2), 1, True, m.degradation, m.bsr_p, 0.5, dropout=m.dropout)
    return replace(recipe, model=model, data=PairData(batch_size=8, workers=0, shuffle_buffer=64),
                   train=replace(recipe.train, steps=200, lr=5e-4, accumulate=1, ema_decay=0.99, log_every=10,
                                 checkpoint_every=100))


UPSAMPLER_DATA_RECIPES: dict[str, Callable[[], UpsamplerDataRecipe]] = {
    "paper-256": UpsamplerDataRecipe,
    "paper-1024": _paper_1024,
    "paper-256-tiny-data": lambda: _tiny_upsampler(UpsamplerDataRecipe()),
    "paper-1024-tiny-data": lambda: _tiny_upsampler(_paper_1024()),
}


def upsampler_data_batches(recipe: UpsamplerDataRecipe, device: torch.device | str = "cpu"):
    """``batches(index, rank, world)`` -> ``(x0 [B, 3, c, c], None, low-res crop [B, 3, c/f, c/f])`` in
    [-1, 1] (``None``: no caption), this rank's micro-batch of ``recipe.data``."""
    require_data(recipe.data, "an unCLIP upsampler")
    config = recipe.model
    pairs = square_images(recipe.data, config.image_size, recipe.crop)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, _ = pairs(index, rank, world)  # [B, 3, S, S] in [0, 1]
        highs, lows = corrupted_crops(config, images, batch_generator(recipe.data.seed, index, rank))
        return on_device((diffusion_target(config, highs, lows), None, lows), device)

    batches.pairs = pairs
    return batches


def train_data_upsampler(recipe: UpsamplerDataRecipe | None = None, out_dir: str | Path | None = None,
                         resume: bool = True, max_minutes: float | None = None, live_plot: bool = False
                         ) -> tuple[UpsamplerBundle, Trainer]:
    """Train one unCLIP upsampler on ``recipe.data`` (its data checked before the model is built)."""
    recipe = recipe or UpsamplerDataRecipe()
    distributed_setup()
    device = pick_device()
    batches = upsampler_data_batches(recipe, device)
    torch.manual_seed(recipe.train.seed)
    with torch.device(device):
        model = Upsampler(recipe.model).train()
    bundle = UpsamplerBundle(model, recipe.diffusion)
    loss = diffusion_loss(bundle.diffusion, None, third="low_res")
    record = {**asdict(recipe), "samples": int(batches.pairs.catalog.sizes.sum())}
    return fit(bundle, loss, batches, recipe.train, record, out_dir, resume, max_minutes, live_plot)
