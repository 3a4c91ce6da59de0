"""The shared trainer under FSDP2 and DDP (2 gloo processes on the CPU) against one process.

One ``torchrun`` launch (tests/dist/trainer_worker.py) trains a tiny CLIP and a tiny GLIDE
Text2Im under FSDP and DDP and writes what it saw; each test here trains the same model in this
process, on the same global batches, and compares: the losses, the gradient norm before
clipping, the first step's full gradients, the weights after the last step, the EMA model; then
checkpoints across the two (FSDP → FSDP resume, FSDP → one process, one process → FSDP).
"""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "dist"))
import trainer_worker as worker  # noqa: E402  (its models, batches and configs are the reference's)

from unclip_lite.train import Trainer  # noqa: E402

pytestmark = [pytest.mark.dist, pytest.mark.slow, pytest.mark.xdist_group("trainer_dist")]


def assert_same_tensors(got: dict, expected: dict, rtol=1e-4, atol=2e-5):
    assert got.keys() == expected.keys()
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=rtol, atol=atol, msg=lambda m: f"{name}: {m}")


def assert_same_run(got: dict, expected: dict):
    torch.testing.assert_close(got["loss"], expected["loss"], rtol=1e-5, atol=1e-6)
    if "grad_norm" in got:  # before clipping: a gradient summed over ranks instead of averaged shows here
        torch.testing.assert_close(got["grad_norm"], expected["grad_norm"], rtol=1e-5, atol=1e-6)
    if "grads" in got:
        assert_same_tensors(got["grads"], expected["grads"], rtol=1e-4, atol=1e-6)
        assert all(g.abs().sum() > 0 for g in got["grads"].values())  # every layer learns (nothing is trivially 0)
    assert_same_tensors(got["weights"], expected["weights"])


@pytest.fixture(scope="module")
def launched(tmp_path_factory):
    """Launch the 2-process worker once; hands over its results and its directory."""
    out = tmp_path_factory.mktemp("trainer_dist")
    # a single-process checkpoint (GLIDE after step 1 of 2) for FSDP to continue
    worker.run("glide", "none", steps=2, accumulate=2, save_first=out / "single_step1.pt")
    tests = Path(__file__).parent
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(tests / "dist" / "trainer_worker.py"), str(out), str(out / "single_step1.pt")]
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=480)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    results = torch.load(out / "results.pt", weights_only=True)
    assert results["world"] == 2
    return results, out


@pytest.fixture(scope="module")
def clip_reference():
    return worker.run("clip", "none")


def test_fsdp_trains_a_clip_as_one_process_does(launched, clip_reference):
    results, _ = launched
    fsdp, (_, reference) = results["clip_fsdp"], clip_reference
    assert_same_run(fsdp, reference)
    # the EMA shadows the local shards (DTensors; the 0-dim logit scale FSDP leaves whole stays a
    # Tensor), and averaged_model() gathers them into an ordinary CLIP
    assert fsdp["ema_types"] == ["DTensor", "Tensor"] and reference["ema_types"] == ["Tensor"]
    assert fsdp["averaged_type"] == "CLIP" and fsdp["averaged_plain"]
    assert_same_tensors(fsdp["averaged"], reference["averaged"])


def test_fsdp_with_accumulation_and_checkpointing_trains_a_glide_as_one_process_does(launched):
    """Accumulation (gradient sync on the last micro-batch only) and activation checkpointing (the
    FSDP run recomputes its blocks; the reference does not)."""
    results, _ = launched
    _, reference = worker.run("glide", "none", steps=2, accumulate=2)
    assert_same_run(results["glide_fsdp"], reference)
    assert results["glide_fsdp"]["averaged_type"] == "Text2Im" and results["glide_fsdp"]["averaged_plain"]
    assert_same_tensors(results["glide_fsdp"]["averaged"], reference["averaged"])


def test_compiled_fsdp_trains_as_one_process_does(launched, clip_reference):
    """torch.compile of the sharded model (compiled last: FSDP2's hooks run eagerly between the
    compiled pieces) takes the same steps."""
    results, _ = launched
    assert_same_run(results["clip_fsdp_compiled"], clip_reference[1])


def test_fsdp_refuses_fp16(launched):
    results, _ = launched
    assert "precision='fp16' is not supported with strategy='fsdp'" in results["fp16_error"]
    assert "use 'bf16' or 'fp32'" in results["fp16_error"]


def test_a_nan_on_one_rank_stops_every_rank(launched):
    results, _ = launched  # rank 0's own loss was finite; without the shared check it would hang
    assert results["nan_error"].startswith("loss is nan at step 0")


def test_ddp_with_accumulation_trains_as_one_process_and_syncs_once_per_step(launched):
    results, _ = launched
    _, reference = worker.run("clip", "none", steps=2, accumulate=2)
    assert_same_run(results["clip_ddp"], reference)
    # the all-reduces done when micro-batch 0 and 1 start, and after the step: no_sync held
    # the first micro-batch's gradients back, and the last one all-reduced them (one bucket)
    assert results["clip_ddp"]["all_reduces_seen"] == [0, 0, 1]


def test_fsdp_resume_gives_exactly_the_uninterrupted_run(launched):
    results, _ = launched
    straight, resumed = results["clip_fsdp"], results["clip_fsdp_resumed"]
    assert resumed["loss"] == straight["loss"]  # the history came back with the state
    for part in ("weights", "averaged"):
        for name in straight[part]:
            assert torch.equal(resumed[part][name], straight[part][name]), f"{part} {name}"


def test_a_two_process_fsdp_checkpoint_loads_in_one_process(launched):
    results, out = launched
    state = torch.load(out / "fsdp_step3.pt", weights_only=True)
    assert all(type(v) is torch.Tensor for v in state["model"].values())  # ordinary, full tensors
    trainer = Trainer(worker.clip_model(), worker.contrastive_step, worker.clip_batches, worker.config())
    assert trainer.resume(out / "fsdp_step3.pt") and trainer.step == 3
    for name, value in trainer.raw_model.state_dict().items():
        assert torch.equal(value, results["clip_fsdp"]["weights"][name]), name
    for name, value in trainer.ema.shadow.items():  # the gathered EMA shards
        assert torch.equal(value, results["clip_fsdp"]["averaged"][name]), name
    reference, _ = worker.run("clip", "none")
    # the optimiser state came back under the right parameter indices: the Adam moments match
    # the single-process run's, and one more step moves both alike
    for index, moments in reference.optimizer.state_dict()["state"].items():
        for key in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(trainer.optimizer.state_dict()["state"][index][key], moments[key],
                                       rtol=1e-3, atol=1e-7)
    trainer.train_step(), reference.train_step()
    assert_same_tensors(trainer.raw_model.state_dict(), reference.raw_model.state_dict())
    assert_same_tensors(trainer.averaged_model().state_dict(), reference.averaged_model().state_dict())


def test_a_single_process_checkpoint_continues_under_fsdp(launched):
    results, _ = launched
    _, reference = worker.run("glide", "none", steps=2, accumulate=2)
    continued = results["glide_from_single"]
    assert len(continued["loss"]) == 2  # step 1 from the file, step 2 trained by FSDP
    assert_same_run(continued, reference)
    assert_same_tensors(continued["averaged"], reference["averaged"])
