"""Using CLIP: bundles, zero-shot, ranking, retrieval, probes, training recipes and the CLI."""
import json

import pytest
import torch
import torch.nn.functional as F

from unclip_lite.cli import main as cli
from unclip_lite.clip import recipes
from unclip_lite.clip.bundle import load_clip
from unclip_lite.clip.zeroshot import (accuracy_at_k, linear_probe, rank_images, retrieval_metrics,
                                       zero_shot_classifier)
from unclip_lite.data import shapes


@pytest.fixture(scope="module")
def untrained():
    return recipes.new_shapes_clip()


def test_bundle_round_trip(tmp_path, untrained):
    path = untrained.save(tmp_path / "c", manifest={"command": "test"})
    loaded = load_clip(path)
    images, texts = shapes.make_batch(4, 0)
    torch.testing.assert_close(loaded.encode_images(images), untrained.encode_images(images))
    torch.testing.assert_close(loaded.encode_texts(texts), untrained.encode_texts(texts))
    assert loaded.manifest["command"] == "test"


def test_zero_shot_classifier_averages_templates(untrained):
    w = zero_shot_classifier(untrained, ["red circle"], ["a {}", "the {}"])
    expected = F.normalize(untrained.encode_texts(["a red circle", "the red circle"]).mean(0), dim=-1)
    torch.testing.assert_close(w[0], expected)
    with pytest.raises(ValueError, match="at least one class"):
        zero_shot_classifier(untrained, [])
    with pytest.raises(ValueError, match="must contain"):
        zero_shot_classifier(untrained, ["x"], ["no slot"])


def test_retrieval_metrics_against_a_naive_count():
    g = torch.Generator().manual_seed(0)
    img = F.normalize(torch.randn(30, 8, generator=g), dim=-1)
    txt = F.normalize(img + 0.8 * torch.randn(30, 8, generator=g), dim=-1)
    m = retrieval_metrics(img, txt, ks=(1, 5))
    sims = img @ txt.T
    for k in (1, 5):
        naive_i2t = sum(i in sims[i].topk(k).indices.tolist() for i in range(30)) / 30
        naive_t2i = sum(i in sims[:, i].topk(k).indices.tolist() for i in range(30)) / 30
        assert m[f"image_to_text_R@{k}"] == pytest.approx(naive_i2t)
        assert m[f"text_to_image_R@{k}"] == pytest.approx(naive_t2i)
    assert retrieval_metrics(img, img)["image_to_text_R@1"] == 1.0


def test_accuracy_and_probe():
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.1]])
    assert accuracy_at_k(logits, torch.tensor([1, 2]), ks=(1, 2)) == {"top1": 0.5, "top2": 0.5}
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    y = (x[:, 0] > 0).long() + 2 * (x[:, 1] > 0).long()  # linearly separable, 4 classes
    result = linear_probe(x[:150], y[:150], x[150:], y[150:])
    assert result["test_accuracy"] > 0.9 and result["n_classes"] == 4


def test_rank_images_orders_by_similarity(untrained):
    images, _ = shapes.make_batch(6, 1)
    order, scores = rank_images(untrained, images, "a red circle")
    assert torch.equal(order, scores.argsort(descending=True))


def test_a_short_training_run_learns_and_resumes(tmp_path):
    recipe = recipes.Recipe()
    recipe.data.batch_size = 32
    recipe.train.steps, recipe.train.warmup, recipe.train.progress = 6, 2, False
    bundle, trainer = recipes.train_shapes_clip(recipe, out_dir=tmp_path)
    assert trainer.step == 6 and (tmp_path / "train_state.pt").is_file()
    assert trainer.history[-1]["loss"] < trainer.history[0]["loss"] + 1.0
    recipe.train.steps = 8
    _, again = recipes.train_shapes_clip(recipe, out_dir=tmp_path)
    assert again.step == 8 and len(again.history) > len(trainer.history)


@pytest.mark.slow
def test_cli_train_then_eval(tmp_path, capsys):
    out = tmp_path / "clip-test.safetensors"
    assert cli(["train", "clip", "--config", "shapes-tiny", "--steps", "2", "--out", str(out),
                "--run-dir", str(tmp_path / "run")]) == 0
    manifest = json.loads(out.with_suffix(".json").read_text())
    assert manifest["command"].startswith("unclip-lite train clip --config shapes-tiny --steps 2")
    assert manifest["steps"] == 2 and "heldout_joint" in manifest["metrics"]
    capsys.readouterr()
    assert cli(["eval", str(out), "--n", "50"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    assert set(metrics) >= {"heldout_joint", "heldout_colour", "heldout_shape", "seen_joint",
                            "heldout_image_to_text_R@1"}


@pytest.mark.parametrize("argv, message", [
    (["train", "clip", "--config", "nope"], "no clip training recipe for config 'nope'"),
    (["train", "dalle", "--config", "shapes-tiny"], "unknown model kind 'dalle'"),
    (["eval", "no-such-checkpoint"], "no checkpoint 'no-such-checkpoint'"),
])
def test_cli_bad_input(argv, message, capsys):
    assert cli(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.dist
@pytest.mark.slow
def test_torchrun_cli_trains_data_parallel(tmp_path):
    """`torchrun --nproc_per_node 2 -m unclip_lite train clip ...` runs DDP on CPU (gloo)."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    out = tmp_path / "ddp.safetensors"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "unclip_lite", "train", "clip", "--config", "shapes-tiny", "--steps", "2",
           "--out", str(out), "--run-dir", str(tmp_path / "run")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert json.loads(out.with_suffix(".json").read_text())["steps"] == 2


@pytest.mark.slow
def test_killed_clip_run_resumes_to_exactly_the_uninterrupted_weights(tmp_path):
    """Interrupt a real CLIP run mid-way (as Ctrl-C would), resume it in a fresh trainer:
    the final weights equal an uninterrupted run's bit for bit."""
    from unclip_lite.clip.model import CLIP
    from unclip_lite.train import TrainConfig, Trainer

    data = recipes.ShapesData(batch_size=16)
    config = dict(steps=6, lr=1e-3, warmup=2, precision="bf16", progress=False, log_every=1,
                  checkpoint_every=1, ema_decay=0.9)

    def run(out_dir, interrupt_at=None):
        bundle = recipes.new_shapes_clip(seed=0)
        batches = recipes.shapes_batches(bundle, data)

        def maybe_interrupted(index, rank=0, world=1):
            if index == interrupt_at:
                raise KeyboardInterrupt
            return batches(index, rank, world)

        trainer = Trainer(bundle.model, recipes.contrastive_step, maybe_interrupted,
                          TrainConfig(**config), out_dir=out_dir, after_step=CLIP.clamp_logit_scale_)
        trainer.resume()
        trainer.fit()
        return trainer

    straight = run(tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "killed", interrupt_at=4)
    torch.manual_seed(1234)  # a new process would start from other RNG states
    resumed = run(tmp_path / "killed")
    assert resumed.step == 6
    for (name, a), b in zip(straight.raw_model.state_dict().items(), resumed.raw_model.state_dict().values()):
        assert torch.equal(a, b), name
    for k, v in straight.ema.shadow.items():
        assert torch.equal(v, resumed.ema.shadow[k]), k
