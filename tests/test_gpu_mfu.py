"""benchmarks/gpu_mfu.py on a CPU (``--smoke``): every code path runs, both sides of each config
are timed, and the FLOPs it divides by are right: the prior's equal a closed-form count layer by
layer, and the peers (open_clip, diffusers) count the same work as ours at the same widths."""
import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_mfu.py"


def load_benchmark():
    spec = importlib.util.spec_from_file_location("gpu_mfu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("mfu") / "smoke.json"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert load_benchmark().main(["--smoke", "--out", str(out)]) == 0
    finally:
        torch.set_num_threads(threads)
    return json.loads(out.read_text())


def test_smoke_times_both_sides_of_every_config(smoke):
    assert [c["name"] for c in smoke["configs"]] == ["clip", "unet", "prior"]
    assert smoke["smoke"] and smoke["precision"] == "fp32" and smoke["peak_flops"] > 0
    for c in smoke["configs"]:
        assert c["batch"] == 2 and "reference" not in c  # no MFU claims from a CPU
        for key in ("ours", "theirs"):
            s = c[key]
            assert s["flops_per_step"] > 0 and s["seconds_per_step"] > 0 and s["parameters"] > 0
            assert s["timed_steps"] == smoke["rounds"] * smoke["steps"] == len(s["round_seconds_per_step"]) * smoke["steps"]
            assert math.isclose(s["tflops"], s["flops_per_step"] / s["seconds_per_step"] / 1e12, rel_tol=1e-9)
            assert math.isclose(s["mfu"], s["flops_per_step"] / s["seconds_per_step"] / smoke["peak_flops"], rel_tol=1e-9)
        assert c["ours"]["impl"] == "unclip_lite" and c["theirs"]["impl"] != "unclip_lite"
        assert math.isclose(c["ratio"], c["ours"]["mfu"] / c["theirs"]["mfu"], rel_tol=1e-9)


def prior_flops_closed_form(cfg: dict, B: int) -> int:
    """One forward + backward of the diffusion prior, layer by layer: a linear layer of ``n_in x n_out``
    on ``r`` rows costs 2·r·n_in·n_out forward, as much again for its weight's gradient, and as much
    again for its input's gradient when the input needs one (not for data: caption tokens, z_t,
    the noised z_i, the sinusoidal timestep). Attention (math backend): QKᵀ and AV are 2·S²·d per
    head each forward, twice that backward."""
    W, E, T, L, layers = cfg["width"], cfg["embed_dim"], cfg["time_embed_dim"], cfg["context_length"], cfg["layers"]
    S, hidden = L + 4, int(cfg["mlp_ratio"] * W)
    blocks = layers * (6 * B * S * (3 * W * W + W * W + 2 * W * hidden) + 3 * 4 * B * S * S * W)
    inputs = 4 * B * L * cfg["text_width"] * W + 2 * 4 * B * E * W  # caption tokens, z_t, noised z_i
    time = 4 * B * W * T + 6 * B * T * W  # sinusoid -> T (data in), T -> W
    out = 6 * B * W * E  # the query's output only
    return blocks + inputs + time + out


def test_prior_flops_equal_the_closed_form(smoke):
    prior = next(c for c in smoke["configs"] if c["name"] == "prior")
    assert prior["ours"]["flops_per_step"] == prior_flops_closed_form(prior["config"], prior["batch"])
    # and the transformer rule of thumb, 6 · N · tokens for the blocks' matmuls, is the bulk of it
    W, S = prior["config"]["width"], prior["config"]["context_length"] + 4
    rule = 6 * 12 * W * W * prior["config"]["layers"] * prior["batch"] * S
    assert 0.85 < rule / prior["ours"]["flops_per_step"] < 1.0


def test_the_peers_count_the_same_work_and_compute_the_same_prior(smoke):
    by_name = {c["name"]: c for c in smoke["configs"]}
    for name in ("clip", "unet", "prior"):  # independent implementations of the same widths
        assert abs(by_name[name]["flops_ratio"] - 1) < 1e-3, (name, by_name[name]["flops_ratio"])
    assert by_name["prior"]["flops_ratio"] == 1.0
    assert by_name["prior"]["twin_max_abs_difference"] < 1e-5  # our weights in diffusers' prior: one function


def test_matmul_peak_is_flops_over_time():
    bench = load_benchmark()
    peak = bench.matmul_peak(torch.device("cpu"), torch.float32, 64, iters=3, rounds=1)
    assert 0 < peak < 1e15


def test_bad_requests_fail_clearly_and_write_nothing(tmp_path, capsys):
    bench = load_benchmark()
    out = tmp_path / "x.json"
    with pytest.raises(SystemExit) as err:
        bench.main(["--smoke", "--only", "clip,vae", "--out", str(out)])
    assert err.value.code == 2 and "--only takes names from" in capsys.readouterr().err
    if not torch.cuda.is_available():
        with pytest.raises(SystemExit):
            bench.main(["--out", str(out)])
        assert "on a CPU run it with --smoke" in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_compile_path_runs(tmp_path):
    out = tmp_path / "compiled.json"
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        load_benchmark().main(["--smoke", "--compile", "--compile-backend", "eager", "--only", "prior",
                               "--steps", "1", "--out", str(out)])
    finally:
        torch.set_num_threads(threads)
    record = json.loads(out.read_text())
    assert record["compile"] and record["configs"][0]["ours"]["seconds_per_step"] > 0
