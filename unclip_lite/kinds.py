"""The registry of model kinds: what ``unclip-lite train | eval | sample`` can do, by name.

Each kind registers, in one place, its bundle class (how its checkpoints load), its training
recipes (name → recipe factory, training function, the quick metrics a training run records),
and what ``eval`` and ``sample`` do with one of its checkpoints. The command line only looks
things up here, so a new model is one :func:`register` call, not new branches in ``cli.py``
(open_clip's one model registry plays the same role).

    kind = get_kind("glide")
    recipe = kind.recipes["shapes-tiny"].make()
    bundle = load_bundle("glide-shapes-tiny")         # the kind is read from the checkpoint

This module sits at the top of the package (beside ``cli``): it imports every kind, and
nothing below imports it.
"""
from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import torch

from unclip_lite import judge
from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import read_manifest
from unclip_lite.clip import data_recipes as clip_data_recipes
from unclip_lite.clip import emoji_recipe
from unclip_lite.clip import noised as noised_clip
from unclip_lite.clip import recipes as clip_recipes
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clipdraw.bundle import ClipDrawBundle
from unclip_lite.data.formats import decode_image
from unclip_lite.glide import data_recipes as glide_data_recipes
from unclip_lite.glide import evaluate as glide_evaluate
from unclip_lite.glide import guide_recipes
from unclip_lite.glide import recipes as glide_recipes
from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.glide.classifier import ClassifierBundle
from unclip_lite.glide.command import sample_from_args
from unclip_lite.unclip import recipes as prior_recipes
from unclip_lite.unclip import compare, decoder_recipes, upsampler_recipes
from unclip_lite.unclip import data_recipes as unclip_data_recipes
from unclip_lite.unclip import prior_data_recipes
from unclip_lite.unclip.bundle import ARPriorBundle, PriorBundle
from unclip_lite.unclip.decoder import DecoderBundle
from unclip_lite.unclip.pipeline import UnCLIPBundle
from unclip_lite.unclip.upsampler import UpsamplerBundle
from unclip_lite.vqgan import recipes as vqgan_recipes
from unclip_lite.vqgan.bundle import VQGANBundle
from unclip_lite.vqgan.guided import VQGANClipBundle


@dataclass
class EvalOptions:
    """The knobs of ``unclip-lite eval`` (each kind reads the ones it has)."""

    n: int = 1000              # evaluation images per split (clip, judge, guides' reading; upsampler: ≤ 100)
    per_pair: int | None = None  # glide: DDIM samples per colour × shape pair (4); clipdraw, vqgan-clip: seeds (2)
    ddpm_per_pair: int = 2     # glide: DDPM-1000 vs DDIM samples per pair
    attr_per_pair: int = 2     # glide: prompts naming size and position, per pair
    pairs_n: int = 120         # glide: two-object prompts; inpainting: 'add' edits; guides: 0 skips the guidance run
    steps: int | None = None   # DDIM steps (glide 50, decoder ≤ 20); clipdraw, vqgan-clip: optimiser steps
    respacing: str = "fast27"  # upsamplers
    scales: tuple[float, ...] | None = None  # guides: gradient guidance scales to try
    base: str = "glide-shapes-tiny"          # guides: the GLIDE they steer
    precision: str = "auto"


@dataclass(frozen=True)
class RecipeEntry:
    """A training recipe of a kind: ``make()`` a fresh recipe dataclass (its ``train`` field a
    :class:`~unclip_lite.train.TrainConfig`), ``train(recipe, out_dir=, resume=, max_minutes=)
    -> (bundle, trainer)``, and ``quick_metrics(bundle)``, recorded by the training command."""

    make: Callable[[], Any]
    train: Callable[..., tuple[Bundle, Any]]
    quick_metrics: Callable[[Bundle], dict] = lambda bundle: {}


@dataclass(frozen=True)
class ModelKind:
    name: str
    bundle: type[Bundle]
    description: str
    recipes: dict[str, RecipeEntry] = field(default_factory=dict)
    evaluate: Callable[[Bundle, EvalOptions], dict] | None = None
    guide: Callable[[Bundle], Callable] | None = None    # a gradient guide for GlideBundle.sample
    sample: Callable[[Bundle, Any], torch.Tensor] | None = None  # from the CLI's parsed arguments
    default_checkpoint: str | None = None  # what ``sample`` draws from without --checkpoint
    load: Callable[[Any], Bundle] | None = None  # the checkpoint from the CLI's arguments (default: bundle.load)
    # a checkpoint without weights of its own, from shipped ones: ``compose(role=checkpoint name, …) -> bundle``
    compose: Callable[..., Bundle] | None = None


KINDS: dict[str, ModelKind] = {}


def register(kind: ModelKind) -> ModelKind:
    if kind.name in KINDS:
        raise ValueError(f"model kind {kind.name!r} is registered twice")
    KINDS[kind.name] = kind
    return kind


def get_kind(name: str) -> ModelKind:
    if name not in KINDS:
        raise ValueError(f"unknown model kind {name!r}; kinds: {', '.join(KINDS)}")
    return KINDS[name]


def kind_of(name_or_path: str | Path) -> ModelKind:
    """The registered kind of a checkpoint, as its manifest names it."""
    manifest = read_manifest(name_or_path)
    if not manifest:
        raise FileNotFoundError(f"no checkpoint manifest for {str(name_or_path)!r}")
    stored = manifest.get("kind")
    for kind in KINDS.values():
        if kind.bundle.kind == stored:
            return kind
    raise ValueError(f"{name_or_path}: a checkpoint of kind {stored!r}, which no registered kind loads")


def load_bundle(name_or_path: str | Path, device: str | torch.device | None = None) -> Bundle:
    """Any checkpoint, loaded through its kind's bundle class."""
    return kind_of(name_or_path).bundle.load(name_or_path, device)


def load_guide(name_or_path: str | Path) -> tuple[Callable, str]:
    """``(guide, kind name)`` for a checkpoint that can steer sampling by its gradient."""
    kind = kind_of(name_or_path)
    if kind.guide is None:
        raise ValueError(f"{name_or_path}: not a guide (a noise-aware CLIP or a noised classifier); "
                         f"its kind is {kind.name!r}")
    return kind.guide(kind.bundle.load(name_or_path)), kind.name


# ----------------------------------------------------------------------------- evaluations


def _guidance_run(bundle: Bundle, kind: str, guide: Callable, options: EvalOptions) -> dict:
    """The guide at work: judged samples of the ``base`` GLIDE beside classifier-free guidance."""
    if not options.pairs_n:
        return {}
    metrics = glide_evaluate.evaluate_guidance(
        GlideBundle.load(options.base), guide, kind, scales=options.scales or (1.0, 3.0, 10.0),
        per_pair=options.per_pair or 4, steps=options.steps or 50, precision=options.precision, progress=False)
    return {**metrics, "base": options.base}


def evaluate_clip(bundle: CLIPBundle, options: EvalOptions) -> dict:
    if bundle.model.config.vision.timestep_conditioned:  # a guide: reading x_t, then steering
        metrics = noised_clip.evaluate_noised_clip(bundle, n=min(options.n, 500))
        return {**metrics, **_guidance_run(bundle, "clip", noised_clip.clip_guide(bundle), options)}
    if bundle.extra.get("recipe", {}).get("model", "shapes-tiny").startswith("emoji"):
        return emoji_recipe.evaluate_emoji(bundle)
    return clip_recipes.evaluate_shapes(bundle, n=options.n)


def evaluate_classifier(bundle: ClassifierBundle, options: EvalOptions) -> dict:
    metrics = guide_recipes.evaluate_classifier(bundle, n=min(options.n, 500))
    return {**metrics, **_guidance_run(bundle, "classifier", guide_recipes.classifier_guide(bundle), options)}


def evaluate_glide(bundle: GlideBundle, options: EvalOptions) -> dict:
    common = dict(precision=options.precision, progress=False)
    if bundle.conditioning == "inpaint":
        return glide_evaluate.evaluate_inpainting(bundle, per_pair=options.per_pair or 4, pairs_n=options.pairs_n,
                                                  steps=options.steps or 50, **common)
    if bundle.conditioning == "low_res":
        return glide_evaluate.evaluate_upsampler(bundle, n=min(options.n, 100), respacing=options.respacing, **common)
    return glide_evaluate.evaluate_glide(bundle, per_pair=options.per_pair or 4, steps=options.steps or 50,
                                         ddpm_per_pair=options.ddpm_per_pair, pairs_n=options.pairs_n,
                                         attr_per_pair=options.attr_per_pair, **common)


def glide_quick_metrics(bundle: GlideBundle) -> dict:
    """A text-to-image model's quick judged accuracy; edits and upsamplers: see ``eval``."""
    return glide_evaluate.quick_metrics(bundle) if bundle.conditioning == "text" else {}


# ----------------------------------------------------------------------------- the kinds

register(ModelKind(
    "clip", CLIPBundle, "CLIP image and text towers (Shapes, Emoji; a noise-aware one guides GLIDE)",
    recipes={
        "shapes-tiny": RecipeEntry(clip_recipes.Recipe, clip_recipes.train_shapes_clip, clip_recipes.evaluate_shapes),
        "shapes-tiny-pairs": RecipeEntry(clip_recipes.pairs_recipe, clip_recipes.train_shapes_clip,
                                         clip_recipes.evaluate_shapes),
        **{name: RecipeEntry(partial(clip_recipes.typographic_recipe, *fractions), clip_recipes.train_shapes_clip,
                             clip_recipes.evaluate_shapes)
           for name, fractions in clip_recipes.TYPOGRAPHIC_RECIPES.items()},
        "shapes-tiny-pairs-typo50": RecipeEntry(clip_recipes.reader_recipe, clip_recipes.train_shapes_clip,
                                                clip_recipes.evaluate_shapes),
        "emoji-tiny": RecipeEntry(emoji_recipe.EmojiRecipe, emoji_recipe.train_emoji_clip, emoji_recipe.evaluate_emoji),
        "shapes-tiny-noised": RecipeEntry(noised_clip.NoisedClipRecipe, noised_clip.train_noised_clip,
                                          lambda b: noised_clip.evaluate_noised_clip(b, n=500)),
        # real data (--data): open_clip's recipe for each paper config, and shapes-tiny-data at CPU size
        **{name: RecipeEntry(make, clip_data_recipes.train_data_clip)
           for name, make in clip_data_recipes.DATA_RECIPES.items()},
    },
    evaluate=evaluate_clip, guide=noised_clip.clip_guide))

register(ModelKind(
    "classifier", ClassifierBundle, "ADM's noised classifier: reads x_t, guides GLIDE by its gradient",
    recipes={"shapes-tiny": RecipeEntry(guide_recipes.ClassifierRecipe, guide_recipes.train_noised_classifier,
                                        guide_recipes.evaluate_classifier)},
    evaluate=evaluate_classifier, guide=guide_recipes.classifier_guide))

register(ModelKind(
    "judge", judge.JudgeBundle, "the Shapes attribute judge that grades generated images",
    recipes={"shapes": RecipeEntry(judge.JudgeRecipe, judge.train_judge,
                                   lambda b: judge.evaluate_judge(b.model))},
    evaluate=lambda bundle, options: judge.evaluate_judge(bundle.model, n=options.n)))


register(ModelKind(
    "glide", GlideBundle, "GLIDE text-to-image diffusion, and its inpainting and upsampling variants",
    recipes={**{name: RecipeEntry(make, glide_recipes.train_shapes_glide, glide_quick_metrics)
                for name, make in glide_recipes.RECIPES.items()},
             # real data (--data): the paper's 3.5B base model and 1.5B upsampler, and their -tiny-data twins
             **{name: RecipeEntry(make, glide_data_recipes.train_data_glide)
                for name, make in glide_data_recipes.DATA_RECIPES.items()}},
    evaluate=evaluate_glide, sample=lambda bundle, args: sample_from_args(bundle, args, load_guide),
    default_checkpoint="glide-shapes-tiny"))


def evaluate_prior(bundle, options: EvalOptions) -> dict:
    return prior_recipes.evaluate_prior(bundle, n=min(options.n, 500), sweep_n=min(options.n, 500) // 2)


register(ModelKind(
    "prior", PriorBundle, "unCLIP's diffusion prior: a caption to a CLIP image embedding",
    recipes={"shapes-tiny": RecipeEntry(prior_recipes.PriorRecipe, prior_recipes.train_prior,
                                        prior_recipes.quick_metrics),
             **{name: RecipeEntry(make, prior_data_recipes.train_data_prior)  # real data (--data, --clip)
                for name, make in prior_data_recipes.PRIOR_DATA_RECIPES.items()}},
    evaluate=evaluate_prior))

register(ModelKind(
    "ar-prior", ARPriorBundle, "unCLIP's autoregressive prior: PCA codes of the CLIP image embedding, one by one",
    recipes={"shapes-tiny": RecipeEntry(prior_recipes.ARPriorRecipe, prior_recipes.train_prior,
                                        prior_recipes.quick_metrics),
             **{name: RecipeEntry(make, prior_data_recipes.train_data_prior)  # real data (--data, --clip)
                for name, make in prior_data_recipes.AR_PRIOR_DATA_RECIPES.items()}},
    evaluate=evaluate_prior))

register(ModelKind(
    "decoder", DecoderBundle, "unCLIP's decoder: a GLIDE that also reads a CLIP image embedding",
    recipes={"shapes-tiny": RecipeEntry(decoder_recipes.DecoderRecipe, decoder_recipes.train_decoder,
                                        decoder_recipes.decoder_quick_metrics),
             # issue 11's experiment: the same fine-tune with CLIP's text embedding z_t in place of z_i
             "shapes-tiny-text": RecipeEntry(lambda: decoder_recipes.DecoderRecipe(  # as it was recorded
                 embedding="text", init_from="glide-shapes-tiny",
                 train=replace(decoder_recipes.DecoderRecipe().train, steps=1000)),
                                             decoder_recipes.train_decoder, decoder_recipes.decoder_quick_metrics),
             # ... and continued from the shipped decoder (trained on z_i), on z_t alone (recorded from the
             # decoder shipped before, grown from glide-shapes-tiny: commit 364dbaa)
             "shapes-tiny-text-from-decoder": RecipeEntry(
                 lambda: decoder_recipes.DecoderRecipe(embedding="text", init_decoder="decoder-shapes-tiny",
                                                       train=replace(decoder_recipes.DecoderRecipe().train, steps=500,
                                                                     lr=1e-4)),
                 decoder_recipes.train_decoder, decoder_recipes.decoder_quick_metrics),
             **{name: RecipeEntry(make, unclip_data_recipes.train_data_decoder)  # real data (--data, --clip)
                for name, make in unclip_data_recipes.DECODER_DATA_RECIPES.items()}},
    evaluate=lambda bundle, options: decoder_recipes.evaluate_decoder(
        bundle, attr_per_pair=options.attr_per_pair, pairs_n=min(options.pairs_n, 60), steps=min(options.steps or 20, 20))))

register(ModelKind(
    "upsampler", UpsamplerBundle, "unCLIP's upsamplers: no text, no attention, trained on corrupted crops",
    recipes={**{name: RecipeEntry(make, upsampler_recipes.train_upsampler, upsampler_recipes.upsampler_quick_metrics)
                for name, make in upsampler_recipes.RECIPES.items()},
             **{name: RecipeEntry(make, unclip_data_recipes.train_data_upsampler)  # real data (--data)
                for name, make in unclip_data_recipes.UPSAMPLER_DATA_RECIPES.items()}},
    evaluate=lambda bundle, options: upsampler_recipes.evaluate_upsampler(
        bundle, n=min(options.n, 64), precision=options.precision)))

register(ModelKind(
    "vqgan", VQGANBundle, "VQGAN (Esser et al. 2021): a codebook autoencoder for Shapes; VQGAN-CLIP steers its latents",
    recipes={"shapes-tiny": RecipeEntry(vqgan_recipes.VQGANRecipe, vqgan_recipes.train_vqgan,
                                        lambda b: vqgan_recipes.evaluate_vqgan(b, n=64))},
    evaluate=lambda bundle, options: vqgan_recipes.evaluate_vqgan(bundle, n=min(options.n, 256))))


def sample_unclip(bundle: UnCLIPBundle, args) -> torch.Tensor:
    """``unclip-lite sample unclip``: the flags ``sample glide`` has, under diffusers' names."""
    out = bundle.model(args.prompt, num_images_per_prompt=args.n, seed=args.seed, precision=args.precision,
                       decoder_guidance_scale=args.guidance, decoder_num_inference_steps=args.steps or 50,
                       prior_guidance_scale=args.prior_guidance, prior_num_inference_steps=args.prior_steps,
                       super_res_num_inference_steps=args.respacing or "fast27", rerank=args.rerank,
                       num_stages=args.stages, progress=True)
    print("seconds per image: " + ", ".join(f"{k} {v}" for k, v in out.seconds_per_image.items()), file=sys.stderr)
    return out.images


register(ModelKind(
    "unclip", UnCLIPBundle, "unCLIP end to end: caption -> prior -> decoder -> upsamplers (names its components)",
    evaluate=lambda bundle, options: compare.evaluate_unclip(
        bundle, per_pair=min(options.per_pair or 2, 2), pairs_n=min(options.pairs_n, 60), steps=min(options.steps or 20, 20),
        precision=options.precision),
    sample=sample_unclip, default_checkpoint="unclip-shapes-tiny",
    load=lambda args: UnCLIPBundle.load(args.checkpoint, prior=args.prior)))


# ----------------------------------------------------------------------------- chapter 03: CLIP-guided optimisation


def evaluate_guided(bundle: ClipDrawBundle | VQGANClipBundle, options: EvalOptions) -> dict:
    """CLIPDraw / VQGAN-CLIP on the colour × shape prompts (``--n``: how many, ≤ 40), ``--per-pair``
    seeds each (2), read by the guide and by the Shapes judge; ``--steps`` overrides the method's."""
    overrides = {"steps": options.steps} if options.steps else {}
    return bundle.evaluate(judge.JudgeBundle.load("judge-shapes").model, n_prompts=min(options.n, 40),
                           seeds=options.per_pair or 2, progress=True, **overrides)


def sample_clipdraw(bundle: ClipDrawBundle, args) -> torch.Tensor:
    """``--n`` drawings per ``--prompt`` (seeds ``--seed``, +1, …): a row per prompt."""
    overrides = {k: v for k, v in (("steps", args.steps), ("strokes", args.strokes)) if v is not None}
    if args.no_augment:
        overrides["augment"] = False
    return torch.stack([bundle.draw(prompt, seed=args.seed + i, progress=True, **overrides)
                        for prompt in args.prompt for i in range(args.n)])


def sample_vqgan_clip(bundle: VQGANClipBundle, args) -> torch.Tensor:
    """``--n`` images (seeds ``--seed``, +1, …), each steered by **all** ``--prompt "text:weight"``."""
    overrides = {"steps": args.steps} if args.steps is not None else {}
    if args.init_image and not Path(args.init_image).is_file():
        raise FileNotFoundError(f"no image {args.init_image!r}")
    init = decode_image(Path(args.init_image)) if args.init_image else None  # [3, H, W] in [0, 1]
    return torch.stack([bundle.draw(args.prompt, seed=args.seed + i, init_image=init, progress=True, **overrides)
                        for i in range(args.n)])


register(ModelKind(
    "clipdraw", ClipDrawBundle, "CLIPDraw (Frans et al. 2021): strokes moved until a CLIP likes them; no weights",
    evaluate=evaluate_guided, sample=sample_clipdraw, default_checkpoint="clipdraw-shapes-tiny",
    compose=ClipDrawBundle.compose))

register(ModelKind(
    "vqgan-clip", VQGANClipBundle, "VQGAN-CLIP (Crowson et al. 2022): a VQGAN latent steered by a CLIP; no weights",
    evaluate=evaluate_guided, sample=sample_vqgan_clip, default_checkpoint="vqgan-clip-shapes-tiny",
    compose=VQGANClipBundle.compose))
