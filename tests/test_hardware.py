"""Choosing the precision for the hardware (unclip_lite.hardware): bf16 only where it is native.

The rule is tested on mocked capabilities (so it is checked on every CPU, whichever this
one is), and every entry point — the trainer, GLIDE sampling, the CLI — is checked to run
what it resolves to and to honour an explicit precision.
"""
import pytest
import torch
from helpers import tiny_bundle
from torch import nn

from unclip_lite import cli, hardware
from unclip_lite.hardware import choose_precision, cpu_has_native_bf16, resolve_precision
from unclip_lite.train import TrainConfig, Trainer

# Flags as /proc/cpuinfo spells them on the machines this course has met.
AVX2_EPYC = {"fpu", "sse2", "avx", "avx2", "fma", "f16c", "sha_ni", "vaes"}  # AMD EPYC (Zen 3): no AVX512
AVX512_NO_BF16 = AVX2_EPYC | {"avx512f", "avx512bw", "avx512vl", "avx512_vnni"}  # Cascade Lake, Zen 4 w/o bf16
SAPPHIRE_RAPIDS = AVX512_NO_BF16 | {"avx512_bf16", "amx_bf16", "amx_tile", "amx_int8"}
COOPER_LAKE = AVX512_NO_BF16 | {"avx512_bf16"}
GRAVITON3 = {"fp", "asimd", "sve", "i8mm", "bf16"}  # Arm Neoverse V1
GRAVITON2 = {"fp", "asimd", "asimddp"}  # Arm Neoverse N1: no BF16


@pytest.mark.parametrize("flags, native", [
    (AVX2_EPYC, False), (AVX512_NO_BF16, False), (set(), False), (GRAVITON2, False),
    (SAPPHIRE_RAPIDS, True), (COOPER_LAKE, True), (GRAVITON3, True), ({"amx_bf16"}, True),
])
def test_native_bf16_is_read_from_the_cpu_flags(flags, native):
    assert cpu_has_native_bf16(flags) is native


@pytest.mark.parametrize("device, cpu_bf16, cuda_bf16, expected", [
    ("cpu", False, False, "fp32"),   # AVX2-only: bf16 would be emulated, ~44x slower
    ("cpu", True, False, "bf16"),    # AVX512-BF16 / AMX
    ("cuda", False, True, "bf16"),   # Ampere and later
    ("cuda", True, False, "fp32"),   # e.g. a V100: no bf16 tensor cores
    ("mps", True, True, "fp32"),     # Apple: fp32 (autocast bf16 on MPS is not a speed-up we measured)
])
def test_the_auto_rule(device, cpu_bf16, cuda_bf16, expected):
    assert choose_precision(device, cpu_native_bf16=cpu_bf16, cuda_bf16=cuda_bf16) == expected


@pytest.mark.parametrize("native", [False, True])
def test_auto_follows_the_mocked_cpu_and_explicit_precisions_win(monkeypatch, native):
    monkeypatch.delenv("UNCLIP_LITE_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda flags=None: native)
    assert resolve_precision("auto", "cpu") == ("bf16" if native else "fp32")
    for explicit in ("fp32", "bf16", "fp16"):
        assert resolve_precision(explicit, "cpu") == explicit
    monkeypatch.setenv("UNCLIP_LITE_PRECISION", "bf16")  # a whole run forced, e.g. to time bf16
    assert resolve_precision("auto", "cpu") == "bf16"
    assert resolve_precision("fp32", "cpu") == "fp32"  # ...but an explicit argument still wins


@pytest.mark.parametrize("bad", ["fp8", "BF16", "", "float32"])
def test_unknown_precisions_are_refused(monkeypatch, bad):
    with pytest.raises(ValueError, match="precision must be one of"):
        resolve_precision(bad)
    with pytest.raises(ValueError, match="precision must be one of"):
        TrainConfig(precision=bad)
    monkeypatch.setenv("UNCLIP_LITE_PRECISION", bad or "nonsense")
    with pytest.raises(ValueError, match="UNCLIP_LITE_PRECISION"):
        resolve_precision("auto")


def test_the_manifest_line_names_the_cpu_and_its_bf16_support():
    line = hardware.hardware()
    assert hardware.cpu_capability() in line and "bf16" in line and hardware.cpu_model() in line


def _autocast_seen(monkeypatch, native: bool, precision: str) -> tuple[str, torch.dtype | None]:
    """(resolved precision, the autocast dtype the loss ran under) for one trainer step."""
    monkeypatch.delenv("UNCLIP_LITE_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda flags=None: native)
    seen = []

    def loss_fn(model, batch):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None)
        return model(batch).pow(2).mean()

    torch.manual_seed(0)
    trainer = Trainer(nn.Linear(4, 4), loss_fn, lambda i, r=0, w=1: torch.randn(2, 4),
                      TrainConfig(steps=1, warmup=0, precision=precision, progress=False))
    trainer.fit()
    return trainer.precision, seen[0]


@pytest.mark.parametrize("native, precision, expected, dtype", [
    (False, "auto", "fp32", None), (True, "auto", "bf16", torch.bfloat16),
    (False, "bf16", "bf16", torch.bfloat16), (True, "fp32", "fp32", None),
])
def test_the_trainer_runs_in_the_precision_it_resolved(monkeypatch, native, precision, expected, dtype):
    assert _autocast_seen(monkeypatch, native, precision) == (expected, dtype)


@pytest.mark.parametrize("native, precision, dtype", [
    (False, "auto", None), (True, "auto", torch.bfloat16), (False, "bf16", torch.bfloat16), (True, "fp32", None),
])
def test_glide_sampling_runs_in_the_precision_it_resolved(monkeypatch, native, precision, dtype):
    monkeypatch.delenv("UNCLIP_LITE_PRECISION", raising=False)
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda flags=None: native)
    bundle = tiny_bundle(image_size=16)
    seen = set()
    bundle.model.register_forward_hook(lambda *_: seen.add(
        torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else None))
    images = bundle.sample(["a red star"], guidance=2.0, steps=2, precision=precision)
    assert seen == {dtype} and images.dtype == torch.float32


def test_the_cli_defaults_to_auto_and_refuses_unknown_precisions(capsys):
    parser = cli.build_parser()
    assert parser.parse_args(["sample", "glide", "--prompt", "a red star"]).precision == "auto"
    assert parser.parse_args(["eval", "glide-shapes-tiny"]).precision == "auto"
    assert parser.parse_args(["train", "glide", "--config", "shapes-tiny"]).precision is None  # the recipe's
    assert parser.parse_args(["sample", "glide", "--prompt", "x", "--precision", "fp32"]).precision == "fp32"
    with pytest.raises(SystemExit):
        parser.parse_args(["sample", "glide", "--prompt", "x", "--precision", "fp8"])
    assert "invalid choice" in capsys.readouterr().err
