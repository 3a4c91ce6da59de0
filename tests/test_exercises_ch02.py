"""Chapter 02's training-step exercise agrees with the package: ``clip_train_step`` makes the same
update as the shared trainer (unclip_lite.train.Trainer) running ``recipes.contrastive_step`` with the
logit-scale clamp after each step, once the trainer's extras (warmup, gradient clipping) are off."""
import copy
import math

import pytest
import torch

from unclip_lite.clip.model import CLIP
from unclip_lite.clip.recipes import contrastive_step, new_shapes_clip, shapes_batches, ShapesData
from unclip_lite.exercises import ch02
from unclip_lite.train import TrainConfig, Trainer
from unclip_lite.train.trainer import param_groups


def _trainer_and_copy(model, start_scale, **config):
    if start_scale is not None:
        with torch.no_grad():
            model.logit_scale.fill_(start_scale)
    ours = copy.deepcopy(model)
    batches = lambda index, rank=0, world=1: ch02.tiny_clip_batch(  # noqa: E731
        torch.Generator().manual_seed(100 + index), 6, ours.config)
    cfg = TrainConfig(**{"steps": 10, "lr": 1e-2, "warmup": 1, "schedule": "constant", "grad_clip": None,
                         "precision": "fp32", "progress": False, "log_every": 1, **config})
    trainer = Trainer(model, contrastive_step, batches, cfg, after_step=CLIP.clamp_logit_scale_)
    optimizer = torch.optim.AdamW(param_groups(ours, cfg.weight_decay, cfg.lr), lr=cfg.lr, betas=cfg.betas,
                                  eps=cfg.eps)
    return trainer, ours, optimizer, batches


@pytest.mark.parametrize("start_scale", [None, math.log(100) + 0.3, -0.1])
def test_the_reference_step_is_the_trainers_step(start_scale):
    torch.manual_seed(0)
    trainer, ours, optimizer, batches = _trainer_and_copy(CLIP(ch02.tiny_clip_config()), start_scale)
    for step in range(3):
        record = trainer.train_step()
        loss = ch02.clip_train_step(ours, optimizer, *batches(step))
        assert loss.item() == pytest.approx(record["loss"], rel=1e-6, abs=1e-6)
        for (name, a), (_, b) in zip(trainer.raw_model.named_parameters(), ours.named_parameters()):
            torch.testing.assert_close(b, a, msg=f"step {step + 1}, {name}")
        assert 0 <= ours.logit_scale.item() <= math.log(100) + 1e-6  # float32 rounding of ln 100


def test_the_reference_step_trains_the_shapes_clip_as_the_trainer_does():
    """On the chapter's own model and data stream (a small batch), two steps match the trainer's."""
    bundle = new_shapes_clip("shapes-tiny", seed=0)
    batches = shapes_batches(bundle, ShapesData(batch_size=16))
    ours = copy.deepcopy(bundle.model)
    cfg = TrainConfig(steps=10, lr=2e-3, warmup=1, schedule="constant", grad_clip=None, precision="fp32",
                      progress=False)
    trainer = Trainer(bundle.model, contrastive_step, batches, cfg, after_step=CLIP.clamp_logit_scale_)
    optimizer = torch.optim.AdamW(param_groups(ours, cfg.weight_decay, cfg.lr), lr=cfg.lr, betas=cfg.betas,
                                  eps=cfg.eps)
    for step in range(2):
        record = trainer.train_step()
        loss = ch02.clip_train_step(ours, optimizer, *batches(step))
        assert loss.item() == pytest.approx(record["loss"], rel=1e-5)
    for (name, a), (_, b) in zip(trainer.raw_model.named_parameters(), ours.named_parameters()):
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)
