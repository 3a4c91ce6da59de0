"""CLIP on real data (unclip_lite.clip.data_recipes) and ``unclip-lite train --data``.

References: open_clip's hyperparameters, tokenizer and transforms; an uninterrupted run for a
resumed one; the files on disk for the command line's "nothing written".
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from unclip_lite import cli
from unclip_lite.clip.configs import PAPER_CONFIGS, get_config
from unclip_lite.clip.data_recipes import (DATA_RECIPES, clip_pair_batches, data_clip_config, recipe_clip_config,
                                           tiny_data_recipe, train_data_clip)
from unclip_lite.data.formats import write_csv, write_webdataset
from unclip_lite.data.shapes import make_batch
from unclip_lite.data.sharded import PairStream, TarShards
from unclip_lite.kinds import get_kind, load_bundle
from unclip_lite.utils import override_fields

N = 40


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """40 Shapes renders with unique captions, in 4 shards: the pattern that names them."""
    root = tmp_path_factory.mktemp("shards")
    images, captions = make_batch(N, seed=4, resolution=40)
    write_webdataset(root, images, [f"{c} #{i}" for i, c in enumerate(captions)], shard_size=10)
    return str(root / "shard-{000000..000003}.tar")


def tiny(shards: str, *sets: str):
    recipe = tiny_data_recipe()
    override_fields(recipe, [f"data.path={shards}", "batch_size=8", "shuffle_buffer=16", "train.steps=6",
                             "warmup=2", "precision=fp32", "progress=false", *sets])
    return recipe


def test_every_paper_config_has_open_clips_recipe():
    """open_clip_train/params.py (get_default_params, --wd, --warmup, --grad-clip-norm, --lr-scheduler)
    and docs/PRETRAINED.md (batch per GPU)."""
    clip = get_kind("clip")
    for name in PAPER_CONFIGS:
        recipe = clip.recipes[name].make()
        t, resnet = recipe.train, get_config(name).vision.is_resnet
        assert (t.lr, t.weight_decay, t.warmup, t.schedule, t.min_lr_ratio, t.grad_clip, t.precision) == \
            (5e-4, 0.2, 10_000, "cosine", 0.0, None, "auto")
        assert (t.betas, t.eps) == (((0.9, 0.999), 1e-8) if resnet else ((0.9, 0.98), 1e-6))
        assert recipe.data.path == "" and recipe.data.shuffle_buffer == 5000 and recipe.data.workers == 4
        assert data_clip_config(name) == get_config(name)  # already CLIP's BPE vocabulary at 77 tokens
    assert {n: clip.recipes[n].make().data.batch_size for n in ("ViT-B-32", "ViT-B-16", "ViT-L-14", "RN50")} == \
        {"ViT-B-32": 256, "ViT-B-16": 192, "ViT-L-14": 96, "RN50": 64}
    assert set(DATA_RECIPES) == {*PAPER_CONFIGS, "shapes-tiny-data"} and set(DATA_RECIPES) <= set(clip.recipes)


def test_batches_are_open_clips_tokens_and_crops(shards):
    """A batch: open_clip.tokenize of the captions, open_clip's train transform of the images."""
    import open_clip

    recipe = tiny(shards)
    batches = clip_pair_batches(recipe, image_size=32)
    images, tokens = batches(3)
    stream: PairStream = batches.stream()
    refs = stream.locate(3)
    pairs = [stream.catalog.read(r.unit, [r.offset])[0] for r in refs]
    assert torch.equal(tokens, open_clip.tokenize([c for _, c in pairs]))  # [8, 77]
    reference = open_clip.image_transform(32, is_train=True)
    for image, (raw, _), ref in zip(images, pairs, refs):
        torch.manual_seed(stream._sample_seed(ref))
        assert torch.equal(image, reference(raw))
    with pytest.raises(ValueError, match="give --data PATH"):
        clip_pair_batches(tiny_data_recipe(), image_size=32)


def record_reads(monkeypatch) -> list[tuple[int, list[str]]]:
    """Every batch a stream loads, with the captions it read from the shards."""
    log: list[tuple[int, list[str]]] = []
    load, read = PairStream.load_batch, TarShards.read

    def logged_load(self, index):
        log.append((index, []))
        return load(self, index)

    def logged_read(self, unit, offsets):
        pairs = read(self, unit, offsets)
        log[-1][1].extend(caption for _, caption in pairs)
        return pairs

    monkeypatch.setattr(PairStream, "load_batch", logged_load)
    monkeypatch.setattr(TarShards, "read", logged_read)
    return log


@pytest.mark.slow
def test_a_resumed_run_reads_and_learns_what_an_uninterrupted_one_does(shards, tmp_path, monkeypatch):
    """3 steps, stop, resume for 3 more == 6 steps; the resumed process reads only batches 3-5,
    the very samples the uninterrupted run read there (an epoch is 5 batches: 5 is in the next)."""
    log = record_reads(monkeypatch)
    whole, _ = train_data_clip(tiny(shards), out_dir=tmp_path / "whole")
    uninterrupted = dict(log)
    assert sorted(uninterrupted) == [0, 1, 2, 3, 4, 5]
    for _ in range(3):  # max_minutes=0 stops after one step: three separate "processes"
        _, trainer = train_data_clip(tiny(shards), out_dir=tmp_path / "parts", max_minutes=0.0)
    assert trainer.step == 3
    log.clear()
    resumed, trainer = train_data_clip(tiny(shards), out_dir=tmp_path / "parts")
    assert trainer.step == 6 and [index for index, _ in log] == [3, 4, 5]  # nothing before step 4 is read
    for index, captions in log:
        assert captions == uninterrupted[index]
    assert set(uninterrupted[5]) & set(uninterrupted[0])  # epoch 1 begins: the same pairs, reshuffled
    for key, value in whole.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[key]), key


@pytest.mark.slow
def test_cli_trains_on_shards_and_writes_a_checkpoint(shards, tmp_path, capsys):
    out, run = tmp_path / "clip.safetensors", tmp_path / "run"
    args = ["train", "clip", "--config", "shapes-tiny-data", "--data", shards, "--steps", "2", "--batch", "8",
            "--workers", "2", "--lr", "3e-4", "--accumulate", "2", "--precision", "fp32", "--out", str(out),
            "--run-dir", str(run), "--set", "progress=false"]
    assert cli.main(args) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["overrides"] == {"train.progress": False, "train.steps": 2, "train.precision": "fp32",
                                     "train.lr": 3e-4, "train.accumulate": 2, "data.batch_size": 8,
                                     "data.path": shards, "data.workers": 2}
    assert manifest["steps"] == 2 and manifest["command"].startswith("unclip-lite train clip --config shapes-tiny")
    bundle = load_bundle(out)
    assert bundle.extra["recipe"]["samples"] == N and bundle.context_length == 77
    assert bundle.tokenize("a red circle").shape == (1, 77) and (run / "train_state.pt").is_file()


def test_scaling_flags_set_the_recipe_fields():
    args = cli.build_parser().parse_args(
        ["train", "clip", "--config", "ViT-B-32", "--data", "d/{0..9}.tar", "--data-format", "webdataset",
         "--batch", "128", "--workers", "6", "--strategy", "fsdp", "--compile", "--checkpointing",
         "--accumulate", "4", "--lr", "1e-4", "--pretrained", "b32.pt"])
    recipe = get_kind("clip").recipes["ViT-B-32"].make()
    for _, assignment in cli.train_flag_overrides(args):
        override_fields(recipe, [assignment])
    t, d = recipe.train, recipe.data
    assert (t.strategy, t.compile, t.checkpointing, t.accumulate, t.lr) == ("fsdp", True, True, 4, 1e-4)
    assert (d.path, d.format, d.batch_size, d.workers, recipe.pretrained) == \
        ("d/{0..9}.tar", "webdataset", 128, 6, "b32.pt")
    with pytest.raises(SystemExit):  # an unknown strategy is refused by the parser
        cli.build_parser().parse_args(["train", "clip", "--config", "ViT-B-32", "--strategy", "zero3"])


def test_pretrained_is_a_local_file_of_the_recipes_architecture(tmp_path):
    """Checked against open_clip's own config of the named model before anything loads."""
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"")
    recipe = get_kind("clip").recipes["ViT-B-32"].make()
    recipe.pretrained = str(weights)
    assert recipe_clip_config(recipe) == get_config("ViT-B-32")  # ViT-B-32-quickgelu: OpenAI's activation
    recipe.pretrained_model = "ViT-B-32"  # open_clip's plain name: nn.GELU
    assert recipe_clip_config(recipe).activation == "gelu"
    recipe.pretrained_model = "ViT-B-16"
    with pytest.raises(ValueError, match="'ViT-B-16' is not the ViT-B-32 architecture"):
        recipe_clip_config(recipe)
    recipe = get_kind("clip").recipes["ViT-H-16-256"].make()  # unCLIP's CLIP: not an open_clip model
    recipe.pretrained = str(weights)
    with pytest.raises(ValueError, match="unknown open_clip model 'ViT-H-16-256-quickgelu'.*pretrained_model"):
        recipe_clip_config(recipe)
    recipe.pretrained = str(tmp_path / "missing.pt")
    with pytest.raises(FileNotFoundError, match="is not a file: give a local open_clip checkpoint"):
        recipe_clip_config(recipe)


@pytest.mark.parametrize("case, message", [
    ("no shards", "4 of 4 webdataset shards named by"),
    ("empty folder", "folder without .tar shards or images"),
    ("csv without title", r"lacks column\(s\) \['title'\]"),
    ("data on a synthetic recipe", "'shapes-tiny' makes its own data and takes no --data; .*ViT-B-32"),
    ("no data on a data recipe", "'ViT-B-32' trains on your data: give --data PATH"),
    ("a pretrained tag", "'openai' is not a file: give a local open_clip checkpoint"),
    ("workers on a synthetic recipe", "--workers does not apply to clip recipe 'shapes-tiny'"),
    ("a bad precision", "argument --precision: invalid choice"),
])
def test_bad_input_is_a_clear_error_and_writes_nothing(shards, tmp_path, capsys, case, message):
    (tmp_path / "empty").mkdir()
    write_csv(tmp_path / "csv", torch.rand(2, 3, 8, 8), ["a", "b"])
    bad_csv = tmp_path / "csv" / "train.csv"
    bad_csv.write_text(bad_csv.read_text().replace("title", "caption"))
    flags = {"no shards": ["--config", "shapes-tiny-data", "--data", str(tmp_path / "none-{000..003}.tar")],
             "empty folder": ["--config", "shapes-tiny-data", "--data", str(tmp_path / "empty")],
             "csv without title": ["--config", "ViT-B-32", "--data", str(bad_csv)],
             "data on a synthetic recipe": ["--config", "shapes-tiny", "--data", shards],
             "no data on a data recipe": ["--config", "ViT-B-32"],
             "a pretrained tag": ["--config", "ViT-B-32", "--data", shards, "--pretrained", "openai"],
             "workers on a synthetic recipe": ["--config", "shapes-tiny", "--workers", "2"],
             "a bad precision": ["--config", "ViT-B-32", "--data", shards, "--precision", "fp8"]}[case]
    out, run = tmp_path / "out.safetensors", tmp_path / "run"
    before = sorted(tmp_path.rglob("*"))
    try:
        code = cli.main(["train", "clip", *flags, "--out", str(out), "--run-dir", str(run)])
    except SystemExit as exit:  # argparse refuses bad choices itself
        code = exit.code
    assert code == 2
    assert re.search(message, capsys.readouterr().err)
    assert sorted(tmp_path.rglob("*")) == before and not out.exists() and not run.exists()
