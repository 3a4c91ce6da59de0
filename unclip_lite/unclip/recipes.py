"""How the shipped priors ``prior-shapes-tiny`` and ``ar-prior-shapes-tiny`` are trained and
judged (unCLIP §2.2, Appendix C).

``unclip-lite train prior|ar-prior --config shapes-tiny`` and ``unclip-lite eval prior-shapes-tiny``
call these functions; chapter 07 calls them too, with a shorter schedule.

Training: Shapes scenes of the training split only (one object, and two with a relation in a
quarter of each batch, the mix GLIDE and the CLIP were trained on), each captioned by a random
template; the frozen CLIP gives the target z_i (the image's embedding) and the conditioning
(z_t and the caption's per-token outputs). The prior predicts z_i itself (x_0) with an MSE
loss at a uniform timestep of a 1,000-step cosine schedule, and 10% of captions are dropped
so that the same network can be guided. The AR prior sees the same batches and learns the
codes of z_i (PCA + buckets, :mod:`.ar_prior`) with a cross-entropy loss instead.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unclip_lite.clip.bundle import CLIPBundle, load_clip
from unclip_lite.clip.recipes import zero_shot_prompts
from unclip_lite.clip.zeroshot import recall_at_k
from unclip_lite.data import shapes
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.unclip.ar_prior import (ARPrior, ARPriorConfig, choose_components, fit_pca, get_ar_prior_config,
                                         pca_error_curve)
from unclip_lite.unclip.bundle import ARPriorBundle, CaptionPrior, PriorBundle, caption_conditioning
from unclip_lite.unclip.prior import DiffusionPrior, get_prior_config


@dataclass
class PriorData:
    batch_size: int = 256
    two_object_fraction: float = 0.25
    text_drop: float = 0.1  # §2.2: captions dropped 10% of the time (classifier-free guidance)
    pool: int | None = None  # encode this many training examples once and draw batches from them
    seed: int = 0


@dataclass
class PriorRecipe:
    """The diffusion prior's recipe."""

    model: str = "shapes-tiny"
    clip: str = "clip-shapes-tiny-pairs"  # the CLIP whose embeddings it learns (frozen)
    scaling: str = "standardise"  # "scale" (the paper's ×17.2) or "standardise" (Karlo's mean/std)
    data: PriorData = field(default_factory=lambda: PriorData(pool=65536))
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=800, lr=5e-4, warmup=100, weight_decay=0.05, min_lr_ratio=0.1,
        ema_decay=0.995, log_every=25, checkpoint_every=200))
    statistics_n: int = 4096  # training image embeddings whose mean and std standardise them
    eval_every: int | None = 200  # judge the EMA prior every N steps (the curve in the manifest)


@dataclass
class ARPriorRecipe:
    """The AR prior's recipe: the same data, CLIP and schedule as the diffusion prior's."""

    model: str = "shapes-tiny"
    clip: str = "clip-shapes-tiny-pairs"
    max_pca_error: float = 0.01  # keep the fewest components whose reconstruction error is below this
    data: PriorData = field(default_factory=lambda: PriorData(pool=65536))
    train: TrainConfig = field(default_factory=lambda: replace(PriorRecipe().train))
    statistics_n: int = 4096  # training embeddings the PCA and the code ranges are fitted on
    eval_every: int | None = 200


def shapes_stream(clip: CLIPBundle, data: PriorData, seed_offset: int = 0) -> shapes.ShapesStream:
    return shapes.ShapesStream(data.batch_size, clip.image_size, seed=data.seed + seed_offset,
                               two_object_fraction=data.two_object_fraction)


@torch.no_grad()
def embedding_pool(clip: CLIPBundle, data: PriorData, progress: bool = True) -> dict[str, torch.Tensor]:
    """``data.pool`` training examples encoded once by the frozen CLIP: ``z_i`` and the caption
    conditioning, each [pool, ...] (the stream's batches from index 0, in order)."""
    stream = shapes_stream(clip, data)
    parts, count, index = [], 0, 0
    with tqdm(total=data.pool, desc="encoding the pool", disable=not progress) as bar:
        while count < data.pool:
            images, texts, _ = stream.batch(index)
            parts.append({"z_i": clip.encode_images(images), **caption_conditioning(clip, texts, truncate=True)})
            count, index = count + len(texts), index + 1
            bar.update(len(texts))
    return {k: torch.cat([p[k] for p in parts])[:data.pool] for k in parts[0]}


def prior_batches(clip: CLIPBundle, data: PriorData, progress: bool = True):
    """``batches(index, rank, world) -> (z_i [B, E], conditioning, dropped [B])`` for the trainer,
    a pure function of the index (the dropped captions too), so a resumed run sees the same
    batches. With ``data.pool`` the CLIP encodes that many examples once and each batch is
    drawn from them (the frozen CLIP's forward would otherwise cost as much as the prior's
    training step); without it every batch is fresh scenes."""
    stream = shapes_stream(clip, data)
    pool = embedding_pool(clip, data, progress) if data.pool else None

    def batches(index: int, rank: int = 0, world: int = 1):
        if pool is None:
            images, texts, _ = stream.batch(index)
            z_i, cond = clip.encode_images(images), caption_conditioning(clip, texts, truncate=True)  # [B, E]
        else:
            pick = torch.randint(data.pool, (data.batch_size,), generator=torch.Generator().manual_seed(
                data.seed * 7919 + index + 104_729))
            z_i, cond = pool["z_i"][pick], {k: v[pick] for k, v in pool.items() if k != "z_i"}
        drop = torch.rand(len(z_i), generator=torch.Generator().manual_seed(data.seed * 7919 + index)) < data.text_drop
        mine = slice(rank * len(z_i) // world, (rank + 1) * len(z_i) // world)
        cond = DiffusionPrior.drop_text({k: v[mine] for k, v in cond.items()}, drop[mine])
        return z_i[mine], cond, drop[mine]

    return batches


def prior_loss(diffusion):
    """The trainer's ``loss_fn``: the MSE between ẑ_0 and z_i in the diffusion space (§2.2)."""

    def loss_fn(model, batch):
        z_i, cond, _ = batch
        net = getattr(model, "module", model)  # under DDP the wrapper hides the helper methods
        device = next(model.parameters()).device
        x0 = net.to_diffusion_space(z_i.to(device))  # [B, E]
        t = diffusion.sample_timesteps(len(x0), device=device)
        terms = diffusion.training_losses(model, x0, t, model_kwargs={k: v.to(device) for k, v in cond.items()})
        return terms["loss"].mean(), {}

    return loss_fn


def ar_prior_loss(model, batch):
    """The AR prior's ``loss_fn``: cross-entropy of each code given the codes before it, and of
    the dot token (where the caption was kept), averaged over the k + 1 predictions."""
    z_i, cond, drop = batch
    net = getattr(model, "module", model)
    device = next(model.parameters()).device
    cond = {k: v.to(device) for k, v in cond.items()}
    z_i, drop = z_i.to(device), drop.to(device)
    codes = net.encode(z_i)  # [B, k]
    dot = torch.where(drop, net.config.dot_buckets, net.dot_token(z_i, cond["text_embed"]))  # [B]
    dot_logits, code_logits = model(codes, dot, **cond)
    code_loss = F.cross_entropy(code_logits.flatten(0, 1), codes.flatten())
    dot_loss = F.cross_entropy(dot_logits[~drop], dot[~drop]) if (~drop).any() else code_loss * 0
    k = codes.shape[1]
    return (k * code_loss + dot_loss) / (k + 1), {"code_ce": code_loss.item(), "dot_ce": dot_loss.item()}


@torch.no_grad()
def training_statistics(clip: CLIPBundle, data: PriorData, n: int, texts: bool = False):
    """``n`` training image embeddings [n, E] (another seed than the batches): for the
    standardisation, the PCA and the mean-embedding baseline; with ``texts``, also their
    captions' embeddings."""
    stream = shapes_stream(clip, replace(data, batch_size=min(n, 1024)), seed_offset=10_007)
    images, captions, index = [], [], 0
    while sum(len(z) for z in images) < n:
        batch, batch_texts, _ = stream.batch(index)
        images.append(clip.encode_images(batch))
        captions.append(clip.encode_texts(batch_texts) if texts else None)
        index += 1
    z_i = torch.cat(images)[:n]
    return (z_i, torch.cat(captions)[:n]) if texts else z_i


def new_prior(recipe: PriorRecipe, clip: CLIPBundle) -> PriorBundle:
    config = get_prior_config(recipe.model)
    config.embed_dim, config.text_width = clip.dim, clip.model.config.text.width
    config.context_length, config.scaling = clip.context_length, recipe.scaling
    torch.manual_seed(recipe.train.seed)
    model = DiffusionPrior(config)
    model.set_statistics(training_statistics(clip, recipe.data, recipe.statistics_n))
    return PriorBundle(model, recipe.clip, clip.manifest["sha256"]).attach_clip(clip)


def new_ar_prior(recipe: ARPriorRecipe, clip: CLIPBundle) -> ARPriorBundle:
    """An AR prior whose k is chosen by the recipe's error rule and whose codec is fitted."""
    z_i, z_t = training_statistics(clip, recipe.data, recipe.statistics_n, texts=True)
    _, _, eigenvalues = fit_pca(z_i)
    config = get_ar_prior_config(recipe.model)
    config.components = choose_components(pca_error_curve(eigenvalues, (z_i ** 2).sum(1).mean().item()),
                                          recipe.max_pca_error)
    config.embed_dim, config.text_width, config.context_length = clip.dim, clip.model.config.text.width, \
        clip.context_length
    torch.manual_seed(recipe.train.seed)
    model = ARPrior(ARPriorConfig.from_dict(config.to_dict()))
    model.set_codec(z_i, z_t)
    return ARPriorBundle(model, recipe.clip, clip.manifest["sha256"]).attach_clip(clip)


def train_prior(recipe: PriorRecipe | ARPriorRecipe | None = None, out_dir: str | Path | None = None,
                resume: bool = True, live_plot: bool = False, max_minutes: float | None = None
                ) -> tuple[PriorBundle | ARPriorBundle, Trainer]:
    """Train a diffusion prior (or, given an :class:`ARPriorRecipe`, an AR prior) with the shared
    trainer; returns the bundle holding the EMA weights."""
    recipe = recipe or PriorRecipe()
    clip = load_clip(recipe.clip)
    if isinstance(recipe, ARPriorRecipe):
        bundle, loss_fn = new_ar_prior(recipe, clip), ar_prior_loss
        record = {"model": recipe.model, "max_pca_error": recipe.max_pca_error}
    else:
        bundle = new_prior(recipe, clip)
        loss_fn, record = prior_loss(bundle.diffusion), {"model": recipe.model, "scaling": recipe.scaling}
    evaluate = None
    if recipe.eval_every:
        def evaluate(raw_model, step):
            snapshot = replace(bundle, model=trainer.averaged_model().eval())
            return {f"eval_{k}": round(v, 4) for k, v in quick_metrics(snapshot, n=200).items()}

    trainer = Trainer(bundle.model, loss_fn, prior_batches(clip, recipe.data, recipe.train.progress), recipe.train,
                      out_dir=out_dir, live_plot=live_plot, evaluate=evaluate, eval_every=recipe.eval_every)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle.model = trainer.averaged_model().eval()
    bundle.extra = {"recipe": {**record, "clip": recipe.clip, "data": asdict(recipe.data),
                               "train": asdict(recipe.train)}}
    return bundle, trainer


# ----------------------------------------------------------------------------- evaluation

GROUPS = {  # name: (split, objects per scene)
    "heldout": ("heldout", 1),  # single objects of colour × shape pairs the prior never saw
    "seen": ("train", 1),       # single objects of training pairs, fresh scenes
    "pairs": ("train", 2),      # two objects and a relation, fresh scenes
}


@torch.no_grad()
def held_out_captions(clip: CLIPBundle, group: str, n: int, seed: int = 11) -> dict:
    """Fresh captioned scenes of a group: texts, the true z_i, and z_i′ of another image of the
    same caption (:func:`~unclip_lite.data.shapes.scenes_for_captions`: the ceiling)."""
    split, objects = GROUPS[group]
    images, scenes = shapes.eval_set(split, n, resolution=clip.image_size, n_objects=objects, seed=seed)
    texts = shapes.captions(scenes, seed)
    other = shapes.render(shapes.scenes_for_captions(texts, seed + 1), clip.image_size)
    return {"texts": texts, "scenes": scenes, "z_i": clip.encode_images(images), "z_i_other": clip.encode_images(other)}


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return F.cosine_similarity(a, b, dim=-1).mean().item()


@torch.no_grad()
def attribute_accuracy(clip: CLIPBundle, z: torch.Tensor, scenes: shapes.Scenes) -> dict:
    """Classify embeddings ``z`` [n, E] of single-object scenes with the 40 zero-shot prompts."""
    prompts, pairs = zero_shot_prompts()
    predicted = torch.tensor(pairs)[(z @ clip.encode_texts(prompts).T).argmax(1)]  # [n, 2]
    colour_ok, shape_ok = predicted[:, 0] == scenes.colour[:, 0], predicted[:, 1] == scenes.shape[:, 0]
    return {"colour": colour_ok.float().mean().item(), "shape": shape_ok.float().mean().item(),
            "joint": (colour_ok & shape_ok).float().mean().item()}


def sampling_options(bundle: CaptionPrior, steps: int) -> dict:
    """The diffusion prior samples in ``steps`` DDIM steps; the AR prior has no steps to set."""
    return {"steps": steps} if isinstance(bundle, PriorBundle) else {}


@torch.no_grad()
def quick_metrics(bundle: CaptionPrior, n: int = 200, guidance: float = 1.0, candidates: int = 1,
                  steps: int = 32) -> dict:
    """The training curve's numbers: cosine(ẑ_i, z_i) on two groups and held-out joint accuracy."""
    out = {}
    for group in ("heldout", "pairs"):
        data = held_out_captions(bundle.clip, group, n)
        z = bundle.sample(data["texts"], guidance=guidance, candidates=candidates, **sampling_options(bundle, steps))
        out[f"{group}_cos"] = cosine(z, data["z_i"])
        if group == "heldout":
            out["heldout_joint"] = attribute_accuracy(bundle.clip, z, data["scenes"])["joint"]
    return out


@torch.no_grad()
def evaluate_prior(bundle: CaptionPrior, n: int = 250, guidance: float = 2.0, candidates: int = 2,
                   steps: int = 64, sweep_n: int = 120, pool: int = 1000) -> dict:
    """The acceptance metrics of a prior, one flat dict (keys in the README and chapter 07).

    Per group (``heldout``, ``seen``, ``pairs``): ``{group}_cos`` = cosine(ẑ_i, z_i) beside the
    baselines ``_cos_text`` (z_t itself), ``_cos_mean`` (the mean training image embedding) and
    the ceiling ``_cos_same_caption`` (two images of one caption); ``_R@1``/``_R@5``: the true
    image's rank among ``pool`` candidates by ẑ_i, and ``_text_R@k`` by z_t; single-object
    groups add zero-shot ``_colour``/``_shape``/``_joint`` of ẑ_i (and ``_text_joint`` of z_t).
    ``sweep_…``: cosine and held-out joint at other guidance scales and candidate counts.
    """
    clip = bundle.clip
    mean = F.normalize(training_statistics(clip, PriorData(), 4096).mean(0, keepdim=True), dim=-1)  # [1, E]
    options = sampling_options(bundle, steps)
    metrics: dict = {"guidance": guidance, "candidates": candidates, "n": n, "sweep_n": sweep_n, **options}
    for group in GROUPS:
        data = held_out_captions(clip, group, n)
        cond = caption_conditioning(clip, data["texts"])
        z = bundle.sample(data["texts"], guidance=guidance, candidates=candidates, conditioning=cond, **options)
        z_t, z_i = cond["text_embed"], data["z_i"]
        metrics.update({f"{group}_cos": cosine(z, z_i), f"{group}_cos_text": cosine(z_t, z_i),
                        f"{group}_cos_mean": cosine(mean.expand_as(z_i), z_i),
                        f"{group}_cos_same_caption": cosine(data["z_i_other"], z_i)})
        distractors = held_out_captions(clip, group, max(pool - n, 0), seed=23)["z_i"]
        candidates_z = torch.cat([z_i, distractors])  # [pool, E]; the true image of caption j is row j
        for name, query in (("", z), ("_text", z_t)):
            metrics.update({f"{group}{name}_R@{k}": recall_at_k(query @ candidates_z.T, k) for k in (1, 5)})
        if GROUPS[group][1] == 1:
            metrics.update({f"{group}_{k}": v for k, v in attribute_accuracy(clip, z, data["scenes"]).items()})
            metrics[f"{group}_text_joint"] = attribute_accuracy(clip, z_t, data["scenes"])["joint"]
    data = held_out_captions(clip, "heldout", sweep_n, seed=31)
    cond = caption_conditioning(clip, data["texts"])
    for g, k in ((0.0, 1), (1.0, 1), (1.0, 2), (2.0, 1), (2.0, 2), (4.0, 2)):
        z = bundle.sample(data["texts"], guidance=g, candidates=k, conditioning=cond, **options)
        metrics[f"sweep_g{g:g}_k{k}_heldout_cos"] = cosine(z, data["z_i"])
        metrics[f"sweep_g{g:g}_k{k}_heldout_joint"] = attribute_accuracy(clip, z, data["scenes"])["joint"]
    return metrics
