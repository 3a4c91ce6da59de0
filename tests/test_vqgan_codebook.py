"""The VQGAN codebook's guards against collapse (unclip_lite.vqgan.model.VectorQuantizer):
data-dependent initialisation and dead-code restarts, checked against hand-computed values."""
import pytest
import torch

from unclip_lite.vqgan import VectorQuantizer, VQGANConfig, train_vqgan
from unclip_lite.vqgan.model import sample_vectors
from test_vqgan import tiny_recipe


def vectors(n: int, dim: int = 4, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def as_grid(rows: torch.Tensor) -> torch.Tensor:
    """``[N, D]`` → ``[1, D, 1, N]``: the quantiser's input layout, one vector per position."""
    return rows.T[None, :, None, :]


def is_row_of(codes: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    return (codes[:, None] == rows[None]).all(-1).any(-1)  # [K]


def test_sample_vectors_draws_distinct_rows_then_noisy_repeats():
    rows = vectors(5)
    torch.manual_seed(0)
    few = sample_vectors(rows, 4)
    assert is_row_of(few, rows).all() and len({tuple(r.tolist()) for r in few}) == 4
    many = sample_vectors(rows, 12, noise=0.01)
    assert is_row_of(many[:5], rows).all() and not is_row_of(many[5:], rows).any()
    nearest = torch.cdist(many[5:], rows).min(1).values
    assert (nearest < 0.1 * rows.std() * 4).all()  # repeats stay next to a row: noise of 0.01 std


def test_the_first_training_forward_puts_every_code_on_the_data():
    quantizer = VectorQuantizer(8, 4, data_init=True)
    rows = vectors(20) + 5  # far from taming's ±1/K ball
    quantizer.eval()(as_grid(rows))  # evaluation never edits the codebook
    assert not quantizer.initialised and quantizer.codebook.weight.abs().max() <= 1 / 8
    torch.manual_seed(0)
    quantizer.train()(as_grid(rows))
    assert quantizer.initialised and is_row_of(quantizer.codebook.weight.detach(), rows).all()
    before = quantizer.codebook.weight.detach().clone()
    quantizer(as_grid(rows + 1))  # only once
    assert torch.equal(quantizer.codebook.weight.detach(), before)


def test_usage_is_an_ema_of_assignment_counts():
    quantizer = VectorQuantizer(3, 2, data_init=False, usage_decay=0.5).train()
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]]))
    start = quantizer.usage.clone()
    rows = torch.tensor([[0.1, 0.0], [0.2, 0.1], [9.0, 0.5], [0.0, -0.3]])  # codes 0, 0, 1, 0
    quantizer(as_grid(rows))
    assert torch.allclose(quantizer.usage, 0.5 * start + 0.5 * torch.tensor([3.0, 1.0, 0.0]))


def test_dead_codes_restart_onto_the_batch_once_per_step_and_live_ones_stay():
    quantizer = VectorQuantizer(4, 2, data_init=False, restart_every=5, dead_threshold=1.0).train()
    with torch.no_grad():
        quantizer.codebook.weight.copy_(torch.tensor([[0.0, 0.0], [50.0, 50.0], [1.0, 1.0], [-50.0, 50.0]]))
        quantizer.usage.copy_(torch.tensor([4.0, 0.2, 3.0, 0.5]))  # codes 1 and 3 are dead
    rows = torch.tensor([[0.1, 0.0], [1.1, 0.9], [0.9, 1.2], [0.0, 0.2]])
    quantizer(as_grid(rows), step=4)  # not a restart step
    assert quantizer.codebook.weight[1, 0] == 50 and quantizer.codebook.weight[3, 0] == -50
    quantizer.usage[[1, 3]] = 0.0
    torch.manual_seed(0)
    quantizer(as_grid(rows), step=5)
    weight = quantizer.codebook.weight.detach()
    assert is_row_of(weight[[1, 3]], rows).all()  # moved onto this batch's vectors
    assert torch.equal(weight[[0, 2]], torch.tensor([[0.0, 0.0], [1.0, 1.0]]))  # live codes untouched
    assert int(quantizer.restarted_at) == 5
    quantizer.usage[[1, 3]] = 0.0
    quantizer(as_grid(rows + 3), step=5)  # the next micro-batch of the same step: no second restart
    assert torch.equal(quantizer.codebook.weight.detach()[[1, 3]], weight[[1, 3]])


def test_the_codebook_state_is_in_the_state_dict():
    keys = set(VectorQuantizer(4, 2).state_dict())
    assert {"codebook.weight", "initialised", "usage", "restarted_at"} <= keys


@pytest.mark.parametrize("kwargs, match", [({"restart_every": -1}, "restart_every"), ({"usage_decay": 1.0}, "usage_decay"),
                                           ({"dead_threshold": -1.0}, "dead_threshold")])
def test_the_config_refuses_bad_codebook_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VQGANConfig(**kwargs)


def test_a_run_with_restarts_resumes_to_the_same_weights(tmp_path):
    """Restarts draw from the global RNG and read the step from the batch: resuming replays them."""
    def recipe(steps):
        r = tiny_recipe(steps=steps)
        r.model.restart_every, r.model.dead_threshold = 2, 2.0  # restarts at steps 2 and 4
        return r

    straight, _ = train_vqgan(recipe(5))
    train_vqgan(recipe(3), out_dir=tmp_path)
    resumed, _ = train_vqgan(recipe(5), out_dir=tmp_path)
    for (name, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.allclose(a.float(), b.float(), atol=1e-6), name
    assert int(resumed.model.quantizer.restarted_at) == 4

