"""How ``decoder-shapes-tiny`` is trained and judged (unCLIP §2.1; the conditioning signals of §5.1 / Figure 8).

``unclip-lite train decoder --config shapes-tiny`` warm-starts the decoder from the shipped GLIDE
(exactly that GLIDE at step 0, :mod:`.decoder`) and fine-tunes it on Shapes scenes, each image's
z_i computed by the frozen image tower of the CLIP the priors stand on. ``unclip-lite eval
decoder-shapes-tiny`` judges its samples with z_i from four sources, the paper's Figure 8 and
the whole unCLIP stack::

    render   z_i of a fresh render of the caption (the decoder alone: how well it inverts CLIP)
    prior    z_i drawn by the diffusion prior from the caption (unCLIP: caption -> prior -> decoder)
    text     the CLIP *text* embedding z_t in place of z_i (Figure 8, middle row)
    none     a zero embedding: the caption alone (Figure 8, top row)
    render_only  the render's z_i with the *empty* caption: what z_i alone makes the decoder draw

and the GLIDE it started from on the same prompts and seeds.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip_lite.clip.bundle import CLIPBundle, load_clip
from unclip_lite.data import shapes
from unclip_lite.glide.bundle import load_glide
from unclip_lite.glide.evaluate import attribute_prompts, judge_attributes, pair_breakdown, two_object_prompts
from unclip_lite.glide.recipes import GlideData, diffusion_loss, warm_start
from unclip_lite.judge import load_judge
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.unclip.bundle import PriorBundle
from unclip_lite.unclip.decoder import Decoder, DecoderBundle, DecoderConfig, load_decoder


@dataclass
class DecoderRecipe:
    # the GLIDE it starts as: the one that follows position and size (chapter 05 §8); grown from
    # glide-shapes-tiny, the decoder drew 0.81 of held-out prompts right from the prior's z_i, from
    # this one 1.00 (data/experiments/decoder-attempts.json)
    init_from: str = "glide-shapes-tiny-positions"
    clip: str = "clip-shapes-tiny-pairs"  # the CLIP whose image embeddings it reads (the priors' CLIP)
    # "image": z_i of each training image (unCLIP's decoder); "text": the CLIP text embedding z_t of
    # each caption instead, so the model is a GLIDE that also reads CLIP's text tower (issue 11's lead:
    # the image-trained decoder, given z_t, placed objects where GLIDE's own text encoder could not)
    embedding: str = "image"
    # a trained decoder to continue from instead (its GLIDE start and its CLIP must match this recipe's)
    init_decoder: str | None = None
    clip_tokens: int = 4
    p_drop_image: float = 0.1
    p_drop_text: float = 0.5
    # The GLIDE's U-Net cannot place anything: away from the border it is shift-equivariant
    # (chapter 05 §8), so z_i's position — a linear probe reads it off clip-shapes-tiny-pairs'
    # embeddings almost perfectly — had nothing to act on: two fine-tunes without these stayed at
    # position 0.20 (data/experiments/decoder-attempts.json). So, as the position fine-tune of
    # chapter 05: pixel positions in the attention layers (zero at first: still exact), x_0's
    # weight floored at the noisiest steps, and 40% of each batch drawn from them.
    attention_positions: bool = True
    min_snr_gamma: float | None = 5.0
    snr_floor: float = 0.5
    max_loss_weight: float | None = 20.0
    high_noise_fraction: float = 0.4
    high_noise_from: int = 850
    data: GlideData = field(default_factory=GlideData)  # one and two objects (25%), random templates
    # 2,000 steps: at 1,000 the decoder drew 15 of 16 held-out prompts right from the prior's z_i,
    # at 2,000 all 16 at guidance 3 and 5, in one leg or two (data/experiments/decoder-attempts.json)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, lr=3e-4, warmup=50, weight_decay=0.0, min_lr_ratio=0.1,
        ema_decay=0.995, log_every=25, checkpoint_every=250))
    eval_every: int | None = 250  # judge the EMA decoder every N steps, z_i of renders (the curve)


EMBEDDINGS = ("image", "text")


def decoder_batches(bundle: DecoderBundle, clip: CLIPBundle, data: GlideData, embedding: str = "image"):
    """``batches(index, rank, world) -> (x0 [B, 3, R, R] in [-1, 1], tokens [B, L], z_i [B, E])``:
    fresh Shapes scenes, each image's own CLIP embedding, captions and embeddings dropped
    independently (§2.1). A pure function of the index, so a resumed run sees the same batches."""
    if embedding not in EMBEDDINGS:
        raise ValueError(f"embedding must be one of {', '.join(EMBEDDINGS)}, got {embedding!r}")
    stream = shapes.ShapesStream(data.batch_size, bundle.image_size, seed=data.seed,
                                 two_object_fraction=data.two_object_fraction, detailed_fraction=data.detailed_fraction)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, texts, _ = stream.batch(index)  # [B, 3, R, R] in [0, 1]
        gen = torch.Generator().manual_seed(data.seed * 7919 + index)
        seen = images if clip.image_size == bundle.image_size else F.interpolate(
            images, size=clip.image_size, mode="bilinear", antialias=True, align_corners=False)
        z = clip.encode_images(seen) if embedding == "image" else clip.encode_texts(texts)  # [B, E]
        tokens, z_i = bundle.model.drop_conditioning(bundle.tokenize(texts), z, gen)
        mine = slice(rank * len(texts) // world, (rank + 1) * len(texts) // world)
        return (images * 2 - 1)[mine], tokens[mine], z_i[mine]

    return batches


def new_decoder(recipe: DecoderRecipe, clip: CLIPBundle) -> DecoderBundle:
    """The recipe's GLIDE, grown into a decoder that computes exactly what it computed."""
    glide = load_glide(recipe.init_from)
    glide_config = glide.model.config
    glide_config.unet.attention_positions = glide_config.unet.attention_positions or recipe.attention_positions
    config = DecoderConfig(glide_config, clip.dim, recipe.clip_tokens, recipe.p_drop_image, recipe.p_drop_text)
    torch.manual_seed(recipe.train.seed)
    model = Decoder(config)
    warm_start(model, glide.model.state_dict(), gated=("image_to_tokens.",))
    if recipe.init_decoder:
        trained = load_decoder(recipe.init_decoder)
        trained.check_clip(clip)
        # the same keys are not enough: a decoder grown from another GLIDE (say, one whose
        # position maps carry a gain) loads without complaint and computes something else
        if trained.model.config.to_dict() != model.config.to_dict():
            raise ValueError(f"init_decoder {recipe.init_decoder!r} was not grown from {recipe.init_from!r} "
                             f"(its GLIDE config differs): set init_from to the GLIDE it was grown from")
        model.load_state_dict(trained.model.state_dict())  # same GLIDE, same CLIP: the same layout
    return DecoderBundle(model, glide.vocab, glide.diffusion_config, clip_name=recipe.clip,
                         clip_sha256=clip.manifest["sha256"])


def train_decoder(recipe: DecoderRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                  live_plot: bool = False, max_minutes: float | None = None) -> tuple[DecoderBundle, Trainer]:
    """Fine-tune a decoder with the shared trainer; returns the bundle holding the EMA weights."""
    recipe = recipe or DecoderRecipe()
    clip = load_clip(recipe.clip)
    bundle = new_decoder(recipe, clip)
    evaluate = None
    if recipe.eval_every:
        judge = load_judge()

        def evaluate(raw_model, step):
            source = render_embeddings(clip) if recipe.embedding == "image" else text_embeddings(clip)
            view = DecoderView(replace(bundle, model=trainer.averaged_model().eval()), source)
            return {f"eval_{k}": round(v, 4) for k, v in judged(view, judge, attr_per_pair=1, pairs_n=30).items()}

    loss = diffusion_loss(bundle.diffusion, recipe.min_snr_gamma, recipe.snr_floor, recipe.max_loss_weight,
                          (recipe.high_noise_fraction, recipe.high_noise_from), third="image_embed")
    trainer = Trainer(bundle.model, loss,
                      decoder_batches(bundle, clip, recipe.data, recipe.embedding), recipe.train, out_dir=out_dir,
                      live_plot=live_plot,
                      evaluate=evaluate, eval_every=recipe.eval_every)
    if resume and out_dir:
        trainer.resume()
    if evaluate and trainer.step == 0:  # the curve starts where the run starts: the GLIDE itself
        trainer.history.append({"step": 0, **evaluate(trainer.raw_model, 0)})
    trainer.fit(max_minutes=max_minutes)
    bundle.model = trainer.averaged_model().eval()
    bundle.extra = {"recipe": {k: v for k, v in asdict(recipe).items() if k != "eval_every"}}
    return bundle, trainer


# ----------------------------------------------------------------------------- where z_i comes from

EmbeddingSource = Callable[[list[str], int], torch.Tensor]  # (prompts, seed) -> z_i [N, E]


def render_embeddings(clip: CLIPBundle) -> EmbeddingSource:
    """z_i of a fresh render of each caption (what it leaves unsaid drawn anew)."""
    return lambda prompts, seed: clip.encode_images(
        shapes.render(shapes.scenes_for_captions(prompts, seed + 101), clip.image_size))


def prior_embeddings(prior: PriorBundle, **options) -> EmbeddingSource:
    """z_i drawn by a prior from each caption (its defaults: guidance 2, keep the best of 2)."""
    return lambda prompts, seed: prior.sample(prompts, seed=seed + 202, **options)


def text_embeddings(clip: CLIPBundle) -> EmbeddingSource:
    """The CLIP text embedding z_t in place of z_i (the paper's Figure 8, middle row)."""
    return lambda prompts, seed: clip.encode_texts(prompts)


def no_embeddings(dim: int) -> EmbeddingSource:
    """A zero embedding: the decoder reads the caption alone (Figure 8, top row)."""
    return lambda prompts, seed: torch.zeros(len(prompts), dim)


@dataclass
class DecoderView:
    """A decoder with a source of z_i: it draws from prompts alone, like a GLIDE."""

    decoder: DecoderBundle
    embed: EmbeddingSource
    caption: bool = True  # False: the decoder gets the empty caption, and z_i alone says what to draw

    def sample(self, prompts, guidance: float = 3.0, sampler: str = "ddim", steps: int | None = 50,
               seed: int = 0, **kwargs) -> torch.Tensor:
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        z = self.embed(prompts, seed)
        shown = prompts if self.caption else [""] * len(prompts)
        return self.decoder.sample(shown, guidance, sampler, steps, seed=seed, image_embed=z, **kwargs)


# ----------------------------------------------------------------------------- evaluation

@torch.no_grad()
def judged(model, judge, attr_per_pair: int = 2, pairs_n: int = 60, guidance: float = 3.0, steps: int = 20,
           seed: int = 0) -> dict[str, float]:
    """What the judge reads in ``model.sample``'s images (a GLIDE or a :class:`DecoderView`):
    single objects with a named size and position (``{all,seen,heldout}_{colour,shape,size,
    position,joint,colour_shape}``) and ``pairs_n`` two-object prompts (``binding``, ``both_right``,
    ``colours_swapped``, ``shapes_swapped``, ``relation``)."""
    prompts, targets, heldout = attribute_prompts(attr_per_pair)
    single = judge_attributes(judge, model.sample(prompts, guidance, "ddim", steps, seed=seed + 3), targets, heldout)
    out = {k: v for k, v in single.items() if not k.startswith("chance")}
    if pairs_n:
        texts, scenes = two_object_prompts(pairs_n)
        pairs = pair_breakdown(judge, model.sample(texts, guidance, "ddim", steps, seed=seed + 2), scenes)
        out.update({f"pairs_{k}": v for k, v in pairs.items()})
    return out


def decoder_quick_metrics(bundle: DecoderBundle) -> dict:
    """The training command's record: the decoder alone (z_i of renders, or z_t of the prompt for a
    decoder trained on text embeddings), DDIM-20, guidance 3."""
    clip = load_clip(bundle.clip_name)
    bundle.check_clip(clip)
    text = bundle.extra.get("recipe", {}).get("embedding") == "text"
    source = text_embeddings(clip) if text else render_embeddings(clip)
    return judged(DecoderView(bundle, source), load_judge(), attr_per_pair=1, pairs_n=30)


@torch.no_grad()
def evaluate_decoder(bundle: DecoderBundle, prior: str = "prior-shapes-tiny", attr_per_pair: int = 2,
                     pairs_n: int = 60, guidance: float = 3.0, sweep=(1.0, 2.0, 5.0), steps: int = 20) -> dict:
    """The decoder judged with z_i from each source (module docstring), the GLIDE it started
    from beside it, and a decoder guidance sweep on the prior's z_i (``sweep_g{s}_…``)."""
    clip, judge = load_clip(bundle.clip_name), load_judge()
    bundle.check_clip(clip)
    prior_bundle = PriorBundle.load(prior, clip=clip)
    sources = {"render": render_embeddings(clip), "prior": prior_embeddings(prior_bundle),
               "text": text_embeddings(clip), "none": no_embeddings(bundle.clip_dim)}
    metrics: dict = {"guidance": guidance, "steps": steps, "prior": prior, "attr_per_pair": attr_per_pair,
                     "pairs_n": pairs_n, "init_from": bundle.extra.get("recipe", {}).get("init_from")}
    views = {name: DecoderView(bundle, source) for name, source in sources.items()}
    views["render_only"] = DecoderView(bundle, sources["render"], caption=False)  # z_i alone: does it read z_i?
    for name, view in views.items():
        metrics.update({f"{name}_{k}": v for k, v in judged(view, judge, attr_per_pair, pairs_n, guidance, steps).items()})
    if metrics["init_from"]:
        glide = load_glide(metrics["init_from"])
        metrics.update({f"glide_{k}": v for k, v in judged(glide, judge, attr_per_pair, pairs_n, guidance, steps).items()})
    view = DecoderView(bundle, sources["prior"])
    for scale in sweep:
        single = judged(view, judge, attr_per_pair, 0, scale, steps)
        metrics.update({f"sweep_g{scale:g}_{k}": single[f"all_{k}"] for k in ("colour", "shape", "colour_shape")})
    return metrics
