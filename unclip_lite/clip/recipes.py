"""How the shipped Shapes CLIPs are trained and judged: ``clip-shapes-tiny`` and ``clip-shapes-tiny-pairs``.

``unclip-lite train clip --config shapes-tiny`` and ``unclip-lite eval clip-shapes-tiny``
call these functions; chapter 02 calls them too, with a shorter schedule.
``clip-shapes-tiny-pairs`` (recipe ``shapes-tiny-pairs``) also sees two-object scenes — a
quarter of each batch, the mix GLIDE is trained with — so that the embeddings of "a red
circle to the left of a blue square" that unCLIP's prior and decoder stand on are inside
its training distribution.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.configs import get_config
from unclip_lite.clip.loss import distributed_clip_loss
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.typographic import typographic_attack
from unclip_lite.clip.zeroshot import retrieval_metrics
from unclip_lite.data import shapes
from unclip_lite.tokenizer import CompactVocab
from unclip_lite.train import TrainConfig, Trainer


@dataclass
class ShapesData:
    """The training stream of ``clip-shapes-tiny``: why each knob is there is in chapter 02."""

    batch_size: int = 256
    hue_jitter: float = 10.0      # degrees: colour names cover a range of hues, not one RGB
    sv_jitter: float = 0.15       # relative saturation/value change
    grey_fraction: float = 0.3    # grey objects captioned by shape alone: shape without colour
    two_object_fraction: float = 0.0
    label_fraction: float = 0.0   # images with their shape's name printed on them (typographic attack)
    sign_fraction: float = 0.0    # of those, the share showing the sticker alone ("a {shape}")
    seed: int = 0


@dataclass
class Recipe:
    model: str = "shapes-tiny"
    data: ShapesData = field(default_factory=ShapesData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=600, lr=2e-3, warmup=100, weight_decay=0.1, log_every=10))
    init_from: str = ""        # start from this shipped CLIP's weights and vocabulary ("": fresh)
    freeze_text: bool = False  # train the image tower only, so embeddings stay in init_from's space


def pairs_recipe() -> Recipe:
    """``shapes-tiny-pairs``: the CLIP that unCLIP stands on (one- and two-object scenes)."""
    return Recipe(model="shapes-tiny-pairs", data=ShapesData(two_object_fraction=0.25), train=TrainConfig(
        steps=800, lr=2e-3, warmup=100, weight_decay=0.1, log_every=10))


def typographic_recipe(label_fraction: float, sign_fraction: float = 0.0) -> Recipe:
    """``shapes-tiny-typo{NN}[-signs]``: ``clip-shapes-tiny``'s recipe with ``label_fraction`` of the
    images carrying their shape's name on a sticker, ``sign_fraction`` of those showing the sticker
    alone — the CLIPs of chapter 09's typographic attack."""
    return Recipe(model="shapes-tiny", data=ShapesData(label_fraction=label_fraction, sign_fraction=sign_fraction))


TYPOGRAPHIC_RECIPES = {"shapes-tiny-typo50": (0.5, 0.0), "shapes-tiny-typo20-signs": (0.2, 0.4),
                       "shapes-tiny-typo50-signs": (0.5, 0.4)}


def reader_recipe() -> Recipe:
    """``shapes-tiny-pairs-typo50``: ``clip-shapes-tiny-pairs``'s image tower fine-tuned on a stream
    where half the single objects carry their name (and 40% of those are signs without an object),
    its text tower (and temperature) frozen. The
    text tower pins the embedding space, so the decoder, which reads ``clip-shapes-tiny-pairs``'s z_i,
    can draw from this CLIP's embeddings of attacked images (chapter 09, the typographic attack)."""
    return Recipe(model="shapes-tiny-pairs", data=ShapesData(two_object_fraction=0.25, label_fraction=0.5,
                                                             sign_fraction=0.4),
                  train=TrainConfig(steps=300, lr=5e-4, warmup=30, weight_decay=0.1, log_every=10),
                  init_from="clip-shapes-tiny-pairs", freeze_text=True)


def shapes_vocab() -> CompactVocab:
    """Every BPE piece the Shapes captions use (40 ids with the four specials)."""
    return CompactVocab.from_corpus(shapes.caption_corpus())


def new_clip(model: str, vocab: CompactVocab, seed: int = 0) -> CLIPBundle:
    """A freshly initialised CLIP preset whose text tower reads the compact ``vocab``."""
    config = get_config(model)
    config.text.vocab_size = vocab.size
    config.text.eot_token_id = vocab.EOT
    torch.manual_seed(seed)
    return CLIPBundle(CLIP(config), vocab)


def new_shapes_clip(model: str = "shapes-tiny", seed: int = 0) -> CLIPBundle:
    return new_clip(model, shapes_vocab(), seed)


def fit_clip(bundle: CLIPBundle, batches, config: TrainConfig, recipe_record: dict,
             out_dir=None, resume: bool = True, max_minutes: float | None = None, **trainer_kwargs) -> Trainer:
    """Train ``bundle.model`` contrastively with the shared trainer (resuming from
    ``out_dir`` if a state is there) and record the recipe in ``bundle.extra``."""
    trainer = Trainer(bundle.model, contrastive_step, batches, config, out_dir=out_dir,
                      after_step=CLIP.clamp_logit_scale_, **trainer_kwargs)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle.extra = {"recipe": recipe_record}
    return trainer


def shapes_batches(bundle: CLIPBundle, data: ShapesData):
    """``batches(index, rank, world)`` for the trainer: rank r takes its slice of the batch."""
    stream = shapes.ShapesStream(data.batch_size, bundle.image_size, seed=data.seed,
                                 hue_jitter=data.hue_jitter, sv_jitter=data.sv_jitter,
                                 grey_fraction=data.grey_fraction,
                                 two_object_fraction=data.two_object_fraction,
                                 label_fraction=data.label_fraction, sign_fraction=data.sign_fraction)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, texts, _ = stream.batch(index)
        mine = slice(rank * len(texts) // world, (rank + 1) * len(texts) // world)
        return bundle.normalize_pixels(images[mine]), bundle.tokenize(texts[mine])

    return batches


def contrastive_step(model, batch):
    images, tokens = batch
    image_features, text_features, scale = model(images, tokens)
    loss = distributed_clip_loss(image_features, text_features, scale)
    return loss, {"scale": scale.item()}


def zero_shot_prompts() -> tuple[list[str], list[tuple[int, int]]]:
    """One prompt per colour × shape pair ("a red circle"), and the pair each one names."""
    pairs = [(c, s) for c in range(len(shapes.COLOURS)) for s in range(len(shapes.SHAPES))]
    return [shapes.zero_shot_prompt(shapes.COLOURS[c], shapes.SHAPES[s]) for c, s in pairs], pairs


@torch.no_grad()
def evaluate_shapes(bundle: CLIPBundle, n: int = 1000) -> dict:
    """The acceptance metrics of ``clip-shapes-tiny`` (keys documented in the README).

    Zero-shot: each single-object image is classified among all 40 "a {colour} {shape}"
    prompts; ``heldout_*`` on pairs never seen in training, ``seen_*`` on training pairs.
    ``*_joint`` needs both right, ``*_colour``/``*_shape`` read the attribute off the same
    prediction, ``*_colour_alone``/``*_shape_alone`` classify one attribute by summing the
    softmax over the other (the marginal). Retrieval: image→text and text→image recall over ``n`` held-out pairs with
    their full captions.
    """
    prompts, pairs = zero_shot_prompts()
    classifier = bundle.encode_texts(prompts)  # [40, E]
    pair_colour = torch.tensor([c for c, _ in pairs])
    pair_shape = torch.tensor([s for _, s in pairs])
    metrics = {}
    scale = bundle.model.scale().item()
    n_colours, n_shapes = len(shapes.COLOURS), len(shapes.SHAPES)
    for split, name in (("heldout", "heldout"), ("train", "seen")):
        images, scenes = shapes.eval_set(split, n, resolution=bundle.image_size)
        logits = scale * bundle.encode_images(images) @ classifier.T  # [n, 40]
        predicted = logits.argmax(1)
        colour_ok = pair_colour[predicted] == scenes.colour[:, 0]
        shape_ok = pair_shape[predicted] == scenes.shape[:, 0]
        metrics[f"{name}_joint"] = (colour_ok & shape_ok).float().mean().item()
        metrics[f"{name}_colour"] = colour_ok.float().mean().item()
        metrics[f"{name}_shape"] = shape_ok.float().mean().item()
        # Each attribute alone: marginalise the other out of the 40-way softmax.
        grid = logits.view(-1, n_colours, n_shapes)  # pairs are enumerated colour-major
        colour_alone = grid.logsumexp(2).argmax(1) == scenes.colour[:, 0]
        shape_alone = grid.logsumexp(1).argmax(1) == scenes.shape[:, 0]
        metrics[f"{name}_colour_alone"] = colour_alone.float().mean().item()
        metrics[f"{name}_shape_alone"] = shape_alone.float().mean().item()
    images, scenes = shapes.eval_set("heldout", n, resolution=bundle.image_size, seed=99)
    texts = shapes.captions(scenes, 99)
    r = retrieval_metrics(bundle.encode_images(images), bundle.encode_texts(texts), ks=(1, 5))
    metrics.update({f"heldout_{k}": v for k, v in r.items()})
    metrics["chance_joint"] = 1 / len(prompts)
    metrics.update(evaluate_pairs(bundle, n=min(n, 500)))
    metrics.update(typographic_attack(bundle, n=min(n, 500)))
    return metrics


def swapped(scenes: shapes.Scenes, what: str) -> shapes.Scenes:
    """Two-object scenes with the objects' colours, shapes or the relation swapped: the caption
    of the result uses the same words in the wrong places ("a blue circle left of a red square")."""
    fields = dict(scenes.__dict__)
    if what == "relation":  # left <-> right, above <-> below (RELATIONS lists them in pairs)
        fields["relation"] = scenes.relation ^ 1
    else:
        fields[what] = scenes.__dict__[what].flip(1)
    return shapes.Scenes(**fields)


@torch.no_grad()
def evaluate_pairs(bundle: CLIPBundle, n: int = 500, seed: int = 7) -> dict:
    """How a CLIP reads two-object scenes (unCLIP §7 blames binding failures on CLIP).

    ``pairs_image_to_text_R@k`` / ``pairs_text_to_image_R@k``: retrieval among ``n`` fresh
    two-object scenes of training pairs, each with "a {a} {relation} a {b}".
    ``pairs_swap_{colour,shape,relation}``: how often the image is closer to its own caption
    than to the same words with the two colours (shapes; the relation) swapped — 0.5 is
    chance; scenes whose swap changes nothing (two red objects) are left out.
    """
    images, scenes = shapes.eval_set("train", n, resolution=bundle.image_size, n_objects=2, seed=seed)
    image_features = bundle.encode_images(images)  # [n, E]
    own = bundle.encode_texts(shapes.captions(scenes, template=0))  # [n, E]
    metrics = {f"pairs_{k}": v for k, v in retrieval_metrics(image_features, own, ks=(1, 5)).items()}
    own_score = (image_features * own).sum(1)  # [n]
    for what in ("colour", "shape", "relation"):
        other = bundle.encode_texts(shapes.captions(swapped(scenes, what), template=0))
        differs = torch.ones(n, dtype=torch.bool) if what == "relation" else \
            scenes.__dict__[what][:, 0] != scenes.__dict__[what][:, 1]
        wins = (own_score > (image_features * other).sum(1))[differs]
        metrics[f"pairs_swap_{what}"] = wins.float().mean().item()
    return metrics


def train_shapes_clip(recipe: Recipe | None = None, out_dir: str | Path | None = None,
                      resume: bool = True, max_minutes: float | None = None, live_plot: bool = False,
                      eval_every: int | None = None, eval_n: int = 300) -> tuple[CLIPBundle, Trainer]:
    """Train a Shapes CLIP with the shared trainer; returns the bundle (EMA-free) and trainer."""
    recipe = recipe or Recipe()
    bundle = CLIPBundle.load(recipe.init_from) if recipe.init_from else new_shapes_clip(recipe.model, recipe.train.seed)
    bundle.model.train()
    if recipe.freeze_text:
        bundle.model.text.requires_grad_(False)
        bundle.model.logit_scale.requires_grad_(False)

    def evaluate(model, step):
        m = evaluate_shapes(CLIPBundle(model, bundle.vocab, bundle.mean, bundle.std), n=eval_n)
        return {k: m[k] for k in ("heldout_joint", "heldout_colour", "heldout_shape", "seen_joint")}

    record = {"model": recipe.model, "data": asdict(recipe.data), "train": asdict(recipe.train),
              **({"init_from": recipe.init_from, "freeze_text": recipe.freeze_text} if recipe.init_from else {})}
    trainer = fit_clip(bundle, shapes_batches(bundle, recipe.data), recipe.train, record, out_dir,
                       resume, max_minutes, evaluate=evaluate, eval_every=eval_every, live_plot=live_plot)
    return bundle, trainer
