"""``clip-emoji-tiny``: a CLIP trained on ~1,500 Twemoji drawings and judged on the rest.

The honest lesson of this world is scale: CLIP learned from 400M pairs; here there are
~1,500. Every number is reported beside a chance baseline and a linear probe on the same
frozen features, so it is clear what the contrastive training did and did not buy.
"""
from __future__ import annotations

import random
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.recipes import fit_clip, new_clip
from unclip_lite.clip.zeroshot import accuracy_at_k, linear_probe, retrieval_metrics, zero_shot_classifier
from unclip_lite.data import emoji
from unclip_lite.tokenizer import CompactVocab
from unclip_lite.train import TrainConfig, Trainer

TEST_EVERY = 5  # every 5th emoji (in Unicode order) is held out for evaluation
CAPTION_TEMPLATES = ("{name}", "an emoji of {name}", "{name}, {subgroup}", "a {subgroup} emoji: {name}")
ZERO_SHOT_TEMPLATES = ("a {} emoji", "{}", "an emoji of {}")


def subgroup_words(record: emoji.EmojiRecord) -> str:
    """Unicode's subgroup id as words: ``"face-smiling"`` → ``"face smiling"``."""
    return record.subgroup.replace("-", " ")


def split_records() -> tuple[list[emoji.EmojiRecord], list[emoji.EmojiRecord]]:
    records = emoji.list_emoji()
    test = [r for i, r in enumerate(records) if i % TEST_EVERY == TEST_EVERY - 1]
    train = [r for i, r in enumerate(records) if i % TEST_EVERY != TEST_EVERY - 1]
    return train, test


def emoji_caption(record: emoji.EmojiRecord, rng: random.Random) -> str:
    return rng.choice(CAPTION_TEMPLATES).format(name=record.name.lower(), subgroup=subgroup_words(record))


def emoji_vocab() -> CompactVocab:
    """Every BPE piece of every emoji's name and subgroup, in every template."""
    texts = [t.format(name=r.name.lower(), subgroup=subgroup_words(r))
             for r in emoji.list_emoji() for t in CAPTION_TEMPLATES]
    return CompactVocab.from_corpus(texts)


@dataclass
class EmojiData:
    batch_size: int = 128
    crop_scale: tuple[float, float] = (0.75, 1.0)  # random resized crops: more views of few images
    seed: int = 0


@dataclass
class EmojiRecipe:
    model: str = "emoji-tiny"
    data: EmojiData = field(default_factory=EmojiData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, lr=1e-3, warmup=50, weight_decay=0.2, log_every=10))


def random_resized_crop(images: torch.Tensor, scale: tuple[float, float], gen: torch.Generator) -> torch.Tensor:
    """Crop a random square of ``scale`` × the area from each image and resize it back."""
    n = len(images)
    side = (scale[0] + (scale[1] - scale[0]) * torch.rand(n, generator=gen)).sqrt()  # [n]
    shift = (1 - side)[:, None] * (torch.rand(n, 2, generator=gen) * 2 - 1)  # [n, 2]
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = side, side
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="border", align_corners=False)


def load_emoji_images(records, resolution: int) -> torch.Tensor:
    return emoji.EmojiDataset(records, resolution=resolution).load_all(progress=False)[0]


def emoji_batches(bundle: CLIPBundle, data: EmojiData):
    train, _ = split_records()
    images = load_emoji_images(train, bundle.image_size)  # [N, 3, R, R]

    def batches(index: int, rank: int = 0, world: int = 1):
        gen = torch.Generator().manual_seed(data.seed * 1_000_003 + index)
        pick = torch.randperm(len(train), generator=gen)[: data.batch_size]  # no repeats in a batch
        rng = random.Random(data.seed * 1_000_003 + index)
        texts = [emoji_caption(train[i], rng) for i in pick.tolist()]
        crops = random_resized_crop(images[pick], data.crop_scale, gen)
        mine = slice(rank * len(texts) // world, (rank + 1) * len(texts) // world)
        return bundle.normalize_pixels(crops[mine]), bundle.tokenize(texts[mine])

    return batches


def train_emoji_clip(recipe: EmojiRecipe | None = None, out_dir=None, resume: bool = True,
                     max_minutes: float | None = None, live_plot: bool = False) -> tuple[CLIPBundle, Trainer]:
    recipe = recipe or EmojiRecipe()
    bundle = new_clip(recipe.model, emoji_vocab(), recipe.train.seed)
    record = {"model": recipe.model, "data": asdict(recipe.data), "train": asdict(recipe.train)}
    trainer = fit_clip(bundle, emoji_batches(bundle, recipe.data), recipe.train, record, out_dir,
                       resume, max_minutes, live_plot=live_plot)
    return bundle, trainer


@torch.no_grad()
def evaluate_emoji(bundle: CLIPBundle, n: int | None = None) -> dict:
    """Zero-shot subgroup classification and name retrieval on the held-out emoji.

    Each metric comes with its chance level, and subgroup accuracy with a linear probe
    fitted on the training emoji's frozen image features (what a supervised read-out of
    the same features reaches).
    """
    train, test = split_records()
    test = test[:n] if n else test
    subgroups = sorted({r.subgroup for r in train + test})
    index = {s: i for i, s in enumerate(subgroups)}
    names = [s.replace("-", " ") for s in subgroups]
    classifier = zero_shot_classifier(bundle, names, ZERO_SHOT_TEMPLATES)  # [C, E]
    test_images = load_emoji_images(test, bundle.image_size)
    test_features = bundle.encode_images(test_images)
    test_labels = torch.tensor([index[r.subgroup] for r in test])
    metrics = {f"subgroup_zeroshot_{k}": v for k, v in
               accuracy_at_k(test_features @ classifier.T, test_labels).items()}
    metrics["subgroup_chance_top1"] = 1 / len(subgroups)
    metrics["subgroup_chance_top5"] = min(1.0, 5 / len(subgroups))
    counts = torch.bincount(torch.tensor([index[r.subgroup] for r in train]), minlength=len(subgroups))
    metrics["subgroup_majority_top1"] = (test_labels == counts.argmax()).float().mean().item()
    train_features = bundle.encode_images(load_emoji_images(train, bundle.image_size))
    train_labels = torch.tensor([index[r.subgroup] for r in train])
    probe = linear_probe(train_features, train_labels, test_features, test_labels)
    metrics["subgroup_linear_probe_top1"] = probe["test_accuracy"]
    texts = [f"an emoji of {r.name.lower()}" for r in test]
    retrieval = retrieval_metrics(test_features, bundle.encode_texts(texts), ks=(1, 5))
    metrics.update({f"name_{k}": v for k, v in retrieval.items()})
    metrics["name_chance_R@1"] = 1 / len(test)
    metrics["name_chance_R@5"] = min(1.0, 5 / len(test))
    metrics["n_test"], metrics["n_train"], metrics["n_subgroups"] = len(test), len(train), len(subgroups)
    return metrics
