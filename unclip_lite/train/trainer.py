"""One trainer for every model in the course: CLIP, the U-Nets, the priors.

The trainer knows nothing about models. It is given

* ``model``: an ``nn.Module``;
* ``loss_fn(model, batch) -> loss`` or ``(loss, {name: float})``;
* ``batches(index, rank, world_size) -> batch``: the data for global micro-step ``index``.
  Making the batch a pure function of its index is what makes resuming exact: a run
  restarted at step k sees the very batches an uninterrupted run would have seen.

and provides what every training loop needs: AdamW with decoupled weight decay (none on
gains, biases and embeddings of rank < 2), linear warmup then cosine decay, gradient
clipping, bf16/fp16 autocast, an exponential moving average of the weights, gradient
accumulation, a ``tqdm`` progress bar, an optional live loss plot, atomic checkpoints with
full resume (model, optimiser, schedule, EMA, RNG states, step, history), a clear stop on
a NaN or infinite loss, and data-parallel training under ``torchrun``: DDP or FSDP2, with
activation checkpointing, ``torch.compile`` and fused AdamW on request (``TrainConfig``;
:mod:`unclip_lite.train.distributed` says how each strategy works). Several GPUs:
``torchrun --nproc-per-node 8 -m unclip_lite train ...``; several nodes, the same line on each with
``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:29500``; NCCL on GPUs, gloo on CPUs.
"""
from __future__ import annotations

import copy
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from unclip_lite.checkpoints import atomic_write
from unclip_lite.hardware import PRECISIONS, autocast, resolve_precision
from unclip_lite.train.distributed import Parallel, distributed_setup, make_adamw  # noqa: F401 (re-exported)


class NonFiniteLossError(FloatingPointError):
    """The loss became NaN or infinite; training stopped before the bad update was applied."""


STRATEGIES = ("auto", "none", "ddp", "fsdp")


@dataclass
class TrainConfig:
    steps: int = 1000
    lr: float = 1e-3
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.98)
    eps: float = 1e-6
    warmup: int = 100
    schedule: str = "cosine"  # "cosine" (to min_lr_ratio·lr) or "constant", after warmup
    min_lr_ratio: float = 0.0
    grad_clip: float | None = 1.0
    # "auto" (bf16 where the hardware computes it natively, else fp32: unclip_lite.hardware),
    # "fp32", "bf16" (CPU and GPU) or "fp16" (GPU, with loss scaling)
    precision: str = "auto"
    ema_decay: float | None = None
    accumulate: int = 1  # micro-batches per optimiser step
    # Scaling (chapter 10). "auto": DDP when torchrun starts several processes, else a plain
    # module; "ddp"; "fsdp" (FSDP2 ``fully_shard`` per block, then the root); "none".
    strategy: str = "auto"
    compile: bool = False        # torch.compile the model (opt-in: minutes of compile time)
    checkpointing: bool = False  # recompute each block's activations in backward (activation checkpointing)
    fused: bool | None = None    # fused AdamW kernel; None: where the parameters are on CUDA
    seed: int = 0
    log_every: int = 10
    checkpoint_every: int | None = None  # steps; also at the end when out_dir is set
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        if self.steps <= 0 or self.accumulate <= 0:
            raise ValueError(f"steps and accumulate must be positive, got {self.steps}, {self.accumulate}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {', '.join(STRATEGIES)}, got {self.strategy!r}")
        if self.schedule not in ("cosine", "constant"):
            raise ValueError(f"schedule must be 'cosine' or 'constant', got {self.schedule!r}")


def lr_factor(step: int, config: TrainConfig) -> float:
    """The learning-rate multiplier at ``step``: linear warmup, then cosine (or constant)."""
    if step < config.warmup:
        return (step + 1) / config.warmup
    if config.schedule == "constant":
        return 1.0
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


class EMA:
    """An exponential moving average of a model's floating-point weights and buffers.

    ``shadow ← decay · shadow + (1 − decay) · weights`` after every optimiser step. The
    average is smoother than the last iterate, and diffusion models in particular sample
    much better from it (Ho et al. 2020 use decay 0.9999).
    """

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone().float() for k, v in model.state_dict().items()
                       if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        for k, v in model.state_dict().items():
            if k in self.shadow:
                self.shadow[k].lerp_(v.float(), 1 - self.decay)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.shadow

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.shadow = {k: v.clone() for k, v in state.items()}

    def copy_to(self, model: nn.Module) -> nn.Module:
        own = model.state_dict()
        model.load_state_dict({k: self.shadow[k].to(own[k].dtype) if k in self.shadow else v
                               for k, v in own.items()})
        return model


def param_groups(model: nn.Module, weight_decay: float, lr: float | None = None) -> list[dict]:
    """Decay matrices only: norms' gains, biases and scalars (rank < 2) are left alone.

    A model may declare ``lr_multipliers``, {parameter-name prefix: factor}: those parameters
    train at ``factor`` times ``lr`` (unCLIP's decoder: its new projections, in a model otherwise
    fine-tuned from a trained GLIDE)."""
    multipliers = getattr(model, "lr_multipliers", None) or {}
    groups: dict[tuple[bool, float], list] = {(True, 1.0): [], (False, 1.0): []}
    for name, p in model.named_parameters():
        if p.requires_grad:
            factor = next((f for prefix, f in multipliers.items() if name.startswith(prefix)), 1.0)
            groups.setdefault((p.ndim >= 2, factor), []).append(p)
    return [{"params": params, "weight_decay": weight_decay if decay else 0.0,
             **({"lr": lr * factor} if lr is not None and factor != 1.0 else {})}
            for (decay, factor), params in groups.items() if params or factor == 1.0]


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": list(random.getstate()[1]),
             "python_version": random.getstate()[0], "python_gauss": random.getstate()[2],
             "numpy": torch.from_numpy(np.random.get_state()[1].astype(np.int64)),
             "numpy_pos": int(np.random.get_state()[2])}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate((state["python_version"], tuple(state["python"]), state["python_gauss"]))
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"], 0, 0.0))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Trainer:
    model: nn.Module
    loss_fn: Callable[[nn.Module, Any], Any]
    batches: Callable[[int, int, int], Any]
    config: TrainConfig = field(default_factory=TrainConfig)
    out_dir: str | Path | None = None
    after_step: Callable[[nn.Module], None] | None = None  # e.g. CLIP's logit-scale clamp
    evaluate: Callable[[nn.Module, int], dict] | None = None
    eval_every: int | None = None
    live_plot: bool = False

    def __post_init__(self):
        self.rank, self.world_size = distributed_setup()
        self.device = next(self.model.parameters()).device
        cfg = self.config
        self.precision = resolve_precision(cfg.precision, self.device)  # what "auto" means here
        # raw_model: the module whose parameters train and whose state is saved (under FSDP the
        # same object, sharded in place); model: what loss_fn calls (DDP / FSDP / compiled)
        self.raw_model = self.model
        self.parallel = Parallel(cfg.strategy, self.rank, self.world_size, self.device)
        self.model = self.parallel.wrap(self.raw_model, self.precision, cfg.checkpointing, cfg.compile)
        self.optimizer = make_adamw(param_groups(self.raw_model, cfg.weight_decay, cfg.lr), cfg.lr, cfg.betas,
                                    cfg.eps, cfg.fused, self.device)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: lr_factor(s, cfg))
        self.ema = EMA(self.raw_model, cfg.ema_decay) if cfg.ema_decay else None
        use_scaler = self.precision == "fp16" and self.device.type == "cuda"
        self.scaler = torch.amp.GradScaler("cuda") if use_scaler else None
        self.step = 0
        self.history: list[dict] = []
        self.elapsed = 0.0  # training seconds, summed across resumes

    # --- checkpoints ---------------------------------------------------------------------
    @property
    def state_path(self) -> Path | None:
        return Path(self.out_dir) / "train_state.pt" if self.out_dir else None

    def state_dict(self) -> dict:
        """The full training state, as one ordinary state dict whatever the strategy. With several
        processes a collective (FSDP gathers its shards, every rank its RNG state): complete on rank 0."""
        parallel = self.parallel
        state = {"model": parallel.model_state(self.raw_model),
                 "optimizer": parallel.optimizer_state(self.raw_model, self.optimizer),
                 "scheduler": self.scheduler.state_dict(),
                 "ema": parallel.full_ema(self.ema.state_dict()) if self.ema else None,
                 "scaler": self.scaler.state_dict() if self.scaler else None,
                 "rng": _rng_state(), "step": self.step, "history": self.history,
                 "elapsed": self.elapsed, "config": asdict(self.config)}
        if self.world_size > 1:  # each rank's own stream, so a resumed run draws what it would have
            state["rng_ranks"] = parallel.gather(state["rng"])
        return state

    def save(self, path: str | Path | None = None) -> Path:
        """Write the full training state atomically (rank 0 writes; every rank must call it)."""
        path = Path(path or self.state_path)
        if self.rank == 0 or self.world_size > 1:
            state = self.state_dict()
        if self.rank == 0:
            atomic_write(path, lambda tmp: torch.save(state, tmp))
        self.parallel.barrier()  # no rank reads the file before it is complete
        return path

    def resume(self, path: str | Path | None = None) -> bool:
        """Load a state written by :meth:`save`; False when there is none yet.

        ``weights_only=True``: the file is read as tensors and plain containers, never as
        code to execute.
        """
        path = Path(path or self.state_path)
        if not path.is_file():
            return False
        try:
            # FSDP: onto the CPU, memory-mapped (the ranks of a node share its pages); each rank
            # then keeps its shards
            state = (torch.load(path, map_location="cpu", mmap=True, weights_only=True) if self.parallel.fsdp
                     else torch.load(path, map_location=self.device, weights_only=True))
        except Exception as err:
            raise RuntimeError(f"cannot resume from {path}: unreadable or truncated ({err})") from err
        self.parallel.load_model_state(self.raw_model, state["model"])
        self.parallel.load_optimizer_state(self.raw_model, self.optimizer, state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(self.parallel.shard_ema(self.ema.shadow, state["ema"]))
        if self.scaler and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        rng_ranks = state.get("rng_ranks") or []
        _set_rng_state(rng_ranks[self.rank] if len(rng_ranks) == self.world_size else state["rng"])
        self.step, self.history, self.elapsed = state["step"], state["history"], state["elapsed"]
        return True

    # --- training ------------------------------------------------------------------------
    def train_step(self) -> dict:
        """One optimiser step over ``accumulate`` micro-batches; returns the logged values."""
        cfg = self.config
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        total, logs = 0.0, {}
        for micro in range(cfg.accumulate):
            batch = self.batches(self.step * cfg.accumulate + micro, self.rank, self.world_size)
            # gradients are averaged across ranks on the last micro-batch only
            with self.parallel.gradient_sync(micro == cfg.accumulate - 1):
                with autocast(self.precision, self.device):
                    out = self.loss_fn(self.model, batch)
                loss, extra = out if isinstance(out, tuple) else (out, {})
                # with several processes every rank stops together (mean: NaN if any rank's is), where
                # one rank stopping alone would leave the others waiting in the gradient all-reduce
                seen = self.parallel.mean_over_ranks({"loss": loss.item()})["loss"]
                if not math.isfinite(seen):
                    raise NonFiniteLossError(
                        f"loss is {seen} at step {self.step} (micro-batch {micro}); the update was "
                        f"not applied. Last finite loss: {self.history[-1]['loss'] if self.history else 'none'}"
                        f", lr {self.scheduler.get_last_lr()[0]:.3g}. Try a lower learning rate, "
                        f"precision='auto' (bf16 where the hardware has it, else fp32) instead of 'fp16', "
                        f"or a smaller grad_clip"
                        + (f"; the last good state is in {self.state_path}" if self.state_path else ""))
                loss = loss / cfg.accumulate
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total += loss.item()
            for k, v in extra.items():
                logs[k] = logs.get(k, 0.0) + float(v) / cfg.accumulate
        self.parallel.average_replicated_grads()
        logs = self.parallel.mean_over_ranks({"loss": total, **logs})
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        grad_norm = (nn.utils.clip_grad_norm_(self.raw_model.parameters(), cfg.grad_clip).item()
                     if cfg.grad_clip else float("nan"))
        if self.scaler:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()
        self.scheduler.step()
        if self.after_step:
            self.after_step(self.raw_model)
        if self.ema:
            self.ema.update(self.raw_model)
        self.step += 1
        return {"step": self.step, "loss": logs.pop("loss"), "lr": self.scheduler.get_last_lr()[0],
                "grad_norm": grad_norm, **logs}

    def fit(self, steps: int | None = None, max_minutes: float | None = None) -> list[dict]:
        """Train until ``config.steps`` (or ``steps`` more, or the time budget) is reached."""
        from tqdm.auto import tqdm

        cfg = self.config
        if self.step == 0:  # a resumed run restores its RNG state instead
            torch.manual_seed(cfg.seed + self.rank)
        end = cfg.steps if steps is None else min(cfg.steps, self.step + steps)
        plot = LivePlot() if self.live_plot and self.rank == 0 else None
        bar = tqdm(total=end, initial=self.step, disable=not cfg.progress or self.rank != 0,
                   desc="training", dynamic_ncols=True)
        start = time.perf_counter()
        base_elapsed = self.elapsed
        try:
            while self.step < end:
                record = self.train_step()
                self.elapsed = base_elapsed + time.perf_counter() - start
                record["time"] = self.elapsed
                evaluated = bool(self.evaluate and self.eval_every and self.step % self.eval_every == 0)
                if evaluated:
                    record.update(self.evaluate(self.raw_model, self.step))
                if self.step % cfg.log_every == 0 or self.step == end or evaluated:
                    self.history.append(record)
                    bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
                    if plot:
                        plot.update(self.history)
                bar.update(1)
                if self.out_dir and cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                    self.save()
                if max_minutes is not None:  # one rank out of time stops them all, at the same step
                    late = float(self.elapsed - base_elapsed > 60 * max_minutes)
                    if self.parallel.mean_over_ranks({"late": late})["late"] > 0:
                        break
        finally:
            bar.close()
        if self.out_dir:
            self.save()
        return self.history

    def averaged_model(self) -> nn.Module:
        """A copy of the model holding the EMA weights (or the raw weights without EMA).

        Always an ordinary module: under FSDP the full weights are gathered (a collective: every
        rank calls it) into an unsharded copy on every rank."""
        if self.parallel.fsdp:
            return self.parallel.plain_model(self.raw_model, self.ema.shadow if self.ema else None)
        model = copy.deepcopy(self.raw_model)
        return self.ema.copy_to(model) if self.ema else model


class LivePlot:
    """Redraws the loss curve in place in a notebook as training goes (no-op elsewhere)."""

    def __init__(self, every: float = 2.0):
        self.every, self.last, self.handle = every, 0.0, None

    def update(self, history: list[dict]) -> None:
        now = time.perf_counter()
        if now - self.last < self.every or len(history) < 2:
            return
        self.last = now
        try:
            import matplotlib.pyplot as plt
            from IPython import get_ipython
            from IPython.display import display
        except ImportError:
            return
        if get_ipython() is None:
            return
        fig, ax = plt.subplots(figsize=(6, 2.6))
        trained = [h for h in history if "loss" in h]  # an evaluation before the first step has none
        ax.plot([h["step"] for h in trained], [h["loss"] for h in trained])
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if self.handle is None:
            self.handle = display(fig, display_id=True)
        else:
            self.handle.update(fig)
        plt.close(fig)
