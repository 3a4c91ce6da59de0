"""Small models and helpers shared by the test files (import them from here, never from
another test module)."""
import torch

from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
from unclip_lite.clip.model import CLIP
from unclip_lite.clip.recipes import shapes_vocab
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.glide.bundle import GlideBundle
from unclip_lite.glide.classifier import ClassifierConfig, NoisedClassifier
from unclip_lite.glide.text2im import Text2Im, Text2ImConfig
from unclip_lite.unet import UNetConfig


@torch.no_grad()
def unzero_(model: torch.nn.Module, std: float = 0.05) -> torch.nn.Module:
    """Fill the U-Net's zero-initialised layers with noise, so a fresh model's output depends on
    its inputs (at initialisation the last conv is zero and every output would be 0)."""
    for p in model.unet.parameters():
        if p.abs().sum() == 0:
            p.normal_(std=std)
    return model


def tiny_bundle(seed: int = 0, image_size: int = 32) -> GlideBundle:
    """A Shapes GLIDE small enough to sample in a test (non-zero output layer, so not trivial)."""
    vocab = shapes_vocab()
    unet = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(16,),
                      num_head_channels=16, image_size=image_size, encoder_channels=32, cond_dim=32)
    torch.manual_seed(seed)
    model = Text2Im(Text2ImConfig(unet, vocab.size, 24, 32, 1, 2)).eval()
    unzero_(model)
    return GlideBundle(model, vocab, DiffusionConfig("cosine", 20))


def tiny_clip(noised: bool = True) -> CLIPBundle:
    vocab = shapes_vocab()
    cfg = CLIPConfig(embed_dim=32,
                     vision=VisionConfig(image_size=32, layers=1, width=32, heads=2, patch_size=8,
                                         timestep_conditioned=noised),
                     text=TextConfig(context_length=16, vocab_size=vocab.size, width=32, heads=2, layers=1,
                                     eot_token_id=vocab.EOT))
    torch.manual_seed(0)
    return CLIPBundle(CLIP(cfg).eval(), vocab)


def tiny_classifier(seed: int = 0) -> NoisedClassifier:
    torch.manual_seed(seed)
    unet = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                      num_head_channels=16, image_size=16)
    return NoisedClassifier(ClassifierConfig(unet, {"colour": 8, "shape": 5}, pool_heads=2)).eval()
