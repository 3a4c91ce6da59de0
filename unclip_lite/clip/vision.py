"""CLIP's image encoders: the Vision Transformer and the modified ResNet (Radford et al. 2021, §2.4).

Both map images [B, 3, H, W] to one vector [B, embed_dim] in the joint embedding space.
Parameter names follow OpenAI's release (``conv1``, ``layer1``, ``attnpool``, ``ln_post``,
``proj``), except the ViT's patch convolution, ``patch_embed`` (OpenAI: ``conv1``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from unclip_lite.clip.configs import VisionConfig
from unclip_lite.nn import CheckpointableBlock, LayerNorm, Transformer, timestep_embedding


def check_images(images: torch.Tensor, image_size: int, channels: int = 3) -> None:
    """Raise a ValueError naming expected vs got unless ``images`` is [B, channels, size, size]."""
    expected = f"[B, {channels}, {image_size}, {image_size}]"
    if not isinstance(images, torch.Tensor):
        raise ValueError(f"expected an image tensor of shape {expected}, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1:] != (channels, image_size, image_size):
        raise ValueError(f"expected images of shape {expected}, got {list(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"expected floating-point images (normalised pixels), got dtype {images.dtype}")


class VisionTransformer(nn.Module):
    """ViT (Dosovitskiy et al. 2021) as CLIP uses it (§2.4): patches -> tokens -> transformer.

    CLIP's one change is an extra LayerNorm (``ln_pre``) on the patch + position embeddings
    before the transformer. The image embedding is the class token after ``ln_post``,
    projected linearly into the joint space.

    With ``timestep_conditioned`` (a noise-aware CLIP for guiding diffusion, GLIDE §2.4) the
    diffusion timestep t becomes one more token after the class token: a sinusoidal
    embedding through a two-layer MLP, with its own position.
    """

    def __init__(self, cfg: VisionConfig, embed_dim: int, activation: str = "gelu"):
        super().__init__()
        self.image_size = cfg.image_size
        self.grid = cfg.image_size // cfg.patch_size
        width = cfg.width
        # a conv with kernel = stride = patch is "cut into patches, flatten, Linear" in one op
        self.patch_embed = nn.Conv2d(3, width, kernel_size=cfg.patch_size, stride=cfg.patch_size, bias=False)
        self.class_embedding = nn.Parameter(torch.empty(width))
        self.timestep_conditioned = cfg.timestep_conditioned
        self.time_embed = (nn.Sequential(nn.Linear(width, width), nn.SiLU(), nn.Linear(width, width))
                           if cfg.timestep_conditioned else None)
        extra = 2 if cfg.timestep_conditioned else 1  # class token (+ timestep token)
        self.positional_embedding = nn.Parameter(torch.empty(self.grid**2 + extra, width))
        self.ln_pre = LayerNorm(width)
        self.transformer = Transformer(width, cfg.layers, cfg.heads, cfg.mlp_ratio, activation)
        self.ln_post = LayerNorm(width)
        self.proj = nn.Parameter(torch.empty(width, embed_dim))
        self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        # OpenAI's ViT init: embeddings and projection ~ N(0, 1/width), blocks GPT-2 style
        scale = self.proj.shape[0] ** -0.5
        nn.init.normal_(self.class_embedding, std=scale)
        nn.init.normal_(self.positional_embedding, std=scale)
        nn.init.normal_(self.proj, std=scale)
        self.transformer.init_weights()

    def forward(self, images: torch.Tensor, t: torch.Tensor | None = None) -> torch.Tensor:
        check_images(images, self.image_size)
        if self.timestep_conditioned != (t is not None):
            raise ValueError("this image tower reads a timestep: pass t [B]" if self.timestep_conditioned
                             else "t given, but this image tower is not timestep_conditioned")
        x = self.patch_embed(images.to(self.patch_embed.weight.dtype))  # [B, D, g, g]
        x = rearrange(x, "b d gh gw -> b (gh gw) d")  # [B, g*g, D]
        tokens = [self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)]  # [B, 1, D]
        if self.time_embed is not None:
            t = torch.as_tensor(t, device=x.device).reshape(-1).expand(len(x))  # [B]
            emb = self.time_embed(timestep_embedding(t, x.shape[-1]).to(x.dtype))  # [B, D]
            tokens.append(emb[:, None])
        x = torch.cat([*tokens, x], dim=1) + self.positional_embedding.to(x.dtype)  # [B, 1(+1)+g*g, D]
        x = self.transformer(self.ln_pre(x))  # [B, 1(+1)+g*g, D]
        return self.ln_post(x[:, 0]) @ self.proj  # [B, E]


# ----------------------------------------------------------------------------- ResNet


class Bottleneck(CheckpointableBlock):
    """ResNet bottleneck (1x1 -> 3x3 -> 1x1, 4x expansion) with anti-aliased downsampling.

    CLIP's change (§2.4, after Zhang 2019): a stride-s block never strides a convolution;
    it average-pools by s first (after the 3x3 on the main path, before the 1x1 on the shortcut),
    which blurs before subsampling and avoids aliasing.
    """

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.avgpool = nn.AvgPool2d(stride) if stride > 1 else nn.Identity()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.downsample = None
        if stride > 1 or in_planes != out_planes:
            # OpenAI's names: "-1" is the pool (no weights), "0" the conv, "1" the norm
            self.downsample = nn.Sequential()
            self.downsample.add_module("-1", nn.AvgPool2d(stride))
            self.downsample.add_module("0", nn.Conv2d(in_planes, out_planes, 1, bias=False))
            self.downsample.add_module("1", nn.BatchNorm2d(out_planes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.maybe_checkpoint(self._residual, x)

    def _residual(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # [B, P, H, W]
        out = F.relu(self.bn2(self.conv2(out)))  # [B, P, H, W]
        out = self.bn3(self.conv3(self.avgpool(out)))  # [B, 4P, H/s, W/s]
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class AttentionPool2d(nn.Module):
    """Replace global average pooling by one layer of attention (§2.4).

    The query is the mean of the feature map; keys and values are the mean plus every
    position, each with a learned positional embedding. Only the one pooled query is
    computed, so ``q_proj`` sees the mean token alone.
    """

    def __init__(self, grid: int, width: int, heads: int, out_dim: int):
        super().__init__()
        self.heads = heads
        self.positional_embedding = nn.Parameter(torch.empty(grid**2 + 1, width))
        self.k_proj = nn.Linear(width, width)
        self.q_proj = nn.Linear(width, width)
        self.v_proj = nn.Linear(width, width)
        self.c_proj = nn.Linear(width, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = rearrange(x, "b c h w -> b (h w) c")  # [B, HW, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1)  # [B, 1+HW, C]
        x = x + self.positional_embedding.to(x.dtype)
        q = rearrange(self.q_proj(x[:, :1]), "b l (h d) -> b h l d", h=self.heads)  # [B, H, 1, d]
        k = rearrange(self.k_proj(x), "b l (h d) -> b h l d", h=self.heads)  # [B, H, 1+HW, d]
        v = rearrange(self.v_proj(x), "b l (h d) -> b h l d", h=self.heads)  # [B, H, 1+HW, d]
        y = F.scaled_dot_product_attention(q, k, v)  # [B, H, 1, d]
        return self.c_proj(rearrange(y, "b h 1 d -> b (h d)"))  # [B, E]


class ModifiedResNet(nn.Module):
    """CLIP's ResNet-50 variants (§2.4): a ResNet-D-style stem of three 3x3 convs with an
    average pool, anti-aliased strided blocks, and attention pooling instead of avg-pool + fc."""

    def __init__(self, cfg: VisionConfig, embed_dim: int):
        super().__init__()
        self.image_size = cfg.image_size
        width = cfg.width
        # stem: /2 by conv1's stride, /2 by the pool -> [B, width, H/4, W/4]
        self.conv1 = nn.Conv2d(3, width // 2, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width // 2)
        self.conv2 = nn.Conv2d(width // 2, width // 2, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width // 2)
        self.conv3 = nn.Conv2d(width // 2, width, 3, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(width)
        self.avgpool = nn.AvgPool2d(2)
        # four stages; stages 2-4 halve the resolution -> [B, 32 * width, H/32, W/32]
        self.in_planes = width
        self.layer1 = self._stage(width, cfg.layers[0], stride=1)
        self.layer2 = self._stage(width * 2, cfg.layers[1], stride=2)
        self.layer3 = self._stage(width * 4, cfg.layers[2], stride=2)
        self.layer4 = self._stage(width * 8, cfg.layers[3], stride=2)
        self.attnpool = AttentionPool2d(cfg.image_size // 32, width * 32, cfg.heads, embed_dim)
        self.init_weights()

    def _stage(self, planes: int, blocks: int, stride: int) -> nn.Sequential:
        layers = [Bottleneck(self.in_planes, planes, stride)]
        self.in_planes = planes * Bottleneck.expansion
        layers += [Bottleneck(self.in_planes, planes) for _ in range(blocks - 1)]
        return nn.Sequential(*layers)

    @torch.no_grad()
    def init_weights(self) -> None:
        # OpenAI's init: attention pooling ~ N(0, 1/width); each block's last BN starts at zero,
        # so every residual block begins as the identity (Goyal et al. 2017).
        std = self.attnpool.c_proj.in_features**-0.5
        for proj in (self.attnpool.q_proj, self.attnpool.k_proj, self.attnpool.v_proj, self.attnpool.c_proj):
            nn.init.normal_(proj.weight, std=std)
        nn.init.normal_(self.attnpool.positional_embedding, std=std)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                nn.init.zeros_(block.bn3.weight)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        check_images(images, self.image_size)
        x = images.to(self.conv1.weight.dtype)
        x = F.relu(self.bn1(self.conv1(x)))  # [B, w/2, H/2, W/2]
        x = F.relu(self.bn2(self.conv2(x)))  # [B, w/2, H/2, W/2]
        x = F.relu(self.bn3(self.conv3(x)))  # [B, w, H/2, W/2]
        x = self.avgpool(x)  # [B, w, H/4, W/4]
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))  # [B, 32w, H/32, W/32]
        return self.attnpool(x)  # [B, E]
