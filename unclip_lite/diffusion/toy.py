"""A 2-D diffusion a CPU learns in seconds: a ring of Gaussians, its exact denoiser, a small MLP.

Chapter 04 trains and samples this toy with the learner's own pieces. Points are stored as
1×1 images with D channels, ``[B, D, 1, 1]``, so every image-shaped function of the chapter
(``q_sample``, ``posterior_mean``, the samplers) works on them unchanged.

* :class:`GaussianMixture`: isotropic Gaussian components, ``x_0 ~ Σ_k π_k N(μ_k, s² I)``.
  Its noised marginal is again a mixture, q(x_t) = Σ_k π_k N(√ᾱ_t μ_k, (ᾱ_t s² + 1 - ᾱ_t) I),
  so the Bayes-optimal noise prediction has a closed form (:class:`MixtureEpsModel`): the
  target a trained ε-network can at best approach (Ho et al. 2020 §3.2; the score view of
  Song et al. 2021, "Score-Based Generative Modeling through SDEs", §3).
* :class:`ToyDenoiser`: an MLP ε_θ(x_t, t) conditioned through a sinusoidal timestep embedding.
* :func:`energy_distance` and :meth:`GaussianMixture.support_fraction`: how close samples are
  to the data (Székely & Rizzo 2013, "Energy statistics", §2).
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.nn import timestep_embedding

Embedding = Callable[[torch.Tensor, int], torch.Tensor]


@contextmanager
def one_thread() -> Iterator[None]:
    """Run the toy's work on one CPU thread, then restore the setting.

    Its matrices are tiny (a few hundred rows of width 64): handing each op to several threads
    costs more than it saves, and on a busy machine the threads' spin-waits cost several times the work.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def as_points(x: torch.Tensor) -> torch.Tensor:
    """``[B, D, 1, 1]`` (or any ``[B, ...]``) -> ``[B, D]``."""
    return x.reshape(len(x), -1)


def as_images(points: torch.Tensor) -> torch.Tensor:
    """``[B, D]`` -> ``[B, D, 1, 1]``: a point as a 1×1 image with D channels."""
    return points[:, :, None, None]


@dataclass
class GaussianMixture:
    """``Σ_k weights_k N(means_k, std² I)`` in D dimensions: ``means [K, D]``, ``weights [K]`` (sum 1)."""

    means: torch.Tensor
    std: float
    weights: torch.Tensor | None = None

    def __post_init__(self):
        self.means = torch.as_tensor(self.means, dtype=torch.float64)
        if self.means.dim() != 2:
            raise ValueError(f"means must be [K, D], got {tuple(self.means.shape)}")
        K = len(self.means)
        self.weights = (torch.full((K,), 1.0 / K, dtype=torch.float64) if self.weights is None
                        else torch.as_tensor(self.weights, dtype=torch.float64))
        if self.std <= 0 or len(self.weights) != K or abs(float(self.weights.sum()) - 1) > 1e-6:
            raise ValueError("std must be positive and the K weights must sum to 1")

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def sample(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` draws as 1×1 images ``[n, D, 1, 1]`` (float32): a component, then Gaussian noise."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)  # [n]
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)  # [n, D]
        return as_images((self.means[k] + self.std * z).float())

    def nearest_mode_distance(self, x: torch.Tensor) -> torch.Tensor:
        """Distance from each point ``[B, D, 1, 1]`` to its nearest component mean: ``[B]``."""
        return torch.cdist(as_points(x).double(), self.means).min(dim=1).values

    def support_fraction(self, x: torch.Tensor, radius_in_std: float = 3.0) -> float:
        """Share of points within ``radius_in_std`` standard deviations of some component mean.

        For the data itself in 2-D this is 1 - exp(-r²/2) ≈ 0.989 at r = 3 (a Rayleigh tail).
        """
        return float((self.nearest_mode_distance(x) < radius_in_std * self.std).double().mean())

    def eps_model(self, alphas_cumprod: torch.Tensor) -> MixtureEpsModel:
        """The exact ε-prediction for this data under the schedule ``alphas_cumprod``."""
        return MixtureEpsModel(self, alphas_cumprod)


def ring(modes: int = 8, radius: float = 1.0, std: float = 0.05) -> GaussianMixture:
    """``modes`` equal Gaussians evenly spaced on a circle: the classic 2-D test of mode coverage."""
    angle = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes  # [K]
    return GaussianMixture(radius * torch.stack([angle.cos(), angle.sin()], dim=1), std)


class MixtureEpsModel:
    """ε*(x_t, t) = E[ε | x_t], the noise prediction no network can beat on a Gaussian mixture.

    With v_t = ᾱ_t s² + 1 - ᾱ_t and component responsibilities w_k(x_t) ∝ π_k N(x_t; √ᾱ_t μ_k, v_t I),
    the score is ∇ log q(x_t) = -Σ_k w_k (x_t - √ᾱ_t μ_k) / v_t, and ε* = -√(1-ᾱ_t) ∇ log q(x_t)
    (Song et al. 2021 §3; Tweedie's formula). Called like a network: ``model(x [B, D, 1, 1], t [B])``.
    """

    def __init__(self, mixture: GaussianMixture, alphas_cumprod: torch.Tensor):
        self.mixture = mixture
        self.alphas_cumprod = torch.as_tensor(alphas_cumprod, dtype=torch.float64)

    def score(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """∇_x log q(x_t) at ``x [B, D, ...]``, timesteps ``t [B]``; float64, shaped like ``x``."""
        points = as_points(x).double()  # [B, D]
        ab = self.alphas_cumprod[torch.as_tensor(t).long().reshape(-1).cpu()].to(points.device)  # [B]
        ab = ab.expand(len(points)) if ab.numel() == 1 else ab
        var = (ab * self.mixture.std ** 2 + 1 - ab)[:, None]  # [B, 1]
        centres = ab.sqrt()[:, None, None] * self.mixture.means.to(points.device)[None]  # [B, K, D]
        diff = points[:, None, :] - centres  # [B, K, D]
        logits = self.mixture.weights.to(points.device).log() - (diff ** 2).sum(-1) / (2 * var)  # [B, K]
        w = torch.softmax(logits, dim=1)  # [B, K]
        return (-(w[:, :, None] * diff).sum(1) / var).reshape(x.shape)  # [B, D, ...]

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        ab = self.alphas_cumprod[torch.as_tensor(t).long().reshape(-1).cpu()].to(x.device)  # [B]
        scale = (1 - ab).sqrt().view(-1, *([1] * (x.dim() - 1)))  # [B, 1, ...]
        return (-scale * self.score(x, t)).to(x.dtype)


class ToyDenoiser(nn.Module):
    """ε_θ(x_t, t) for points ``[B, D, 1, 1]``: an MLP whose hidden layers all see the timestep.

    The timestep enters as in the U-Net (Ho et al. 2020 §4; Dhariwal & Nichol 2021 §3): a
    sinusoidal embedding (``embedding``, by default :func:`unclip_lite.nn.timestep_embedding`),
    an MLP on it, then added to every hidden layer. The last layer starts at zero (ε̂ = 0).
    """

    def __init__(self, dim: int = 2, hidden: int = 64, depth: int = 3, emb_dim: int = 32,
                 embedding: Embedding = timestep_embedding):
        super().__init__()
        self.emb_dim, self.embedding = emb_dim, embedding
        self.time_embed = nn.Sequential(nn.Linear(emb_dim, hidden), nn.SiLU(), nn.Linear(hidden, hidden))
        self.inp = nn.Linear(dim, hidden)
        self.time_proj = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.layers = nn.ModuleList([nn.Linear(hidden, hidden) for _ in range(depth)])
        self.out = nn.Linear(hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        emb = self.time_embed(self.embedding(t, self.emb_dim).to(x.dtype))  # [B, hidden]
        h = self.inp(as_points(x))  # [B, hidden]
        for layer, proj in zip(self.layers, self.time_proj):
            h = h + layer(F.silu(h + proj(emb)))  # [B, hidden], residual
        return self.out(F.silu(h)).reshape(x.shape)  # [B, D, 1, 1]


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """2 E‖X - Y‖ - E‖X - X'‖ - E‖Y - Y'‖ between the samples ``a`` and ``b`` (``[N, D, ...]``).

    Zero exactly when the two distributions agree, positive otherwise (Székely & Rizzo 2013, §2);
    the within-sample terms include the zero diagonal (the V-statistic), a bias of order 1/N.
    """
    a, b = as_points(a).double(), as_points(b).double()
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())
