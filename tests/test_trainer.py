"""The shared trainer: exact resume, schedule, EMA, accumulation, NaN stop, fp32/bf16."""
import math

import pytest
import torch
from torch import nn

from unclip_lite.train import EMA, NonFiniteLossError, TrainConfig, Trainer, lr_factor


def make_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(8, 32), nn.Dropout(0.1), nn.GELU(), nn.Linear(32, 1))


def batches(index, rank=0, world=1):
    g = torch.Generator().manual_seed(1000 + index)
    x = torch.randn(16, 8, generator=g)
    return x, 0.5 * x[:, :4].sum(1, keepdim=True)


def mse(model, batch):
    x, y = batch
    loss = (model(x) - y).pow(2).mean()
    return loss, {"rmse": loss.sqrt().item()}


def config(**kw):
    return TrainConfig(**{"steps": 40, "lr": 3e-3, "warmup": 5, "ema_decay": 0.9,
                          "precision": "fp32", "progress": False, "log_every": 1, **kw})


def test_resume_gives_exactly_the_uninterrupted_weights(tmp_path):
    straight = Trainer(make_model(), mse, batches, config())
    straight.fit()

    first = Trainer(make_model(), mse, batches, config(), out_dir=tmp_path)
    first.fit(steps=17)  # "killed" after 17 steps; the state is on disk
    # Disturb every RNG a fresh process would not share, then resume in a new trainer.
    torch.manual_seed(999)
    resumed = Trainer(make_model(), mse, batches, config(), out_dir=tmp_path)
    assert resumed.resume() and resumed.step == 17
    resumed.fit()
    for a, b in zip(straight.raw_model.parameters(), resumed.raw_model.parameters()):
        assert torch.equal(a, b)
    for k in straight.ema.shadow:
        assert torch.equal(straight.ema.shadow[k], resumed.ema.shadow[k])
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    assert resumed.history[-1]["loss"] < resumed.history[0]["loss"] / 2  # it did learn


def test_resume_refuses_a_corrupt_state(tmp_path):
    (tmp_path / "train_state.pt").write_bytes(b"not a checkpoint")
    trainer = Trainer(make_model(), mse, batches, config(), out_dir=tmp_path)
    with pytest.raises(RuntimeError, match="cannot resume.*unreadable or truncated"):
        trainer.resume()
    assert Trainer(make_model(), mse, batches, config(), out_dir=tmp_path / "new").resume() is False


def test_learning_rate_schedule():
    cfg = TrainConfig(steps=110, warmup=10, min_lr_ratio=0.1)
    assert lr_factor(0, cfg) == pytest.approx(0.1)
    assert lr_factor(9, cfg) == pytest.approx(1.0)
    assert lr_factor(60, cfg) == pytest.approx(0.1 + 0.9 * 0.5)  # half way through the cosine
    assert lr_factor(110, cfg) == pytest.approx(0.1)
    assert lr_factor(50, TrainConfig(warmup=10, schedule="constant")) == 1.0


def test_ema_matches_the_closed_form():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = EMA(model, decay=0.5)
    for value in (1.0, 1.0, 1.0):
        model.weight.data.fill_(value)
        ema.update(model)
    assert ema.shadow["weight"].item() == pytest.approx(1 - 0.5**3)


def test_gradient_accumulation_equals_one_big_batch():
    def big(index, rank=0, world=1):
        a, b = batches(2 * index), batches(2 * index + 1)
        return torch.cat([a[0], b[0]]), torch.cat([a[1], b[1]])

    def no_dropout():
        model = make_model()
        model[1].p = 0.0
        return model

    one = Trainer(no_dropout(), mse, big, config(steps=5, accumulate=1))
    two = Trainer(no_dropout(), mse, batches, config(steps=5, accumulate=2))
    one.fit(), two.fit()
    for a, b in zip(one.raw_model.parameters(), two.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_nan_loss_stops_with_a_clear_message(tmp_path):
    def exploding(model, batch):
        loss, logs = mse(model, batch)
        return loss * (float("nan") if trainer.step == 3 else 1.0), logs

    trainer = Trainer(make_model(), exploding, batches, config(checkpoint_every=1), out_dir=tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"loss is nan at step 3.*not applied.*lower learning rate"):
        trainer.fit()
    good = Trainer(make_model(), mse, batches, config(), out_dir=tmp_path)
    assert good.resume() and good.step == 3  # the last good state survived
    assert all(math.isfinite(p.sum().item()) for p in good.raw_model.parameters())


def test_bf16_autocast_trains():
    trainer = Trainer(make_model(), mse, batches, config(precision="bf16", steps=30))
    history = trainer.fit()
    assert history[-1]["loss"] < history[0]["loss"]


@pytest.mark.parametrize("bad", [dict(steps=0), dict(precision="fp8"), dict(schedule="linear")])
def test_bad_config_is_refused(bad):
    with pytest.raises(ValueError):
        TrainConfig(**bad)


def test_a_model_can_ask_for_faster_learning_of_its_new_parameters():
    from unclip_lite.train.trainer import param_groups

    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 2))
    model.lr_multipliers = {"1.": 10.0}  # the second layer, e.g. a projection new to a fine-tuned model
    groups = param_groups(model, 0.1, lr=1e-3)
    lrs = {id(p): g.get("lr", 1e-3) for g in groups for p in g["params"]}
    assert lrs[id(model[1].weight)] == lrs[id(model[1].bias)] == pytest.approx(1e-2)
    assert lrs[id(model[0].weight)] == lrs[id(model[0].bias)] == 1e-3
    decay = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    assert decay[id(model[1].weight)] == 0.1 and decay[id(model[1].bias)] == 0.0
    assert sum(len(g["params"]) for g in groups) == 4


# --- chapter 10's GPU recipe in one process: strategy, fused AdamW, checkpointing, compile --------
# (the multi-process strategies themselves are compared with one process in tests/test_distributed.py)

def no_dropout_model():
    model = make_model()
    model[1].p = 0.0
    return model


@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_a_multi_process_strategy_in_one_process_says_how_to_launch(strategy):
    with pytest.raises(ValueError, match=rf"strategy='{strategy}'.*single process.*torchrun --nproc-per-node N"):
        Trainer(make_model(), mse, batches, config(strategy=strategy))


def test_an_unknown_strategy_is_refused():
    with pytest.raises(ValueError, match="strategy must be one of auto, none, ddp, fsdp"):
        TrainConfig(strategy="zero3")


def test_auto_and_none_are_the_plain_single_process_trainer():
    for strategy in ("auto", "none"):
        trainer = Trainer(make_model(), mse, batches, config(strategy=strategy))
        assert trainer.parallel.strategy == "none" and trainer.model is trainer.raw_model


def test_fused_adamw_on_cpu_matches_the_unfused_one():
    """fused=None on the CPU keeps torch's default; True forces the fused kernel (this torch has one
    for the CPU), which takes the same steps."""
    default = Trainer(no_dropout_model(), mse, batches, config(steps=5))
    fused = Trainer(no_dropout_model(), mse, batches, config(steps=5, fused=True))
    assert not default.optimizer.defaults["fused"] and fused.optimizer.defaults["fused"] is True
    default.fit(), fused.fit()
    for a, b in zip(default.raw_model.parameters(), fused.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_fused_adamw_where_torch_has_no_kernel_is_a_clear_error():
    from unclip_lite.train.distributed import make_adamw

    meta = torch.nn.Parameter(torch.empty(3, 3, device="meta"))
    with pytest.raises(ValueError, match="fused=True: torch .* has no fused AdamW for parameters on meta"):
        make_adamw([{"params": [meta]}], 1e-3, (0.9, 0.98), 1e-6, True, torch.device("meta"))


def tiny_clip_training(**kw):
    from unclip_lite.clip.configs import CLIPConfig, TextConfig, VisionConfig
    from unclip_lite.clip.model import CLIP
    from unclip_lite.clip.recipes import contrastive_step

    def clip_batches(index, rank=0, world=1):
        g = torch.Generator().manual_seed(index)
        tokens = torch.randint(4, 30, (6, 8), generator=g)
        tokens[:, 5], tokens[:, 6:] = 2, 0  # EOT, padding
        return torch.randn(6, 3, 16, 16, generator=g), tokens

    torch.manual_seed(0)
    clip = CLIP(CLIPConfig(embed_dim=16, vision=VisionConfig(image_size=16, layers=2, width=16, heads=2, patch_size=8),
                           text=TextConfig(context_length=8, vocab_size=30, width=16, heads=2, layers=2)))
    return Trainer(clip, contrastive_step, clip_batches, config(steps=3, **kw))


def test_activation_checkpointing_switches_the_blocks_and_changes_nothing_learned():
    from unclip_lite.nn import repeated_blocks

    plain, checkpointed = tiny_clip_training(), tiny_clip_training(checkpointing=True)
    assert all(block.grad_checkpointing for block in repeated_blocks(checkpointed.raw_model))
    assert not any(block.grad_checkpointing for block in repeated_blocks(plain.raw_model))
    plain.fit(), checkpointed.fit()
    for a, b in zip(plain.raw_model.parameters(), checkpointed.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_compile_wraps_the_model_for_training_and_saves_the_plain_one(tmp_path, monkeypatch):
    """compile=True trains through torch.compile's wrapper; the checkpoint keys are the plain
    model's (no ``_orig_mod.``) and the steps are eager's. TorchDynamo traces for real; the
    Inductor code generation (~1 min for even this model on 2 CPU cores) is swapped for the
    eager backend."""
    import functools

    monkeypatch.setattr(torch, "compile", functools.partial(torch.compile, backend="eager"))
    compiled = Trainer(no_dropout_model(), mse, batches, config(steps=3, compile=True), out_dir=tmp_path)
    eager = Trainer(no_dropout_model(), mse, batches, config(steps=3))
    assert type(compiled.model).__name__ == "OptimizedModule" and compiled.model is not compiled.raw_model
    compiled.fit(), eager.fit()
    state = torch.load(tmp_path / "train_state.pt", weights_only=True)
    assert list(state["model"]) == list(eager.raw_model.state_dict())
    for a, b in zip(compiled.raw_model.parameters(), eager.raw_model.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
