"""How the shipped cascade ``upsampler-shapes-64`` (32 → 64, blur) and ``upsampler-shapes-128``
(64 → 128, BSR) are trained and measured (unCLIP §2.1).

Training: fresh Shapes renders at the target size, the conditioning image corrupted by the
stage's degradation at its low resolution, then one random crop half the target side (the
paper: a quarter; why not here: :func:`_stage`) per image (aligned so the low-res crop covers exactly the high-res one). v-prediction with an
SNR floor, as GLIDE's upsampler of chapter 06 (why: :mod:`unclip_lite.glide.recipes`).
The ``-clean`` recipes are the ablation: the same, with the plain downsampled render as input.

Evaluation: PSNR against the true render beside bicubic upsampling, on two inputs —
``clean`` (the render downsampled, what a perfect base model would give) and ``below`` (what
the stage below actually makes: for the first stage the decoder's own re-draw of the 32 px
render, SDEdit-style, from t = 0.5 T; for the second the first upsampler's output from the
32 px render). The second column is why the degradations exist.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from unclip_lite.data import shapes
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.diffusion.samplers import ddim_sample_loop, ddim_timesteps
from unclip_lite.glide.evaluate import psnr
from unclip_lite.glide.guidance import classifier_free_guidance
from unclip_lite.glide.recipes import diffusion_loss
from unclip_lite.hardware import resolve_precision
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.unclip.decoder import DecoderBundle
from unclip_lite.unclip.degradations import DEGRADATIONS
from unclip_lite.unclip.upsampler import Upsampler, UpsamplerBundle, UpsamplerConfig, diffusion_target


@dataclass
class UpsamplerRecipe:
    model: UpsamplerConfig = field(default_factory=UpsamplerConfig)
    diffusion: DiffusionConfig = field(default_factory=lambda: DiffusionConfig(parameterization="v"))
    min_snr_gamma: float | None = 5.0
    snr_floor: float = 1.0
    batch_size: int = 64
    two_object_fraction: float = 0.25
    seed: int = 0
    # a trained stage to start from: the U-Net is fully convolutional, so the 32 -> 64 stage's weights
    # run unchanged at 64 -> 128 (and already beat bicubic there: data/experiments/upsampler-bsr.json)
    init_from: str | None = None
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1500, lr=5e-4, warmup=100, weight_decay=0.0, min_lr_ratio=0.1,
        ema_decay=0.995, log_every=25, checkpoint_every=250))


def _stage(low: int, high: int, degradation: str, batch_size: int, steps: int = 1000,
           bsr_p: float = 0.5, init_from: str | None = None, lr: float | None = None) -> Callable[[], UpsamplerRecipe]:
    # Crops half the target side, not the paper's quarter: trained on 16 px crops of 64 px images, the
    # first stage was 2.1 dB *worse* than bicubic on whole images, though on the crops themselves it
    # predicted x_0 well (at t = 900: 29.7 dB on a 16 px crop, 19.4 dB on the same pixels inside the
    # whole image) — a 16 px crop of a Shapes scene is mostly background or a piece of one object, and
    # its 4 x 4 bottleneck always sees the zero-padded border, so whole images are out of distribution
    # (data/experiments/upsampler-crops.json). The paper's crops (64 px of 256, 256 of 1024) hold far
    # more. Half the side is still a quarter of the pixels, so each step costs a quarter of a full one.
    # And the residual x - up(low_res) is diffused, not x: with x itself, 1,000 steps left the model's
    # x_0 estimate from near-pure noise at 26-29 dB, below bilinear interpolation (31.5), and its
    # samples 2.2 dB under bicubic (upsampler-crops.json, "half_crop_run").
    return lambda: UpsamplerRecipe(model=UpsamplerConfig(low, high, degradation=degradation, crop_fraction=0.5,
                                                         residual=True, bsr_p=bsr_p),
                                   batch_size=batch_size, init_from=init_from,
                                   train=replace(UpsamplerRecipe().train, steps=steps,
                                                 lr=lr or UpsamplerRecipe().train.lr))


RECIPES = {
    "shapes-64": _stage(32, 64, "blur", 32),         # the first stage: 32 -> 64, Gaussian blur
    # the second: 64 -> 128, BSR, each step with probability 0.2 (at 0.5, 97% of the inputs were corrupted and
    # the model, 600 steps, lost 5.2 dB to bicubic on clean inputs while gaining 0.1 on BSR ones). Trained
    # from scratch it still lost 3.8 dB at p = 0.2; the first stage's weights, run as they are at 64 -> 128,
    # gained 1.6 dB, so the second stage starts from them and is fine-tuned on BSR at a lower rate.
    "shapes-128": _stage(64, 128, "bsr", 16, steps=600, bsr_p=0.2, init_from="upsampler-shapes-64", lr=2e-4),
    "shapes-64-clean": _stage(32, 64, "none", 32),   # the ablation: no corruption
    "shapes-128-clean": _stage(64, 128, "none", 16, steps=600, init_from="upsampler-shapes-64", lr=2e-4),
}


def corrupted_crops(config: UpsamplerConfig, images: torch.Tensor, generator: torch.Generator
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(high [B, 3, c, c], low [B, 3, c/f, c/f])`` in [-1, 1] from ``images`` [B, 3, S, S] in [0, 1]:
    each image corrupted whole at the low resolution by the stage's degradation (BSR: an order and
    strengths of its own per image), then one random crop of ``config.crop_size`` whose corner sits
    on the low-res grid, so the low-res crop covers exactly the high-res one."""
    degrade, f, crop = DEGRADATIONS[config.degradation], config.scale, config.crop_size
    if config.degradation == "bsr":
        low = torch.cat([degrade(image[None], config.low_res_size, generator, p=config.bsr_p) for image in images])
    else:
        low = degrade(images, config.low_res_size, generator)  # [B, 3, s, s]
    cells = (config.image_size - crop) // f + 1  # crop corners on the low-res grid
    ys, xs = (torch.randint(cells, (len(images),), generator=generator) for _ in range(2))
    highs = torch.stack([im[:, y * f:y * f + crop, x * f:x * f + crop] for im, y, x in zip(images, ys, xs)])
    lows = torch.stack([lo[:, y:y + crop // f, x:x + crop // f] for lo, y, x in zip(low, ys, xs)])
    return highs * 2 - 1, lows * 2 - 1


def upsampler_batches(config: UpsamplerConfig, batch_size: int, two_object_fraction: float = 0.25, seed: int = 0):
    """``batches(index, rank, world) -> (x0 crop [B, 3, c, c], None, low-res crop [B, 3, c/f, c/f])``
    in [-1, 1] (``None``: no caption): each render degraded whole at low resolution, then cropped
    (:func:`corrupted_crops`). A pure function of the index (a resumed run sees the same batches)."""
    stream = shapes.ShapesStream(batch_size, config.image_size, seed=seed, two_object_fraction=two_object_fraction)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, _, _ = stream.batch(index)  # [B, 3, S, S] in [0, 1]
        highs, lows = corrupted_crops(config, images, torch.Generator().manual_seed(seed * 7919 + index))
        mine = slice(rank * len(images) // world, (rank + 1) * len(images) // world)
        highs, lows = highs[mine], lows[mine]
        return diffusion_target(config, highs, lows), None, lows

    return batches


def train_upsampler(recipe: UpsamplerRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                    live_plot: bool = False, max_minutes: float | None = None) -> tuple[UpsamplerBundle, Trainer]:
    """Train one cascade stage with the shared trainer; returns the bundle holding the EMA weights."""
    recipe = recipe or UpsamplerRecipe()
    torch.manual_seed(recipe.train.seed)
    bundle = UpsamplerBundle(Upsampler(recipe.model), recipe.diffusion)
    if recipe.init_from:
        start_from_stage(bundle, UpsamplerBundle.load(recipe.init_from))
    loss = diffusion_loss(bundle.diffusion, recipe.min_snr_gamma, recipe.snr_floor, third="low_res")
    trainer = Trainer(bundle.model, loss, upsampler_batches(recipe.model, recipe.batch_size,
                                                            recipe.two_object_fraction, recipe.seed),
                      recipe.train, out_dir=out_dir, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    bundle.model = trainer.averaged_model().eval()
    bundle.extra = {"recipe": asdict(recipe)}
    return bundle, trainer


ARCHITECTURE = ("model_channels", "channel_mult", "num_res_blocks", "resblock_updown", "residual")


def start_from_stage(bundle: UpsamplerBundle, trained: UpsamplerBundle) -> None:
    """Copy a trained stage's weights into ``bundle``: the sizes may differ (the U-Net is fully
    convolutional), the architecture and the parameterisation may not."""
    mine, theirs = bundle.config, trained.config
    differ = [f for f in ARCHITECTURE if getattr(mine, f) != getattr(theirs, f)]
    if differ or bundle.diffusion_config != trained.diffusion_config:
        raise ValueError(f"cannot start from a stage with another architecture: {', '.join(differ) or 'diffusion'} "
                         f"differ ({', '.join(f'{f}: {getattr(theirs, f)} vs {getattr(mine, f)}' for f in differ)})")
    bundle.model.load_state_dict(trained.model.state_dict())


# ----------------------------------------------------------------------------- measuring a stage


def eval_renders(size: int, n: int, seed: int = 0) -> tuple[torch.Tensor, list[str]]:
    """``n`` held-out-seed renders [n, 3, size, size] (half one object, half two) and their captions."""
    images, texts = [], []
    for k in (1, 2):
        part, scenes = shapes.eval_set("all", n // 2, resolution=size, n_objects=k, seed=seed)
        images.append(part)
        texts += shapes.captions(scenes, seed)
    return torch.cat(images), texts


def area(images: torch.Tensor, size: int) -> torch.Tensor:
    return F.interpolate(images, size=(size, size), mode="area")


@torch.no_grad()
def decoder_redraw(decoder: DecoderBundle, clip, images: torch.Tensor, prompts: list[str], strength: float = 0.5,
                   steps: int = 25, guidance: float = 3.0, seed: int = 0) -> torch.Tensor:
    """The decoder's own version of ``images`` [N, 3, R, R] in [0, 1] (R its size): noised to
    t = strength·T and denoised by DDIM under the caption and the images' z_i (SDEdit, Meng et al.
    2022). Same layout as the render, the decoder's textures and mistakes — a base-model sample
    with a ground truth, for measuring an upsampler on what the stage below really makes."""
    diffusion = decoder.diffusion
    t0 = int(strength * (diffusion.num_timesteps - 1))
    timesteps = [t for t in ddim_timesteps(diffusion.num_timesteps, steps * diffusion.num_timesteps // max(t0, 1))
                 if t <= t0][-steps:]
    gen = torch.Generator().manual_seed(seed)
    x0 = images * 2 - 1
    noise = torch.randn(x0.shape, generator=gen)
    x_t = diffusion.q_sample(x0, torch.full((len(x0),), timesteps[-1]), noise)
    fn = classifier_free_guidance(decoder.model, decoder.tokenize(prompts), guidance,
                                  conditioning={"image_embed": clip.encode_images(images)})
    x = ddim_sample_loop(diffusion, fn, x0.shape, timesteps=timesteps, x_T=x_t, generator=gen, progress=False)
    return ((x + 1) / 2).clamp(0, 1)


def psnr_row(upsampler: UpsamplerBundle, low: torch.Tensor, truth: torch.Tensor, respacing: str,
             precision: str, seed: int = 0) -> dict:
    """PSNR (dB) of the upsampler's samples from ``low`` and of bicubic, against ``truth``; and the samples."""
    out = upsampler.sample(low, respacing=respacing, seed=seed, precision=precision)
    bicubic = F.interpolate(low, size=truth.shape[-2:], mode="bicubic", align_corners=False).clamp(0, 1)
    row = {"psnr_upsampler": psnr(out, truth).mean().item(), "psnr_bicubic": psnr(bicubic, truth).mean().item()}
    row = {k: round(v, 3) for k, v in row.items()}
    row["gain_over_bicubic_db"] = round(row["psnr_upsampler"] - row["psnr_bicubic"], 3)
    return {**row, "_samples": out}


def evaluate_stage(upsampler: UpsamplerBundle, below: Callable[[torch.Tensor, list[str]], torch.Tensor] | None = None,
                   n: int = 64, respacing: str = "fast27", seed: int = 0, precision: str = "auto") -> dict:
    """One stage's PSNR against the render beside bicubic, on ``clean`` inputs (the render
    area-downsampled) and, given ``below(renders at the stage's input size, captions)`` → the
    stage below's output for them, on ``below`` inputs. Also seconds per image."""
    cfg = upsampler.config
    truth, texts = eval_renders(cfg.image_size, n, seed)
    start = time.perf_counter()
    clean = psnr_row(upsampler, area(truth, cfg.low_res_size), truth, respacing, precision, seed)
    seconds = (time.perf_counter() - start) / len(truth)
    metrics = {"n": len(truth), "low_res_size": cfg.low_res_size, "size": cfg.image_size,
               "degradation": cfg.degradation, "respacing": respacing,
               "precision": resolve_precision(precision, upsampler.device), "seconds_per_image": round(seconds, 3),
               "clean": {k: v for k, v in clean.items() if not k.startswith("_")}}
    if below is not None:
        row = psnr_row(upsampler, below(area(truth, cfg.low_res_size), texts), truth, respacing, precision, seed)
        metrics["below"] = {k: v for k, v in row.items() if not k.startswith("_")}
    return metrics


def stage_below(upsampler: UpsamplerBundle, decoder: str = "decoder-shapes-tiny",
                first_stage: str = "upsampler-shapes-64", precision: str = "auto"):
    """What feeds this stage in the shipped cascade, as a ``below`` for :func:`evaluate_stage`:
    the decoder's re-draw for a stage reading the decoder's size, else the shipped first stage
    applied to the render at its own input size."""
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.unclip.decoder import load_decoder

    base = load_decoder(decoder)
    if upsampler.config.low_res_size == base.image_size:
        clip = load_clip(base.clip_name)
        base.check_clip(clip)
        return lambda low, texts: decoder_redraw(base, clip, low, texts)
    first = UpsamplerBundle.load(first_stage)
    if first.config.image_size != upsampler.config.low_res_size:
        raise ValueError(f"{first_stage} makes {first.config.image_size} px images; this stage reads "
                         f"{upsampler.config.low_res_size} px")
    return lambda low, texts: first.sample(area(low, first.config.low_res_size), precision=precision)


def evaluate_upsampler(upsampler: UpsamplerBundle, n: int = 64, precision: str = "auto") -> dict:
    """``unclip-lite eval upsampler-…``: :func:`evaluate_stage` with the shipped stage below."""
    return evaluate_stage(upsampler, stage_below(upsampler, precision=precision), n=n, precision=precision)


def upsampler_quick_metrics(upsampler: UpsamplerBundle) -> dict:
    """Clean-input PSNR on 16 renders (what the training command records)."""
    metrics = evaluate_stage(upsampler, n=16)
    return {f"clean_{k}": v for k, v in metrics["clean"].items()}


def cascade_experiment(stages: dict[str, dict[str, str]], n: int | None = None, respacing: str = "fast27",
                       precision: str = "auto") -> dict:
    """The corruption ablation: for each stage (``{"32->64": {"blur": ckpt, "clean": ckpt}, …}``) every
    variant measured by :func:`evaluate_stage` on clean inputs and on the shipped stage below's output.
    A checkpoint whose manifest already holds that measurement (``unclip-lite eval … --record``, same
    respacing, and ``n`` unless ``n`` is None) is read, not re-run; otherwise ``n`` (default 64) renders."""
    from unclip_lite.checkpoints import read_manifest
    from unclip_lite.hardware import hardware

    rows = []
    for stage, variants in stages.items():
        for trained_on, checkpoint in variants.items():
            metrics = read_manifest(checkpoint).get("metrics", {})
            if not ("below" in metrics and n in (None, metrics.get("n")) and metrics.get("respacing") == respacing):
                bundle = UpsamplerBundle.load(checkpoint)
                metrics = evaluate_stage(bundle, stage_below(bundle, precision=precision), n=n or 64,
                                         respacing=respacing, precision=precision)
            for source in ("clean", "below"):
                rows.append({"stage": stage, "trained_on": trained_on, "checkpoint": str(checkpoint), "input": source,
                             "n": metrics["n"], **metrics[source]})
    return {"question": "issue 13: do the upsamplers' training corruptions (blur, BSR) help on the stage below's "
                        "output? PSNR against the render beside bicubic",
            "respacing": respacing, "hardware": hardware(),
            "created": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}


def main(argv: list[str] | None = None) -> None:
    """``python -m unclip_lite.unclip.upsampler_recipes --out data/experiments/cascade.json``: the shipped
    stages beside the ``-clean`` ablations given (``--clean STAGE=CHECKPOINT``, repeatable)."""
    import argparse
    import json
    import sys

    from unclip_lite.checkpoints import atomic_write

    parser = argparse.ArgumentParser(description=cascade_experiment.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--n", type=int, help="renders per measurement (default: as recorded, else 64)")
    parser.add_argument("--clean", action="append", default=[], help="e.g. 32->64=runs/upsampler-shapes-64-clean")
    parser.add_argument("--threads", type=int)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    stages = {"32->64": {"blur": "upsampler-shapes-64"}, "64->128": {"bsr": "upsampler-shapes-128"}}
    for spec in args.clean:
        stage, _, checkpoint = spec.partition("=")
        if stage not in stages or not checkpoint:
            raise SystemExit(f"--clean takes STAGE=CHECKPOINT with STAGE one of {', '.join(stages)}, got {spec!r}")
        stages[stage]["clean"] = checkpoint
    result = cascade_experiment(stages, n=args.n)
    result["command"] = "python -m unclip_lite.unclip.upsampler_recipes " + " ".join(sys.argv[1:] if argv is None else argv)
    text = json.dumps(result, indent=2) + "\n"
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(text))
    print(text)


if __name__ == "__main__":
    main()
