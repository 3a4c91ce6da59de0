"""CLIP on real (image, caption) data, with open_clip's recipe for the paper's configurations.

    unclip-lite train clip --config ViT-B-32 --data 'shards/{00000..00999}.tar'
    torchrun --nproc_per_node 8 -m unclip_lite train clip --config ViT-B-32 --data 'shards/{00000..00999}.tar' \\
        --batch 256 --workers 8 --steps 100000

One recipe function, :func:`data_recipe`, serves every configuration in
:data:`~unclip_lite.clip.configs.PAPER_CONFIGS`. Its numbers are open_clip's
(``open_clip_train/params.py`` and ``docs/PRETRAINED.md`` in mlfoundations/open_clip):

* AdamW, lr 5e-4 (``get_default_params``, "params from paper"), weight decay 0.2 (``--wd``
  default) on matrices only (open_clip also exempts gains, biases and the temperature);
  β = (0.9, 0.98), ε = 1e-6 for a ViT, (0.9, 0.999), 1e-8 for a ResNet;
* 10,000 warmup steps (``--warmup``), then cosine to 0 (``--lr-scheduler cosine``); no gradient
  clipping (``--grad-clip-norm`` None); bf16 autocast (``--precision amp_bf16``; here ``auto``:
  bf16 where the hardware computes it natively, fp32 elsewhere);
* micro-batch per GPU: 256 for ViT-B/32, 192 for ViT-B/16, 96 for ViT-L/14 (the LAION-400M runs
  in PRETRAINED.md, on 128-400 GPUs for a global batch of ~32k), else open_clip's default 64;
* ``--workers`` 4 (its default) and a 5,000-sample shuffle (``_SAMPLE_SHUFFLE_SIZE``);
* steps: 32 epochs (``--epochs``) of LAION-400M's 407,332,084 pairs at the global batch 32,768,
  ≈ 397,800 steps — set ``--steps`` to epochs × samples / (micro-batch × GPUs × accumulate) for
  your data.

Captions go through the package's BPE tokenizer (:mod:`unclip_lite.tokenizer`, open_clip's) at
77 tokens, truncated; images through open_clip's train transform (:mod:`unclip_lite.data.transforms`).
``shapes-tiny-data`` is the same path at laptop size: the ``shapes-tiny`` towers reading the
full vocabulary, for trying real-data training (and testing it) on a CPU.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.configs import PAPER_CONFIGS, CLIPConfig, get_config
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.recipes import fit_clip
from unclip_lite.data.errors import DataFilesMissingError
from unclip_lite.data.sharded import FORMATS, PairBatches, open_source, pair_batches
from unclip_lite.data.transforms import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD, TRAIN_CROP_SCALE, image_transform
from unclip_lite.tokenizer import get_tokenizer
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.train.trainer import distributed_setup
from unclip_lite.utils import pick_device

CONTEXT_LENGTH = 77
LAION_400M_PAIRS = 407_332_084  # open_clip_train/data.py, get_dataset_size
OPEN_CLIP_GLOBAL_BATCH = 32_768  # ViT-B/32 on LAION-400M: 128 GPUs x 256 (docs/PRETRAINED.md)
PER_GPU_BATCH = {"ViT-B-32": 256, "ViT-B-16": 192, "ViT-L-14": 96}  # docs/PRETRAINED.md
DEFAULT_PER_GPU_BATCH = 64  # open_clip's --batch-size default


@dataclass
class PairData:
    """Where the pairs come from and how they are batched (per process)."""

    path: str = ""       # --data: shards 'dir/{00000..00999}.tar', a folder, one .tar, a CSV, an image folder
    format: str = "auto"  # --data-format: webdataset | csv | folder | auto (from the path)
    batch_size: int = DEFAULT_PER_GPU_BATCH  # --batch: micro-batch per process
    workers: int = 4     # --workers: DataLoader processes prefetching batches (0: in this process)
    shuffle_buffer: int = 5000
    crop_scale: tuple[float, float] = TRAIN_CROP_SCALE
    seed: int = 0

    def __post_init__(self):
        self.crop_scale = tuple(self.crop_scale)
        if self.format not in FORMATS:
            raise ValueError(f"data format must be one of {', '.join(FORMATS)}, got {self.format!r}")
        if self.batch_size < 1 or self.workers < 0 or self.shuffle_buffer < 0:
            raise ValueError(f"need batch_size >= 1, workers >= 0, shuffle_buffer >= 0; got "
                             f"{self.batch_size}, {self.workers}, {self.shuffle_buffer}")


@dataclass
class ClipDataRecipe:
    model: str = "ViT-B-32"
    data: PairData = field(default_factory=PairData)
    train: TrainConfig = field(default_factory=TrainConfig)
    pretrained: str = ""        # --pretrained: a local open_clip checkpoint file to start from (never downloaded)
    pretrained_model: str = ""  # the open_clip model name of that file ("": <model>-quickgelu, OpenAI's activation)


def open_clip_train_config(model: str) -> TrainConfig:
    """open_clip's optimiser and schedule for ``model`` (the module docstring cites each number)."""
    vit = not get_config(model).vision.is_resnet  # open_clip asks `"vit" in model_name`
    steps = math.ceil(32 * LAION_400M_PAIRS / OPEN_CLIP_GLOBAL_BATCH)
    return TrainConfig(steps=steps, lr=5e-4, weight_decay=0.2, betas=(0.9, 0.98) if vit else (0.9, 0.999),
                       eps=1e-6 if vit else 1e-8, warmup=10_000, schedule="cosine", min_lr_ratio=0.0,
                       grad_clip=None, precision="auto", log_every=100, checkpoint_every=1000)


def data_recipe(model: str) -> ClipDataRecipe:
    """The real-data recipe of CLIP config ``model`` (any of PAPER_CONFIGS): ``--data`` still to give."""
    return ClipDataRecipe(model=model, data=PairData(batch_size=PER_GPU_BATCH.get(model, DEFAULT_PER_GPU_BATCH)),
                          train=open_clip_train_config(model))


def tiny_data_recipe() -> ClipDataRecipe:
    """``shapes-tiny-data``: the real-data path at CPU size (for trying it, and for the tests)."""
    recipe = data_recipe("shapes-tiny")
    recipe.data = PairData(batch_size=32, workers=0, shuffle_buffer=256)
    recipe.train = TrainConfig(steps=300, lr=1e-3, weight_decay=0.2, warmup=30, grad_clip=None, log_every=10)
    return recipe


DATA_RECIPES = {**{name: partial(data_recipe, name) for name in PAPER_CONFIGS}, "shapes-tiny-data": tiny_data_recipe}


def data_clip_config(model: str) -> CLIPConfig:
    """Config ``model`` reading CLIP's full BPE vocabulary at 77 tokens (the paper configs already do)."""
    config = get_config(model)
    config.text.vocab_size = get_tokenizer().vocab_size
    config.text.eot_token_id = None  # [EOS] is the largest id, where CLIP reads the text features
    config.text.context_length = CONTEXT_LENGTH
    config.validate()
    return config


def clip_pair_batches(recipe: ClipDataRecipe, image_size: int) -> PairBatches:
    """``batches(index, rank, world)`` -> (normalised images [B, 3, S, S], token ids [B, 77]) on the CPU."""
    if not recipe.data.path:
        raise ValueError(f"CLIP recipe {recipe.model!r} trains on your data: give --data PATH (webdataset shards "
                         f"'dir/{{00000..00999}}.tar', a folder of .tar, an open_clip CSV, or an image folder)")
    d = recipe.data
    source = open_source(d.path, d.format)
    tokenize = partial(get_tokenizer(), context_length=CONTEXT_LENGTH, truncate=True)  # picklable for workers
    return pair_batches(source, d.batch_size, image_transform(image_size, train=True, crop_scale=d.crop_scale),
                        seed=d.seed, workers=d.workers, shuffle_buffer=d.shuffle_buffer, text_transform=tokenize)


def recipe_clip_config(recipe: ClipDataRecipe) -> CLIPConfig:
    """The config ``recipe`` trains; with ``pretrained``, checked against the file's open_clip model.

    ``pretrained`` must be a local file (a tag such as ``"openai"`` would make open_clip download)
    holding ``pretrained_model`` (default ``<model>-quickgelu``: OpenAI's and LAION-400M's
    weights use QuickGELU), whose architecture must be ``model``'s; only the activation follows
    the file. Reads open_clip's JSON configs only, so it is instant.
    """
    config = data_clip_config(recipe.model)
    if not recipe.pretrained:
        return config
    from unclip_lite.clip.interop import config_from_open_clip

    if not Path(recipe.pretrained).is_file():
        raise DataFilesMissingError(f"--pretrained {recipe.pretrained!r} is not a file: give a local open_clip "
                                    f"checkpoint (.pt/.bin/.safetensors); nothing is downloaded")
    name = recipe.pretrained_model or f"{recipe.model}-quickgelu"
    try:
        theirs = config_from_open_clip(name)
    except ValueError as err:
        raise ValueError(f"--pretrained: {err} (set pretrained_model to the file's open_clip model name)") from None
    config.activation = theirs.activation
    if theirs != config:
        raise ValueError(f"--pretrained: open_clip model {name!r} is not the {recipe.model} architecture this "
                         f"recipe trains; pick the matching --config or pretrained_model")
    return config


def new_data_clip(recipe: ClipDataRecipe) -> CLIPBundle:
    """A fresh CLIP for ``recipe`` (seeded by ``train.seed``), or open_clip weights from ``pretrained``."""
    import torch

    config = recipe_clip_config(recipe)
    if recipe.pretrained:
        from unclip_lite.clip.interop import load_open_clip_pretrained

        model = load_open_clip_pretrained(recipe.pretrained_model or f"{recipe.model}-quickgelu", recipe.pretrained)
        assert model.config == config, "open_clip's model differs from the config it was checked against"
        model.train()
    else:
        torch.manual_seed(recipe.train.seed)
        model = CLIP(config)
    return CLIPBundle(model, None, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)


def train_data_clip(recipe: ClipDataRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                    max_minutes: float | None = None, live_plot: bool = False) -> tuple[CLIPBundle, Trainer]:
    """Train a CLIP on ``recipe.data`` with the shared trainer (on the GPU when there is one).

    Every check (data path, shards, their sample counts, the pretrained file) runs before the
    model is built, so bad input fails at once and writes nothing.
    """
    recipe = recipe or data_recipe("ViT-B-32")
    config = recipe_clip_config(recipe)
    batches = clip_pair_batches(recipe, config.vision.image_size)
    distributed_setup()  # under torchrun: this rank's GPU becomes the current device first
    device = pick_device()
    bundle = new_data_clip(recipe)
    bundle.model.to(device).train()

    def on_device(index: int, rank: int = 0, world: int = 1):
        images, tokens = batches(index, rank, world)  # [B, 3, S, S], [B, 77]
        return images.to(device, non_blocking=True), tokens.to(device, non_blocking=True)

    record = {"model": recipe.model, "data": asdict(recipe.data), "train": asdict(recipe.train),
              "samples": int(batches.catalog.sizes.sum()),
              **({"pretrained": recipe.pretrained} if recipe.pretrained else {})}
    trainer = fit_clip(bundle, on_device, recipe.train, record, out_dir, resume, max_minutes, live_plot=live_plot)
    return bundle, trainer
