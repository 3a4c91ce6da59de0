"""Run under torchrun (2 CPU processes, gloo): the shared trainer under FSDP2 and DDP on a tiny
CLIP and a tiny GLIDE. Rank 0 writes what it saw (losses, the first step's full gradients, the
final full weights, the averaged model) for tests/test_distributed.py, which trains the same
models in one process on the same global batches and compares.

Also importable without a process group: the test builds its single-process references from
the same models, batches and configs (:func:`run` with strategy "none").
"""
import functools
import math
import sys
from pathlib import Path

import torch

from helpers import tiny_bundle, tiny_clip
from unclip_lite.clip.recipes import contrastive_step
from unclip_lite.train import NonFiniteLossError, TrainConfig, Trainer

GLOBAL_BATCH = 8  # each of 2 ranks sees 4


def clip_model() -> torch.nn.Module:
    return tiny_clip(noised=False).model  # ViT and text transformer, 1 block each; a 0-dim logit scale


def glide_model() -> torch.nn.Module:
    return tiny_bundle(image_size=16).model  # Text2Im: text Blocks, ResBlocks, AttentionBlocks; no zero layer


def _slice(tensors, rank, world):
    n = GLOBAL_BATCH // world
    return tuple(t[rank * n:(rank + 1) * n] for t in tensors)


def clip_batches(index, rank=0, world=1):
    """The global batch of micro-step ``index`` (a pure function of it), and this rank's slice."""
    g = torch.Generator().manual_seed(100 + index)
    images = torch.randn(GLOBAL_BATCH, 3, 32, 32, generator=g)
    tokens = torch.randint(4, 40, (GLOBAL_BATCH, 16), generator=g)
    tokens[:, 0], tokens[:, 9], tokens[:, 10:] = 1, 2, 0  # SOT, EOT, padding
    return _slice((images, tokens), rank, world)


def glide_batches(index, rank=0, world=1):
    g = torch.Generator().manual_seed(200 + index)
    x0 = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    noise = torch.randn(GLOBAL_BATCH, 3, 16, 16, generator=g)
    t = torch.randint(0, 20, (GLOBAL_BATCH,), generator=g)
    tokens = torch.randint(4, 40, (GLOBAL_BATCH, 24), generator=g)
    tokens[:, 12:] = 0
    return _slice((x0, noise, t, tokens), rank, world)


def glide_loss(model, batch):
    """ε-prediction MSE with the noise drawn in the batch (no RNG in the loss: one process can
    reproduce every rank's share)."""
    x0, noise, t, tokens = batch
    angle = (t.float() / 20 * math.pi / 2)[:, None, None, None]
    x_t = angle.cos() * x0 + angle.sin() * noise
    return (model(x_t, t, tokens) - noise).pow(2).mean()


MODELS = {"clip": (clip_model, contrastive_step, clip_batches), "glide": (glide_model, glide_loss, glide_batches)}


def config(**kw) -> TrainConfig:
    return TrainConfig(**{"steps": 3, "lr": 1e-3, "warmup": 1, "schedule": "constant", "ema_decay": 0.5,
                          "precision": "fp32", "grad_clip": 1.0, "progress": False, "log_every": 1, **kw})


def full_grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    from torch.distributed.tensor import DTensor

    return {name: (p.grad.full_tensor() if isinstance(p.grad, DTensor) else p.grad).detach().clone()
            for name, p in model.named_parameters() if p.grad is not None}


def run(kind: str, strategy: str, resume_from: Path | None = None, save_first: Path | None = None,
        **config_kw) -> tuple[Trainer, dict]:
    """Train ``kind`` for ``config.steps``; the record holds what the test compares."""
    build, loss_fn, batches = MODELS[kind]
    trainer = Trainer(build(), loss_fn, batches, config(strategy=strategy, **config_kw))
    record = {}
    if resume_from is not None:
        assert trainer.resume(resume_from)
    else:
        trainer.fit(steps=1)
        record["grads"] = full_grads(trainer.raw_model)  # the first step's (clipped) gradients
        if save_first is not None:
            trainer.save(save_first)
    trainer.fit()
    averaged = trainer.averaged_model()
    record.update(loss=[h["loss"] for h in trainer.history], grad_norm=[h["grad_norm"] for h in trainer.history],
                  weights={k: v.detach().clone() for k, v in
                           trainer.parallel.model_state(trainer.raw_model, everywhere=True).items()},
                  averaged=averaged.state_dict(), averaged_type=type(averaged).__name__,
                  averaged_plain=not any(type(p) is not torch.nn.Parameter for p in averaged.parameters()),
                  ema_types=sorted({type(v).__name__ for v in (trainer.ema.shadow.values() if trainer.ema else [])}))
    return trainer, record


def count_ddp_all_reduces(trainer: Trainer) -> list[int]:
    """Count DDP's bucket all-reduces (a comm hook that counts, then does the default all-reduce)."""
    from torch.distributed.algorithms.ddp_comm_hooks.default_hooks import allreduce_hook

    calls = [0]

    def counting(state, bucket):
        calls[0] += 1
        return allreduce_hook(state, bucket)

    trainer.parallel.wrapped.register_comm_hook(None, counting)
    return calls


def main(out_dir: Path, single_checkpoint: Path) -> None:
    torch.set_num_threads(1)
    results = {}
    _, results["clip_fsdp"] = run("clip", "fsdp")
    _, results["glide_fsdp"] = run("glide", "fsdp", steps=2, accumulate=2, checkpointing=True)
    # torch.compile of the FSDP-wrapped model; TorchDynamo and AOTAutograd trace for real, the
    # Inductor code generation (minutes on 2 CPU cores) is left out
    compile_for_real = torch.compile
    torch.compile = functools.partial(compile_for_real, backend="aot_eager")
    _, results["clip_fsdp_compiled"] = run("clip", "fsdp", compile=True)
    torch.compile = compile_for_real
    try:
        Trainer(clip_model(), contrastive_step, clip_batches, config(strategy="fsdp", precision="fp16"))
    except ValueError as err:
        results["fp16_error"] = str(err)
    # DDP with accumulation: all-reduces on the last micro-batch of each step only (no_sync)
    seen = []  # the all-reduces done when each micro-batch starts

    def counted_step(model, batch):
        seen.append(calls[0])
        return contrastive_step(model, batch)

    ddp = Trainer(clip_model(), counted_step, clip_batches, config(strategy="ddp", steps=2, accumulate=2))
    calls = count_ddp_all_reduces(ddp)
    ddp.fit(steps=1)
    results["clip_ddp"] = {"grads": full_grads(ddp.raw_model), "all_reduces_seen": seen + [calls[0]]}
    ddp.fit()
    results["clip_ddp"].update(loss=[h["loss"] for h in ddp.history], weights=ddp.raw_model.state_dict())
    # FSDP interrupted after one step, resumed by a fresh trainer (as a restarted job would)
    interrupted = Trainer(clip_model(), contrastive_step, clip_batches, config(strategy="fsdp"),
                          out_dir=out_dir / "fsdp_run")
    interrupted.fit(steps=1)
    resumed, results["clip_fsdp_resumed"] = run("clip", "fsdp", resume_from=out_dir / "fsdp_run" / "train_state.pt")
    resumed.save(out_dir / "fsdp_step3.pt")  # for the single process to load
    # a single-process checkpoint (step 1 of 2) continued by FSDP
    _, results["glide_from_single"] = run("glide", "fsdp", resume_from=single_checkpoint, steps=2, accumulate=2)
    # a NaN on one rank stops both (the other is not left waiting in the gradient reduction)
    def nan_on_rank_1(model, batch):
        loss, logs = contrastive_step(model, batch)
        return loss * (float("nan") if resumed.rank == 1 else 1.0), logs

    try:
        Trainer(clip_model(), nan_on_rank_1, clip_batches, config(strategy="fsdp")).fit()
    except NonFiniteLossError as err:
        results["nan_error"] = str(err)
    results["world"] = resumed.world_size
    if resumed.rank == 0:
        torch.save(results, out_dir / "results.pt")
    # an orderly teardown: both ranks done, DDP's reducer gone, then the group
    torch.distributed.barrier()
    del ddp
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
