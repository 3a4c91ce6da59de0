"""How the shared trainer spreads one model over several processes: DDP, FSDP2, and full checkpoints.

Launching. One process per GPU (or a few per CPU machine); ``torchrun`` sets ``RANK``,
``WORLD_SIZE`` and ``LOCAL_RANK`` and :func:`distributed_setup` joins them up, over NCCL on
GPUs and gloo on CPUs::

    torchrun --nproc-per-node 8 -m unclip_lite train ...                       # one node, 8 GPUs
    torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d \\
             --rdzv-endpoint HOST:29500 -m unclip_lite train ...               # the same line on both nodes

``HOST`` is the address of one of the nodes (any port every node can reach). ``out_dir`` must be
on a filesystem every node sees: rank 0 writes the checkpoint and every rank reads it on resume.

The strategies (``TrainConfig.strategy``):

* ``"ddp"``, DistributedDataParallel (Li et al. 2020, "PyTorch Distributed"): every rank holds
  the whole model, its gradients and the optimiser state; the gradients are averaged across
  ranks (all-reduce, in buckets, overlapping the backward pass).
* ``"fsdp"``, FSDP2's ``fully_shard`` (Zhao et al. 2023, "PyTorch FSDP"; ZeRO stage 3,
  Rajbhandari et al. 2020): every parameter, gradient and optimiser moment is split along dim 0
  into one shard per rank (a ``DTensor``). Each of :func:`unclip_lite.nn.repeated_blocks` (every
  transformer Block, ResBlock, AttentionBlock) is one unit: its weights are all-gathered just
  before it runs and freed after, its gradients reduce-scattered in the backward pass; the root
  unit holds the rest (embeddings, heads). Memory per rank: about 1/N of the model's state plus
  one block unsharded. In bf16, ``MixedPrecisionPolicy(param_dtype=bf16, reduce_dtype=fp32)``:
  blocks compute in bf16, gradients are averaged in fp32, the shards and AdamW stay fp32.
  FSDP2 cannot shard a 0-dim parameter (CLIP's logit scale): those stay whole on every rank,
  outside FSDP, and :meth:`Parallel.average_replicated_grads` averages their gradients.
* ``"auto"``: DDP when ``torchrun`` started several processes, else ``"none"`` (a plain module;
  under ``torchrun`` every process would then train its own copy).

Order of the wrappers: activation checkpointing is switched on first (it changes what a block
does in its forward; the wrappers only surround the blocks), then DDP/FSDP, then
``torch.compile`` of the wrapped module. Compiling last is the order both wrappers are built for:
TorchDynamo sees DDP and splits its graph at DDP's gradient buckets so the all-reduces still
overlap the backward (compiling first would hand DDP one graph whose gradients all appear at
its end), and it runs FSDP2's hooks eagerly (``torch._dynamo.config.skip_fsdp_hooks``), so every
block's all-gather and reduce-scatter stays at the block's boundary and the compute in between
is compiled. ``torch.compile`` returns a wrapper around the module; the trainer saves the
unwrapped one, so checkpoint keys carry no ``_orig_mod.`` prefix.

Checkpoints are one ordinary full state dict whatever the strategy: under FSDP the shards are
gathered to rank 0 on the CPU (``torch.distributed.checkpoint.state_dict``, full_state_dict),
the optimiser state is keyed by parameter index as ``optimizer.state_dict()`` keys it, and the
EMA's shards are gathered too; so a file written by an 8-GPU FSDP run loads into a notebook and
the other way round. The EMA under FSDP shadows the local shards: each rank averages its own 1/N
of the weights, with no communication per step and 1/N of the memory; the full average is
gathered only for a checkpoint or :meth:`Trainer.averaged_model`.
"""
from __future__ import annotations

import contextlib
import copy
import itertools
import os
from typing import Iterator

import torch
import torch.distributed as dist
from torch import nn

from unclip_lite.nn import repeated_blocks, set_grad_checkpointing


def distributed_setup() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes in the environment, if any.

    Returns ``(rank, world_size)``; ``(0, 1)`` for an ordinary single process. gloo on CPU,
    NCCL on CUDA.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend)
        if torch.cuda.is_available():
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def resolve_strategy(strategy: str, world_size: int) -> str:
    """``"none"``, ``"ddp"`` or ``"fsdp"``: what ``strategy`` means in this launch.

    ``"ddp"`` and ``"fsdp"`` need a process group: several processes under ``torchrun`` (or one
    process whose caller set up a group itself, e.g. to try FSDP on a single GPU)."""
    if strategy == "auto":
        return "ddp" if world_size > 1 else "none"
    if strategy not in ("none", "ddp", "fsdp"):
        raise ValueError(f"strategy must be one of auto, none, ddp, fsdp, got {strategy!r}")
    if strategy != "none" and world_size == 1 and not (dist.is_available() and dist.is_initialized()):
        raise ValueError(f"strategy={strategy!r} splits training over several processes, but this is a single "
                         f"process: launch with `torchrun --nproc-per-node N -m unclip_lite train ...` (N processes, "
                         f"one per GPU), or use strategy 'auto' or 'none' to train in this one")
    return strategy


def make_adamw(groups: list[dict], lr: float, betas: tuple[float, float], eps: float,
               fused: bool | None, device: torch.device) -> torch.optim.AdamW:
    """AdamW; ``fused`` (one kernel for the whole update instead of a few per tensor): None means
    fused where the parameters are on CUDA, True/False force it (a clear error where this torch has
    no fused kernel for the device)."""
    use_fused = device.type == "cuda" if fused is None else fused
    if use_fused:  # AdamW itself would only check at its first step
        from torch.utils._foreach_utils import _get_fused_kernels_supported_devices

        supported = _get_fused_kernels_supported_devices()
        unsupported = sorted({f"{p.device.type} ({p.dtype})" for group in groups for p in group["params"]
                              if p.device.type not in supported or not p.is_floating_point()})
        if unsupported:
            raise ValueError(f"fused=True: torch {torch.__version__} has no fused AdamW for parameters on "
                             f"{', '.join(unsupported)} (it has for floating-point parameters on "
                             f"{', '.join(supported)}); set fused=None (fused on CUDA only) or False")
    options = {"fused": use_fused} if fused is not None or use_fused else {}  # None on CPU: torch's default
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps, **options)


def _meta_skeleton(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are on the meta device (no memory) and whose buffers
    are real: what a plain, unsharded module can be rebuilt from once FSDP has sharded the model
    in place. Tied parameters stay tied (the copy maps each parameter object once)."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
            for p in model.parameters()}
    return copy.deepcopy(model, memo)


class Parallel:
    """One trainer's parallel set-up: the wrapped module, its gradient sync, its full state dicts.

    In a single process (strategy ``"none"``) every method is the identity or the plain call
    (``model.state_dict()``, ``optimizer.load_state_dict()``...), so the trainer's one-process
    path is what it always was.
    """

    def __init__(self, strategy: str, rank: int, world_size: int, device: torch.device):
        self.strategy = resolve_strategy(strategy, world_size)
        self.rank, self.world_size, self.device = rank, world_size, device
        self.wrapped: nn.Module | None = None  # the DDP / FSDP module (before torch.compile)
        self.replicated: list[nn.Parameter] = []  # FSDP: 0-dim parameters it leaves whole
        self.skeleton: nn.Module | None = None  # FSDP: the plain module's structure

    @property
    def fsdp(self) -> bool:
        return self.strategy == "fsdp"

    def wrap(self, model: nn.Module, precision: str, checkpointing: bool, compile: bool) -> nn.Module:
        """Checkpointing, then DDP / FSDP, then ``torch.compile`` (the module docstring says why)."""
        if self.fsdp and precision == "fp16":
            raise ValueError("precision='fp16' is not supported with strategy='fsdp' (its loss scaler would "
                             "see only this rank's gradient shards); use 'bf16' or 'fp32'")
        if self.fsdp:
            self.skeleton = _meta_skeleton(model)
        if checkpointing:
            set_grad_checkpointing(model, True)
        if self.strategy == "ddp":
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = nn.parallel.DistributedDataParallel(model, device_ids=ids)
        elif self.fsdp:
            wrapped = self._shard(model, precision)
        else:
            wrapped = model
        self.wrapped = wrapped
        return torch.compile(wrapped) if compile else wrapped

    def _shard(self, model: nn.Module, precision: str) -> nn.Module:
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        with torch.no_grad():  # as DDP does: every rank starts from rank 0's weights
            for tensor in itertools.chain(model.parameters(), model.buffers()):
                dist.broadcast(tensor.detach(), src=0)
        # a 1-D mesh over every rank, on the parameters' device type: "cpu" runs the
        # collectives over gloo, "cuda" over NCCL
        options = {"mesh": init_device_mesh(self.device.type, (self.world_size,))}
        if precision == "bf16":
            options["mp_policy"] = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        self.replicated = [p for p in model.parameters() if p.dim() == 0]
        if self.replicated:
            options["ignored_params"] = set(self.replicated)
        for block in repeated_blocks(model):
            fully_shard(block, **options)
        return fully_shard(model, **options)

    @contextlib.contextmanager
    def gradient_sync(self, enabled: bool) -> Iterator[None]:
        """Around one micro-batch's forward and backward: average the gradients across ranks only
        when ``enabled`` (the last micro-batch of an optimiser step); the others accumulate locally."""
        if self.strategy == "ddp" and not enabled:
            with self.wrapped.no_sync():
                yield
            return
        if self.fsdp:
            self.wrapped.set_requires_gradient_sync(enabled)
        yield

    def average_replicated_grads(self) -> None:
        """FSDP: average the gradients of the parameters it left whole, as DDP would (gloo has no
        AVG reduction, so sum and divide)."""
        for param in self.replicated:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    def mean_over_ranks(self, values: dict[str, float]) -> dict[str, float]:
        """The logged loss and metrics averaged over the ranks (each saw its slice of the batch)."""
        if self.world_size == 1 or not values:
            return values
        tensor = torch.tensor(list(values.values()), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return dict(zip(values, (tensor / self.world_size).tolist()))

    def gather(self, obj) -> list:
        """``obj`` from every rank, in rank order (a collective)."""
        if self.world_size == 1:
            return [obj]
        everyone = [None] * self.world_size
        dist.all_gather_object(everyone, obj)
        return everyone

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    # --- full state dicts ----------------------------------------------------------------
    def model_state(self, model: nn.Module, everywhere: bool = False) -> dict:
        """``model``'s full state dict. Under FSDP a collective: gathered to CPU on rank 0 (the
        other ranks get ``{}``), or to the device on every rank with ``everywhere``."""
        if not self.fsdp:
            return model.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=not everywhere))

    def load_model_state(self, model: nn.Module, state: dict) -> None:
        """Load a full state dict (every rank holds it; under FSDP each keeps its shards)."""
        if not self.fsdp:
            model.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        set_model_state_dict(model, state, options=StateDictOptions(full_state_dict=True))

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        """``optimizer.state_dict()``, also under FSDP: gathered to rank 0 (others get ``{}``) and
        re-keyed from parameter names to the indices an ordinary optimiser state uses."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        by_name = get_optimizer_state_dict(model, optimizer,
                                           options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not by_name:
            return {}
        index = {name: i for i, name in enumerate(_parameter_names(model, optimizer))}
        return {"state": {index[name]: s for name, s in by_name["state"].items()},
                "param_groups": [{**g, "params": [index[name] for name in g["params"]]}
                                 for g in by_name["param_groups"]]}

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = _parameter_names(model, optimizer)
        by_name = {"state": {names[i]: s for i, s in state["state"].items()},
                   "param_groups": [{**g, "params": [names[i] for i in g["params"]]} for g in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))

    def full_ema(self, shadow: dict[str, torch.Tensor], everywhere: bool = False) -> dict[str, torch.Tensor]:
        """The EMA's full tensors: under FSDP gathered shard by shard (a collective) to CPU on
        rank 0 (the others get ``{}``), or to every rank with ``everywhere``."""
        if not self.fsdp:
            return shadow
        from torch.distributed.tensor import DTensor

        full = {}
        for name, value in shadow.items():
            whole = value.full_tensor() if isinstance(value, DTensor) else value
            if everywhere:
                full[name] = whole
            elif self.rank == 0:
                full[name] = whole.cpu()
        return full

    def shard_ema(self, shadow: dict[str, torch.Tensor], full: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The inverse of :meth:`full_ema` on resume: this rank's shards of the full tensors,
        sharded as ``shadow`` is (every rank holds the full tensors, so no communication)."""
        if not self.fsdp:
            return full
        from torch.distributed.tensor import DTensor, distribute_tensor

        return {name: distribute_tensor(full[name].to(self.device, value.dtype), value.device_mesh,
                                        value.placements, src_data_rank=None)
                if isinstance(value, DTensor) else full[name].to(value.device, value.dtype)
                for name, value in shadow.items()}

    def plain_model(self, model: nn.Module, ema_shadow: dict[str, torch.Tensor] | None) -> nn.Module:
        """FSDP: an ordinary, unsharded module on every rank holding the full weights (the EMA's
        where given). A collective: every rank must call it."""
        state = self.model_state(model, everywhere=True)
        if ema_shadow is not None:
            state.update(self.full_ema(ema_shadow, everywhere=True))
        plain = copy.deepcopy(self.skeleton)
        buffers = dict(plain.named_buffers())  # the real ones: to_empty() replaces every tensor
        plain.to_empty(device=self.device)
        with torch.no_grad():
            for name, buffer in plain.named_buffers():
                buffer.copy_(buffers[name])
        plain.load_state_dict(state)
        return plain


def _parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each parameter in the order ``optimizer.state_dict()`` numbers them."""
    names = {id(p): name for name, p in model.named_parameters()}
    return [names[id(p)] for group in optimizer.param_groups for p in group["params"]]
