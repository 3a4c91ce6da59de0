"""Checkpoints: round trip, atomic writes, and a clear error for every way they go wrong."""
import json
import os

import pytest
import torch
from torch import nn

from unclip_lite import checkpoints as C


def _model(width=8):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, width), nn.ReLU(), nn.Linear(width, 2))


def test_round_trip_with_manifest(tmp_path):
    model = _model()
    path = C.save_checkpoint(tmp_path / "toy", model.state_dict(), {"width": 8}, kind="toy",
                             manifest={"command": "python make_toy.py", "metrics": {"acc": 1.0}})
    assert path.name == "toy.safetensors" and path.with_suffix(".json").is_file()
    ckpt = C.load_checkpoint(path, kind="toy")
    assert ckpt.config == {"width": 8} and ckpt.kind == "toy"
    assert ckpt.manifest["sha256"] == C.sha256(path)
    assert ckpt.manifest["command"] == "python make_toy.py"
    fresh = C.load_state_into(_model().apply(lambda m: None), ckpt.state_dict)
    for a, b in zip(model.parameters(), fresh.parameters()):
        assert torch.equal(a, b)
    # Saved fp16, loaded into an fp32 model: values survive to fp16 precision.
    half = C.save_checkpoint(tmp_path / "half", model.state_dict(), {}, kind="toy", dtype=torch.float16)
    loaded = C.load_checkpoint(half).state_dict
    assert all(t.dtype == torch.float16 for t in loaded.values())
    C.load_state_into(_model(), loaded)


def test_registry_names_resolve(tmp_path, monkeypatch):
    monkeypatch.setattr(C, "REGISTRY_DIR", tmp_path)
    C.save_checkpoint(tmp_path / "tiny-thing", _model().state_dict(), {}, kind="toy")
    assert C.list_checkpoints() == ["tiny-thing"]
    assert C.load_checkpoint("tiny-thing").path == tmp_path / "tiny-thing.safetensors"
    with pytest.raises(C.CheckpointError, match="no checkpoint 'nope'.*tiny-thing"):
        C.load_checkpoint("nope")


def test_truncated_and_corrupt_files_are_refused(tmp_path):
    path = C.save_checkpoint(tmp_path / "toy", _model().state_dict(), {}, kind="toy")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(C.CheckpointError, match="sha256"):
        C.load_checkpoint(path)
    with pytest.raises(C.CheckpointError, match="corrupt or truncated"):
        C.load_checkpoint(path, verify=False)
    path.write_bytes(b"\x00garbage" * 10)
    path.with_suffix(".json").unlink()  # no manifest to compare against: the parser must catch it
    with pytest.raises(C.CheckpointError, match="corrupt or truncated"):
        C.load_checkpoint(path)
    path.with_suffix(".json").write_text("{not json")
    with pytest.raises(C.CheckpointError, match="not valid JSON"):
        C.load_checkpoint(path)


def test_config_mismatch_is_explained(tmp_path):
    path = C.save_checkpoint(tmp_path / "toy", _model(width=8).state_dict(), {"width": 8}, kind="toy")
    ckpt = C.load_checkpoint(path)
    with pytest.raises(C.CheckpointMismatchError, match=r"wrong shape \(3\).*0.weight: checkpoint \(8, 4\) vs model \(16, 4\)"):
        C.load_state_into(_model(width=16), ckpt.state_dict)
    with pytest.raises(C.CheckpointMismatchError, match="missing"):
        C.load_state_into(nn.Sequential(*_model(), nn.Linear(2, 2)), ckpt.state_dict)
    with pytest.raises(C.CheckpointMismatchError, match="holds a 'toy' model, but a 'clip'"):
        C.load_checkpoint(path, kind="clip")


def test_writes_are_atomic(tmp_path, monkeypatch):
    """A crash while writing leaves the previous checkpoint untouched and no temp files."""
    path = C.save_checkpoint(tmp_path / "toy", _model().state_dict(), {"v": 1}, kind="toy")
    before = path.read_bytes()

    import safetensors.torch

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(safetensors.torch, "save_file", crash)
    with pytest.raises(KeyboardInterrupt):
        C.save_checkpoint(path, _model(16).state_dict(), {"v": 2}, kind="toy")
    assert path.read_bytes() == before
    assert json.loads(path.with_suffix(".json").read_text())["config"] == {"v": 1}
    assert sorted(os.listdir(tmp_path)) == ["toy.json", "toy.safetensors"]


def test_non_tensor_state_is_refused(tmp_path):
    with pytest.raises(TypeError, match="not a tensor"):
        C.save_checkpoint(tmp_path / "x", {"step": 3}, {}, kind="toy")
