"""The Shapes attribute judge: the shipped one meets its bars, an untrained one does not."""
import pytest
import torch

from unclip_lite import judge as J
from unclip_lite.checkpoints import REGISTRY_DIR, CheckpointMismatchError, load_checkpoint, read_manifest
from unclip_lite.data import shapes as S

SEED = 424242  # evaluation seed, unlike training's batches and the manifest's evaluation


@pytest.fixture(scope="module")
def judge():
    return J.load_judge("judge-shapes")


@pytest.fixture(scope="module")
def metrics(judge):
    torch.set_num_threads(1)
    return J.evaluate_judge(judge, n=500, seed=SEED)


def test_shipped_judge_loads_with_its_manifest(judge):
    ckpt = load_checkpoint("judge-shapes", kind="judge")  # verifies the sha256 too
    assert ckpt.kind == "judge" and isinstance(judge, J.ShapesJudge) and not judge.training
    manifest = read_manifest("judge-shapes")
    assert manifest["command"].startswith("python -m unclip_lite.judge")
    assert 0 < manifest["train_seconds"] <= 10 * 60 and manifest["hardware"] and manifest["metrics"]
    assert (REGISTRY_DIR / "judge-shapes.safetensors").stat().st_size <= 2 * 2**20
    with pytest.raises(CheckpointMismatchError):
        load_checkpoint("judge-shapes", kind="clip")


def test_shipped_judge_meets_its_bars(metrics):
    bars = {"single_all_colour": 0.99, "single_all_shape": 0.99, "single_all_position": 0.98,
            "single_all_n_objects": 0.99, "pair_all_relation": 0.95, "pair_all_n_objects": 0.99,
            "single_heldout_colour": 0.98, "single_heldout_shape": 0.98}
    missed = {k: (metrics[k], bar) for k, bar in bars.items() if metrics[k] < bar}
    assert not missed, f"below the bar (accuracy, bar): {missed}"
    assert metrics["pair_all_objects"] >= 0.8 and metrics["single_all_noisy_joint"] >= 0.8


def test_untrained_judge_is_near_chance():
    torch.manual_seed(0)
    m = J.evaluate_judge(J.ShapesJudge(), n=200, seed=SEED)
    assert m["single_all_colour"] < 0.35 and m["single_all_shape"] < 0.45
    assert m["single_all_joint"] < 0.05 and m["pair_all_objects"] < 0.05


def test_grade_catches_a_wrong_image(judge):
    scenes = S.sample_scenes(100, 5, split="all")
    wrong = S.Scenes(**scenes.__dict__)
    wrong.colour = (scenes.colour + 1) % len(S.COLOURS)  # images say one colour, labels another
    ok = J.grade(judge, S.render(scenes), wrong)
    assert ok["colour"].float().mean() < 0.05 and ok["shape"].float().mean() > 0.95


def test_two_object_labels_are_canonical():
    """"A left of B" and "B right of A" are one picture: the same canonical labels."""
    scenes = S.sample_scenes(64, 3, n_objects=2, split="all")
    flip = torch.tensor([1, 0, 3, 2])  # left ↔ right, above ↔ below
    other = S.Scenes(scenes.colour.flip(1), scenes.shape.flip(1), scenes.size.flip(1),
                     scenes.radius.flip(1), scenes.x.flip(1), scenes.y.flip(1),
                     relation=flip[scenes.relation])
    a, b = J.canonical_pairs(scenes), J.canonical_pairs(other)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert set(a["relation"].tolist()) <= {S.RELATION_NAMES.index("to the left of"),
                                           S.RELATION_NAMES.index("above")}


@pytest.mark.parametrize("shape", [(2, 3, 16, 16), (2, 1, 32, 32), (2, 4, 32, 32), (3, 32, 32)])
def test_bad_images_raise_value_error(judge, shape):
    with pytest.raises(ValueError, match=r"\[B, 3, 32, 32\]"):
        J.judge_scenes(judge, torch.rand(shape))
    with pytest.raises(ValueError):
        judge(torch.rand(shape))


def test_predictions_are_deterministic(judge):
    images = S.render(S.sample_scenes(64, 11, n_objects=2, split="all"))
    first = J.judge_scenes(judge, images)
    again = J.judge_scenes(J.load_judge("judge-shapes"), images.clone())
    assert first.keys() == again.keys() == J.HEADS.keys()
    assert all(torch.equal(first[k], again[k]) for k in first)
    assert set(first["n_objects"].tolist()) <= {1, 2}
