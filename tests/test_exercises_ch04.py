"""Chapter 04's exercise references agree with the package code the chapter (and the course) runs:
the loss and the samplers of unclip_lite.diffusion, the U-Net's timestep embedding and ResBlock,
and the closed-form toy of unclip_lite.diffusion.toy that the checks and the chapter lean on."""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from unclip_lite.diffusion import GaussianDiffusion, ddpm_sample_loop, space_timesteps
from unclip_lite.diffusion.toy import GaussianMixture, ToyDenoiser, as_points, energy_distance, ring
from unclip_lite.exercises import ch04
from unclip_lite.unet import ResBlock as PackageResBlock
from unclip_lite.unet import UNet, UNetConfig


def g(seed):
    return torch.Generator().manual_seed(seed)


def cosine(T):
    return GaussianDiffusion.from_schedule("cosine", T)


def test_diffusion_loss_is_l_simple_on_the_packages_forward_process():
    d = cosine(1000)
    model = ch04._TinyEpsNet(3)
    x0, noise = torch.rand(4, 3, 8, 8, generator=g(0)) * 2 - 1, torch.randn(4, 3, 8, 8, generator=g(1))
    t = torch.tensor([0, 10, 500, 999])
    xt = d.q_sample(x0, t, noise)
    explicit = ((noise - model(xt, t)) ** 2).mean()
    torch.testing.assert_close(ch04.diffusion_loss(model, x0, t, noise, d.alphas_cumprod), explicit)
    torch.testing.assert_close(d.training_losses(model, x0, t, noise)["loss"].mean(), explicit)


def test_ddpm_step_is_ddpm_equation_11_with_the_posterior_variance():
    """μ_θ = (x_t - β_t/√(1-ᾱ_t) ε̂)/√α_t (DDPM eq. 11), σ² = β̃_t, and no noise at t = 0."""
    d = cosine(1000)
    model = ch04._TinyEpsNet(3)
    xt, z = torch.randn(4, 3, 6, 6, generator=g(2)), torch.randn(4, 3, 6, 6, generator=g(3))
    t = torch.tensor([0, 1, 40, 700])
    beta, ab = d.betas[t].view(-1, 1, 1, 1), d.alphas_cumprod[t].view(-1, 1, 1, 1)
    mean = (xt - beta / (1 - ab).sqrt() * model(xt, t)) / (1 - beta).sqrt()
    sigma = d.posterior_variance[t].view(-1, 1, 1, 1).sqrt()
    explicit = (mean + (t > 0).view(-1, 1, 1, 1) * sigma * z).float()
    torch.testing.assert_close(ch04.ddpm_step(model, xt, t, d.alphas_cumprod, z), explicit, atol=2e-4, rtol=1e-4)
    assert d.posterior_variance[0] == 0  # β̃_0 = 0: the last step is the mean


def test_sample_loop_draws_the_data_with_the_exact_denoiser():
    """On Gaussian data the closed-form ε is exact, so the loop must reproduce the data's law."""
    d = cosine(200)
    data = GaussianMixture(torch.tensor([[0.7, -0.4]]), 0.3)
    x = ch04.sample_loop(data.eps_model(d.alphas_cumprod), (4000, 2, 1, 1), d.alphas_cumprod, g(4))
    points = as_points(x)
    torch.testing.assert_close(points.mean(0), torch.tensor([0.7, -0.4]), atol=0.03, rtol=0)
    torch.testing.assert_close(points.std(0), torch.tensor([0.3, 0.3]), atol=0.03, rtol=0)


def test_a_respaced_table_and_a_timestep_map_is_the_packages_respaced_sampler():
    """The chapter samples its live U-Net this way: your loop on ᾱ[kept], the model told kept[k]."""
    d = cosine(1000)
    model = ch04._TinyEpsNet(3)
    kept = torch.tensor(space_timesteps(1000, "8"))
    ours = ch04.sample_loop(lambda x, k: model(x, kept[k]), (2, 3, 4, 4), d.alphas_cumprod[kept], g(5))
    theirs = ddpm_sample_loop(d.respaced("8"), model, (2, 3, 4, 4), generator=g(5), clip_denoised=False,
                              progress=False)
    torch.testing.assert_close(ours, theirs)


def test_timestep_embedding_reference_is_the_one_the_unet_uses():
    cfg = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                     num_head_channels=16, image_size=16)
    unet = UNet(cfg)
    t = torch.tensor([0, 7, 999])
    _, emb, _ = unet.encode(torch.randn(3, 3, 16, 16), t)
    torch.testing.assert_close(emb, unet.time_embed(ch04.timestep_embedding(t, 16)))
    odd = ch04.timestep_embedding(torch.tensor([3.0]), 7)
    half = torch.exp(-math.log(10000) * torch.arange(3) / 3) * 3.0
    torch.testing.assert_close(odd[0], torch.cat([half.cos(), half.sin(), torch.zeros(1)]))


class ExplicitResBlock(nn.Module):
    """The block as the chapter's solution writes it: no inheritance from the package."""

    def __init__(self, channels, emb_dim, out_channels=None, dropout=0.0, num_groups=32):
        super().__init__()
        out_channels = out_channels or channels
        self.in_norm = nn.GroupNorm(math.gcd(num_groups, channels), channels)
        self.in_conv = nn.Conv2d(channels, out_channels, 3, padding=1)
        self.emb_proj = nn.Linear(emb_dim, 2 * out_channels)
        self.out_norm = nn.GroupNorm(math.gcd(num_groups, out_channels), out_channels)
        self.dropout = nn.Dropout(dropout)
        self.out_conv = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        h = self.in_conv(F.silu(self.in_norm(x)))
        scale, shift = self.emb_proj(F.silu(emb))[:, :, None, None].chunk(2, dim=1)
        return self.skip(x) + self.out_conv(self.dropout(F.silu(self.out_norm(h) * (1 + scale) + shift)))


def randomise(module, seed):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(0.3 * torch.randn(p.shape, generator=g(seed)) + p)


@pytest.mark.parametrize("channels, out_channels", [(8, 16), (16, None), (6, 12)])
def test_resblock_reference_is_the_packages_block_and_the_written_one(channels, out_channels):
    reference = ch04.ResBlock(channels, 12, out_channels)
    assert isinstance(reference, PackageResBlock) and reference.use_scale_shift_norm
    assert not any(p.abs().sum() for p in reference.out_conv.parameters())  # zero start
    randomise(reference, 6)
    written = ExplicitResBlock(channels, 12, out_channels)
    written.load_state_dict(reference.state_dict())  # the same names, so the check can load them
    x, emb = torch.randn(2, channels, 5, 5, generator=g(7)), torch.randn(2, 12, generator=g(8))
    torch.testing.assert_close(written(x, emb), reference(x, emb))


def test_a_unet_with_the_written_blocks_swapped_in_is_the_same_network():
    """The chapter's YourUNet: every ResBlock replaced (through a wrapper) by an equal one."""

    class Adopted(PackageResBlock):
        def __init__(self, block):
            nn.Module.__init__(self)
            self.block = block

        def forward(self, x, emb):
            return self.block(x, emb)

    cfg = UNetConfig(model_channels=16, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(8,),
                     num_head_channels=16, image_size=16)
    torch.manual_seed(0)
    unet = UNet(cfg)
    randomise(unet, 9)
    x, t = torch.randn(2, 3, 16, 16, generator=g(10)), torch.tensor([3, 600])
    before = unet(x, t)
    swapped = 0
    for parent in list(unet.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, PackageResBlock):
                block = ExplicitResBlock(child.in_conv.in_channels, child.emb_proj.in_features,
                                         child.in_conv.out_channels, cfg.dropout, cfg.num_groups)
                block.load_state_dict(child.state_dict())
                setattr(parent, name, Adopted(block))
                swapped += 1
    assert swapped == 2 + 2 + 4  # down: n = 1 per level; middle: two; up: n + 1 per level
    torch.testing.assert_close(unet(x, t), before)


def test_the_mixture_score_is_the_gradient_of_the_noisy_log_density():
    d = cosine(50)
    data = GaussianMixture(torch.tensor([[1.0, 0.0], [-0.5, 0.8], [0.0, -1.0]]), 0.2, torch.tensor([0.5, 0.3, 0.2]))
    model = data.eps_model(d.alphas_cumprod)
    x = torch.randn(6, 2, 1, 1, generator=g(11), dtype=torch.float64).requires_grad_()
    t = torch.tensor([0, 5, 10, 25, 40, 49])
    ab = d.alphas_cumprod[t][:, None, None]  # [B, 1, 1]
    var = ab * 0.2 ** 2 + 1 - ab
    diff = as_points(x)[:, None, :] - ab.sqrt() * data.means[None]  # [B, K, D]
    log_q = torch.logsumexp(data.weights.log() - (diff ** 2).sum(-1) / (2 * var[..., 0]) - math.log(2 * math.pi)
                            - torch.log(var[..., 0]), dim=1)  # [B]: D = 2 so the normaliser is 2π v
    (grad,) = torch.autograd.grad(log_q.sum(), x)
    torch.testing.assert_close(model.score(x.detach(), t), grad)
    torch.testing.assert_close(model(x.detach(), t), -(1 - d.alphas_cumprod[t]).sqrt().view(-1, 1, 1, 1) * grad)


def test_the_ideal_denoiser_has_the_lowest_loss():
    d = cosine(100)
    data = ring()
    x0 = data.sample(4000, g(12))
    t = torch.randint(0, 100, (4000,), generator=g(13))
    noise = torch.randn(x0.shape, generator=g(14))
    ideal = ch04.diffusion_loss(data.eps_model(d.alphas_cumprod), x0, t, noise, d.alphas_cumprod)
    for other in (lambda x, t: torch.zeros_like(x), lambda x, t: x):  # "no noise", "all noise"
        assert ideal < ch04.diffusion_loss(other, x0, t, noise, d.alphas_cumprod) - 0.05


def test_toy_metrics_and_network():
    data = ring()
    a, b = data.sample(3000, g(15)), data.sample(3000, g(16))
    assert abs(data.support_fraction(a) - (1 - math.exp(-4.5))) < 0.01
    assert data.support_fraction(torch.randn(3000, 2, 1, 1, generator=g(17))) < 0.15
    assert energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert energy_distance(a, b) < 0.01 < energy_distance(a, torch.randn(3000, 2, 1, 1, generator=g(18)))
    calls = []

    def embedding(t, dim):
        calls.append(dim)
        return ch04.timestep_embedding(t, dim)

    net = ToyDenoiser(embedding=embedding)
    out = net(a[:5], torch.tensor([0, 1, 2, 3, 4]))
    assert out.shape == (5, 2, 1, 1) and not out.abs().any() and calls == [32]  # zero start, your embedding
