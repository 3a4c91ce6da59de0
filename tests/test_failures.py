"""unCLIP's failures on Shapes (unclip_lite.unclip.failures) and concept arithmetic."""

import torch
import torch.nn.functional as F

from unclip_lite.data import shapes
from unclip_lite.unclip import failures


def test_template_matching_reads_exact_renders_and_separation_matches_a_naive_loop():
    scenes = failures.small_scenes(10, 0.1, seed=1)
    for resolution in (32, 64):
        assert torch.equal(failures.shape_by_template(shapes.render(scenes, resolution), scenes), scenes.shape[:, 0])
    naive = []
    for b in range(10):
        own = shapes.render(scenes[b:b + 1], 32)
        others = []
        for s in range(len(shapes.SHAPES)):
            if s != scenes.shape[b, 0]:
                fields = dict(scenes[b:b + 1].__dict__)
                fields["shape"] = torch.tensor([[s]])
                others.append((shapes.render(shapes.Scenes(**fields), 32) - own).pow(2).mean().sqrt())
        naive.append(min(others))
    assert abs(failures.separation(scenes, 32) - torch.stack(naive).mean().item()) < 1e-6


def test_small_objects_are_closer_to_each_other_at_low_resolution():
    small, large = failures.small_scenes(20, 0.03, seed=2), failures.small_scenes(20, 0.13, seed=2)
    assert failures.separation(small, 32) < failures.separation(large, 32) / 3
    assert (small.radius == 0.03).all() and ((small.x > 0.1) & (small.x < 0.9)).all()


class NearestUpsampler:
    """A stand-in for an upsampler: nearest-neighbour 2x (keeps exactly what the base has)."""

    def sample(self, low_res, seed=0):
        return F.interpolate(low_res, scale_factor=2, mode="nearest")


def test_detail_reports_every_radius_and_stage():
    from unclip_lite.judge import load_judge

    out = failures.detail([NearestUpsampler()], load_judge(), n=8, radii=(0.03, 0.13))
    assert set(out) == {"0.03", "0.13"}
    assert set(out["0.13"]) == {"separation_32px", "judge_32px", "separation_64px", "upsampled_64px"}
    assert out["0.13"]["judge_32px"] >= out["0.03"]["judge_32px"]
    assert all(0 <= v <= 1 for row in out.values() for v in row.values())


def test_binding_retrieval_is_the_clip_swap_test():
    from unclip_lite.clip.bundle import load_clip
    from unclip_lite.clip.recipes import evaluate_pairs

    clip = load_clip("clip-shapes-tiny-pairs")
    out = failures.binding_retrieval(clip, n=60)
    direct = evaluate_pairs(clip, n=60)
    assert out == {f"swap_{w}": round(direct[f"pairs_swap_{w}"], 4) for w in ("colour", "shape", "relation")}


def test_every_edit_covers_every_change_once_from_training_pairs():
    from unclip_lite.unclip.manipulate_eval import every_edit

    for change, names, n in (("colour", shapes.COLOURS, 56), ("shape", shapes.SHAPES, 20)):
        images, scenes, sources, wanted, index = every_edit(change)
        assert images.shape == (n, 3, 32, 32) and len(sources) == len(wanted) == n
        own = scenes.__dict__[change][:, 0]
        assert {(a, b) for a, b in zip(own.tolist(), index.tolist())} == \
            {(a, b) for a in range(len(names)) for b in range(len(names)) if a != b}  # every from -> to once
        assert not shapes.HELD_OUT_TABLE[scenes.colour[:, 0], scenes.shape[:, 0]].any()  # sources: training pairs
        assert all(s != w for s, w in zip(sources, wanted))
