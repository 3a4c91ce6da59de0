"""The registry of model kinds (unclip_lite.kinds) and recipe overrides (utils.override_fields):
every kind trains, stops on --max-minutes and takes --set through the same path."""
import json

import pytest
import torch

from unclip_lite import cli
from unclip_lite.glide.recipes import GlideRecipe
from unclip_lite.kinds import KINDS, get_kind, kind_of, load_bundle
from unclip_lite.utils import override_fields

# A few fields per kind that keep one training step small
SMALL = {"clip": ["data.batch_size=16"], "glide": ["data.batch_size=2"], "classifier": ["data.batch_size=4"],
         "prior": ["data.batch_size=8", "data.pool=32", "statistics_n=16"],
         "ar-prior": ["data.batch_size=8", "data.pool=32", "statistics_n=64"],
         "judge": ["data.batch_size=8"], "decoder": ["data.batch_size=2", "eval_every=none"],
         "upsampler": ["batch_size=4"], "vqgan": ["data.batch_size=4"]}


def test_every_kind_is_registered_once_with_what_the_cli_needs():
    assert set(KINDS) == {"clip", "glide", "classifier", "judge", "prior", "ar-prior", "decoder", "upsampler",
                          "unclip", "vqgan", "clipdraw", "vqgan-clip"}
    for kind in KINDS.values():  # a pipeline or a CLIP-guided method is composed from trained parts
        assert (kind.recipes or kind.compose or kind.name == "unclip") and kind.evaluate and kind.bundle.kind
    assert get_kind("glide").sample is not None and get_kind("clip").sample is None
    assert get_kind("unclip").sample is not None and get_kind("unclip").default_checkpoint == "unclip-shapes-tiny"
    with pytest.raises(ValueError, match="unknown model kind 'dalle'"):
        get_kind("dalle")


def test_shipped_checkpoints_load_through_their_kind():
    for name, kind in {"clip-shapes-tiny": "clip", "glide-shapes-tiny": "glide", "judge-shapes": "judge",
                       "classifier-noised-shapes-tiny": "classifier"}.items():
        assert kind_of(name).name == kind
        assert isinstance(load_bundle(name), get_kind(kind).bundle)


def test_overrides_are_typed_dotted_or_unique_and_validated():
    recipe = GlideRecipe()
    applied = override_fields(recipe, ["lr=3e-4", "data.batch_size=8", "train.betas=0.9,0.99",
                                       "grad_clip=none", "min_snr_gamma=none", "train.progress=false"])
    assert applied == {"train.lr": 3e-4, "data.batch_size": 8, "train.betas": (0.9, 0.99),
                       "train.grad_clip": None, "min_snr_gamma": None, "train.progress": False}
    assert recipe.train.lr == 3e-4 and recipe.data.batch_size == 8 and recipe.train.grad_clip is None
    cases = [("nope=1", "unknown recipe field 'nope'"), ("lr=fast", "is a number"), ("steps=2.5", "is an integer"),
             ("seed=1", "ambiguous"), ("lr", "key=value"), ("betas=0.9", "2 comma-separated"),
             ("lr=nan", "finite"), ("precision=fp8", "precision must be one of"), ("steps=0", "positive")]
    for assignment, message in cases:
        with pytest.raises(ValueError, match=message):
            override_fields(recipe, [assignment])
    assert recipe.train.precision == "auto" and recipe.train.steps == 6500  # a refused value is not kept


@pytest.mark.slow
@pytest.mark.parametrize("kind, config", [(k.name, c) for k in KINDS.values() for c in k.recipes
                                          if not cli.reads_data(k.recipes[c].make())])  # tests/test_data_recipes.py
def test_every_recipe_stops_on_max_minutes_and_takes_overrides(tmp_path, kind, config):
    """One step, then the time limit (0 minutes) stops it resumably, for every kind and recipe."""
    entry = get_kind(kind).recipes[config]
    recipe = entry.make()
    override_fields(recipe, ["train.steps=5", "train.progress=false", "train.precision=fp32", *SMALL[kind]])
    bundle, trainer = entry.train(recipe, out_dir=tmp_path / "run", resume=True, max_minutes=0.0)
    assert trainer.step == 1 and (tmp_path / "run" / "train_state.pt").is_file()
    assert isinstance(bundle, get_kind(kind).bundle)


@pytest.mark.slow
def test_cli_train_records_overrides_and_refuses_bad_ones_before_any_work(tmp_path, capsys):
    out, run = tmp_path / "judge.safetensors", tmp_path / "run"
    args = ["train", "judge", "--config", "shapes", "--out", str(out), "--run-dir", str(run)]
    assert cli.main(args + ["--set", "steps=3", "--set", "batch_size=x"]) == 2
    assert "data.batch_size is an integer" in capsys.readouterr().err
    assert not out.exists() and not run.exists()  # nothing started, nothing written
    assert cli.main(args + ["--set", "steps=3", "--set", "data.batch_size=8", "--set", "progress=false"]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["overrides"] == {"train.steps": 3, "data.batch_size": 8, "train.progress": False}
    assert manifest["steps"] == 3 and manifest["precision"] == "fp32" and "bf16" in manifest["hardware"]
    assert manifest["command"].startswith("unclip-lite train judge --config shapes --out ")
    assert manifest["command"].endswith("--set steps=3 --set data.batch_size=8 --set progress=false")
    assert torch.is_tensor(load_bundle(out).model.head.weight)
