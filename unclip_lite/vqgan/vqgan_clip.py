"""VQGAN-CLIP: steer a VQGAN's latent grid until CLIP says the picture matches the prompts.

Crowson et al. 2022, "VQGAN-CLIP: Open Domain Image Generation and Editing with Natural
Language Guidance", §2. Nothing is trained. A latent grid z (the shape of the encoder's
output, ``[1, D, h, w]``) is the only parameter; every Adam step

1. quantises z to its nearest codes with the straight-through estimator (so the decoder
   sees codebook vectors, as it did in training, while the gradient reaches z);
2. decodes an image, and cuts ``cutn`` random squares out of it (random size, skewed by
   ``cut_pow``, random offset), each resampled to the CLIP's input size, with a little noise;
3. embeds the cutouts with CLIP's image tower and pulls them toward each prompt's text
   embedding by the squared spherical (great-circle) distance ``2·arcsin(‖x̂ − ŷ‖/2)²``,
   weighted per prompt (a negative weight pushes away);
4. clamps z to the codebook's range per dimension, so it cannot drift where no code lies.

The cutouts are the method's augmentation: one view invites an adversarial pattern that
only CLIP sees; many random crops must all read as the prompt (compare CLIPDraw, chapter 03).

    clip, vqgan = load_clip("clip-shapes-tiny"), VQGANBundle.load(path)
    image, history = vqgan_clip(vqgan, clip, ["a red star", "a blue circle:-0.5"], VQGANClipConfig())

Differences from the reference notebooks (Crowson's Colab): cutouts smaller than the CLIP's
input are allowed (``min_cut_fraction``; with a 32 px VQGAN and a 32 px CLIP the reference's
rule would make every cutout the whole image), bilinear rather than Lanczos resampling,
noise but no flips or affine warps, no prompt "stop" thresholds.
"""
from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unclip_lite.clipdraw.optimize import _target, clip_scores, image_encoder, resize
from unclip_lite.data import shapes
from unclip_lite.judge import judge_scenes
from unclip_lite.vqgan.bundle import to_model_range
from unclip_lite.vqgan.model import VQGAN, lookup, straight_through_quantize


@dataclass
class VQGANClipConfig:
    steps: int = 100
    lr: float = 0.1  # Adam on z, the reference notebooks' step size
    cutn: int = 8  # cutouts per step (the notebooks: 32–64; 8 keeps a CPU step short)
    cut_pow: float = 1.0  # cutout side = min + u^cut_pow · (max − min), u ~ U(0, 1): > 1 favours small cuts
    # smallest cutout side as a fraction of the image. The Shapes CLIP has only seen whole
    # 32 px scenes, so cutouts stay large: a magnified quarter of a scene is a world it never saw.
    min_cut_fraction: float = 0.75
    noise: float = 0.1  # per cutout, Gaussian pixel noise of std drawn in [0, noise] (the notebooks' noise_fac)
    init_weight: float = 0.0  # with an init image: + init_weight · ‖z − z_init‖² / 2 keeps the edit near it
    seed: int = 0

    def __post_init__(self):
        if self.steps < 0 or self.cutn < 1:
            raise ValueError(f"steps must be >= 0 and cutn >= 1; got {self.steps}, {self.cutn}")
        if not 0 < self.min_cut_fraction <= 1:
            raise ValueError(f"min_cut_fraction must be in (0, 1]; got {self.min_cut_fraction}")
        if self.cut_pow <= 0 or self.noise < 0 or self.lr <= 0:
            raise ValueError(f"need cut_pow > 0, noise >= 0, lr > 0; got {self.cut_pow}, {self.noise}, {self.lr}")


def parse_prompt(prompt: str) -> tuple[str, float]:
    """``"a red star:1.5"`` → ``("a red star", 1.5)``; no ``:`` → weight 1; negative weights allowed."""
    text, sep, weight = prompt.rpartition(":")
    if not sep:
        text, weight = prompt, "1"
    text = text.strip()
    try:
        value = float(weight)
    except ValueError:
        raise ValueError(f"prompt {prompt!r}: the weight after the last ':' must be a number "
                         f"(e.g. 'a red star:1.5' or 'a red star:-0.5'); got {weight.strip()!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"prompt {prompt!r}: the weight must be finite, got {value}")
    if not text:
        raise ValueError(f"prompt {prompt!r} has no text before its weight")
    return text, value


def spherical_distance_loss(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``2·arcsin(‖x̂ − ŷ‖/2)²`` ``[N, M]`` between the rows of ``x [N, E]`` and ``y [M, E]`` (normalised here).

    For unit vectors ‖x̂ − ŷ‖ = 2 sin(θ/2), so this is θ²/2 with θ = arccos(x̂·ŷ) the angle
    between them: the squared great-circle distance, halved. Unlike ``arccos`` it has a
    finite gradient at θ = 0.
    """
    x, y = F.normalize(x.float(), dim=-1), F.normalize(y.float(), dim=-1)
    return 2 * ((x[:, None] - y[None]).norm(dim=-1) / 2).clamp(max=1).arcsin().pow(2)


class _ClampWithGrad(torch.autograd.Function):
    """``clamp`` whose gradient still flows where it would move the value back into range
    (the notebooks' ``ClampWithGrad``): a saturated pixel is not a dead end for the optimiser."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, low: float, high: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.low, ctx.high = low, high
        return x.clamp(low, high)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (x,) = ctx.saved_tensors
        # descent moves x by −grad: keep the gradient unless that moves x further out of range
        inward = grad * (x - x.clamp(ctx.low, ctx.high)) >= 0
        return grad * inward, None, None


def clamp_with_grad(x: torch.Tensor, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
    return _ClampWithGrad.apply(x, low, high)


def check_sizes(image_size: int, clip_size: int) -> None:
    """A clear error when an ``image_size`` image is smaller than the CLIP's ``clip_size`` input."""
    if image_size < clip_size:
        raise ValueError(f"the VQGAN draws {image_size} px images but the CLIP reads {clip_size} px: every "
                         f"cutout would be upsampled blur; use a VQGAN with image_size >= {clip_size}")


def make_cutouts(image: torch.Tensor, cut_size: int, cutn: int, generator: torch.Generator,
                 cut_pow: float = 1.0, min_cut_fraction: float = 0.75, noise: float = 0.0) -> torch.Tensor:
    """``cutn`` random square crops ``[cutn, 3, cut_size, cut_size]`` of ``image`` ``[3, R, R]`` (differentiable).

    Side ``s = min + u^cut_pow · (R − min)`` with ``min = max(1, round(min_cut_fraction · R))``,
    offset uniform; shrunk by area averaging (antialiased), enlarged bilinearly.
    """
    if image.ndim != 3:
        raise ValueError(f"image must be [3, R, R]; got {tuple(image.shape)}")
    side = image.shape[-1]
    check_sizes(side, cut_size)
    low = max(1, round(min_cut_fraction * side))
    cuts = []
    for _ in range(cutn):
        size = int(torch.rand((), generator=generator) ** cut_pow * (side - low) + low)
        y = int(torch.randint(0, side - size + 1, (), generator=generator))
        x = int(torch.randint(0, side - size + 1, (), generator=generator))
        cut = image[None, :, y:y + size, x:x + size]  # [1, 3, s, s]
        if size > cut_size:
            cut = F.adaptive_avg_pool2d(cut, cut_size)
        elif size < cut_size:
            cut = F.interpolate(cut, size=(cut_size, cut_size), mode="bilinear", align_corners=False)
        cuts.append(cut)
    cuts_t = torch.cat(cuts)  # [cutn, 3, S, S]
    if noise:
        sigma = noise * torch.rand(cutn, 1, 1, 1, generator=generator).to(cuts_t)
        cuts_t = cuts_t + sigma * torch.randn(cuts_t.shape, generator=generator).to(cuts_t)
    return cuts_t


def _model(vqgan) -> VQGAN:
    """The network of a :class:`~unclip_lite.vqgan.bundle.VQGANBundle`, or a VQGAN itself."""
    return vqgan.model if hasattr(vqgan, "config_dict") else vqgan


def initial_latent(model: VQGAN, generator: torch.Generator, init_image: torch.Tensor | None = None) -> torch.Tensor:
    """z ``[1, D, h, w]``: the codes of ``init_image`` ``[3, R, R]`` in [0, 1], or random codes (the notebooks')."""
    c = model.config
    if init_image is not None:
        want = (c.channels, c.image_size, c.image_size)
        if init_image.ndim == 4 and init_image.shape[0] == 1:
            init_image = init_image[0]
        if tuple(init_image.shape) != want:
            raise ValueError(f"init image must be {list(want)} in [0, 1] (this VQGAN's size); got "
                             f"{list(init_image.shape)}: resize it first")
        with torch.no_grad():
            z_q, _, _ = model.encode(to_model_range(init_image[None].to(model.codebook)))
        return z_q  # [1, D, h, w]
    side = c.latent_size
    indices = torch.randint(c.n_codes, (1, side, side), generator=generator).to(model.codebook.device)
    return lookup(indices, model.codebook.detach())  # [1, D, h, w]


def decode_latent(model: VQGAN, z: torch.Tensor) -> torch.Tensor:
    """z ``[1, D, h, w]`` → quantise (straight-through) → decode → ``[1, 3, R, R]`` in [0, 1]."""
    z_q, _ = straight_through_quantize(z, model.codebook.detach())
    return clamp_with_grad((model.decode(z_q) + 1) / 2)


def vqgan_clip(vqgan, clip, prompts: Sequence[str], config: VQGANClipConfig | None = None,
               init_image: torch.Tensor | None = None, progress: bool = False) -> tuple[torch.Tensor, list[dict]]:
    """Generate an image for weighted ``prompts`` (``"text:weight"``) by optimising a VQGAN latent (§2).

    Returns the image ``[3, R, R]`` in [0, 1] and a history of ``{"step", "loss", "clip_score"}``
    per step, ``clip_score`` being the mean cosine between the positive prompts and the whole
    (un-cut) image **before** that step's update.
    """
    config = config or VQGANClipConfig()
    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        raise ValueError("vqgan_clip needs at least one prompt")
    model = _model(vqgan)
    size, clip_size = model.config.image_size, int(clip.image_size)
    check_sizes(size, clip_size)
    parsed = [parse_prompt(p) for p in prompts]
    device = model.codebook.device
    texts, weights = [t for t, _ in parsed], torch.tensor([w for _, w in parsed], device=device)
    positive = weights > 0
    was_training = (model.training, clip.model.training)
    model.eval()
    clip.model.eval()
    encode = image_encoder(clip)
    z_text = clip.embed_text(texts).to(device).float()  # [P, E] unit vectors (encode_texts on a CLIPBundle)
    generator = torch.Generator().manual_seed(config.seed)

    z_init = initial_latent(model, generator, init_image)  # [1, D, h, w]
    z = z_init.clone().requires_grad_(True)
    codebook = model.codebook.detach()  # [K, D]
    z_min, z_max = codebook.min(0).values.view(1, -1, 1, 1), codebook.max(0).values.view(1, -1, 1, 1)
    optimizer = torch.optim.Adam([z], lr=config.lr)
    history: list[dict] = []
    bar = tqdm(range(config.steps), disable=not progress, desc="VQGAN-CLIP")
    for step in bar:
        image = decode_latent(model, z)  # [1, 3, R, R]
        cuts = make_cutouts(image[0], clip_size, config.cutn, generator, config.cut_pow,
                            config.min_cut_fraction, config.noise)  # [cutn, 3, S, S]
        distances = spherical_distance_loss(encode(cuts), z_text)  # [cutn, P]
        loss = (distances.mean(0) * weights).sum()
        if init_image is not None and config.init_weight:
            loss = loss + config.init_weight * F.mse_loss(z, z_init) / 2
        optimizer.zero_grad(set_to_none=True)
        loss.backward(inputs=[z])  # only z: no gradient is stored on the VQGAN or the CLIP
        optimizer.step()
        with torch.no_grad():
            whole = encode(resize(image.detach(), clip_size)).float()  # [1, E]
            score = float((whole @ z_text[positive].T).mean()) if positive.any() else float("nan")
            z.copy_(torch.maximum(torch.minimum(z, z_max), z_min))  # stay where the codes are
        history.append({"step": step, "loss": float(loss.detach()), "clip_score": score})
        if progress and step % 10 == 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", clip=f"{score:.3f}")
    with torch.no_grad():
        image = decode_latent(model, z)[0]  # [3, R, R]
    model.train(was_training[0])
    clip.model.train(was_training[1])
    return image.detach(), history


def evaluate_vqgan_clip(vqgan, clip, judge, config: VQGANClipConfig | None = None,
                        prompts: Sequence[str | tuple[str, str]] | None = None, seeds: Sequence[int] = (0, 1),
                        progress: bool = False) -> dict:
    """VQGAN-CLIP on every ``"a {colour} {shape}"`` prompt (40 by default) × ``seeds``, read by
    CLIP and by the Shapes judge — the keys of :func:`~unclip_lite.clipdraw.optimize.evaluate_clipdraw`:

    ``clip_score`` (cosine of the final image with its prompt), ``clip_score_init`` (of the
    random-code start), ``colour`` / ``shape`` / ``joint`` (the judge's single-object reading
    agrees with the prompt), ``one_object`` (the judge counts one object), ``seconds`` (total),
    ``seconds_per_image``, ``n``, ``images`` ``[n, 3, R, R]``.
    """
    config = config or VQGANClipConfig()
    pairs = prompts if prompts is not None else [(c, s) for c in shapes.COLOURS for s in shapes.SHAPES]
    targets = [_target(p) for p in pairs]
    judge = getattr(judge, "model", judge)  # a JudgeBundle or the ShapesJudge itself
    start, images, init_scores, rows = time.perf_counter(), [], [], []
    for prompt, colour, shape in tqdm(targets, disable=not progress, desc="VQGAN-CLIP"):
        for seed in seeds:
            image, history = vqgan_clip(vqgan, clip, [prompt], replace(config, seed=seed))
            images.append(image.cpu())
            rows.append((prompt, colour, shape))
            if history:
                init_scores.append(history[0]["clip_score"])
    seconds = time.perf_counter() - start
    images_t = torch.stack(images)  # [n, 3, R, R]
    texts = [r[0] for r in rows]
    want_colour, want_shape = torch.tensor([r[1] for r in rows]), torch.tensor([r[2] for r in rows])
    read = judge_scenes(judge, resize(images_t, judge.config.image_size).clamp(0, 1))
    colour_ok, shape_ok = read["colour"] == want_colour, read["shape"] == want_shape
    final = clip_scores(clip, images_t, texts)  # [n]
    return {"clip_score": float(final.mean()),
            "clip_score_init": float(torch.tensor(init_scores).mean()) if init_scores else float(final.mean()),
            "colour": float(colour_ok.float().mean()), "shape": float(shape_ok.float().mean()),
            "joint": float((colour_ok & shape_ok).float().mean()),
            "one_object": float((read["n_objects"] == 1).float().mean()),
            "seconds": seconds, "seconds_per_image": seconds / max(1, len(rows)), "n": len(rows),
            "images": images_t}


__all__ = ["VQGANClipConfig", "check_sizes", "clamp_with_grad", "decode_latent", "evaluate_vqgan_clip",
           "initial_latent", "make_cutouts", "parse_prompt", "spherical_distance_loss", "vqgan_clip"]
