"""Plausible wrong answers to chapter 02's training-step exercise; tests/test_exercises.py loads this file.
(The wrong answers to ch02.clip_loss, ensemble and recall_at_k live in tests/test_exercises.py.)"""
import math

import torch
import torch.nn.functional as F

from unclip_lite.clip.loss import clip_loss


def _one_direction(image_features, text_features, scale):  # rows only: image -> text
    logits = scale * image_features @ text_features.T
    return F.cross_entropy(logits, torch.arange(len(logits)))


def _clamp(model):
    with torch.no_grad():
        model.logit_scale.clamp_(0, math.log(100))


# --- ch02.clip_train_step --------------------------------------------------------------------------
def step_no_clamp(model, optimizer, images, tokens):  # never clips logit_scale: it stays above ln 100
    optimizer.zero_grad()
    loss = clip_loss(*model(images, tokens))
    loss.backward()
    optimizer.step()
    return loss


def step_clamp_before(model, optimizer, images, tokens):  # clamps before the step, which moves it again
    optimizer.zero_grad()
    _clamp(model)
    loss = clip_loss(*model(images, tokens))
    loss.backward()
    optimizer.step()
    return loss


def step_no_zero_grad(model, optimizer, images, tokens):  # gradients accumulate from step to step
    loss = clip_loss(*model(images, tokens))
    loss.backward()
    optimizer.step()
    _clamp(model)
    return loss


def step_one_direction(model, optimizer, images, tokens):  # only the image -> text cross-entropy
    optimizer.zero_grad()
    loss = _one_direction(*model(images, tokens))
    loss.backward()
    optimizer.step()
    _clamp(model)
    return loss


def step_clamp_max_only(model, optimizer, images, tokens):  # clamps from above only: a negative log-scale stays
    optimizer.zero_grad()
    loss = clip_loss(*model(images, tokens))
    loss.backward()
    optimizer.step()
    with torch.no_grad():
        model.logit_scale.clamp_(max=math.log(100))
    return loss


def step_loss_after(model, optimizer, images, tokens):  # returns the loss recomputed after the update
    optimizer.zero_grad()
    clip_loss(*model(images, tokens)).backward()
    optimizer.step()
    _clamp(model)
    with torch.no_grad():
        return clip_loss(*model(images, tokens))


WRONG_ANSWERS = {
    "ch02.clip_train_step": [step_no_clamp, step_clamp_before, step_no_zero_grad, step_one_direction,
                             step_clamp_max_only, step_loss_after],
}
