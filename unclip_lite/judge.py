"""An attribute judge for Shapes images: how generated images are graded (it is not CLIP).

A small CNN reads a 32 px image in [0, 1] and names what is in it: one object or two; for
one object its colour, shape, size and position; for two objects the colour and shape of
each and their spatial relation. It is trained straight from the renderer on every
colour×shape pair (held-out ones included, since it must grade generated images of them),
with the colour jitter of CLIP training and a little pixel noise, so a slightly imperfect
generated image is still read correctly.

**Two-object convention.** "a red circle to the left of a blue star" and "a blue star to
the right of a red circle" are the same picture, so the judge cannot know which object a
caption mentioned first. It answers in a canonical form instead: object **A** is the
left object (side-by-side scenes) or the top object (stacked scenes), **B** the other, and
``relation`` is A's relation to B, so it is always "to the left of" or "above" (indices
into ``RELATION_NAMES``). :func:`canonical_pairs` puts any scene's labels into the same
form; :func:`grade` compares the judge's reading of images with the scenes they should show.

    judge = load_judge()                       # the shipped "judge-shapes"
    pred = judge_scenes(judge, images)         # {"colour": [B], "relation": [B], ...}
    ok = grade(judge, images, scenes)          # {"colour": [B] bool, "joint": [B] bool, ...}
"""
from __future__ import annotations

import shlex
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.bundle import Bundle, manifest_for
from unclip_lite.checkpoints import load_state_into
from unclip_lite.data import shapes
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.utils import config_from_dict

# Every head and its number of classes; single-object heads read n_objects == 1 images,
# pair heads (a_*, b_*, relation) read n_objects == 2 images, n_objects reads both.
HEADS: dict[str, int] = {
    "n_objects": 2, "colour": len(shapes.COLOURS), "shape": len(shapes.SHAPES),
    "size": len(shapes.SIZE_NAMES), "position": len(shapes.POSITION_NAMES),
    "a_colour": len(shapes.COLOURS), "a_shape": len(shapes.SHAPES),
    "b_colour": len(shapes.COLOURS), "b_shape": len(shapes.SHAPES),
    "relation": len(shapes.RELATION_NAMES),
}
SINGLE_HEADS = ("colour", "shape", "size", "position")
PAIR_HEADS = ("a_colour", "a_shape", "b_colour", "b_shape", "relation")
IGNORE = -100  # target of a head that does not apply to an image (cross_entropy skips it)


@dataclass
class JudgeConfig:
    image_size: int = 32
    widths: tuple[int, ...] = (32, 48, 64)  # channels of each stage; each stage halves the size
    hidden: int = 128
    groups: int = 8  # GroupNorm groups: no running statistics, so train and eval agree

    def __post_init__(self):
        self.widths = tuple(self.widths)


def _conv(c_in: int, c_out: int, groups: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1), nn.GroupNorm(groups, c_out), nn.SiLU())


class ShapesJudge(nn.Module):
    """Conv stages (two 3×3 convs, then 2× average pooling) → flatten → MLP → all heads.

    Flattening the last feature map (not pooling it globally) keeps where things are,
    which position and relation need.
    """

    def __init__(self, config: JudgeConfig | None = None):
        super().__init__()
        self.config = c = config or JudgeConfig()
        layers, c_in = [], 3
        for width in c.widths:
            layers += [_conv(c_in, width, c.groups), _conv(width, width, c.groups), nn.AvgPool2d(2)]
            c_in = width
        self.features = nn.Sequential(*layers)
        side = c.image_size // 2 ** len(c.widths)
        self.mlp = nn.Sequential(nn.Flatten(), nn.Linear(c_in * side * side, c.hidden), nn.SiLU())
        self.head = nn.Linear(c.hidden, sum(HEADS.values()))

    def check_images(self, images: torch.Tensor) -> None:
        size = self.config.image_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1:] != (3, size, size):
            got = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"the judge reads RGB images [B, 3, {size}, {size}] in [0, 1]; got {got}")

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """images ``[B, 3, R, R]`` in [0, 1] → ``{head: logits [B, n_classes]}``."""
        self.check_images(images)
        h = self.features(images * 2 - 1)  # [B, C, R/8, R/8]
        logits = self.head(self.mlp(h))  # [B, sum of classes]
        return dict(zip(HEADS, logits.split(list(HEADS.values()), dim=1)))


def canonical_pairs(scenes: shapes.Scenes) -> dict[str, torch.Tensor]:
    """Two-object labels in the judge's form: A = left/top object, relation A→B ``[B]`` each."""
    relation = scenes.relation  # [B]
    left, right, above, below = (shapes.RELATION_NAMES.index(r) for r in
                                 ("to the left of", "to the right of", "above", "below"))
    swap = (relation == right) | (relation == below)  # the first-named object is right/below
    first, second = swap.long(), 1 - swap.long()  # [B] object index of A and of B
    rows = torch.arange(len(scenes))
    canon = torch.where(relation == right, left, torch.where(relation == below, above, relation))
    return {"a_colour": scenes.colour[rows, first], "a_shape": scenes.shape[rows, first],
            "b_colour": scenes.colour[rows, second], "b_shape": scenes.shape[rows, second],
            "relation": canon}


def scene_targets(scenes: shapes.Scenes) -> dict[str, torch.Tensor]:
    """Every head's target ``[B]`` for a batch of one- or two-object scenes (IGNORE where n/a)."""
    B = len(scenes)
    out = {name: torch.full((B,), IGNORE, dtype=torch.long) for name in HEADS}
    out["n_objects"] = torch.full((B,), scenes.n_objects - 1, dtype=torch.long)
    if scenes.n_objects == 1:
        out.update(colour=scenes.colour[:, 0], shape=scenes.shape[:, 0], size=scenes.size[:, 0],
                   position=scenes.position)
    else:
        out.update(canonical_pairs(scenes))
    return out


def judge_batch(n: int, gen: torch.Generator, pair_fraction: float = 0.5, max_noise: float = 0.05,
                hue_jitter: float = 10.0, sv_jitter: float = 0.15, resolution: int = 32):
    """``n`` training images ``[n, 3, R, R]`` of every pair (split "all") and their targets."""
    images, targets = [], []
    n_pairs = round(n * pair_fraction)
    for count, k in ((n - n_pairs, 1), (n_pairs, 2)):
        if count:
            scenes = shapes.sample_scenes(count, gen, n_objects=k, split="all")
            scenes = shapes.recolour(scenes, gen, hue_jitter=hue_jitter, sv_jitter=sv_jitter)
            images.append(shapes.render(scenes, resolution))
            targets.append(scene_targets(scenes))
    images = torch.cat(images)
    sigma = max_noise * torch.rand(n, 1, 1, 1, generator=gen)  # per image, in [0, max_noise]
    images = (images + sigma * torch.randn(images.shape, generator=gen)).clamp(0, 1)
    return images, {k: torch.cat([t[k] for t in targets]) for k in HEADS}


def judge_loss(model: nn.Module, batch) -> tuple[torch.Tensor, dict]:
    """Summed cross-entropy over the heads that apply to each image."""
    images, targets = batch
    logits = model(images)
    losses = {k: F.cross_entropy(logits[k].float(), targets[k], ignore_index=IGNORE)
              for k in HEADS if (targets[k] != IGNORE).any()}
    return sum(losses.values()), {k: v.item() for k, v in losses.items() if k in ("colour", "relation")}


@dataclass
class JudgeData:
    batch_size: int = 128
    max_noise: float = 0.05  # Gaussian pixel noise, std drawn in [0, max_noise] per image


@dataclass
class JudgeRecipe:
    """How ``judge-shapes`` is trained: ``unclip-lite train judge --config shapes``."""

    model: JudgeConfig = field(default_factory=JudgeConfig)
    data: JudgeData = field(default_factory=JudgeData)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, lr=3e-3, warmup=100, weight_decay=0.05, precision="fp32", log_every=50))


RECIPES = {"shapes": JudgeRecipe}


def train_judge(recipe: JudgeRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                max_minutes: float | None = None, live_plot: bool = False) -> tuple[JudgeBundle, Trainer]:
    """Train a judge with the shared trainer; returns ``(bundle, trainer)``.

    Batch ``i`` is a pure function of ``(seed, i)``: half one-object, half two-object scenes.
    """
    recipe = recipe or JudgeRecipe()
    seed, data = recipe.train.seed, recipe.data
    torch.manual_seed(seed)
    judge = ShapesJudge(recipe.model)

    def batches(index: int, rank: int = 0, world: int = 1):
        gen = torch.Generator().manual_seed(seed * 1_000_003 + index * world + rank)
        return judge_batch(data.batch_size // world, gen, max_noise=data.max_noise,
                           resolution=judge.config.image_size)

    trainer = Trainer(judge, judge_loss, batches, recipe.train, out_dir=out_dir, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    return JudgeBundle(judge.eval(), extra={"recipe": asdict(recipe)}), trainer


@torch.no_grad()
def judge_scenes(judge: ShapesJudge, images: torch.Tensor, batch_size: int = 500) -> dict[str, torch.Tensor]:
    """The judge's reading of ``images`` ``[B, 3, R, R]``: ``{head: predicted index [B]}``.

    ``n_objects`` is 1 or 2; read single-object heads where it is 1, pair heads (canonical,
    see the module docstring) where it is 2. Deterministic: eval mode, no randomness.
    """
    judge.check_images(images)
    judge.eval()
    parts = [judge(images[i:i + batch_size].float()) for i in range(0, len(images), batch_size)]
    out = {k: torch.cat([p[k] for p in parts]).argmax(1) for k in HEADS}
    out["n_objects"] = out["n_objects"] + 1
    return out


def grade(judge: ShapesJudge, images: torch.Tensor, scenes: shapes.Scenes) -> dict[str, torch.Tensor]:
    """Per image, does the judge see what ``scenes`` say should be there? ``{attr: [B] bool}``.

    ``joint`` needs the object count and every attribute right (for one object colour,
    shape and position; for two, both objects and the relation; ``objects``: both
    objects' colour and shape, ignoring the relation).
    """
    pred, want = judge_scenes(judge, images), scene_targets(scenes)
    single = scenes.n_objects == 1
    ok = {k: pred[k] == want[k] for k in (SINGLE_HEADS if single else PAIR_HEADS)}
    ok["n_objects"] = pred["n_objects"] == scenes.n_objects
    if not single:
        ok["objects"] = torch.stack([ok[k] for k in PAIR_HEADS[:4]]).all(0)
    graded = ("colour", "shape", "position") if single else PAIR_HEADS  # size: reported only
    ok["joint"] = torch.stack([ok["n_objects"]] + [ok[k] for k in graded]).all(0)
    return ok


def reads_as(judge: ShapesJudge, images: torch.Tensor, caption: str) -> torch.Tensor:
    """``[N]`` bool: the judge reads each image as exactly ``caption`` — one object of its colour
    and shape, or two objects with their colours, shapes and relation (in canonical form)."""
    want, seen = shapes.parse_caption(caption), judge_scenes(judge, images)
    objects = want["objects"]
    if any("colour" not in o or "shape" not in o for o in objects):
        raise ValueError(f"reads_as needs a colour and a shape for every object, got {caption!r}")
    if len(objects) == 1:
        return ((seen["n_objects"] == 1) & (seen["colour"] == shapes.colour_index(objects[0]["colour"]))
                & (seen["shape"] == shapes.shape_index(objects[0]["shape"])))
    a, b = objects
    relation = want["relation"]
    flipped = {"to the right of": "to the left of", "below": "above"}
    if relation in flipped:  # the judge names the left / top object A: "x right of y" is "y left of x"
        a, b, relation = b, a, flipped[relation]
    ok = (seen["n_objects"] == 2) & (seen["relation"] == shapes.RELATION_NAMES.index(relation))
    for k, obj in (("a", a), ("b", b)):
        ok &= (seen[f"{k}_colour"] == shapes.colour_index(obj["colour"])) & (seen[f"{k}_shape"] == shapes.shape_index(obj["shape"]))
    return ok


def evaluate_judge(judge: ShapesJudge, n: int = 2000, seed: int = 1, noise: float = 0.1) -> dict:
    """Accuracy on fresh clean renders (``n`` per set, seeds apart from training's).

    Keys ``{single,pair}_{split}[_noisy]_{attr}``: split "all" or "heldout" (held-out
    colour×shape pairs only); ``_noisy`` adds Gaussian pixel noise of std ``noise``.
    """
    metrics = {}
    for k, name in ((1, "single"), (2, "pair")):
        for split in ("all", "heldout"):
            gen = torch.Generator().manual_seed(777_767_777 + 1009 * seed + 10 * k + len(split))
            scenes = shapes.sample_scenes(n, gen, n_objects=k, split=split)
            clean = shapes.render(scenes, judge.config.image_size)
            noisy = (clean + noise * torch.randn(clean.shape, generator=gen)).clamp(0, 1)
            for suffix, images in (("", clean), ("_noisy", noisy)):
                for attr, ok in grade(judge, images, scenes).items():
                    metrics[f"{name}_{split}{suffix}_{attr}"] = round(ok.float().mean().item(), 4)
    return metrics


@dataclass
class JudgeBundle(Bundle):
    """The judge as a checkpoint: its config is :class:`JudgeConfig`'s fields, nothing else."""

    kind = "judge"
    model: ShapesJudge
    extra: dict = field(default_factory=dict)  # not saved: the shipped judge's config is JudgeConfig alone
    manifest: dict = field(default_factory=dict)

    def config_dict(self) -> dict:
        return asdict(self.model.config)

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> JudgeBundle:
        judge = ShapesJudge(config_from_dict(JudgeConfig, config))
        if state_dict is not None:
            load_state_into(judge, state_dict, source)
        return cls(judge.eval())


def load_judge(name_or_path: str | Path = "judge-shapes") -> ShapesJudge:
    """A trained judge from the registry (``"judge-shapes"``) or a path, in eval mode."""
    return JudgeBundle.load(name_or_path).model


def main(argv: list[str] | None = None) -> None:
    """``python -m unclip_lite.judge --steps N``: how ``judge-shapes`` was first made; the same
    as ``unclip-lite train judge --config shapes --set steps=N``, which records the same manifest."""
    import argparse

    p = argparse.ArgumentParser(description=main.__doc__)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--out", default="data/checkpoints/judge-shapes")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    recipe = JudgeRecipe()
    recipe.train = replace(recipe.train, steps=args.steps, lr=args.lr, seed=args.seed)
    recipe.data.batch_size = args.batch_size
    bundle, trainer = train_judge(recipe)
    metrics = evaluate_judge(bundle.model, n=args.eval_n)
    print("\n".join(f"{k}: {v}" for k, v in metrics.items()))
    command = "python -m unclip_lite.judge " + shlex.join(sys.argv[1:] if argv is None else argv)
    path = bundle.save(Path(args.out), manifest={**manifest_for(trainer, command, metrics),
                                                 "batch_size": args.batch_size})
    print(f"saved {path} after {trainer.elapsed:.0f} s")


if __name__ == "__main__":
    main()
