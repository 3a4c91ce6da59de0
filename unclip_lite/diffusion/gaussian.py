"""Gaussian diffusion: the forward process q, the reverse-step Gaussians p_θ, and the training loss.

Notation (Ho et al. 2020, "DDPM"): β_t the schedule, α_t = 1 - β_t, ᾱ_t = ∏_{s≤t} α_s.
Timesteps are 0-based indices ``t ∈ {0, …, T-1}`` into the schedule (the paper's t = 1…T).

* forward:    q(x_t | x_0) = N(√ᾱ_t x_0, (1-ᾱ_t) I)                              (eq. 4)
* posterior:  q(x_{t-1} | x_t, x_0) = N(μ̃_t, β̃_t I),                            (eqs. 6–7)
              μ̃_t = √ᾱ_{t-1} β_t/(1-ᾱ_t) x_0 + √α_t (1-ᾱ_{t-1})/(1-ᾱ_t) x_t,
              β̃_t = (1-ᾱ_{t-1})/(1-ᾱ_t) β_t
* reverse:    p_θ(x_{t-1} | x_t) = N(μ̃_t(x̂_0, x_t), Σ_t): the network predicts x̂_0 in one
              of three parameterisations (ε, x_0 itself, or v = √ᾱ ε - √(1-ᾱ) x_0 from
              Salimans & Ho 2022, §4), and Σ_t is fixed (β̃_t "small" or β_t "large") or
              learned as exp(v log β_t + (1-v) log β̃_t) (Nichol & Dhariwal 2021, eq. 15).

Schedule tables are float64; every method casts its coefficients to the input's dtype.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch

from unclip_lite.diffusion.losses import (NATS_PER_BIT, discretized_gaussian_log_likelihood,
                                          mean_flat, normal_kl)
from unclip_lite.diffusion.schedule import get_betas, respace

PARAMETERIZATIONS = ("eps", "x0", "v")
FIXED_VARIANCES = ("small", "large")
ModelFn = Callable[..., torch.Tensor]


class PMeanVariance(NamedTuple):
    """One reverse step's Gaussian p_θ(x_{t-1} | x_t) and the predictions it came from."""
    mean: torch.Tensor          # [B, C, H, W]
    variance: torch.Tensor      # [B, C, H, W] (or broadcastable [B, 1, 1, 1] when fixed)
    log_variance: torch.Tensor
    pred_x0: torch.Tensor       # x̂_0 after clipping / thresholding
    pred_eps: torch.Tensor      # ε̂ consistent with the clipped x̂_0


def threshold_x0(x0: torch.Tensor, clip_denoised: bool | float) -> torch.Tensor:
    """Keep x̂_0 inside the data range.

    ``True``: static clipping to [-1, 1] (DDPM). ``False``: untouched. A float p ∈ (0, 1):
    dynamic thresholding (Saharia et al. 2022, Imagen §2.3): s = max(1, p-quantile of |x̂_0|)
    per sample, then clip to [-s, s] and divide by s.
    """
    if clip_denoised is True:
        return x0.clamp(-1.0, 1.0)
    if clip_denoised is False:
        return x0
    p = float(clip_denoised)
    if not 0.0 < p < 1.0:
        raise ValueError(f"clip_denoised must be True, False or a percentile in (0, 1), got {clip_denoised!r}")
    flat = x0.reshape(len(x0), -1).abs().float()  # [B, N]; quantile wants float32/64
    s = torch.quantile(flat, p, dim=1).clamp(min=1.0).to(x0.dtype)  # [B]
    s = s.view(-1, *([1] * (x0.dim() - 1)))  # [B, 1, 1, 1]
    return torch.maximum(torch.minimum(x0, s), -s) / s


class GaussianDiffusion:
    """A fixed noise schedule plus how to read the network's output.

    Args:
        betas: β_t, shape ``[T]``.
        parameterization: what the network predicts: ``"eps"``, ``"x0"`` or ``"v"``.
        learned_range: the network outputs 2C channels, the second C being v ∈ [0, 1] of
            improved DDPM eq. 15 (v = 1 → β_t, v = 0 → β̃_t). OpenAI's code and diffusers feed
            raw outputs r ∈ [-1, 1] through v = (r + 1)/2; do that before loading their weights.
        fixed_variance: Σ_t when not learned: ``"small"`` = β̃_t, ``"large"`` = β_t (DDPM §3.2).
        timestep_map: for a respaced process, the original timestep of each step (what the
            model is conditioned on); ``None`` means the identity.
    """

    def __init__(self, betas: torch.Tensor, parameterization: str = "eps", learned_range: bool = False,
                 fixed_variance: str = "small", timestep_map: torch.Tensor | None = None):
        if parameterization not in PARAMETERIZATIONS:
            raise ValueError(f"unknown parameterization {parameterization!r}; expected one of {PARAMETERIZATIONS}")
        if fixed_variance not in FIXED_VARIANCES:
            raise ValueError(f"unknown fixed_variance {fixed_variance!r}; expected one of {FIXED_VARIANCES}")
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or len(betas) == 0 or not bool(((betas > 0) & (betas <= 1)).all()):
            raise ValueError("betas must be a non-empty 1-D tensor with values in (0, 1]")
        self.parameterization, self.learned_range, self.fixed_variance = parameterization, learned_range, fixed_variance
        self.num_timesteps = T = len(betas)
        self.timestep_map = (torch.arange(T) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.long))

        self.betas = betas  # [T]
        self.alphas_cumprod = ab = torch.cumprod(1.0 - betas, dim=0)  # ᾱ_t
        self.alphas_cumprod_prev = ab_prev = torch.cat([ab.new_ones(1), ab[:-1]])  # ᾱ_{t-1}, ᾱ_{-1} = 1
        self.sqrt_alphas_cumprod = ab.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - ab).sqrt()
        self.sqrt_recip_alphas_cumprod = ab.rsqrt()
        self.sqrt_recipm1_alphas_cumprod = (1.0 / ab - 1.0).sqrt()
        # eqs. 6–7; β̃_0 = 0, so its log is "clipped" to log β̃_1 as in improved-diffusion
        self.posterior_variance = betas * (1.0 - ab_prev) / (1.0 - ab)
        self.posterior_log_variance_clipped = torch.log(
            torch.cat([self.posterior_variance[1:2], self.posterior_variance[1:]]) if T > 1 else betas)
        self.posterior_mean_coef1 = betas * ab_prev.sqrt() / (1.0 - ab)  # multiplies x_0
        self.posterior_mean_coef2 = (1.0 - ab_prev) * (1.0 - betas).sqrt() / (1.0 - ab)  # multiplies x_t
        self.log_betas = torch.log(betas)
        # β_t with β̃_1 at t = 0 ("fixed large", improved-diffusion): a usable decoder variance
        self.log_variance_large = torch.log(torch.cat([self.posterior_variance[1:2], betas[1:]])) if T > 1 \
            else self.log_betas
        self.one_minus_alphas_cumprod = 1.0 - ab
        self.log_one_minus_alphas_cumprod = torch.log(1.0 - ab)

    @classmethod
    def from_schedule(cls, name: str, num_timesteps: int = 1000, respacing: str | None = None,
                      **kwargs) -> GaussianDiffusion:
        """``GaussianDiffusion.from_schedule("cosine", 1000, respacing="ddim50", parameterization="v")``."""
        diffusion = cls(get_betas(name, num_timesteps), **kwargs)
        return diffusion.respaced(respacing) if respacing is not None else diffusion

    def respaced(self, spec) -> GaussianDiffusion:
        """The same model sampled on a subset of steps (see :func:`~.schedule.space_timesteps`)."""
        betas, kept = respace(self.betas, spec)
        return GaussianDiffusion(betas, self.parameterization, self.learned_range, self.fixed_variance,
                                 timestep_map=self.timestep_map[kept])

    # -- helpers ---------------------------------------------------------------------------
    def to(self, device: torch.device | str) -> GaussianDiffusion:
        """Move the float64 tables to ``device`` once (otherwise each lookup copies them)."""
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor) and torch.device(device).type != "mps":
                setattr(self, name, value.to(device))
        return self

    @staticmethod
    def _extract(table: torch.Tensor, t: torch.Tensor | int, like: torch.Tensor) -> torch.Tensor:
        """``table[t]`` cast to ``like``'s dtype/device, shaped ``[B, 1, 1, 1]`` to broadcast."""
        if like.device.type == "mps":  # no float64 on Apple GPUs: gather on the CPU
            t = torch.as_tensor(t).cpu().long().reshape(-1)
            out = table.cpu()[t].to(like.dtype).to(like.device)
        else:
            t = torch.as_tensor(t, device=like.device).long().reshape(-1)
            out = table.to(like.device)[t].to(like.dtype)  # [B] (or [1])
        if out.numel() == 1:
            out = out.expand(len(like))
        return out.view(-1, *([1] * (like.dim() - 1)))

    def model_timesteps(self, t: torch.Tensor) -> torch.Tensor:
        """The original-process timestep to condition the network on (identity unless respaced)."""
        return self.timestep_map.to(t.device)[t]

    def sample_timesteps(self, batch: int, generator: torch.Generator | None = None,
                         device: torch.device | str | None = None) -> torch.Tensor:
        """t ~ Uniform{0, …, T-1} for each example (DDPM Algorithm 1, line 3): ``[B]`` long."""
        gen_device = generator.device if generator is not None else device
        t = torch.randint(0, self.num_timesteps, (batch,), generator=generator, device=gen_device)  # [B]
        return t if device is None else t.to(device)

    # -- forward process ---------------------------------------------------------------------
    def q_mean_variance(self, x0: torch.Tensor, t: torch.Tensor):
        """Mean, variance and log-variance of q(x_t | x_0) (eq. 4)."""
        mean = self._extract(self.sqrt_alphas_cumprod, t, x0) * x0  # [B, C, H, W]
        variance = self._extract(self.one_minus_alphas_cumprod, t, x0)  # [B, 1, 1, 1]
        log_variance = self._extract(self.log_one_minus_alphas_cumprod, t, x0)
        return mean, variance, log_variance

    def q_sample(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        """x_t = √ᾱ_t x_0 + √(1-ᾱ_t) ε, a sample of q(x_t | x_0) in one shot (eq. 4)."""
        noise = torch.randn_like(x0) if noise is None else noise
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * x0
                + self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise)

    def q_posterior_mean_variance(self, x0: torch.Tensor, xt: torch.Tensor, t: torch.Tensor):
        """Mean μ̃_t, variance β̃_t and clipped log β̃_t of q(x_{t-1} | x_t, x_0) (eqs. 6–7)."""
        mean = (self._extract(self.posterior_mean_coef1, t, xt) * x0
                + self._extract(self.posterior_mean_coef2, t, xt) * xt)  # [B, C, H, W]
        variance = self._extract(self.posterior_variance, t, xt)
        log_variance = self._extract(self.posterior_log_variance_clipped, t, xt)
        return mean, variance, log_variance

    def snr(self, t: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio SNR(t) = ᾱ_t / (1 - ᾱ_t) of x_t, ``[B]`` float64 (Kingma et al. 2021)."""
        t = torch.as_tensor(t).long().reshape(-1)
        ab = self.alphas_cumprod.to(t.device)[t]
        return ab / (1.0 - ab)

    def min_snr_weight(self, t: torch.Tensor, gamma: float = 5.0, floor: float = 0.0,
                       max_weight: float | None = None) -> torch.Tensor:
        """Per-example loss weight of Min-SNR-γ (Hang et al. 2023, eq. 6), ``[B]`` float64.

        Written as a weight on x_0's squared error, min(SNR, γ) caps how much the nearly clean
        steps (huge SNR) count, which speeds training up ~3× in the paper. Our loss is on the
        parameterisation's target, so the weight is divided by what that target already puts on
        x_0: ε-loss = SNR · x_0-loss, v-loss = (SNR + 1) · x_0-loss.

        ``floor`` > 0 also raises the x_0 weight of the noisiest steps to at least ``floor``
        (min(max(SNR, floor), γ)): a model that must read a conditioning image at high noise,
        such as an upsampler, otherwise learns that there at a weight of SNR ≈ 0.
        ``max_weight`` caps the returned weight: an ε-model's floor weight floor/SNR grows
        without bound as SNR -> 0 (its x_0 error there is its ε error × √(1/SNR)).
        """
        if gamma <= 0:
            raise ValueError(f"min-SNR gamma must be positive, got {gamma}")
        if not 0 <= floor <= gamma:
            raise ValueError(f"the SNR floor must be in [0, gamma={gamma}], got {floor}")
        snr = self.snr(t)
        if max_weight is not None and max_weight <= 0:
            raise ValueError(f"max_weight must be positive, got {max_weight}")
        capped = snr.clamp(min=floor, max=gamma)
        weight = {"eps": capped / snr, "x0": capped, "v": capped / (snr + 1.0)}[self.parameterization]
        return weight if max_weight is None else weight.clamp(max=max_weight)

    # -- converting between x_0, ε and v (all at the same x_t, t) -----------------------------
    def predict_x0_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_0 = (x_t - √(1-ᾱ_t) ε)/√ᾱ_t: eq. 4 solved for x_0 (used in DDPM eq. 11 and DDIM eq. 12)."""
        return (self._extract(self.sqrt_recip_alphas_cumprod, t, xt) * xt
                - self._extract(self.sqrt_recipm1_alphas_cumprod, t, xt) * eps)

    def predict_eps_from_x0(self, xt: torch.Tensor, t: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
        """ε = (x_t - √ᾱ_t x_0)/√(1-ᾱ_t): eq. 4 solved for ε."""
        return ((self._extract(self.sqrt_recip_alphas_cumprod, t, xt) * xt - x0)
                / self._extract(self.sqrt_recipm1_alphas_cumprod, t, xt))

    def v_target(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """v = √ᾱ_t ε - √(1-ᾱ_t) x_0, the "velocity" target (Salimans & Ho 2022, §4)."""
        return (self._extract(self.sqrt_alphas_cumprod, t, x0) * noise
                - self._extract(self.sqrt_one_minus_alphas_cumprod, t, x0) * x0)

    def predict_x0_from_v(self, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """x_0 = √ᾱ_t x_t - √(1-ᾱ_t) v (Salimans & Ho 2022, §4)."""
        return (self._extract(self.sqrt_alphas_cumprod, t, xt) * xt
                - self._extract(self.sqrt_one_minus_alphas_cumprod, t, xt) * v)

    def predict_eps_from_v(self, xt: torch.Tensor, t: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """ε = √(1-ᾱ_t) x_t + √ᾱ_t v."""
        return (self._extract(self.sqrt_one_minus_alphas_cumprod, t, xt) * xt
                + self._extract(self.sqrt_alphas_cumprod, t, xt) * v)

    def eps_from_output(self, xt: torch.Tensor, t: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """ε̂ from the mean channels ``out`` of the network, whatever it predicts, *unclipped*.

        ε̂ is the score in disguise, ∇ log p(x_t) = -ε̂/√(1-ᾱ_t) (Song et al. 2021), which is why
        guidance edits the prediction here. Unlike :meth:`predict_x0_eps` nothing is clipped and
        ε-outputs come back as they are (the round trip through x̂_0 would lose float precision).
        """
        if self.parameterization == "eps":
            return out
        if self.parameterization == "x0":
            return self.predict_eps_from_x0(xt, t, out)
        return self.predict_eps_from_v(xt, t, out)

    def output_from_eps(self, xt: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """The inverse of :meth:`eps_from_output`: what this parameterisation outputs for ε̂,
        x̂_0 = (x_t - √(1-ᾱ_t) ε̂)/√ᾱ_t or v = √ᾱ_t ε̂ - √(1-ᾱ_t) x̂_0 (Salimans & Ho 2022, §4)."""
        if self.parameterization == "eps":
            return eps
        x0 = self.predict_x0_from_eps(xt, t, eps)
        return x0 if self.parameterization == "x0" else self.v_target(x0, eps, t)

    # -- reverse process ----------------------------------------------------------------------
    def split_output(self, model_output: torch.Tensor, xt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, 2C, ...] -> ([B, C, ...] mean part, [B, C, ...] v)`` when learning the variance."""
        channels = xt.shape[1]
        if not self.learned_range:
            if model_output.shape != xt.shape:
                raise ValueError(f"model output {tuple(model_output.shape)} should match x_t {tuple(xt.shape)}")
            return model_output, None
        if model_output.shape[1] != 2 * channels:
            raise ValueError(f"learned_range needs 2C = {2 * channels} output channels, "
                             f"got {model_output.shape[1]}")
        return model_output[:, :channels], model_output[:, channels:]

    def predict_x0_eps(self, model_output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                       clip_denoised: bool | float = True) -> tuple[torch.Tensor, torch.Tensor]:
        """(x̂_0, ε̂) from the mean channels of the network output; ε̂ is re-derived from the
        clipped x̂_0 so that both describe the same point (as GLIDE / improved-diffusion do)."""
        out = self.split_output(model_output, xt)[0]
        if self.parameterization == "eps":
            x0 = self.predict_x0_from_eps(xt, t, out)
        elif self.parameterization == "x0":
            x0 = out
        else:
            x0 = self.predict_x0_from_v(xt, t, out)
        x0 = threshold_x0(x0, clip_denoised)
        return x0, self.predict_eps_from_x0(xt, t, x0)

    def learned_log_variance(self, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """log Σ_θ = v log β_t + (1 - v) log β̃_t (improved DDPM eq. 15), elementwise in v."""
        return (v * self._extract(self.log_betas, t, v)
                + (1.0 - v) * self._extract(self.posterior_log_variance_clipped, t, v))

    def p_mean_variance(self, model_output: torch.Tensor, xt: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool | float = True) -> PMeanVariance:
        """p_θ(x_{t-1} | x_t) = N(μ̃_t(x̂_0, x_t), Σ_t) from the raw network output.

        The mean plugs x̂_0 into the posterior mean (eq. 7); with ε-prediction this equals
        DDPM eq. 11, μ_θ = (x_t - β_t/√(1-ᾱ_t) ε̂)/√α_t, whenever x̂_0 is not clipped.
        """
        pred_x0, pred_eps = self.predict_x0_eps(model_output, xt, t, clip_denoised)
        mean, _, _ = self.q_posterior_mean_variance(pred_x0, xt, t)  # [B, C, H, W]
        v = self.split_output(model_output, xt)[1]
        if v is not None:
            log_variance = self.learned_log_variance(v, t)  # [B, C, H, W]
            variance = torch.exp(log_variance)
        elif self.fixed_variance == "small":
            variance = self._extract(self.posterior_variance, t, xt)  # [B, 1, 1, 1]; 0 at t = 0
            log_variance = self._extract(self.posterior_log_variance_clipped, t, xt)
        else:
            log_variance = self._extract(self.log_variance_large, t, xt)
            variance = torch.exp(log_variance)
        return PMeanVariance(mean, variance, log_variance, pred_x0, pred_eps)

    # -- training -----------------------------------------------------------------------------
    def vb_terms_bpd(self, model_output: torch.Tensor, x0: torch.Tensor, xt: torch.Tensor,
                     t: torch.Tensor) -> torch.Tensor:
        """L_{t-1} of eq. 5 per example in bits/dim: KL(q(x_{t-1}|x_t,x_0) ‖ p_θ) for t > 0 and
        the discretised-Gaussian decoder NLL -log p_θ(x_0 | x_1) (eq. 13) at t = 0."""
        true_mean, _, true_log_var = self.q_posterior_mean_variance(x0, xt, t)
        p = self.p_mean_variance(model_output, xt, t, clip_denoised=False)
        kl = mean_flat(normal_kl(true_mean, true_log_var, p.mean, p.log_variance)) / NATS_PER_BIT  # [B]
        nll = -mean_flat(discretized_gaussian_log_likelihood(x0, p.mean, 0.5 * p.log_variance)) / NATS_PER_BIT
        return torch.where(torch.as_tensor(t, device=x0.device).reshape(-1) == 0, nll, kl)

    def training_losses(self, model_fn: ModelFn, x0: torch.Tensor, t: torch.Tensor,
                        noise: torch.Tensor | None = None, model_kwargs: dict | None = None,
                        vlb_weight: float = 1e-3) -> dict[str, torch.Tensor]:
        """Per-example losses ``{"loss", "mse", ("vb")}``, each ``[B]``.

        ``mse`` is L_simple (DDPM eq. 14) on the parameterisation's target (ε, x_0 or v).
        With ``learned_range`` the hybrid loss of improved DDPM §3.1 is added:
        L_hybrid = L_simple + λ L_vlb with λ = ``vlb_weight`` = 0.001, where the one-term
        estimate of L_vlb = Σ_t L_t is T · L_t (bits/dim) and the mean channels are detached
        there ("stop-gradient"), so L_vlb only trains the variance.
        """
        noise = torch.randn_like(x0) if noise is None else noise
        xt = self.q_sample(x0, t, noise)  # [B, C, H, W]
        model_output = model_fn(xt, self.model_timesteps(torch.as_tensor(t, device=x0.device)),
                                **(model_kwargs or {}))
        out, v = self.split_output(model_output, xt)
        target = {"eps": noise, "x0": x0, "v": None}[self.parameterization]
        target = self.v_target(x0, noise, t) if target is None else target
        terms = {"mse": mean_flat((target - out) ** 2)}
        terms["loss"] = terms["mse"]
        if v is not None:
            frozen = torch.cat([out.detach(), v], dim=1)  # [B, 2C, H, W]
            terms["vb"] = self.vb_terms_bpd(frozen, x0, xt, t)
            terms["loss"] = terms["mse"] + vlb_weight * self.num_timesteps * terms["vb"]
        return terms
