"""How a Shapes VQGAN is trained and measured (Esser et al. 2021 §3.1, eq. 4–7).

The objective of one step, for a batch x in [-1, 1] and x̂ = G(q(E(x))):

* generator: ``L1(x, x̂) + L_VQ + λ · (−mean D(x̂))`` — eq. 4 with L1 in place of its
  reconstruction term (the paper uses a perceptual loss: no LPIPS weights here), plus the
  adversarial term of eq. 5–6 in taming's hinge form, λ the adaptive weight of eq. 7 (taming's
  ``disc_weight`` times the ratio of gradient norms at the decoder's last layer);
* discriminator: the hinge loss ``½ mean relu(1 − D(x)) + ½ mean relu(1 + D(sg[x̂]))``.

Both adversarial terms switch on at ``disc_start`` (taming waits too: a critic trained
against blurry early reconstructions wins too easily, and its gradient then only adds noise).

**Two players, one trainer.** The shared :class:`~unclip_lite.train.Trainer` drives one
module with one AdamW; a GAN has two optimisers. We put generator and discriminator in
one module (:class:`VQGANTraining`) and return the *sum* of the two losses, each of which
reaches only its own player's weights:

* the discriminator's hinge loss reads ``x̂.detach()``: no gradient into the generator;
* the generator's ``−D(x̂)`` is computed with the discriminator's parameters frozen
  (``requires_grad_(False)`` for that forward pass): its gradient flows *through* D into x̂
  but is stored on no parameter of D.

AdamW updates every parameter from its own gradient and moments, so one AdamW over both
players' disjoint gradients is exactly two AdamWs with the same hyperparameters (a separate
learning rate for D: ``disc_lr_ratio``, through the trainer's ``lr_multipliers``). One thing
*would* couple them — the trainer's global gradient-norm clipping — so the recipe sets
``grad_clip=None`` (taming does not clip either). This keeps resume, precision, accumulation
and the recorded recipe identical to every other model of the course; the test
``test_each_player_gets_only_its_own_gradient`` checks the separation against losses
computed one by one.
"""
from __future__ import annotations

import contextlib
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

from unclip_lite.data import shapes
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.vqgan.bundle import VQGANBundle, to_model_range
from unclip_lite.vqgan.model import (VQGAN, PatchDiscriminator, VQGANConfig, adaptive_weight,
                                     generator_adversarial_loss, hinge_d_loss, perplexity)


@dataclass
class VQGANData:
    """The training stream: Shapes renders, a quarter of them two-object scenes."""

    batch_size: int = 32
    two_object_fraction: float = 0.25
    # CLIP's colour jitter: a codebook that has seen a range of hues per colour name can
    # draw what VQGAN-CLIP asks of it, not only the renderer's exact palette
    hue_jitter: float = 10.0
    sv_jitter: float = 0.15
    seed: int = 0


@dataclass
class VQGANRecipe:
    """How a Shapes VQGAN is trained: ``train_vqgan(VQGANRecipe())``.

    Adam betas (0.5, 0.9) as taming (GAN training likes a short first-moment memory); no
    weight decay: it would pull the codebook towards 0, away from the encoder's outputs;
    no gradient clipping: it would couple the two players (module docstring).
    """

    model: VQGANConfig = field(default_factory=VQGANConfig)
    data: VQGANData = field(default_factory=VQGANData)
    disc_lr_ratio: float = 1.0  # discriminator lr / generator lr (taming: 1)
    # 1,200 steps of batch 32, fp32: 41 min on the 2-core AMD EPYC (829 steps on one thread beside
    # another job, the rest on two). 550 steps were too few: colours were lost (see disc_start)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=1200, lr=4e-4, betas=(0.5, 0.9), weight_decay=0.0, warmup=50, min_lr_ratio=0.1,
        grad_clip=None, precision="auto", log_every=25, checkpoint_every=100))


@contextlib.contextmanager
def frozen(module: nn.Module):
    """Within the block, no gradient is stored on ``module``'s parameters (it still flows through it)."""
    flags = [p.requires_grad for p in module.parameters()]
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags):
            p.requires_grad_(flag)


class VQGANTraining(nn.Module):
    """The generator (:class:`VQGAN`) and its critic in one module, for the one-model trainer.

    Its ``forward`` is the training loss, so that a ``DistributedDataParallel`` wrapper sees
    the whole step (not tried under ``torchrun``: before ``disc_start`` the critic's
    parameters get no gradient, which DDP only accepts with ``find_unused_parameters``).
    """

    def __init__(self, vqgan: VQGAN, discriminator: PatchDiscriminator, disc_lr_ratio: float = 1.0):
        super().__init__()
        self.vqgan, self.discriminator = vqgan, discriminator
        # read by the trainer's param_groups: the critic's parameters train at this multiple of lr
        self.lr_multipliers = {"discriminator.": disc_lr_ratio} if disc_lr_ratio != 1.0 else {}

    def forward(self, images: torch.Tensor, step: int) -> tuple[torch.Tensor, dict]:
        """The summed generator + discriminator loss of ``images`` ``[B, 3, R, R]`` in [-1, 1] at ``step``."""
        vqgan, critic = self.vqgan, self.discriminator
        c = vqgan.config
        images = images.to(vqgan.codebook.device)
        recon, vq_loss, info = vqgan(images, step)  # [B, 3, R, R]; step times the codebook's restarts
        rec_loss = (images - recon).abs().float().mean()
        loss = rec_loss + vq_loss
        logs = {"l1": rec_loss.item(), "vq": vq_loss.item(), "perplexity": info["perplexity"].item()}
        if step >= c.disc_start:
            with frozen(critic):  # the generator's term: a gradient for G, none stored on D
                g_loss = generator_adversarial_loss(critic(recon).float())
            weight = adaptive_weight(rec_loss, g_loss, vqgan.decoder.last_layer, c.disc_weight)
            d_loss = hinge_d_loss(critic(images).float(), critic(recon.detach()).float())  # no gradient into G
            loss = loss + weight * g_loss + d_loss
            logs.update(g_loss=g_loss.item(), d_loss=d_loss.item(), adaptive_weight=weight.item())
        return loss, logs


def vqgan_step(model: VQGANTraining, batch: tuple[torch.Tensor, int]) -> tuple[torch.Tensor, dict]:
    """The trainer's loss function: ``batch`` is ``(images in [-1, 1], optimiser step)``."""
    images, step = batch
    return model(images, step)


def vqgan_batches(config: VQGANConfig, data: VQGANData, accumulate: int = 1):
    """``batches(index, rank, world) -> (images in [-1, 1], optimiser step)``: rank r takes its
    slice; the step (micro-step index // accumulate) tells the loss when the critic starts and
    the quantiser when to restart dead codes — a function of the index, so a resumed run agrees."""
    stream = shapes.ShapesStream(data.batch_size, config.image_size, seed=data.seed,
                                 two_object_fraction=data.two_object_fraction,
                                 hue_jitter=data.hue_jitter, sv_jitter=data.sv_jitter)

    def batches(index: int, rank: int = 0, world: int = 1):
        images, _, _ = stream.batch(index)  # [B, 3, R, R] in [0, 1]
        mine = slice(rank * len(images) // world, (rank + 1) * len(images) // world)
        return to_model_range(images[mine]), index // accumulate

    return batches


def new_training_module(recipe: VQGANRecipe) -> VQGANTraining:
    torch.manual_seed(recipe.train.seed)
    return VQGANTraining(VQGAN(recipe.model), PatchDiscriminator(recipe.model), recipe.disc_lr_ratio)


def train_vqgan(recipe: VQGANRecipe | None = None, out_dir: str | Path | None = None, resume: bool = True,
                max_minutes: float | None = None, live_plot: bool = False) -> tuple[VQGANBundle, Trainer]:
    """Train a Shapes VQGAN with the shared trainer (resuming from ``out_dir`` if a state is
    there); returns ``(bundle, trainer)``, the bundle holding the generator and the recipe."""
    recipe = recipe or VQGANRecipe()
    model = new_training_module(recipe)
    batches = vqgan_batches(recipe.model, recipe.data, recipe.train.accumulate)
    trainer = Trainer(model, vqgan_step, batches, recipe.train, out_dir=out_dir, live_plot=live_plot)
    if resume and out_dir:
        trainer.resume()
    trainer.fit(max_minutes=max_minutes)
    return VQGANBundle(model.vqgan.eval(), extra={"recipe": asdict(recipe)}), trainer


def psnr(images: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of images in [0, 1] against ``reference``, per image ``[B]``."""
    mse = ((images - reference) ** 2).flatten(1).mean(1).clamp(min=1e-10)
    return -10 * torch.log10(mse)


@torch.no_grad()
def evaluate_vqgan(bundle: VQGANBundle, n: int = 256) -> dict:
    """Reconstruction and codebook use on held-out renders (colour×shape pairs never trained on).

    ``psnr`` / ``psnr_pairs``: mean PSNR (dB) of the reconstructions of ``n`` single-object and
    ``n`` two-object held-out images; ``perplexity``: exp(entropy) of the codes used over both
    sets (the effective codebook size); ``dead_codes``: codes never chosen; ``n_params``: of the
    encoder, codebook and decoder; ``seconds``: the evaluation's wall time.
    ``judge_colour`` / ``judge_shape`` / ``judge_joint``: the Shapes judge reads the single-object
    reconstructions as the render's colour / shape / both (PSNR is dominated by the background:
    a reconstruction can score 20 dB and still lose the object's colour).
    """
    from unclip_lite.judge import judge_scenes, load_judge

    start, size, judge = time.perf_counter(), bundle.image_size, load_judge()
    metrics, indices = {}, []
    for k, name in ((1, "psnr"), (2, "psnr_pairs")):
        images, scenes = shapes.eval_set("heldout", n, resolution=size, n_objects=k)
        recon = bundle.reconstruct(images)
        metrics[name] = round(psnr(recon, images.to(recon.device)).mean().item(), 3)
        indices.append(bundle.encode(images).flatten())
        if k == 1 and size == judge.config.image_size:
            read = judge_scenes(judge, recon.cpu())
            ok = {a: read[a] == getattr(scenes, a)[:, 0] for a in ("colour", "shape")}
            metrics.update({f"judge_{a}": round(v.float().mean().item(), 4) for a, v in ok.items()})
            metrics["judge_joint"] = round((ok["colour"] & ok["shape"]).float().mean().item(), 4)
    used = torch.cat(indices)
    n_codes = bundle.config.n_codes
    metrics["perplexity"] = round(perplexity(used, n_codes).item(), 2)
    metrics["dead_codes"] = int(n_codes - torch.unique(used).numel())
    metrics["n_codes"] = n_codes
    metrics["n_params"] = sum(p.numel() for p in bundle.model.parameters())
    metrics["seconds"] = round(time.perf_counter() - start, 2)
    return metrics


__all__ = ["VQGANData", "VQGANRecipe", "VQGANTraining", "evaluate_vqgan", "frozen", "new_training_module",
           "psnr", "train_vqgan", "vqgan_batches", "vqgan_step"]
