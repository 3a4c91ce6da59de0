"""Chapter 02 exercises: the contrastive loss, one CLIP training step, and using a trained CLIP.

1. the symmetric InfoNCE loss (Radford et al. 2021, Figure 3);
2. one training step: forward, loss, backward, optimiser step, then the logit scale clipped into
   [0, ln 100] (§2.5), as :class:`unclip_lite.train.Trainer` does with ``after_step=CLIP.clamp_logit_scale_``
   (tests/test_exercises_ch02.py checks the reference against the trainer);
3. prompt ensembling (§3.1.4);
4. recall@k for retrieval.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
from unclip_lite.clip.loss import clip_loss as _clip_loss
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.zeroshot import ensemble_embeddings, recall_at_k as _recall_at_k
from unclip_lite.exercises.core import Case, Exercise, compare_outputs, seeded, checker


def _unit(g, n, e):
    return F.normalize(torch.randn(n, e, generator=g), dim=-1)


# --- 1. Symmetric InfoNCE ----------------------------------------------------------------
def clip_loss(image_features: torch.Tensor, text_features: torch.Tensor, scale: float) -> torch.Tensor:
    """Reference: ½ (CE over rows + CE over columns) of ``scale · I Tᵀ``; pair i is the match."""
    return _clip_loss(image_features, text_features, scale)


def _loss_cases():
    g = seeded(0)
    yield Case((_unit(g, 4, 8), _unit(g, 4, 8), 14.3), name="random pairs")
    x = _unit(g, 5, 8)
    yield Case((x, x, 100.0), name="perfect matches")
    yield Case((_unit(g, 3, 2), _unit(g, 3, 2), 1.0), name="asymmetric logits")
    img = _unit(g, 6, 4)
    yield Case((img, F.normalize(img + torch.randn(6, 4, generator=g), dim=-1), 30.0), name="noisy matches")


EX_LOSS = Exercise("ch02.clip_loss", clip_loss, _loss_cases,
                   hint="logits = scale * img @ txt.T; labels = arange(N); average "
                        "F.cross_entropy(logits, labels) and F.cross_entropy(logits.T, labels).")


def test_clip_loss(fn) -> bool:
    return EX_LOSS.check(fn)


# --- 2. One CLIP training step ---------------------------------------------------------------
def clip_train_step(model: CLIP, optimizer: torch.optim.Optimizer, images: torch.Tensor,
                    tokens: torch.Tensor) -> torch.Tensor:
    """Reference: one optimiser step of CLIP on a batch of N pairs, images ``[N, 3, S, S]`` (normalised
    pixels) and tokens ``[N, L]``; returns the loss before the step (a 0-d tensor, detached).

    The gradients are cleared first (they accumulate otherwise), and the temperature parameter
    ``logit_scale`` is clipped into [0, ln 100] *after* the step, as OpenAI and open_clip do (§2.5):
    the forward pass already caps exp(logit_scale) at 100, the clamp keeps the parameter from drifting
    above the cap where its gradient is zero."""
    optimizer.zero_grad(set_to_none=True)
    image_features, text_features, scale = model(images, tokens)  # [N, E], [N, E], ()
    loss = _clip_loss(image_features, text_features, scale)
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))
    return loss.detach()


def tiny_clip_config() -> CLIPConfig:
    """A CLIP small enough to train a few steps in milliseconds: 8 px images, 6-token captions."""
    return CLIPConfig(embed_dim=16, vision=VisionConfig(image_size=8, layers=1, width=16, heads=2, patch_size=4),
                      text=TextConfig(context_length=6, vocab_size=12, width=16, heads=2, layers=1, eot_token_id=2))


def tiny_clip_batch(g: torch.Generator, n: int, config: CLIPConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch for :func:`tiny_clip_config`: images ``[n, 3, 8, 8]``, captions ``[n, 6]``
    of 1 to 4 word ids (4..11), then [EOT] (id 2) and padding (0)."""
    images = torch.randn(n, 3, config.vision.image_size, config.vision.image_size, generator=g)
    L = config.text.context_length
    tokens = torch.zeros(n, L, dtype=torch.long)
    for i in range(n):
        k = int(torch.randint(1, L - 1, (), generator=g))
        tokens[i, :k] = torch.randint(4, config.text.vocab_size, (k,), generator=g)
        tokens[i, k] = config.text.eot_token_id
    return images, tokens


class _TrainStepExercise(Exercise):
    """Drives a candidate step on a freshly seeded tiny CLIP and optimiser for a few batches; returns
    the losses it reports and every parameter afterwards (logit_scale included)."""

    def run(self, fn, case):
        optimizer_name, lr, start_scale, n_steps, batch = case.args
        config = tiny_clip_config()
        torch.manual_seed(0)
        model = CLIP(config)
        with torch.no_grad():
            if start_scale is not None:
                model.logit_scale.fill_(start_scale)
        optimizer = (torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1, eps=1e-4)
                     if optimizer_name == "adamw" else torch.optim.SGD(model.parameters(), lr=lr, momentum=0.5))
        g = seeded(20 + n_steps)
        losses = []
        for _ in range(n_steps):
            loss = fn(model, optimizer, *tiny_clip_batch(g, batch, config))
            losses.append(float(loss.detach() if isinstance(loss, torch.Tensor) else loss))
        return losses, {name: p.detach().clone() for name, p in model.named_parameters()}


def _compare_step(got, expected) -> str | None:
    (got_losses, got_params), (want_losses, want_params) = got, expected
    for k, (g, e) in enumerate(zip(got_losses, want_losses), start=1):
        if abs(g - e) > 1e-4 + 1e-4 * abs(e):
            return f"the loss returned at step {k} is {g:.6g}, expected {e:.6g}"
    for name in ["logit_scale"] + sorted(n for n in want_params if n != "logit_scale"):
        problem = compare_outputs(got_params[name], want_params[name], atol=1e-4, rtol=1e-3)
        if problem:
            return f"after the last step, parameter {name}: {problem}"
    return None


def _train_step_cases():
    yield Case(("adamw", 1e-2, None, 2, 6), name="fresh tiny CLIP, AdamW, 2 steps")
    yield Case(("adamw", 1e-2, math.log(100) + 0.5, 2, 5),
               name="logit_scale starting above ln 100 (the clamp must bring it back), AdamW, 2 steps")
    yield Case(("sgd", 0.5, None, 3, 4), name="SGD with momentum, 3 steps")
    yield Case(("adamw", 5e-2, -0.2, 2, 6), name="logit_scale starting below 0, AdamW, 2 steps")


EX_TRAIN_STEP = _TrainStepExercise(
    "ch02.clip_train_step", clip_train_step, _train_step_cases, compare=_compare_step, kind="step",
    hint="optimizer.zero_grad() first (gradients add up otherwise); image_features, text_features, scale = "
         "model(images, tokens); loss = clip_loss(...) (both directions); loss.backward(); optimizer.step(); "
         "then, after the step, with torch.no_grad(): model.logit_scale.clamp_(0, math.log(100)). Return the loss.")


def test_clip_train_step(fn) -> bool:
    return EX_TRAIN_STEP.check(fn)


# --- 3. Prompt ensembling -----------------------------------------------------------------
def ensemble(features: torch.Tensor) -> torch.Tensor:
    """Reference: ``[C, T, E]`` text embeddings (C classes × T templates) → ``[C, E]`` unit vectors."""
    return ensemble_embeddings(features)


def _ensemble_cases():
    g = seeded(1)
    yield Case((torch.randn(3, 4, 8, generator=g),), name="3 classes, 4 templates")
    yield Case((5 * torch.randn(2, 1, 6, generator=g),), name="one template, long vectors")
    f = torch.randn(2, 3, 4, generator=g)
    f[:, 0] *= 10
    yield Case((f,), name="one template much longer than the others")


EX_ENSEMBLE = Exercise("ch02.ensemble", ensemble, _ensemble_cases,
                       hint="normalise each embedding, average over templates (dim 1), then "
                            "normalise the average again.")


def test_ensemble(fn) -> bool:
    return EX_ENSEMBLE.check(fn)


# --- 4. Recall@k ---------------------------------------------------------------------------
def recall_at_k(similarities: torch.Tensor, k: int) -> float:
    """Reference: fraction of rows i whose match, column i, is among the k best columns."""
    return _recall_at_k(similarities, k)


def _recall_cases():
    g = seeded(2)
    yield Case((torch.randn(10, 10, generator=g), 1), name="random, k=1")
    yield Case((torch.randn(10, 10, generator=g), 5), name="random, k=5")
    yield Case((torch.eye(6) + 0.01 * torch.randn(6, 6, generator=g), 1), name="nearly perfect")
    s = torch.randn(8, 8, generator=g)
    s.fill_diagonal_(-10)
    yield Case((s, 3), name="every match ranked last")


EX_RECALL = Exercise("ch02.recall_at_k", recall_at_k, _recall_cases, atol=1e-6,
                     hint="the match of row i is column i; it is retrieved at k when fewer than k "
                          "columns score higher; return a Python float.")


def test_recall_at_k(fn) -> bool:
    return EX_RECALL.check(fn)


check = checker("ch02")  # the notebook's `name = tests.check(name)`: see core.Exercise.accept
