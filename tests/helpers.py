"""Small helpers shared by the test files."""
import torch


@torch.no_grad()
def unzero_(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Fill the U-Net's zero-initialised layers with noise, so a fresh model's output depends on
    its inputs (at initialisation the last conv is zero and every output would be 0)."""
    for p in model.unet.parameters():
        if p.abs().sum() == 0:
            p.normal_(std=std)
    return model
