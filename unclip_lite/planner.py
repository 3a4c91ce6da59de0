"""``unclip-lite plan``: memory and FLOPs of a training step, per GPU, before renting the GPUs.

    unclip-lite plan clip --config ViT-B-32 --batch 512 --gpus 8
    unclip-lite plan decoder --config paper-3.5b --batch 256 --gpus 8 --fsdp --checkpointing
    unclip-lite plan --table          # every full-size model on 8 x 80 GB (bf16, FSDP, checkpointing)

Every number is measured, not estimated from a formula: the model is built on the ``meta``
device (shapes, no memory) and takes one training step there (:mod:`unclip_lite.planner_measure`):

* **parameters**: exact, counted on the built model;
* **weights, gradients, AdamW state** by ZeRO's convention (Rajbhandari et al. 2020, §3.1). Mixed
  precision (bf16/fp16): 2 B half-precision weights + 2 B gradients + 12 B optimizer state
  (fp32 master weights, first and second moments) = 16 B per parameter. fp32: 4 + 4 + 8 = 16 B;
* **activations**: the peak of live activation bytes over the forward and backward (what
  autograd saves for the backward pass, plus the gradients flowing back through it), with the
  model in the chosen precision (fp32 where the package computes in fp32 on purpose: its
  LayerNorm, the CLIP loss), measured at batch 1 and 2 and extended linearly;
* **FLOPs**: ``torch.utils.flop_counter``'s formulas over the same forward + backward (matmuls,
  convolutions, attention).

Data parallel, ``--batch`` is the *global* batch, split over ``--gpus``. Without ``--fsdp`` every
GPU holds all weights, gradients and optimizer state (DDP, ``gradient_as_bucket_view=True``);
``--fsdp`` shards the three over the GPUs (ZeRO-3), and each GPU also holds the unsharded
weights of the FSDP unit it is computing and of the one it prefetches, plus that unit's
unsharded gradients (units: the residual blocks, and the rest of the model as the root).
``--checkpointing`` runs the step with the models' own per-block activation checkpointing
(:func:`unclip_lite.nn.set_grad_checkpointing`, the same blocks as the FSDP units) and measures
it: only each block's inputs are kept, one block's internals exist again while it is recomputed,
and most of the blocks' forward FLOPs are paid twice.

The total is weights + gradients + optimizer state + FSDP buffers + activations, all held at
once (what DDP does: its buckets keep gradients all step). The package's trainer frees gradients
between steps (``zero_grad(set_to_none=True)``), so on one GPU the peak is nearer weights +
optimizer state + max(gradients, activations); the report gives both. Checked against real CPU
steps of the tiny configs in ``tests/test_planner.py``.

This module imports torch lazily: ``unclip-lite --help`` stays instant.
"""
from __future__ import annotations

import argparse
import math
import sys
from dataclasses import asdict, dataclass
from functools import lru_cache

GIB = 2 ** 30
PRECISIONS = ("bf16", "fp32", "fp16")
# bytes per parameter: (weights, gradients, AdamW state) — see the module docstring
STATE_BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
PLAN_KIND_NAMES = ("clip", "glide", "prior", "ar-prior", "decoder", "upsampler", "classifier")
TABLE_LABELS = {  # full_size_table's rows, in order
    ("clip", "ViT-H-16-256"): "CLIP ViT-H/16 (image + text)",
    ("prior", "paper-1b"): "unCLIP diffusion prior 1B",
    ("ar-prior", "paper-1b"): "unCLIP AR prior 1B",
    ("decoder", "paper-3.5b"): "unCLIP decoder 3.5B (64 px)",
    ("upsampler", "paper-64-256"): "unCLIP upsampler 700M (64→256)",
    ("upsampler", "paper-256-1024"): "unCLIP upsampler 300M (256→1024)",
    ("glide", "glide-base-paper"): "GLIDE 3.5B (64 px)",
    ("glide", "glide-upsample-paper"): "GLIDE upsampler 1.5B (64→256)",
    ("classifier", "adm-imagenet-128"): "ADM noised classifier (128 px)",
}


class PlanError(ValueError):
    """A plan that cannot be made: unknown kind, config or precision, or inconsistent flags."""


class DoesNotFitError(PlanError):
    """The requested batch does not fit in the GPU's memory."""


@dataclass(frozen=True)
class Measurement:
    """One config at one precision, per training example where it scales with the batch."""

    parameters: int
    largest_unit: int  # parameters of the largest FSDP unit (a block, or the root: all outside blocks)
    blocks: int
    activations: tuple[float, float]  # bytes = a + b * batch
    checkpointed: tuple[float, float]
    flops: tuple[float, float]  # forward + backward
    recompute_flops: tuple[float, float]
    unit: str
    note: str


def _line(y1: float, y2: float) -> tuple[float, float]:
    """(intercept, slope) through (1, y1) and (2, y2)."""
    return y1 - (y2 - y1), y2 - y1


@lru_cache(maxsize=64)
def measure(kind: str, config: str, precision: str = "bf16") -> Measurement:
    """Trace ``kind``/``config`` on the meta device at batch 1 and 2 (cached per process)."""
    import torch

    from unclip_lite.nn import repeated_blocks
    from unclip_lite.planner_measure import trace_step
    from unclip_lite.planner_models import build_workload

    workload = build_workload(kind, config)
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    n, blocks = count(workload.model), [count(m) for m in repeated_blocks(workload.model)]
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    one, two = trace_step(workload, 1, dtype), trace_step(workload, 2, dtype)
    fit = lambda field: _line(getattr(one, field), getattr(two, field))  # noqa: E731
    return Measurement(n, max([*blocks, n - sum(blocks)]), len(blocks), fit("peak_bytes"),
                       fit("checkpointed_bytes"), fit("flops"), fit("recompute_flops"), workload.unit, workload.note)


@dataclass
class Plan:
    kind: str
    config: str
    batch: int  # global
    gpus: int
    precision: str
    fsdp: bool
    checkpointing: bool
    gpu_memory_gib: float
    parameters: int
    # bytes per GPU
    weights: float
    gradients: float
    optimizer: float
    fsdp_buffers: float
    activations: float
    per_example: float  # activation bytes per example on one GPU
    flops_per_step: float  # the whole global batch, forward + backward
    recompute_flops_per_step: float  # checkpointing's second forward through the blocks (0 without)
    max_per_gpu_batch: int  # the largest per-GPU batch that fits (0: none)
    unit: str
    note: str

    @property
    def per_gpu_batch(self) -> int:
        return self.batch // self.gpus

    @property
    def states(self) -> float:
        return self.weights + self.gradients + self.optimizer + self.fsdp_buffers

    @property
    def total(self) -> float:
        return self.states + self.activations

    @property
    def peak_freed_gradients(self) -> float:
        """Weights + optimizer + FSDP buffers + max(gradients, activations): gradients freed between steps."""
        return self.weights + self.optimizer + self.fsdp_buffers + max(self.gradients, self.activations)

    @property
    def fits(self) -> bool:
        return self.total <= self.gpu_memory_gib * GIB

    @property
    def flops_per_example(self) -> float:
        return self.flops_per_step / self.batch

    def require_fit(self) -> None:
        """Raise :class:`DoesNotFitError`, saying by how much, unless the plan fits."""
        if self.fits:
            return
        limit, over = self.gpu_memory_gib * GIB, self.total - self.gpu_memory_gib * GIB
        where = f"{self.kind} {self.config} at {self.per_gpu_batch} per GPU ({self.precision}, {_mode(self)})"
        if self.max_per_gpu_batch < 1:
            raise DoesNotFitError(
                f"{where} cannot fit at any batch: weights, gradients and optimizer state alone need "
                f"{_gib(self.states)} GiB per GPU, {_gib(self.states + self.per_example - limit)} GiB more than "
                f"the {self.gpu_memory_gib:g} GiB with one example"
                + ("" if self.fsdp else "; try --fsdp over more GPUs"))
        raise DoesNotFitError(
            f"{where} needs {_gib(self.total)} GiB per GPU: {_gib(over)} GiB ({100 * over / limit:.0f}%) over "
            f"the {self.gpu_memory_gib:g} GiB; the largest per-GPU batch that fits is {self.max_per_gpu_batch} "
            f"(global {self.max_per_gpu_batch * self.gpus})"
            + ("" if self.checkpointing else ", more with --checkpointing"))


def _gib(nbytes: float) -> str:
    return f"{nbytes / GIB:.2f}"


def _mode(p: Plan) -> str:
    return f"FSDP over {p.gpus} GPUs" if p.fsdp else f"DDP over {p.gpus} GPUs" if p.gpus > 1 else "1 GPU"


def validate(kind: str, config: str, batch: int, gpus: int, precision: str, fsdp: bool,
             gpu_memory_gb: float) -> None:
    """Every error that needs no tracing, raised before any."""
    if precision not in PRECISIONS:
        raise PlanError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if gpus < 1:
        raise PlanError(f"--gpus must be >= 1, got {gpus}")
    if fsdp and gpus == 1:
        raise PlanError("FSDP on a single process shards nothing: use --gpus N with N > 1, or drop --fsdp")
    if batch < 1 or batch % gpus:
        raise PlanError(f"the global batch ({batch}) must be a positive multiple of --gpus ({gpus}): "
                        f"every GPU takes batch / gpus examples")
    if not gpu_memory_gb > 0:
        raise PlanError(f"--gpu-memory must be positive (GiB), got {gpu_memory_gb}")
    from unclip_lite.planner_models import PLAN_KINDS
    if kind not in PLAN_KINDS:
        raise PlanError(f"cannot plan model kind {kind!r}; plannable kinds: {', '.join(PLAN_KINDS)}")
    names = PLAN_KINDS[kind].configs()
    if config not in names:
        raise PlanError(f"unknown {kind} config {config!r}; choose one of {', '.join(names)}")


def plan(kind: str, config: str, batch: int, gpus: int = 1, precision: str = "bf16", fsdp: bool = False,
         checkpointing: bool = False, gpu_memory_gb: float = 80.0) -> Plan:
    """The per-GPU memory and FLOPs of training ``kind``/``config`` at global ``batch`` (see the module
    docstring for every convention). Raises :class:`PlanError` for impossible requests; a plan that
    does not fit is returned (``plan.fits``, ``plan.require_fit()``)."""
    validate(kind, config, batch, gpus, precision, fsdp, gpu_memory_gb)
    m = measure(kind, config, precision)
    shards = gpus if fsdp else 1
    b_weights, b_grads, b_optim = STATE_BYTES[precision]
    buffers = (2 * b_weights + b_grads) * m.largest_unit if fsdp else 0.0
    fixed, per_example = m.checkpointed if checkpointing else m.activations
    states = (b_weights + b_grads + b_optim) * m.parameters / shards + buffers
    per_gpu = batch // gpus
    limit = gpu_memory_gb * GIB
    max_batch = max(0, math.floor((limit - states - fixed) / per_example)) if per_example > 0 else 0
    flops = m.flops[0] + m.flops[1] * batch  # the global batch: every GPU's share
    recompute = (m.recompute_flops[0] + m.recompute_flops[1] * batch) if checkpointing else 0.0
    return Plan(kind, config, batch, gpus, precision, fsdp, checkpointing, gpu_memory_gb, m.parameters,
                b_weights * m.parameters / shards, b_grads * m.parameters / shards, b_optim * m.parameters / shards,
                buffers, fixed + per_example * per_gpu, per_example, flops, recompute, max_batch, m.unit, m.note)


def format_plan(p: Plan) -> str:
    half = p.precision != "fp32"
    w, g, o = STATE_BYTES[p.precision]
    shard = f" / {p.gpus} GPUs" if p.fsdp else ""
    rows = [
        (f"weights ({p.precision}, {w} B/param{shard})", p.weights),
        (f"gradients ({p.precision}, {g} B/param{shard})", p.gradients),
        ("AdamW state (" + ("fp32 master + m + v, 12" if half else "fp32 m + v, 8") + f" B/param{shard})", p.optimizer),
    ]
    if p.fsdp:
        rows.append(("FSDP buffers (2 gathered units + 1 unit's gradients)", p.fsdp_buffers))
    act = "peak, checkpointed per block" if p.checkpointing else "peak over forward + backward"
    rows += [(f"activations ({act}, {p.per_gpu_batch} / GPU)", p.activations), ("total", p.total)]
    out = [f"plan: {p.kind} {p.config}: global batch {p.batch} = {p.gpus} GPU(s) x {p.per_gpu_batch}, "
           f"{p.precision}, {_mode(p)}{', activation checkpointing' if p.checkpointing else ''}",
           f"parameters: {p.parameters:,} ({p.parameters / 1e9:.3g}B)",
           f"per GPU (GiB of {p.gpu_memory_gib:g}):"]
    out += [f"  {name:<56s} {nbytes / GIB:10.3f}" for name, nbytes in rows]
    out.append(f"  {'peak if gradients are freed between steps (1 GPU trainer)':<56s} "
               f"{p.peak_freed_gradients / GIB:10.3f}")
    out.append(f"fits: {'yes' if p.fits else 'NO'}; largest per-GPU batch that fits: {p.max_per_gpu_batch} "
               f"(global {p.max_per_gpu_batch * p.gpus}); activations {p.per_example / 2 ** 20:.2f} MiB per {p.unit}")
    recompute = f" + {p.recompute_flops_per_step:.3g} recomputed" if p.checkpointing else ""
    out.append(f"FLOPs per training step (forward + backward): {p.flops_per_step:.3g} total{recompute}, "
               f"{(p.flops_per_step + p.recompute_flops_per_step) / p.gpus:.3g} per GPU, "
               f"{p.flops_per_example:.3g} per {p.unit}")
    out.append("convention: " + ("mixed precision as ZeRO: 2 B weights + 2 B gradients + 12 B AdamW state "
                                 "(fp32 master weights, m, v) = 16 B/param" if half else
                                 "fp32: 4 B weights + 4 B gradients + 8 B AdamW state (m, v) = 16 B/param"))
    if p.note:
        out.append(f"note: {p.note}")
    return "\n".join(out)


def full_size_table(per_gpu_batch: int = 16, gpus: int = 8, gpu_memory_gb: float = 80.0,
                    precision: str = "bf16") -> list[dict]:
    """Every full-size model of the package, trained with FSDP over ``gpus`` GPUs of ``gpu_memory_gb``
    GiB at ``precision`` with activation checkpointing, at ``per_gpu_batch`` per GPU: parameters,
    memory per GPU, the largest per-GPU batch that fits, and training FLOPs per image (forward +
    backward, and with checkpointing's recomputation). Tracing all of them takes a minute or two."""
    rows = []
    for (kind, config), label in TABLE_LABELS.items():
        p = plan(kind, config, per_gpu_batch * gpus, gpus, precision, fsdp=True, checkpointing=True,
                 gpu_memory_gb=gpu_memory_gb)
        rows.append({"model": label, "kind": kind, "config": config, "parameters": p.parameters,
                     "batch": p.batch, "per_gpu_batch": p.per_gpu_batch,
                     "memory_per_gpu_gib": round(p.total / GIB, 2), "fits": p.fits,
                     "max_per_gpu_batch": p.max_per_gpu_batch, "flops_per_image": p.flops_per_example,
                     "flops_per_image_with_recompute": (p.flops_per_step + p.recompute_flops_per_step) / p.batch,
                     "unit": p.unit})
    return rows


def format_table(rows: list[dict]) -> str:
    head = (f"{'model':<36s} {'params':>8s} {'GiB/GPU':>8s} {'batch/GPU':>9s} {'max':>6s} "
            f"{'FLOPs/img':>10s} {'+recomp':>9s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['model']:<36s} {r['parameters'] / 1e9:7.2f}B {r['memory_per_gpu_gib']:8.1f} "
                     f"{r['per_gpu_batch']:9d} {r['max_per_gpu_batch']:6d} {r['flops_per_image']:10.3g} "
                     f"{r['flops_per_image_with_recompute']:9.3g}")
    return "\n".join(lines)


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of ``unclip-lite plan`` (the caller sets ``func=cmd_plan``)."""
    parser.add_argument("kind", nargs="?", help=f"model kind: {', '.join(PLAN_KIND_NAMES)}")
    parser.add_argument("--config", help="config name (default: the kind's first full-size config)")
    parser.add_argument("--batch", type=int, help="global batch, split over the GPUs (default: 1 per GPU)")
    parser.add_argument("--gpus", type=int, default=1, help="data-parallel GPUs (default: 1)")
    parser.add_argument("--precision", default="bf16", help=f"{' | '.join(PRECISIONS)} (default: bf16)")
    parser.add_argument("--fsdp", action="store_true", help="shard weights, gradients and optimizer state (ZeRO-3)")
    parser.add_argument("--checkpointing", action="store_true", help="activation checkpointing per residual block")
    parser.add_argument("--gpu-memory", type=float, default=80.0, help="memory per GPU in GiB (default: 80)")
    parser.add_argument("--table", action="store_true",
                        help="print every full-size model on 8 x --gpu-memory GiB (bf16, FSDP, checkpointing)")


def cmd_plan(args) -> int:
    """Memory per GPU and FLOPs of a training step, measured on the meta device."""
    try:
        if args.table:
            print(format_table(full_size_table(gpu_memory_gb=args.gpu_memory)))
            return 0
        if not args.kind:
            raise PlanError(f"name a model kind ({', '.join(PLAN_KIND_NAMES)}), or pass --table")
        from unclip_lite.planner_models import PLAN_KINDS
        if args.config is None and args.kind in PLAN_KINDS:
            args.config = PLAN_KINDS[args.kind].full_size[0]
        batch = args.gpus if args.batch is None else args.batch
        p = plan(args.kind, args.config, batch, args.gpus, args.precision, args.fsdp, args.checkpointing,
                 args.gpu_memory)
        print(format_plan(p))
        p.require_fit()
    except DoesNotFitError as err:
        print(f"error: does not fit: {err}", file=sys.stderr)
        return 1
    except PlanError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


def as_dict(p: Plan) -> dict:
    """The plan as plain numbers (for JSON), with its derived totals."""
    return {**asdict(p), "per_gpu_batch": p.per_gpu_batch, "total": p.total, "fits": p.fits,
            "peak_freed_gradients": p.peak_freed_gradients, "flops_per_example": p.flops_per_example}


if __name__ == "__main__":
    _parser = argparse.ArgumentParser(prog="python -m unclip_lite.planner", description=cmd_plan.__doc__)
    add_plan_arguments(_parser)
    sys.exit(cmd_plan(_parser.parse_args()))
