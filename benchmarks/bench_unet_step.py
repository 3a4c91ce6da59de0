"""U-Net training-step time: unclip_lite's ADM U-Net vs diffusers' UNet2DModel at a matched config.

Both get channels (64, 128, 128), 2 res blocks per level (3 on the way up), attention at 16 and 8 px
with 32 channels per head (and in the middle block), scale-shift norm, conv up/downsampling,
32 px images; the same batch, timesteps, AdamW and precision. Steps alternate between the two so
that machine noise hits both alike. Goal: ratio ours / diffusers <= 1.0.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_unet_step.py [--batch 16] [--steps 6]
"""
import argparse
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from diffusers import UNet2DModel  # noqa: E402

from side_by_side import adamw_step, alternate, ratio_line  # noqa: E402
from unclip_lite.unet import UNet, count_parameters, get_unet_config  # noqa: E402
from unclip_lite.hardware import resolve_precision  # noqa: E402


def diffusers_twin(cfg) -> UNet2DModel:
    """diffusers' UNet2DModel with the same structure as our ``cfg`` (no resblock_updown, no learn_sigma)."""
    channels = tuple(cfg.model_channels * m for m in cfg.channel_mult)
    resolutions = [cfg.image_size // 2**i for i in range(len(channels))]
    attn = [r in cfg.attention_resolutions for r in resolutions]
    return UNet2DModel(
        sample_size=cfg.image_size, in_channels=cfg.in_channels, out_channels=cfg.final_out_channels,
        block_out_channels=channels, layers_per_block=cfg.num_res_blocks,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        attention_head_dim=cfg.num_head_channels, norm_num_groups=cfg.num_groups, dropout=cfg.dropout,
        attn_norm_num_groups=cfg.num_groups,  # else diffusers drops the mid-block attention norm with scale_shift
        resnet_time_scale_shift="scale_shift" if cfg.use_scale_shift_norm else "default",
        flip_sin_to_cos=True, freq_shift=0,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="shapes-tiny")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per model and precision")
    parser.add_argument("--precisions", nargs="+", default=["auto"], choices=["auto", "fp32", "bf16"],
                        help="auto: bf16 only where this CPU computes it natively (bench_precision.py compares)")
    parser.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", 2)))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = get_unet_config(args.config)
    ours, theirs = UNet(cfg), diffusers_twin(cfg)
    print(f"config {args.config}: channels {[cfg.model_channels * m for m in cfg.channel_mult]}, "
          f"{cfg.num_res_blocks} res blocks, attention at {cfg.attention_resolutions} px, "
          f"{cfg.image_size} px, batch {args.batch}, {args.threads} threads")
    print(f"parameters: unclip_lite {count_parameters(ours):,}  diffusers {count_parameters(theirs):,}")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(args.batch, cfg.in_channels, cfg.image_size, cfg.image_size, generator=g)
    noise = torch.randn(args.batch, cfg.final_out_channels, cfg.image_size, cfg.image_size, generator=g)
    t = torch.randint(0, 1000, (args.batch,), generator=g)
    steps = {
        "unclip_lite": adamw_step(ours, lambda: F.mse_loss(ours(x, t).float(), noise)),
        "diffusers": adamw_step(theirs, lambda: F.mse_loss(theirs(x, t).sample.float(), noise)),
    }
    for precision in dict.fromkeys(resolve_precision(p) for p in args.precisions):
        medians = alternate({name: (lambda s=s: s(precision)) for name, s in steps.items()}, args.steps)
        print(f"{precision}: " + ratio_line(medians, "unclip_lite", "diffusers"))

if __name__ == "__main__":
    main()
