"""GLIDE on real (image, caption) data, at the paper's configurations (Nichol et al. 2021, §4).

    unclip-lite train glide --config base-64 --data 'shards/{00000..00999}.tar'
    torchrun --nproc_per_node 8 -m unclip_lite train glide --config base-64 \\
        --data 'shards/{00000..00999}.tar' --strategy fsdp --workers 8
    unclip-lite train glide --config upsample-256 --data 'shards/{00000..00999}.tar'

``base-64`` is the paper's 3.5B text-to-image model (``glide-base-paper``: ADM's ImageNet-64
U-Net at 512 channels, 2.3B, and a text transformer of 24 blocks of width 2048, 1.2B);
``upsample-256`` its text-conditional 64 → 256 upsampler (``glide-upsample-paper``, §4: 1.5B,
a text transformer of width 1024). Their numbers, and where each comes from:

* GLIDE §4: the base model 2.5M iterations at batch 2048, the upsampler 1.6M at batch 512, in
  16-bit precision with loss scaling (here ``precision="auto"``: bf16 where the hardware has it);
  §4.2: 20% of the captions replaced by the empty one (there a fine-tuning stage after
  pre-training; here from the first step, one run instead of two).
* GLIDE gives no optimiser settings. unCLIP's decoder (Ramesh et al. 2022, Table 3) *is* this
  3.5B GLIDE, trained by the same authors, so its column is used: Adam(W) lr 1.2e-4, β₂ 0.999,
  ε 1e-8, no weight decay, dropout 0.1, EMA 0.9999; the 64 → 256 column (also lr 1.2e-4) for
  the upsampler. Constant learning rate without warmup, as guided-diffusion's ``TrainLoop``
  (GLIDE's code base) runs; gradient clipping at 1 is ours, a guard that rarely binds.
* Loss: L_hybrid (improved DDPM; glide-text2im's ``learn_sigma=True``), 1,000 cosine steps, ε.
* Batch: ``--batch`` is per process; 16 per GPU × 16 accumulated micro-batches × 8 GPUs = 2048
  (upsampler: 8 × 8 × 8 = 512). Change ``--accumulate`` with the GPU count to keep the paper's.

Images: resized (shorter side, bicubic) and center-cropped to the model's size (guided-diffusion's
``center_crop_arr``), or ``--set crop=random`` for open_clip's random crop, then scaled to
[-1, 1]; the upsampler's low-res input is that image downsampled and blurred (§4's blur
augmentation, :func:`~unclip_lite.glide.upsample.degrade`). Captions: the package's BPE
tokenizer (CLIP's 49,408 ids; GLIDE used GPT-2's 50,257) at the model's context (128),
truncated. ``base-64-tiny-data`` and ``upsample-256-tiny-data`` are the same path at CPU size.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache, partial
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from unclip_lite.clip.data_recipes import PairData
from unclip_lite.data.sharded import PairBatches, open_source, pair_batches
from unclip_lite.data.transforms import image_transform
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.glide.recipes import diffusion_loss
from unclip_lite.glide.text2im import TEXT2IM_CONFIGS, Text2Im, Text2ImConfig, drop_captions, get_text2im_config
from unclip_lite.glide.upsample import degrade, upsample_channels
from unclip_lite.tokenizer import CompactVocab, get_tokenizer
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.train.trainer import distributed_setup
from unclip_lite.unet import UNetConfig
from unclip_lite.utils import pick_device

CROPS = ("center", "random")


@lru_cache(maxsize=1)
def full_vocab() -> CompactVocab:
    """Every id of the package's BPE tokenizer (49,408), renumbered after GLIDE's pad, start and
    end (the model's ids 0, 1, 2): a real-data GLIDE reads any caption, no ``<unk>``."""
    return CompactVocab(range(get_tokenizer().vocab_size))


def _tiny_unet(image_size: int, in_channels: int = 3) -> UNetConfig:
    return UNetConfig(in_channels=in_channels, model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                      attention_resolutions=(image_size // 2,), num_head_channels=32, dropout=0.1,
                      learn_sigma=True, image_size=image_size, encoder_channels=64, cond_dim=64)


# the CPU-size stand-ins of the paper's models, for trying the real-data path (and testing it): 32 px,
# and an upsampler x4 as the paper's (8 -> 32 px)
TINY_MODELS: dict[str, Callable[[], Text2ImConfig]] = {
    "tiny-data": lambda: Text2ImConfig(_tiny_unet(32), None, 32, 64, 1, 2),
    "tiny-data-upsample": lambda: Text2ImConfig(_tiny_unet(32, 6), None, 32, 64, 1, 2, conditioning="low_res",
                                                low_res_size=8),
}


def text2im_config(name: str, vocab_size: int) -> Text2ImConfig:
    """The Text2Im preset ``name`` (:data:`~unclip_lite.glide.text2im.TEXT2IM_CONFIGS`, or a
    :data:`TINY_MODELS` one) reading ``vocab_size`` ids."""
    if name in TINY_MODELS:
        config = TINY_MODELS[name]()
        config.vocab_size = vocab_size
        config.__post_init__()
        return config
    if name not in TEXT2IM_CONFIGS:
        raise ValueError(f"unknown GLIDE model {name!r}; choose one of {sorted(TEXT2IM_CONFIGS) + list(TINY_MODELS)}")
    return get_text2im_config(name, vocab_size=vocab_size)


# ----------------------------------------------------------------------------- what every real-data recipe shares


def check_crop(crop: str) -> None:
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {', '.join(CROPS)}, got {crop!r}")


def require_data(data: PairData, what: str) -> None:
    """A clear error, before anything is built, when ``--data`` is missing."""
    if not data.path:
        raise ValueError(f"{what} trains on your data: give --data PATH (webdataset shards "
                         f"'dir/{{00000..00999}}.tar', a folder of .tar, an open_clip CSV, or an image folder)")


def square_images(data: PairData, size: int, crop: str, text_transform: Callable | None = None) -> PairBatches:
    """``batches(index, rank, world)`` -> (images [B, 3, size, size] in [0, 1], captions or
    ``text_transform(captions)``): open_clip's eval transform (resize the shorter side, center crop)
    or its train one (a random crop of 90-100% of the area, ``data.crop_scale``), unnormalised."""
    check_crop(crop)
    transform = image_transform(size, train=crop == "random", crop_scale=data.crop_scale, normalize=False)
    return pair_batches(open_source(data.path, data.format), data.batch_size, transform, seed=data.seed,
                        workers=data.workers, shuffle_buffer=data.shuffle_buffer, text_transform=text_transform)


def batch_generator(seed: int, index: int, rank: int) -> torch.Generator:
    """The generator of micro-batch ``index`` on ``rank`` (caption dropout, blur, crops): a pure
    function of the three, so a resumed run draws what an uninterrupted one would have."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, index, rank, 7919]).generate_state(1)[0]))


def resized(images: torch.Tensor, size: int) -> torch.Tensor:
    """``images`` [B, 3, S, S] at ``size`` (antialiased bilinear; the same tensor when S = size)."""
    if images.shape[-1] == size:
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def on_device(batch: tuple, device: torch.device) -> tuple:
    return tuple(x.to(device, non_blocking=True) if isinstance(x, torch.Tensor) else x for x in batch)


def fit(bundle, loss_fn, batches, config: TrainConfig, record: dict, out_dir=None, resume: bool = True,
        max_minutes: float | None = None, live_plot: bool = False):
    """Train ``bundle.model`` with the shared trainer (resuming from ``out_dir``); the bundle ends
    holding the EMA weights and ``record`` as its recipe. Returns ``(bundle, trainer)``."""
    trainer = Trainer(bundle.model, loss_fn, batches, config, out_dir=out_dir, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle.model = trainer.averaged_model().eval()
    bundle.extra = {"recipe": record}
    return bundle, trainer


# ----------------------------------------------------------------------------- GLIDE


@dataclass
class GlideDataRecipe:
    model: str = "glide-base-paper"  # a Text2Im preset, or one of TINY_MODELS
    data: PairData = field(default_factory=lambda: PairData(batch_size=16, workers=8))
    crop: str = "center"  # center (guided-diffusion's center_crop_arr) | random (open_clip's train crop)
    p_uncond: float = 0.2  # GLIDE §4.2: 20% of captions replaced by the empty one
    low_res_blur: float = 0.6  # upsamplers: the largest blur σ of the low-res input, in its pixels
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)  # 1,000 cosine steps, ε (+ learned Σ)
    train: TrainConfig = field(default_factory=lambda: paper_train_config(2_500_000, 1.2e-4, accumulate=16))

    def __post_init__(self):
        check_crop(self.crop)
        if not 0.0 <= self.p_uncond <= 1.0 or self.low_res_blur < 0:
            raise ValueError(f"need p_uncond in [0, 1] and low_res_blur >= 0, got {self.p_uncond}, {self.low_res_blur}")


def paper_train_config(steps: int, lr: float, accumulate: int = 1, betas=(0.9, 0.999), eps: float = 1e-8,
                       weight_decay: float = 0.0, ema_decay: float = 0.9999) -> TrainConfig:
    """The optimiser of unCLIP's Table 3 (and GLIDE's, see the module docstring): AdamW at a constant
    ``lr`` with no warmup, EMA of the weights; checkpoints every 5,000 steps."""
    return TrainConfig(steps=steps, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, warmup=0,
                       schedule="constant", grad_clip=1.0, precision="auto", ema_decay=ema_decay,
                       accumulate=accumulate, log_every=100, checkpoint_every=5000)


def _base_64() -> GlideDataRecipe:
    return GlideDataRecipe()


def _upsample_256() -> GlideDataRecipe:
    # GLIDE §4: 1.6M iterations at batch 512 (8 per GPU x 8 accumulated x 8 GPUs); Table 3's 64 -> 256 optimiser
    return GlideDataRecipe(model="glide-upsample-paper", data=PairData(batch_size=8, workers=8),
                           train=paper_train_config(1_600_000, 1.2e-4, accumulate=8))


def _tiny(recipe: GlideDataRecipe, model: str) -> GlideDataRecipe:
    return replace(recipe, model=model, data=PairData(batch_size=8, workers=0, shuffle_buffer=64),
                   train=replace(recipe.train, steps=200, lr=5e-4, accumulate=1, ema_decay=0.99,
                                 log_every=10, checkpoint_every=100))


DATA_RECIPES: dict[str, Callable[[], GlideDataRecipe]] = {
    "base-64": _base_64,
    "upsample-256": _upsample_256,
    "base-64-tiny-data": lambda: _tiny(_base_64(), "tiny-data"),
    "upsample-256-tiny-data": lambda: _tiny(_upsample_256(), "tiny-data-upsample"),
}


def data_glide_config(recipe: GlideDataRecipe, vocab: CompactVocab) -> Text2ImConfig:
    config = text2im_config(recipe.model, vocab.size)
    config.p_uncond = recipe.p_uncond
    return config


def new_data_glide(recipe: GlideDataRecipe, vocab: CompactVocab | None = None,
                   device: torch.device | str = "cpu") -> GlideBundle:
    """A fresh GLIDE for ``recipe`` reading the full BPE vocabulary, on ``device`` (``"meta"``: to count it)."""
    vocab = vocab or full_vocab()
    torch.manual_seed(recipe.train.seed)
    with torch.device(device):
        model = Text2Im(data_glide_config(recipe, vocab))
    return GlideBundle(model, vocab, recipe.diffusion)


def glide_data_batches(config: Text2ImConfig, vocab: CompactVocab, recipe: GlideDataRecipe,
                       device: torch.device | str = "cpu"):
    """``batches(index, rank, world)`` -> ``(x0 [B, 3, R, R] in [-1, 1], tokens [B, L])``, plus for an
    upsampler the low-res channels [B, 3, R, R] (the image downsampled and blurred, upsampled
    back): this rank's micro-batch of ``recipe.data`` for a model of ``config``, each caption
    replaced by the empty one with probability ``p_uncond``."""
    require_data(recipe.data, f"GLIDE recipe {recipe.model!r}")
    size = config.unet.image_size
    tokenize = partial(vocab, context_length=config.context_length, truncate=True)  # runs in the workers
    pairs = square_images(recipe.data, size, recipe.crop, text_transform=tokenize)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, tokens = pairs(index, rank, world)  # [B, 3, R, R] in [0, 1], [B, L]
        gen = batch_generator(recipe.data.seed, index, rank)
        tokens = drop_captions(tokens, recipe.p_uncond, gen)
        x0 = images * 2 - 1  # [B, 3, R, R]
        if config.conditioning == "low_res":
            low = degrade(x0, config.low_res_size, recipe.low_res_blur, gen)  # [B, 3, r, r]
            return on_device((x0, tokens, upsample_channels(low, size)), device)
        return on_device((x0, tokens), device)

    batches.pairs = pairs  # its catalog says how many samples the data holds
    return batches


def train_data_glide(recipe: GlideDataRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                     max_minutes: float | None = None, live_plot: bool = False) -> tuple[GlideBundle, Trainer]:
    """Train a GLIDE (or its text-conditional upsampler) on ``recipe.data`` (on the GPU when there
    is one). The data is checked (path, shards, sample counts) before the model is built, so bad
    input fails at once and writes nothing."""
    recipe = recipe or _base_64()
    vocab = full_vocab()
    distributed_setup()  # under torchrun: this rank's GPU becomes the current device first
    device = pick_device()
    batches = glide_data_batches(data_glide_config(recipe, vocab), vocab, recipe, device)
    bundle = new_data_glide(recipe, vocab, device)
    bundle.model.train()
    loss = diffusion_loss(bundle.diffusion, None, third="extra")  # L_hybrid: L_simple + λ·L_vlb for Σ
    record = {**asdict(recipe), "samples": int(batches.pairs.catalog.sizes.sum())}
    return fit(bundle, loss, batches, recipe.train, record, out_dir, resume, max_minutes, live_plot)
