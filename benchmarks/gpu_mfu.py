"""Model FLOPs utilisation (MFU) of our training steps against their peers', on one GPU (issue 17).

Three full-size configs, each trained by our model and the peer library's at the same widths,
in one harness: a fixed batch on the device, bf16 autocast, fused AdamW over the trainer's
``param_groups``, ``zero_grad(set_to_none=True)``, ``torch.compile`` on both sides with ``--compile``.

* ``clip``: CLIP ViT-B/32 at batch 512. Peer: ``open_clip.create_model("ViT-B-32")`` and its
  ``ClipLoss``. Ours: ``config_from_open_clip("ViT-B-32")``, nn.GELU as theirs (our preset of
  that name is OpenAI's QuickGELU variant).
* ``unet``: the ADM U-Net of GLIDE's released 64 px base (``glide-base-released``: 192 channels,
  mult 1-2-3-4, 3 blocks, attention at 32/16/8 px, scale-shift norm, BigGAN resampling, learned
  sigma) at batch 64, fed 128 text tokens of width 512 and a pooled text vector. Peer: diffusers'
  ``UNet2DConditionModel`` in the layout of diffusers' unCLIP (Karlo) decoder:
  ``ResnetDownsampleBlock2D`` / ``SimpleCrossAttn*Block2D`` (text tokens concatenated to every
  attention layer's keys and values, GLIDE's ``encoder_kv``), ``scale_shift`` norm. What differs:
  the pooled text vector goes through diffusers' two-layer ``class_embed_type="projection"`` MLP
  (ours: one linear layer); diffusers projects q, k, v separately (ours fuses them); ours masks
  padded text tokens, diffusers' blocks take no mask (none are padded here). Parameters differ
  by 0.2%, FLOPs per image by < 0.01% (both recorded).
* ``prior``: the 1B diffusion prior at Karlo's widths (our ``karlo``: width 2048, 20 layers, 32
  heads, 77 caption tokens) at batch 128. Peer: diffusers' ``PriorTransformer(**diffusers_config)``
  (``unclip_lite.unclip.convert``), the same architecture weight for weight: the run loads our
  weights into it and records the largest output difference. Ours fuses q, k, v. (The paper's
  ``paper-1b`` reads 256 caption tokens and 1,024-d embeddings.)

FLOPs: ``torch.utils.flop_counter.FlopCounterMode`` over one forward + backward of each step on
a ``meta`` copy (no memory; the same on every device), attention on SDPA's math backend: counted
as its matmuls, forward and twice that backward, never a fused kernel's recomputation. That is
*model* FLOPs, the MFU convention (Chowdhery et al. 2022, PaLM, App. B). ``unclip-lite plan``
counts through the memory-efficient attention op, recomputation included: slightly higher.

Peak: a large bf16 matmul loop on the device itself (``--peak-size``), best of three rounds. MFU =
achieved FLOP/s / that peak (and / the datasheet's dense bf16 peak where the GPU is known). The
issue's reference points (one H100): open_clip ViT-B-32 22% MFU eager, 33% compiled; a diffusers
ADM-like U-Net 21%; diffusers' 1B PriorTransformer 52%. The goal: ours >= 1.5 x those.

Timing: ``--warmup`` steps (compilation included) untimed, then ``--rounds`` rounds of ``--steps``
steps, CUDA-synchronised before and after each; seconds per step is the median round's mean. Each
side is built, timed and freed in turn. ``--smoke`` runs every code path on the CPU at tiny
configs (batch 2, fp32, few steps); its MFU figures (against the CPU's fp32 matmul peak, measured
the same way) claim nothing. Written from reading: no GPU was available when it was written.

    python benchmarks/gpu_mfu.py [--compile] [--only clip,unet,prior] [--out gpu_mfu.json]
    python benchmarks/gpu_mfu.py --smoke --out /tmp/mfu.json
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.attention import SDPBackend, sdpa_kernel  # noqa: E402
from torch.utils.flop_counter import FlopCounterMode  # noqa: E402

from unclip_lite.checkpoints import atomic_write  # noqa: E402
from unclip_lite.hardware import autocast  # noqa: E402
from unclip_lite.train.trainer import param_groups  # noqa: E402

CONFIG_NAMES = ("clip", "unet", "prior")
# The reference MFUs of the peers on one H100, eager and compiled where it gives both; the
# goal is ours >= GOAL_FACTOR x these (a compiled run without its own reference is held to the eager one).
REFERENCE_MFU = {"clip": {"eager": 0.22, "compiled": 0.33}, "unet": {"eager": 0.21}, "prior": {"eager": 0.52}}
GOAL_FACTOR = 1.5
# Dense bf16 tensor-core peaks from NVIDIA's datasheets (TFLOP/s, no sparsity), by device-name substring.
DATASHEET_BF16_TFLOPS = {"H200": 989.4, "GH200": 989.4, "H100 PCIe": 756.5, "H100 NVL": 835.5, "H100": 989.4,
                         "A100": 312.0, "L40S": 362.1, "A10G": 70.0, "L4": 121.0}


@dataclass
class Side:
    """One implementation's training step: ``loss(model, *batch)`` for ``model = build()``."""

    impl: str
    build: Callable[[], nn.Module]  # called under ``with torch.device(...)``
    batch: Callable[[torch.device, torch.Generator], tuple]  # the step's fixed inputs
    loss: Callable[..., torch.Tensor]


@dataclass
class Bench:
    name: str
    label: str
    batch_size: int
    ours: Side
    theirs: Side
    differences: str
    config: dict
    twin_check: Callable[[nn.Module, nn.Module, tuple], float] | None = None  # max |ours - theirs| output


def _mse(out: torch.Tensor) -> torch.Tensor:
    return F.mse_loss(out.float(), torch.zeros_like(out, dtype=torch.float32))  # the loss's cost is negligible


def clip_bench(smoke: bool) -> Bench:
    import open_clip

    from unclip_lite.clip import build_clip, get_config
    from unclip_lite.clip.interop import config_from_open_clip, to_open_clip_config
    from unclip_lite.clip.loss import clip_loss

    if smoke:
        cfg = get_config("shapes-tiny")
        cfg.activation, cfg.text.eot_token_id = "gelu", None  # pool at the largest id, as open_clip does
        theirs = lambda: open_clip.CLIP(**to_open_clip_config(cfg))  # noqa: E731
    else:
        cfg = config_from_open_clip("ViT-B-32")
        theirs = lambda: open_clip.create_model("ViT-B-32", device=torch.get_default_device())  # noqa: E731
    B, S, L, V = 2 if smoke else 512, cfg.vision.image_size, cfg.text.context_length, cfg.text.vocab_size

    def batch(device, g):
        tokens = torch.randint(1, V - 1, (B, L), generator=g)
        length, position = torch.randint(2, L, (B, 1), generator=g), torch.arange(L)[None]
        tokens = torch.where(position == length, V - 1, tokens).masked_fill(position > length, 0)  # EOT = largest id
        return torch.randn(B, 3, S, S, generator=g).to(device), tokens.to(device)

    open_clip_loss = open_clip.ClipLoss()
    return Bench("clip", f"CLIP {'shapes-tiny' if smoke else 'ViT-B/32'} x {B}", B,
                 Side("unclip_lite", lambda: build_clip(cfg), batch, lambda m, x, t: clip_loss(*m(x, t))),
                 Side("open_clip", theirs, batch, lambda m, x, t: open_clip_loss(*m(x, t)[:3])),
                 "same architecture and activation (GELU); our clip_loss vs open_clip's ClipLoss",
                 {"vision_width": cfg.vision.width, "vision_layers": cfg.vision.layers, "patch": cfg.vision.patch_size,
                  "image_size": S, "text_width": cfg.text.width, "text_layers": cfg.text.layers})


def diffusers_unet_twin(cfg):
    """diffusers' ``UNet2DConditionModel`` laid out as our GLIDE-style ``UNetConfig`` (see the docstring)."""
    from diffusers import UNet2DConditionModel

    channels = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    attention = [cfg.image_size // 2 ** i in cfg.attention_resolutions for i in range(len(channels))]
    return UNet2DConditionModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.final_out_channels,
        down_block_types=tuple("SimpleCrossAttnDownBlock2D" if a else "ResnetDownsampleBlock2D" for a in attention),
        mid_block_type="UNetMidBlock2DSimpleCrossAttn",
        up_block_types=tuple("SimpleCrossAttnUpBlock2D" if a else "ResnetUpsampleBlock2D" for a in attention[::-1]),
        block_out_channels=channels, layers_per_block=cfg.num_res_blocks, dropout=cfg.dropout,
        norm_num_groups=cfg.num_groups, cross_attention_dim=cfg.encoder_channels,
        attention_head_dim=cfg.num_head_channels, resnet_time_scale_shift="scale_shift",
        class_embed_type="projection", projection_class_embeddings_input_dim=cfg.cond_dim,
        flip_sin_to_cos=True, freq_shift=0)


def unet_bench(smoke: bool) -> Bench:
    from unclip_lite.unet import UNet, UNetConfig, get_unet_config

    cfg = (UNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                      num_head_channels=32, dropout=0.1, resblock_updown=True, learn_sigma=True, image_size=16,
                      encoder_channels=32, cond_dim=32)  # a miniature of the layout below
           if smoke else get_unet_config("glide-base-released"))
    B, S, tokens = 2 if smoke else 64, cfg.image_size, 8 if smoke else 128

    def batch(device, g):
        return tuple(v.to(device) for v in (torch.randn(B, cfg.in_channels, S, S, generator=g),
                                            torch.randint(0, 1000, (B,), generator=g),
                                            torch.randn(B, tokens, cfg.encoder_channels, generator=g),
                                            torch.randn(B, cfg.cond_dim, generator=g)))

    return Bench("unet", f"ADM U-Net {'(tiny)' if smoke else 'glide-base-released'} {S} px x {B}", B,
                 Side("unclip_lite", lambda: UNet(cfg), batch,
                      lambda m, x, t, ctx, c: _mse(m(x, t, context=ctx, cond=c))),
                 Side("diffusers UNet2DConditionModel", lambda: diffusers_unet_twin(cfg), batch,
                      lambda m, x, t, ctx, c: _mse(m(x, t, encoder_hidden_states=ctx, class_labels=c).sample)),
                 "diffusers: two-layer MLP for the pooled text vector (ours one linear), separate q/k/v "
                 "projections, no text padding mask; same channels, blocks, heads, scale-shift norm, BigGAN resampling",
                 {**cfg.to_dict(), "text_tokens": tokens})


def prior_bench(smoke: bool) -> Bench:
    from diffusers import PriorTransformer

    from unclip_lite.unclip.convert import diffusers_config, to_diffusers_state_dict
    from unclip_lite.unclip.prior import DiffusionPrior, PriorConfig, get_prior_config

    cfg = PriorConfig(embed_dim=16, context_length=8, width=32, layers=2, heads=2) if smoke else get_prior_config("karlo")
    B, E, L = 2 if smoke else 128, cfg.embed_dim, cfg.context_length

    def batch(device, g):
        lengths = torch.randint(1, L + 1, (B, 1), generator=g)
        return tuple(v.to(device) for v in (torch.randn(B, E, generator=g), torch.randint(0, 1000, (B,), generator=g),
                                            torch.randn(B, E, generator=g), torch.randn(B, L, E, generator=g),
                                            torch.arange(L)[None] < lengths))

    def theirs(m, z, t, z_t, tokens, mask):
        return m(z, t, proj_embedding=z_t, encoder_hidden_states=tokens, attention_mask=mask).predicted_image_embedding

    @torch.no_grad()
    def twin_check(ours_model, theirs_model, inputs) -> float:
        """Load our weights into diffusers' prior; the largest difference of their fp32 outputs."""
        theirs_model.load_state_dict(to_diffusers_state_dict(ours_model), strict=True)
        return (ours_model(*inputs).float() - theirs(theirs_model, *inputs).float()).abs().max().item()

    return Bench("prior", f"diffusion prior {'(tiny)' if smoke else 'Karlo 1B'} x {B}", B,
                 Side("unclip_lite", lambda: DiffusionPrior(cfg), batch, lambda m, *x: _mse(m(*x))),
                 Side("diffusers PriorTransformer", lambda: PriorTransformer(**diffusers_config(cfg)), batch,
                      lambda m, *x: _mse(theirs(m, *x))),
                 "the same architecture weight for weight (unclip_lite.unclip.convert); ours fuses q, k, v",
                 cfg.to_dict(), twin_check)


BUILDERS = {"clip": clip_bench, "unet": unet_bench, "prior": prior_bench}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int, iters: int, rounds: int = 3) -> float:
    """FLOP/s of the best of ``rounds`` loops of ``iters`` [n, n] @ [n, n] matmuls in ``dtype``."""
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    out = torch.empty(n, n, device=device, dtype=dtype)
    for _ in range(3):
        torch.mm(a, b, out=out)  # warm-up: kernel selection, clocks
    best = 0.0
    for _ in range(rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(iters):
            torch.mm(a, b, out=out)
        synchronize(device)
        best = max(best, 2 * n ** 3 * iters / (time.perf_counter() - start))
    return best


def count_flops(side: Side, inputs_on: Callable[[torch.device], tuple]) -> int:
    """Model FLOPs of one forward + backward, on a ``meta`` copy with math attention (see the docstring)."""
    meta = torch.device("meta")
    with meta:
        model = side.build().train()
    with sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        side.loss(model, *inputs_on(meta)).backward()
    return counter.get_total_flops()


def time_side(side: Side, device: torch.device, precision: str, args) -> dict:
    """Build ``side`` on ``device``, warm up and time its training step; the model is freed on return."""
    with device:
        model = side.build().train()
    inputs = side.batch(device, torch.Generator().manual_seed(0))
    optimizer = torch.optim.AdamW(param_groups(model, 0.1), lr=1e-4, fused=True)
    run = torch.compile(model, backend=args.compile_backend) if args.compile else model

    def step():
        with autocast(precision, device):
            loss = side.loss(run, *inputs)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(args.warmup):
        step()
    rounds = []
    for _ in range(args.rounds):
        synchronize(device)
        start = time.perf_counter()
        for _ in range(args.steps):
            step()
        synchronize(device)
        rounds.append((time.perf_counter() - start) / args.steps)
    return {"impl": side.impl, "parameters": sum(p.numel() for p in model.parameters()),
            "seconds_per_step": statistics.median(rounds), "round_seconds_per_step": rounds,
            "timed_steps": args.rounds * args.steps,
            "peak_memory_gib": torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None}


def free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def run_bench(bench: Bench, device: torch.device, precision: str, peak: float, args) -> dict:
    twin = None
    if bench.twin_check is not None:  # first, so that the timed sides never share the device
        with device:
            ours, theirs = bench.ours.build().eval(), bench.theirs.build().eval()
        twin = bench.twin_check(ours, theirs, bench.ours.batch(device, torch.Generator().manual_seed(0)))
        del ours, theirs
        free(device)
    sides = {}
    for key, side in (("ours", bench.ours), ("theirs", bench.theirs)):
        flops = count_flops(side, lambda d, s=side: s.batch(d, torch.Generator().manual_seed(0)))
        result = time_side(side, device, precision, args)
        free(device)
        result["flops_per_step"] = flops
        result["tflops"] = flops / result["seconds_per_step"] / 1e12
        result["mfu"] = flops / result["seconds_per_step"] / peak
        result["examples_per_second"] = bench.batch_size / result["seconds_per_step"]
        sides[key] = result
    out = {"name": bench.name, "label": bench.label, "batch": bench.batch_size, **sides,
           "ratio": sides["ours"]["mfu"] / sides["theirs"]["mfu"],
           "throughput_ratio": sides["ours"]["examples_per_second"] / sides["theirs"]["examples_per_second"],
           "flops_ratio": sides["ours"]["flops_per_step"] / sides["theirs"]["flops_per_step"],
           "differences": bench.differences, "config": bench.config}
    if twin is not None:
        out["twin_max_abs_difference"] = twin
    known = REFERENCE_MFU[bench.name]
    mode = "compiled" if args.compile and "compiled" in known else "eager"
    if not args.smoke:
        out["reference"] = {"theirs_mfu_on_h100": known[mode], "mode": mode, "goal_ours_mfu": GOAL_FACTOR * known[mode],
                            "goal_met": sides["ours"]["mfu"] >= GOAL_FACTOR * known[mode]}
    return out


def datasheet_peak(device: torch.device) -> float | None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else ""
    return next((tflops * 1e12 for key, tflops in DATASHEET_BF16_TFLOPS.items() if key in name), None)


def report(record: dict) -> str:
    lines = [f"device: {record['device_name']}; {record['precision']}; compile: {record['compile']}; "
             f"{record['dtype']} matmul peak measured {record['peak_tflops']:.1f} TFLOP/s "
             f"({record['peak_matmul_size']}^2)" + (f", datasheet {record['datasheet_tflops']:.1f}"
                                                    if record["datasheet_tflops"] else ""),
             f"{'config':<38s} {'side':<32s} {'params':>9s} {'GFLOP/step':>11s} {'ms/step':>9s} {'TFLOP/s':>8s} {'MFU':>6s}"]
    for c in record["configs"]:
        for key in ("ours", "theirs"):
            s = c[key]
            lines.append(f"{c['label'] if key == 'ours' else '':<38s} {s['impl']:<32s} {s['parameters'] / 1e6:8.1f}M "
                         f"{s['flops_per_step'] / 1e9:11.1f} {s['seconds_per_step'] * 1e3:9.2f} {s['tflops']:8.2f} "
                         f"{100 * s['mfu']:5.1f}%")
        twin = c.get("twin_max_abs_difference")
        lines.append(f"{'':<38s} ours/theirs: MFU {c['ratio']:.3f}, examples/s {c['throughput_ratio']:.3f}, FLOPs "
                     f"{c['flops_ratio']:.5f}" + ("" if twin is None else f"; same weights: max difference {twin:.2e}"))
        if r := c.get("reference"):
            lines.append(f"{'':<38s} issue's reference: peer {100 * r['theirs_mfu_on_h100']:.0f}% ({r['mode']}) on one "
                         f"H100; goal ours >= {100 * r['goal_ours_mfu']:.1f}%: {'met' if r['goal_met'] else 'MISSED'}")
    smoke = ["smoke run: tiny configs on the CPU in fp32; the MFU figures above claim nothing"] if record["smoke"] else []
    return "\n".join(lines + smoke)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny configs, batch 2, fp32, on the CPU")
    parser.add_argument("--compile", action="store_true", help="torch.compile both sides' models")
    parser.add_argument("--compile-backend", default="inductor")
    parser.add_argument("--only", default=",".join(CONFIG_NAMES), help=f"comma-separated subset of {CONFIG_NAMES}")
    parser.add_argument("--warmup", type=int, help="untimed steps per side (default 5; smoke 1)")
    parser.add_argument("--steps", type=int, help="timed steps per round (default 10; smoke 2)")
    parser.add_argument("--rounds", type=int, help="timed rounds (default 3; smoke 1)")
    parser.add_argument("--peak-size", type=int, help="matmul size for the peak (default 8192; smoke 256)")
    parser.add_argument("--device", help="default: cuda (cpu with --smoke)")
    parser.add_argument("--out", default="gpu_mfu.json", help="where to write the JSON record")
    args = parser.parse_args(argv)
    for name, full, smoke in (("warmup", 5, 1), ("steps", 10, 2), ("rounds", 3, 1), ("peak_size", 8192, 256)):
        setattr(args, name, (smoke if args.smoke else full) if getattr(args, name) is None else getattr(args, name))
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(CONFIG_NAMES))
    if unknown or not args.only:
        parser.error(f"--only takes names from {', '.join(CONFIG_NAMES)}; got {unknown or 'none'}")
    if args.steps < 1 or args.rounds < 1 or args.warmup < 0 or args.peak_size < 16:
        parser.error("--steps and --rounds must be >= 1, --warmup >= 0 and --peak-size >= 16")
    args.device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if args.device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: this benchmark needs a GPU; on a CPU run it with --smoke")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    device, precision = args.device, "fp32" if args.smoke else "bf16"
    dtype = torch.float32 if args.smoke else torch.bfloat16
    if device.type == "cuda":
        torch.cuda.set_device(device)
    peak = matmul_peak(device, dtype, args.peak_size, iters=10 if args.smoke else 100)
    configs = [run_bench(BUILDERS[name](args.smoke), device, precision, peak, args) for name in args.only]
    sheet = datasheet_peak(device)
    record = {"device": str(device), "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else
              "CPU", "torch": torch.__version__, "smoke": args.smoke, "compile": args.compile, "precision": precision,
              "dtype": str(dtype).removeprefix("torch."), "peak_flops": peak, "peak_tflops": peak / 1e12,
              "peak_matmul_size": args.peak_size, "datasheet_tflops": sheet / 1e12 if sheet else None,
              "warmup": args.warmup, "steps": args.steps, "rounds": args.rounds,
              "goal_factor": GOAL_FACTOR, "configs": configs}
    for c in configs if sheet else []:
        for key in ("ours", "theirs"):
            c[key]["mfu_datasheet"] = c[key]["tflops"] * 1e12 / sheet
    print(report(record))
    atomic_write(args.out, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
