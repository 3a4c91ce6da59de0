"""The real-data recipes of GLIDE, unCLIP's decoder, priors and upsamplers (issue 17).

Each trains 2 steps on 20 pairs written as webdataset shards, through the command line; the
batches the loss reads are checked against what was written (the images found pixel for pixel,
the captions' tokens, z_i the frozen CLIP's embedding of exactly those images), caption and
embedding dropout against exact binomial bounds, the paper configurations counted on the meta
device against the papers, and bad input (no data, no CLIP, a CLIP of the wrong width, a prior
beside another CLIP) against clear errors that write nothing.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from unclip_lite import cli
from unclip_lite.clip.bundle import CLIPBundle
from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
from unclip_lite.clip.model import CLIP
from unclip_lite.data.formats import to_uint8, write_webdataset
from unclip_lite.data.transforms import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from unclip_lite.glide import data_recipes as glide_data
from unclip_lite.glide.text2im import empty_tokens
from unclip_lite.kinds import get_kind
from unclip_lite.tokenizer import get_tokenizer
from unclip_lite.unclip import data_recipes as unclip_data
from unclip_lite.unclip import prior_data_recipes as prior_data
from unclip_lite.unclip.bundle import PriorBundle
from unclip_lite.unclip.prior import DiffusionPrior
from unclip_lite.utils import override_fields

N_PAIRS, SIZE = 20, 32
LONG = "a very long caption " + " ".join(f"word{i}" for i in range(60))  # over 32 and 77 tokens


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """20 smooth 32 px images (a blurred 4 x 4 grid: downsampling loses little) with distinct
    captions, one of them too long for any context, in shards of 8, 8 and 4."""
    images = F.interpolate(torch.rand(N_PAIRS, 3, 4, 4, generator=torch.Generator().manual_seed(0)), size=SIZE,
                           mode="bilinear", align_corners=False)
    captions = [f"a photo of thing number {i}" for i in range(N_PAIRS)]
    captions[7] = LONG
    folder = tmp_path_factory.mktemp("shards")
    write_webdataset(folder, images, captions, shard_size=8)
    return {"path": str(folder), "images": to_uint8(images).float() / 255, "captions": captions}


def save_clip(path, seed: int) -> str:
    """A tiny CLIP reading the full BPE vocabulary at 77 tokens, 32 px, 32-d embeddings."""
    torch.manual_seed(seed)
    config = CLIPConfig(embed_dim=32, vision=VisionConfig(image_size=SIZE, layers=1, width=32, heads=2, patch_size=8),
                        text=TextConfig(width=32, heads=2, layers=1))
    return str(CLIPBundle(CLIP(config), None, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD).save(path))


@pytest.fixture(scope="module")
def clip_path(tmp_path_factory):
    return save_clip(tmp_path_factory.mktemp("clip") / "clip.safetensors", seed=0)


def recipe(make, data_path, **fields):
    made = make()
    override_fields(made, [f"data.path={data_path}", "train.progress=false", "train.precision=fp32"]
                    + [f"{k}={v}" for k, v in fields.items()])
    return made


def binomial_bounds(n: int, p: float, tail: float = 1e-4) -> tuple[int, int]:
    """The smallest interval [lo, hi] of Binomial(n, p) counts outside which each tail holds <= ``tail``."""
    cdf, total, lo, hi = [], 0.0, None, n
    for k in range(n + 1):
        total += math.comb(n, k) * p ** k * (1 - p) ** (n - k)
        cdf.append(total)
    lo = next(k for k in range(n + 1) if cdf[k] > tail)
    hi = next(k for k in range(n + 1) if cdf[k] >= 1 - tail)
    return lo, hi


def which_image(pairs, x: torch.Tensor) -> int:
    """The written image that ``x`` [3, 32, 32] in [0, 1] is, to uint8 precision (or an assertion error)."""
    distance = (pairs["images"] - x).abs().flatten(1).amax(1)  # [20]
    assert distance.min() < 1e-5, f"not one of the written images (nearest: {distance.min():.4f} away)"
    return int(distance.argmin())


def is_empty(tokens: torch.Tensor) -> torch.Tensor:
    return (tokens == empty_tokens(1, tokens.shape[1])).all(1)  # [B]


# ----------------------------------------------------------------------------- the batches the losses read


@pytest.mark.parametrize("name", ["base-64-tiny-data", "upsample-256-tiny-data"])
def test_glide_batches_are_the_written_pairs_with_captions_dropped_at_20_percent(pairs, name):
    made = recipe(glide_data.DATA_RECIPES[name], pairs["path"], **{"data.batch_size": N_PAIRS})
    vocab = glide_data.full_vocab()
    config = glide_data.data_glide_config(made, vocab)
    batches = glide_data.glide_data_batches(config, vocab, made)
    dropped = total = 0
    for index in range(20):  # 400 draws
        x0, tokens, *extra = batches(index)
        assert x0.shape == (N_PAIRS, 3, SIZE, SIZE) and tokens.shape == (N_PAIRS, config.context_length)
        assert x0.min() >= -1 and x0.max() <= 1
        empty = is_empty(tokens)
        found = [which_image(pairs, (x + 1) / 2) for x in x0]
        assert sorted(found) == list(range(N_PAIRS))  # an epoch: every pair once
        for row, j in enumerate(found):
            expected = vocab([pairs["captions"][j]], config.context_length, truncate=True)[0]
            assert empty[row] or torch.equal(tokens[row], expected), (index, row)
        dropped, total = dropped + int(empty.sum()), total + len(x0)
        if name.startswith("upsample"):  # the low-res image: x0 downsampled x4 (and blurred a little), upsampled
            (channels,) = extra
            assert channels.shape == x0.shape and channels.abs().max() <= 1
            sharp = F.interpolate(F.interpolate(x0, size=8, mode="area"), size=SIZE, mode="bilinear")
            # σ <= 0.6 low-res pixels moves these smooth images <= 0.06 on average; another image is ~0.3 away
            assert (channels - sharp).abs().flatten(1).mean(1).max() < 0.07
    lo, hi = binomial_bounds(total, 0.2)
    assert lo <= dropped <= hi, (dropped, total)
    assert all(torch.equal(a, b) for a, b in zip(batches(3), batches(3)))  # a pure function of the index


def test_decoder_batches_hold_the_frozen_clips_embedding_of_those_images(pairs, clip_path):
    made = recipe(unclip_data.DECODER_DATA_RECIPES["paper-tiny-data"], pairs["path"], clip=clip_path,
                  **{"data.batch_size": N_PAIRS})
    clip = unclip_data.frozen_clip(made.clip, made.clip_dim, "test")
    vocab = glide_data.full_vocab()
    config = unclip_data.data_decoder_config(made, vocab, clip.dim)
    batches = unclip_data.decoder_data_batches(config, vocab, clip, made)
    counts = {"text": 0, "image": 0, "both": 0}
    total = 0
    for index in range(24):  # 480 draws
        x0, tokens, z_i = batches(index)
        assert x0.shape == (N_PAIRS, 3, SIZE, SIZE) and z_i.shape == (N_PAIRS, 32) and x0.abs().max() <= 1
        images = (x0 + 1) / 2
        text_gone, image_gone = is_empty(tokens), (z_i == 0).all(1)
        reference = clip.model.encode_image((images - torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1))
                                            / torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), normalize=True)
        kept = ~image_gone
        assert torch.allclose(z_i[kept], reference[kept], atol=1e-5)  # z_i of exactly these images
        for row, image in enumerate(images):
            expected = vocab([pairs["captions"][which_image(pairs, image)]], config.glide.context_length, truncate=True)
            assert text_gone[row] or torch.equal(tokens[row], expected[0])
        counts["text"] += int(text_gone.sum())
        counts["image"] += int(image_gone.sum())
        counts["both"] += int((text_gone & image_gone).sum())
        total += len(x0)
    for key, p in (("text", 0.5), ("image", 0.1), ("both", 0.05)):  # §2.1, independent draws
        lo, hi = binomial_bounds(total, p)
        assert lo <= counts[key] <= hi, (key, counts[key], total)
    assert not any(p.requires_grad for p in clip.model.parameters())


@pytest.mark.parametrize("kind", ["prior", "ar-prior"])
def test_prior_batches_are_the_clips_embeddings_of_the_written_pairs(pairs, clip_path, kind):
    makers = prior_data.PRIOR_DATA_RECIPES if kind == "prior" else prior_data.AR_PRIOR_DATA_RECIPES
    made = recipe(makers["paper-tiny-data"], pairs["path"], clip=clip_path, **{"data.batch_size": N_PAIRS})
    clip = unclip_data.frozen_clip(made.clip, made.clip_dim, "test")
    batches = prior_data.prior_data_batches(clip, made)
    z_images, z_texts = clip.encode_images(pairs["images"]), clip.encode_texts(pairs["captions"])  # [20, E]
    lengths = torch.tensor([min(len(get_tokenizer().encode(c)) + 2, 77) for c in pairs["captions"]])
    dropped = total = 0
    for index in range(20):  # 400 draws
        z_i, cond, drop = batches(index)
        assert z_i.shape == (N_PAIRS, 32) and cond["text_tokens"].shape == (N_PAIRS, 77, 32)
        assert cond["text_mask"].shape == (N_PAIRS, 77)
        j = (z_i @ z_images.T).argmax(1)  # [B]: which written image each z_i is
        assert sorted(j.tolist()) == list(range(N_PAIRS))
        assert torch.allclose(z_i, z_images[j], atol=1e-5)
        assert torch.allclose(cond["text_embed"][~drop], z_texts[j][~drop], atol=1e-5)  # its own caption
        assert torch.equal(cond["text_mask"].sum(1)[~drop], lengths[j][~drop])
        assert (cond["text_embed"][drop] == 0).all() and (cond["text_tokens"][drop] == 0).all()
        assert (cond["text_mask"][drop].sum(1) == 1).all()  # ∅: only the first slot visible
        dropped, total = dropped + int(drop.sum()), total + len(z_i)
    lo, hi = binomial_bounds(total, 0.1)  # §2.2
    assert lo <= dropped <= hi, (dropped, total)


@pytest.mark.parametrize("name", ["paper-256-tiny-data", "paper-1024-tiny-data"])
def test_upsampler_batches_are_aligned_crops_of_the_written_images(pairs, name):
    made = recipe(unclip_data.UPSAMPLER_DATA_RECIPES[name], pairs["path"])
    config = made.model
    assert config.scale == 4 and config.crop_size == 16  # x4 as the paper's stages
    batches = unclip_data.upsampler_data_batches(made)
    for index in range(3):
        x0, tokens, low = batches(index)
        assert tokens is None and x0.shape == (8, 3, 16, 16) and low.shape == (8, 3, 4, 4)
        assert x0.abs().max() <= 1 and low.abs().max() <= 1
        for crop, small in zip((x0 + 1) / 2, (low + 1) / 2):
            # the crop sits in a written image at a corner on the low-res grid (every 4th pixel)
            spots = [(i, y, x) for i in range(N_PAIRS) for y in range(0, 17, 4) for x in range(0, 17, 4)
                     if (pairs["images"][i, :, y:y + 16, x:x + 16] - crop).abs().max() < 1e-5]
            assert spots, "the high-res crop is not an aligned crop of a written image"
            if config.degradation == "blur":  # and the low-res crop is that crop, downsampled and blurred
                assert (F.interpolate(crop[None], size=4, mode="area")[0] - small).abs().mean() < 0.03


# ----------------------------------------------------------------------------- end to end, through the command line


CLI_RUNS = [("glide", "base-64-tiny-data", False), ("glide", "upsample-256-tiny-data", False),
            ("decoder", "paper-tiny-data", True), ("prior", "paper-tiny-data", True),
            ("ar-prior", "paper-tiny-data", True), ("upsampler", "paper-256-tiny-data", False),
            ("upsampler", "paper-1024-tiny-data", False)]


@pytest.mark.parametrize("kind, config, needs_clip", CLI_RUNS)
def test_two_steps_through_the_command_line(pairs, clip_path, tmp_path, monkeypatch, kind, config, needs_clip):
    from unclip_lite.train import trainer as trainer_module

    seen = []
    original = trainer_module.Trainer.train_step

    def recording_step(self):  # the batch the loss reads, as the trainer asks for it
        seen.append(self.batches(self.step, self.rank, self.world_size))
        return original(self)

    monkeypatch.setattr(trainer_module.Trainer, "train_step", recording_step)
    out, run = tmp_path / "model.safetensors", tmp_path / "run"
    argv = ["train", kind, "--config", config, "--data", pairs["path"], "--steps", "2", "--batch", "4",
            "--precision", "fp32", "--out", str(out), "--run-dir", str(run)]
    argv += ["--clip", clip_path] if needs_clip else []
    assert cli.main(argv) == 0
    bundle = get_kind(kind).bundle.load(out)
    assert bundle.manifest["steps"] == 2 and math.isfinite(bundle.manifest["final_loss"])
    assert bundle.extra["recipe"]["data"]["path"] == pairs["path"] and bundle.extra["recipe"]["samples"] == N_PAIRS
    assert len(seen) == 2
    first = seen[0][0]  # x0 (z_i for a prior): --batch 4 per process, in [-1, 1]
    assert len(first) == 4 and torch.isfinite(first).all() and first.abs().max() <= 1
    if kind in ("prior", "ar-prior"):  # loads beside the CLIP it was trained on, by its recorded path
        assert bundle.clip.manifest["sha256"] == unclip_data.load_clip(clip_path).manifest["sha256"]
    draw = {"glide": lambda: bundle.sample(["a photo"], steps=2, precision="fp32", low_res=torch.rand(1, 3, 8, 8)
                                           if bundle.conditioning == "low_res" else None),  # learned Σ: L_hybrid
            "decoder": lambda: bundle.sample(["a photo"], steps=2, precision="fp32", image_embed=torch.zeros(1, 32)),
            "prior": lambda: bundle.sample(["a photo"], steps=2, candidates=1),
            "ar-prior": lambda: bundle.sample(["a photo"], candidates=1),
            "upsampler": lambda: bundle.sample(torch.rand(1, 3, 8, 8), respacing="2", precision="fp32")}[kind]
    assert torch.isfinite(draw()).all()  # the checkpoint draws


def test_a_prior_or_decoder_refuses_another_clip(pairs, clip_path, tmp_path):
    other = unclip_data.load_clip(save_clip(tmp_path / "other-clip.safetensors", seed=1))
    made = recipe(prior_data.PRIOR_DATA_RECIPES["paper-tiny-data"], pairs["path"], clip=clip_path, **{"train.steps": 1})
    prior, _ = prior_data.train_data_prior(made)
    prior.save(tmp_path / "prior.safetensors")
    with pytest.raises(ValueError, match="trained on the embeddings of"):
        PriorBundle.load(tmp_path / "prior.safetensors", clip=other)
    loaded = PriorBundle.load(tmp_path / "prior.safetensors")  # finds its CLIP by the path it recorded
    assert loaded.clip_name == str(unclip_data.resolve(clip_path).resolve())
    made = recipe(unclip_data.DECODER_DATA_RECIPES["paper-tiny-data"], pairs["path"], clip=clip_path,
                  **{"train.steps": 1})
    decoder, _ = unclip_data.train_data_decoder(made)
    decoder.check_clip(unclip_data.load_clip(clip_path))
    with pytest.raises(ValueError, match="embeds differently"):
        decoder.check_clip(other)


# ----------------------------------------------------------------------------- the paper configurations


def count(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters())


def test_paper_configs_counted_on_the_meta_device_match_the_papers():
    # GLIDE §4: 3.5B base (2.3B U-Net + 1.2B text transformer), 1.5B upsampler; unCLIP Table 3:
    # decoder 3.5B, diffusion prior 1B (ViT-H/16: 1,024-d embeddings, text width 1,024, 77 tokens)
    glide = glide_data.new_data_glide(glide_data.DATA_RECIPES["base-64"](), device="meta").model
    upsampler = glide_data.new_data_glide(glide_data.DATA_RECIPES["upsample-256"](), device="meta").model
    decoder = unclip_data.new_data_decoder(unclip_data.DECODER_DATA_RECIPES["paper"](), 1024, device="meta")
    with torch.device("meta"):
        prior = DiffusionPrior(prior_data.data_prior_config(prior_data.PRIOR_DATA_RECIPES["paper"](), 1024, 1024, 77))
    for model, paper, within in ((glide, 3.5e9, 0.03), (upsampler, 1.5e9, 0.05), (decoder, 3.5e9, 0.03),
                                 (prior, 1.0e9, 0.03)):
        assert abs(count(model) / paper - 1) < within, (count(model), paper)
    assert all(p.is_meta for p in glide.parameters())
    assert decoder.decoder_config.glide.context_length == 256 and decoder.decoder_config.clip_dim == 1024


def global_batch(made, gpus: int = 8) -> int:
    return made.data.batch_size * made.train.accumulate * gpus


def test_recipes_hold_the_papers_hyperparameters():
    # unCLIP Table 3 (lr, Adam β2, ε, weight decay, EMA, batch, iterations); GLIDE §4 (batch, iterations)
    table = {("glide", "base-64"): (1.2e-4, 0.999, 1e-8, 0.0, 0.9999, 2048, 2_500_000),
             ("glide", "upsample-256"): (1.2e-4, 0.999, 1e-8, 0.0, 0.9999, 512, 1_600_000),
             ("decoder", "paper"): (1.2e-4, 0.999, 1e-8, 0.0, 0.9999, 2048, 800_000),
             ("prior", "paper"): (1.1e-4, 0.96, 1e-6, 6e-2, 0.9999, 4096, 600_000),
             ("ar-prior", "paper"): (1.6e-4, 0.91, 1e-10, 4e-2, 0.999, 4096, 1_000_000),
             ("upsampler", "paper-256"): (1.2e-4, 0.999, 1e-8, 0.0, 0.9999, 1024, 1_000_000),
             ("upsampler", "paper-1024"): (1.0e-4, 0.999, 1e-8, 0.0, 0.9999, 512, 1_000_000)}
    for (kind, name), (lr, beta2, eps, decay, ema, batch, steps) in table.items():
        made = get_kind(kind).recipes[name].make()
        t = made.train
        assert (t.lr, t.betas[1], t.eps, t.weight_decay, t.ema_decay, global_batch(made), t.steps) == \
            (lr, beta2, eps, decay, ema, batch, steps), (kind, name)
        assert made.data.path == ""  # the data is the user's
    up256, up1024 = (get_kind("upsampler").recipes[n].make() for n in ("paper-256", "paper-1024"))
    assert (up256.model.crop_fraction, up256.model.dropout, up256.diffusion.schedule) == (0.25, 0.1, "cosine")
    assert (up1024.model.crop_fraction, up1024.model.dropout, up1024.diffusion.schedule) == (0.25, 0.0, "linear")
    decoder = get_kind("decoder").recipes["paper"].make()
    assert (decoder.p_drop_image, decoder.p_drop_text, decoder.clip_dim) == (0.1, 0.5, 1024)
    assert get_kind("glide").recipes["base-64"].make().p_uncond == 0.2
    assert get_kind("prior").recipes["paper"].make().scaling == "scale"  # Appendix C: x 17.2


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("kind, config, extra, message", [
    ("glide", "base-64-tiny-data", [], "give --data"),
    ("decoder", "paper-tiny-data", ["--data", "DATA"], "give --clip"),
    ("decoder", "paper", ["--data", "DATA", "--clip", "CLIP"], "reads 1024-d CLIP embeddings.*embeds in 32"),
    ("prior", "paper", ["--data", "DATA", "--clip", "CLIP"], "reads 1024-d CLIP embeddings.*embeds in 32"),
    ("ar-prior", "paper-tiny-data", ["--data", "DATA", "--clip", "CLIP", "--set", "clip_dim=64"], "reads 64-d"),
    ("prior", "paper-tiny-data", ["--data", "DATA", "--clip", "no/such/clip"], "no checkpoint"),
    ("upsampler", "paper-256-tiny-data", ["--data", "no/such/shards"], "no data at"),
    ("glide", "base-64-tiny-data", ["--data", "DATA", "--set", "crop=middle"], "crop must be one of"),
])
def test_bad_input_is_a_clear_error_that_writes_nothing(pairs, clip_path, tmp_path, capsys, kind, config, extra,
                                                         message):
    import re

    out, run = tmp_path / "model.safetensors", tmp_path / "run"
    extra = [pairs["path"] if a == "DATA" else clip_path if a == "CLIP" else a for a in extra]
    argv = ["train", kind, "--config", config, "--steps", "1", "--out", str(out), "--run-dir", str(run)] + extra
    assert cli.main(argv) == 2
    assert re.search(message, capsys.readouterr().err), message
    assert not out.exists() and not run.exists()


def test_each_recipe_asks_for_its_data_itself():
    # the command line checks --data first; a recipe called from Python says the same
    for train, made in ((glide_data.train_data_glide, glide_data.DATA_RECIPES["base-64-tiny-data"]),
                        (unclip_data.train_data_decoder, unclip_data.DECODER_DATA_RECIPES["paper-tiny-data"]),
                        (prior_data.train_data_prior, prior_data.PRIOR_DATA_RECIPES["paper-tiny-data"]),
                        (unclip_data.train_data_upsampler, unclip_data.UPSAMPLER_DATA_RECIPES["paper-256-tiny-data"])):
        with pytest.raises(ValueError, match="give --data PATH"):
            train(made())
