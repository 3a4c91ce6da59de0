"""The priors ready to use: the network, how it samples, and the CLIP it stands on.

::

    prior = PriorBundle.load("prior-shapes-tiny")        # also loads (and checks) its CLIP
    z_i = prior.sample(["a red star above a blue circle"], seed=0)   # [1, E] unit CLIP image embeddings
    ar = ARPriorBundle.load("ar-prior-shapes-tiny")      # the same interface, autoregressive inside

The prior reads a caption the way unCLIP's does (Ramesh et al. 2022, §2.2): the frozen CLIP's
text embedding z_t and the text tower's per-token outputs. Sampling is DDIM over a strided
subset of the 1,000 training steps (the paper uses 64) with classifier-free guidance, and draws
``candidates`` embeddings per caption, keeping the one with the larger dot product with z_t
(§2.2: "we generate two samples of z_i and select the one with a higher dot product with z_t").
The AR prior draws its codes one by one instead (:mod:`.ar_prior`); everything else is shared.

A prior is only meaningful beside the CLIP whose embeddings it learned: the checkpoint
records that CLIP's name and the sha256 of its weights, and pairing it with another CLIP is
an error, not a silent mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from unclip_lite.bundle import Bundle
from unclip_lite.checkpoints import load_state_into
from unclip_lite.clip.bundle import CLIPBundle, load_clip
from unclip_lite.diffusion import ddim_sample_loop
from unclip_lite.diffusion.config import DiffusionConfig
from unclip_lite.diffusion.free_guidance import MAX_SCALE, classifier_free_guidance
from unclip_lite.unclip.ar_prior import ARPrior, ARPriorConfig, top_half
from unclip_lite.unclip.prior import DiffusionPrior, PriorConfig


def prior_diffusion() -> DiffusionConfig:
    """The prior's diffusion (§2.2, Appendix C): 1,000 cosine steps, predicting x_0 = z_i."""
    return DiffusionConfig(schedule="cosine", num_timesteps=1000, parameterization="x0")


@torch.no_grad()
def caption_conditioning(clip: CLIPBundle, texts: Sequence[str], truncate: bool = False) -> dict[str, torch.Tensor]:
    """What the prior reads of each caption, from the frozen CLIP:

    * ``text_embed`` [B, E]: z_t, the unit CLIP text embedding;
    * ``text_tokens`` [B, L, width]: the text tower's per-token outputs (after its final norm);
    * ``text_mask`` [B, L]: True up to and including the caption's end token.

    A word the CLIP's vocabulary lacks is an error, and so is a caption longer than the CLIP's
    context unless ``truncate`` (training does, as the CLIP itself was trained).
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts:
        raise ValueError("need at least one caption")
    tokens = clip.tokenize(texts, truncate=truncate).to(clip.device)  # [B, L]
    text = clip.model.text
    was_training = clip.model.training
    clip.model.eval()
    per_token = text.forward_tokens(tokens)  # [B, L, width]
    z_t = F.normalize(text(tokens), dim=-1)  # [B, E]
    clip.model.train(was_training)
    eot = tokens.argmax(-1) if text.eot_token_id is None else (tokens == text.eot_token_id).int().argmax(-1)
    mask = torch.arange(tokens.shape[1], device=tokens.device)[None] <= eot[:, None]  # [B, L]
    return {"text_embed": z_t, "text_tokens": per_token, "text_mask": mask}


def keep_best(candidates: torch.Tensor, text_embed: torch.Tensor) -> torch.Tensor:
    """``candidates`` [B, k, E] -> [B, E]: per caption, the candidate with the largest dot
    product with its text embedding ``text_embed`` [B, E] (unCLIP §2.2)."""
    if candidates.dim() != 3 or candidates.shape[0] != text_embed.shape[0] or \
            candidates.shape[2] != text_embed.shape[1]:
        raise ValueError(f"candidates must be [B, k, E] for text_embed [B, E] = {tuple(text_embed.shape)}, "
                         f"got {tuple(candidates.shape)}")
    scores = (candidates * text_embed[:, None]).sum(-1)  # [B, k]
    return candidates[torch.arange(len(candidates)), scores.argmax(1)]  # [B, E]


@dataclass
class CaptionPrior(Bundle):
    """What both priors share: a network, the CLIP it learned (name and sha256), reading captions."""

    model: torch.nn.Module
    clip_name: str  # the CLIP whose embeddings the prior learned, and its weights' sha256
    clip_sha256: str
    extra: dict = field(default_factory=dict)
    manifest: dict = field(default_factory=dict)
    clip: CLIPBundle | None = None  # attached on load (not saved: it is its own checkpoint)

    @property
    def dim(self) -> int:
        return self.model.config.embed_dim

    def attach_clip(self, clip: CLIPBundle) -> CaptionPrior:
        """Use ``clip`` to read captions; it must be the CLIP this prior was trained on."""
        sha = clip.manifest.get("sha256")
        if sha != self.clip_sha256:
            raise ValueError(f"this prior was trained on the embeddings of {self.clip_name!r} (sha256 "
                             f"{self.clip_sha256[:12]}…); the CLIP given has sha256 {str(sha)[:12]}… — "
                             f"its embeddings mean something else")
        if clip.dim != self.dim:
            raise ValueError(f"CLIP embeds in {clip.dim} dimensions, the prior in {self.dim}")
        self.clip = clip
        return self

    def conditioning(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        if self.clip is None:
            raise ValueError("attach the prior's CLIP first (PriorBundle.load does it)")
        return {k: v.to(self.device) for k, v in caption_conditioning(self.clip, texts).items()}

    @staticmethod
    def check_sampling(guidance: float, candidates: int) -> None:
        if not 0 <= guidance <= MAX_SCALE:
            raise ValueError(f"guidance must be in [0, {MAX_SCALE}], got {guidance}")
        if isinstance(candidates, bool) or not isinstance(candidates, int) or candidates < 1:
            raise ValueError(f"candidates must be an integer >= 1, got {candidates!r}")

    def sample(self, texts: Sequence[str], guidance: float = 2.0, candidates: int = 2, seed: int | None = 0,
               conditioning: dict | None = None, **kwargs) -> torch.Tensor:
        """Unit CLIP image embeddings [B, E], one per caption (or per row of ``conditioning``):
        ``candidates`` drawn per caption by :meth:`draw`, the best by dot product with z_t kept
        (1 disables the choice); ``guidance``: classifier-free guidance scale in [0, 50]."""
        self.check_sampling(guidance, candidates)
        cond = conditioning if conditioning is not None else self.conditioning(texts)
        B = len(cond["text_embed"])
        repeated = {k: v.repeat_interleave(candidates, 0) for k, v in cond.items()}  # [B·k, ...]
        generator = torch.Generator(self.device).manual_seed(seed) if seed is not None else None
        z = self.draw(repeated, guidance, generator, **kwargs).view(B, candidates, self.dim)
        return keep_best(z, cond["text_embed"])

    def draw(self, conditioning: dict, guidance: float, generator: torch.Generator | None, **kwargs) -> torch.Tensor:
        """One unit embedding [B, E] per row of ``conditioning``."""
        raise NotImplementedError

    @classmethod
    def load(cls, name_or_path: str | Path, device: str | torch.device | None = None,
             clip: CLIPBundle | None = None) -> CaptionPrior:
        """The prior and its CLIP (``clip``, or the shipped one it names)."""
        bundle = super().load(name_or_path, device)
        return bundle.attach_clip(clip if clip is not None else load_clip(bundle.clip_name, device))


@dataclass
class PriorBundle(CaptionPrior):
    """The diffusion prior (``model``: a :class:`~unclip_lite.unclip.prior.DiffusionPrior`)."""

    kind = "prior"
    diffusion_config: DiffusionConfig = field(default_factory=prior_diffusion)

    def __post_init__(self):
        self.diffusion = self.diffusion_config.build()

    @torch.no_grad()
    def draw(self, conditioning: dict, guidance: float, generator: torch.Generator | None, steps: int = 64,
             progress: bool = False) -> torch.Tensor:
        """DDIM over ``steps`` of the 1,000 steps (the paper: 64), guided; no clipping (embeddings
        have no fixed range), then back from the diffusion space to unit CLIP embeddings."""
        T = self.diffusion.num_timesteps
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= T:
            raise ValueError(f"steps must be an integer in [1, {T}], got {steps!r}")
        model_fn = classifier_free_guidance(self.model, guidance, conditioning)
        x = ddim_sample_loop(self.diffusion, model_fn, (len(conditioning["text_embed"]), self.dim), steps=steps,
                             generator=generator, device=self.device, clip_denoised=False, progress=progress)
        return F.normalize(self.model.from_diffusion_space(x), dim=-1)

    def config_dict(self) -> dict:
        return {"prior": self.model.config.to_dict(), "clip": {"name": self.clip_name, "sha256": self.clip_sha256},
                "diffusion": vars(self.diffusion_config), "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> PriorBundle:
        model = DiffusionPrior(PriorConfig.from_dict(config["prior"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), config["clip"]["name"], config["clip"]["sha256"], config.get("extra", {}),
                   diffusion_config=DiffusionConfig(**config["diffusion"]))


@dataclass
class ARPriorBundle(CaptionPrior):
    """The autoregressive prior (``model``: an :class:`~unclip_lite.unclip.ar_prior.ARPrior`)."""

    kind = "ar-prior"

    @torch.no_grad()
    def draw(self, conditioning: dict, guidance: float, generator: torch.Generator | None,
             temperature: float = 1.0, progress: bool = False) -> torch.Tensor:
        """The dot token from the top half of its predicted distribution, then the k codes one
        at a time, each from guided logits u + s·(c − u) (u: the dropped caption)."""
        if not temperature > 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        model, cfg = self.model, self.model.config
        B = len(conditioning["text_embed"])
        both = {k: torch.cat([v, n]) for (k, v), n in
                zip(conditioning.items(), model.null_conditioning(**conditioning).values())}  # [2B, ...]
        none = torch.full((B,), cfg.dot_buckets, device=self.device)
        codes = torch.zeros(B, 0, dtype=torch.long, device=self.device)
        dot_logits, _ = model(codes, none, **conditioning)
        dot = torch.multinomial(top_half(dot_logits.softmax(-1)), 1, generator=generator)[:, 0]  # [B]
        for j in tqdm(range(cfg.components), disable=not progress, desc="AR prior"):
            _, logits = model(torch.cat([codes, codes]), torch.cat([dot, none]), **both)
            cond, uncond = logits[:B, j], logits[B:, j]  # [B, buckets]
            guided = (uncond + guidance * (cond - uncond)) / temperature
            codes = torch.cat([codes, torch.multinomial(guided.softmax(-1), 1, generator=generator)], dim=1)
        return model.decode(codes)

    def config_dict(self) -> dict:
        return {"ar_prior": self.model.config.to_dict(),
                "clip": {"name": self.clip_name, "sha256": self.clip_sha256}, "extra": self.extra}

    @classmethod
    def from_config(cls, config: dict, state_dict: dict | None = None, source: str = "checkpoint") -> ARPriorBundle:
        model = ARPrior(ARPriorConfig.from_dict(config["ar_prior"]))
        if state_dict is not None:
            load_state_into(model, state_dict, source=source)
        return cls(model.eval(), config["clip"]["name"], config["clip"]["sha256"], config.get("extra", {}))
