"""Run under torchrun (2 CPU processes, gloo): the distributed CLIP loss and the gradients
that DDP averages must equal the single-process ones on the same global batch."""
import sys

import torch
import torch.distributed as dist

from unclip_lite.clip import build_clip, get_config
from unclip_lite.clip.loss import clip_loss, distributed_clip_loss
from unclip_lite.train.trainer import distributed_setup


def tiny_clip():
    cfg = get_config("shapes-tiny")
    cfg.vision.layers, cfg.text.layers, cfg.text.vocab_size = 1, 1, 40
    torch.manual_seed(0)
    return build_clip(cfg)


def main(out_path):
    rank, world = distributed_setup()
    g = torch.Generator().manual_seed(7)
    images = torch.randn(8, 3, 32, 32, generator=g)
    tokens = torch.randint(4, 40, (8, 16), generator=g)
    tokens[:, 0], tokens[:, 9], tokens[:, 10:] = 1, 2, 0

    # Single process, whole batch: the reference (every rank computes it identically).
    reference = tiny_clip()
    ref_loss = clip_loss(*reference(images, tokens))
    ref_loss.backward()
    ref_grads = torch.cat([p.grad.flatten() for p in reference.parameters()])

    # Distributed: each rank sees its slice; DDP averages the gradients.
    model = torch.nn.parallel.DistributedDataParallel(tiny_clip())
    n = len(images) // world
    mine = slice(rank * n, (rank + 1) * n)
    loss = distributed_clip_loss(*model(images[mine], tokens[mine]))
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in model.module.parameters()])
    mean_loss = loss.detach().clone()
    dist.all_reduce(mean_loss)
    mean_loss /= world
    if rank == 0:
        torch.save({"ref_loss": ref_loss.detach(), "loss": mean_loss, "ref_grads": ref_grads,
                    "grads": grads, "world": world}, out_path)
    # an orderly teardown: both ranks done, DDP's reducer gone, then the group (a rank that
    # exits while its peer still talks, or with DDP alive, can abort in gloo's destructors)
    dist.barrier()
    del model
    dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1])
