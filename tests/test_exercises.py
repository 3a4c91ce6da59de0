"""Every exercise check passes on the reference, reports a stub as not done, and fails on
plausible wrong answers (the mistakes learners actually make)."""
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest
import torch

import unclip_lite.exercises as exercises_pkg
from unclip_lite.exercises.core import REGISTRY, Case, Exercise, ExerciseFailed, compare_outputs

# Import every chapter's exercise module so they register themselves.
for info in pkgutil.iter_modules(exercises_pkg.__path__):
    if info.name.startswith("ch"):
        importlib.import_module(f"unclip_lite.exercises.{info.name}")


# --- plausible wrong answers, by exercise name ---------------------------------------------
def circle_hard_edge(cx, cy, radius, resolution):  # forgot anti-aliasing
    c = (torch.arange(resolution) + 0.5) / resolution
    y, x = torch.meshgrid(c, c, indexing="ij")
    return (((x - cx) ** 2 + (y - cy) ** 2).sqrt() <= radius).float()


def circle_corner_pixels(cx, cy, radius, resolution):  # pixel corners instead of centres
    c = torch.arange(resolution) / resolution
    y, x = torch.meshgrid(c, c, indexing="ij")
    d = (((x - cx) ** 2 + (y - cy) ** 2).sqrt() - radius) * resolution
    return (0.5 - d).clamp(0, 1)


def circle_units(cx, cy, radius, resolution):  # distance in image widths, not pixels
    c = (torch.arange(resolution) + 0.5) / resolution
    y, x = torch.meshgrid(c, c, indexing="ij")
    d = ((x - cx) ** 2 + (y - cy) ** 2).sqrt() - radius
    return (0.5 - d).clamp(0, 1)


def pack_cut_end(ids, context_length, sot, eot):  # truncation drops the end token
    row = ([sot, *ids, eot])[:context_length]
    return torch.tensor(row + [0] * (context_length - len(row)), dtype=torch.long)


def pack_pad_with_eot(ids, context_length, sot, eot):  # pads with the end token
    row = [sot, *ids, eot]
    row = row[: context_length - 1] + [eot] if len(row) > context_length else row
    return torch.tensor(row + [eot] * (context_length - len(row)), dtype=torch.long)


def pack_no_start(ids, context_length, sot, eot):  # forgot the start token
    row = [*ids, eot]
    row = row[: context_length - 1] + [eot] if len(row) > context_length else row
    return torch.tensor(row + [0] * (context_length - len(row)), dtype=torch.long)


def compact_off_by_specials(tokens, clip_ids):  # numbered from 1, ignoring the 4 specials
    table = torch.full((49408,), 3, dtype=torch.long)
    table[0], table[49406], table[49407] = 0, 1, 2
    table[torch.tensor(clip_ids)] = torch.arange(len(clip_ids)) + 1
    return table[tokens]


def compact_unknown_as_pad(tokens, clip_ids):  # unknown words silently become padding
    table = torch.zeros(49408, dtype=torch.long)
    table[49406], table[49407] = 1, 2
    table[torch.tensor(clip_ids)] = torch.arange(len(clip_ids)) + 4
    return table[tokens]


def patchify_rows_first(images, p):  # flattens pixels before channels
    from einops import rearrange
    return rearrange(images, "b c (h p) (w q) -> b (h w) (p q c)", p=p, q=p)


def patchify_columns_first(images, p):  # patches in column order
    from einops import rearrange
    return rearrange(images, "b c (h p) (w q) -> b (w h) (c p q)", p=p, q=p)


def mask_upper(n):  # attends to the future instead of the past
    return torch.ones(n, n, dtype=torch.bool).triu()


def mask_strict(n):  # forgets that a token may attend to itself
    return torch.ones(n, n, dtype=torch.bool).tril(-1)


def pool_last(features, tokens):  # reads the last position (padding), not the end token
    return features[:, -1]


def pool_first_nonzero(features, tokens):  # reads the start token
    return features[:, 0]


def logits_unnormalised(img, txt, logit_scale):  # forgot to normalise
    return logit_scale.exp().clamp(max=100) * img @ txt.T


def logits_no_cap(img, txt, logit_scale):  # forgot the cap at 100
    import torch.nn.functional as F
    return logit_scale.exp() * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def logits_raw_scale(img, txt, logit_scale):  # used the log-scale itself
    import torch.nn.functional as F
    return logit_scale * F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).T


def loss_one_direction(img, txt, scale):  # only image -> text
    import torch.nn.functional as F
    logits = scale * img @ txt.T
    return F.cross_entropy(logits, torch.arange(len(img)))


def loss_summed(img, txt, scale):  # sums the two directions instead of averaging
    import torch.nn.functional as F
    logits = scale * img @ txt.T
    labels = torch.arange(len(img))
    return F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)


def ensemble_no_renorm(features):  # the mean of unit vectors is not a unit vector
    import torch.nn.functional as F
    return F.normalize(features, dim=-1).mean(1)


def ensemble_no_prenorm(features):  # long embeddings dominate the average
    import torch.nn.functional as F
    return F.normalize(features.mean(1), dim=-1)


def recall_columns(similarities, k):  # text -> image instead of image -> text
    t = torch.arange(len(similarities))
    return ((similarities.T > similarities[t, t][:, None]).sum(1) < k).float().mean().item()


def recall_off_by_one(similarities, k):  # counts rank <= k
    t = torch.arange(len(similarities))
    return ((similarities > similarities[t, t][:, None]).sum(1) <= k).float().mean().item()


WRONG_ANSWERS = {
    "ch00.circle_coverage": [circle_hard_edge, circle_corner_pixels, circle_units],
    "ch00.pack_ids": [pack_cut_end, pack_pad_with_eot, pack_no_start],
    "ch00.to_compact": [compact_off_by_specials, compact_unknown_as_pad],
    "ch01.patchify": [patchify_rows_first, patchify_columns_first],
    "ch01.causal_mask": [mask_upper, mask_strict],
    "ch01.eot_pool": [pool_last, pool_first_nonzero],
    "ch01.clip_logits": [logits_unnormalised, logits_no_cap, logits_raw_scale],
    "ch02.clip_loss": [loss_one_direction, loss_summed],
    "ch02.ensemble": [ensemble_no_renorm, ensemble_no_prenorm],
    "ch02.recall_at_k": [recall_columns, recall_off_by_one],
}

# Later chapters keep their wrong answers beside this file, in wrong_answers_chNN.py.
for _path in sorted(Path(__file__).parent.glob("wrong_answers_ch*.py")):
    _spec = importlib.util.spec_from_file_location(_path.stem, _path)
    _module = importlib.util.module_from_spec(_spec)
    _spec.loader.exec_module(_module)
    WRONG_ANSWERS.update(_module.WRONG_ANSWERS)


def stub(*args, **kwargs):
    raise NotImplementedError


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_check_accepts_reference_and_reports_stub(name, capsys):
    exercise = REGISTRY[name]
    assert exercise.check(exercise.reference) is True
    assert "✅" in capsys.readouterr().out
    assert exercise.check(stub) is False
    assert "not implemented yet" in capsys.readouterr().out


@pytest.mark.parametrize("name, wrong", [(n, w) for n, ws in WRONG_ANSWERS.items() for w in ws],
                         ids=lambda x: getattr(x, "__name__", x))
def test_check_rejects_plausible_wrong_answer(name, wrong):
    with pytest.raises(ExerciseFailed, match=name):
        REGISTRY[name].check(wrong)


def test_every_exercise_has_wrong_answers():
    missing = sorted(set(REGISTRY) - set(WRONG_ANSWERS))
    assert not missing, f"exercises without a wrong answer to reject: {missing}"


def test_compare_outputs_explains_differences():
    assert compare_outputs(torch.zeros(2), torch.zeros(2)) is None
    assert "shape (3,), expected (2,)" in compare_outputs(torch.zeros(3), torch.zeros(2))
    assert "dtype" in compare_outputs(torch.zeros(2), torch.zeros(2, dtype=torch.long))
    assert "worst at index (1,)" in compare_outputs(torch.tensor([0.0, 1.0]), torch.zeros(2))
    assert "NaN" in compare_outputs(torch.tensor([float("nan")]), torch.zeros(1))
    assert "expected a torch.Tensor" in compare_outputs([0.0], torch.zeros(1))
    assert compare_outputs((1, torch.ones(1)), (1, torch.ones(1))) is None


def test_an_exception_in_the_learners_code_is_reported_with_the_case():
    exercise = Exercise("demo.double", lambda x: 2 * x, lambda: [Case((torch.ones(2),), name="ones")],
                        hint="multiply by two")
    with pytest.raises(ExerciseFailed, match=r"(?s)raised ZeroDivisionError.*on case ones.*Hint: multiply by two"):
        exercise.check(lambda x: 1 / 0)
    del REGISTRY["demo.double"]


def test_patchify_reference_matches_the_vits_patch_convolution():
    """The exercise's patch order is the one the ViT's strided convolution computes."""
    from unclip_lite.clip import build_clip, get_config
    from unclip_lite.exercises.ch01 import patchify

    conv = build_clip(get_config("shapes-tiny")).visual.patch_embed
    x = torch.randn(2, 3, 32, 32)
    via_conv = conv(x).flatten(2).transpose(1, 2)  # [B, N, D]
    via_patches = patchify(x, 4) @ conv.weight.flatten(1).T
    torch.testing.assert_close(via_patches, via_conv, rtol=1e-4, atol=1e-5)


def test_causal_mask_reference_matches_causal_attention():
    from unclip_lite.exercises.ch01 import causal_mask
    from unclip_lite.nn import MultiheadAttention

    attn = MultiheadAttention(16, 2)
    x = torch.randn(2, 5, 16)
    torch.testing.assert_close(attn(x, attn_mask=causal_mask(5)), attn(x, causal=True))
