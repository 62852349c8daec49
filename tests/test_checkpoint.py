import json

import pytest
import torch
from torch import nn

from meddistill.checkpoint import load_training_state, load_weights, read_meta, save_model, save_training_state
from meddistill.errors import MeddistillError
from meddistill.zoo import load_model


def test_save_and_load_round_trip(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    stem = tmp_path / "run" / "best"
    save_model(stem, model, {"model": "x", "args": {}})
    assert (tmp_path / "run" / "best.safetensors").is_file()
    meta = read_meta(stem)
    assert meta["format"] == "meddistill-model/1" and meta["code_version"]
    # what decides the exact weights besides code and seed, to tell why two runs differ
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["environment"]["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    other = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    load_weights(other, tmp_path / "run" / "best.safetensors")
    for a, b in zip(model.state_dict().values(), other.state_dict().values()):
        assert torch.equal(a, b)
    assert not list((tmp_path / "run").glob("*.tmp")), "temporary files must not remain"


def test_wrong_architecture_is_a_user_error(tmp_path):
    save_model(tmp_path / "m", nn.Conv2d(3, 4, 3), {"model": "x", "args": {}})
    with pytest.raises(MeddistillError, match="do not fit a Conv2d"):
        load_weights(nn.Conv2d(3, 8, 3), tmp_path / "m")


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    from meddistill.models import MODELS

    enet = MODELS.build("enet")
    save_model(tmp_path / "enet", enet, {"model": "enet", "args": {}})
    with pytest.raises(MeddistillError, match="holds a 'enet' network, but this config expects 'fanet'"):
        load_model(tmp_path / "enet", expect="fanet")
    # Metadata edited to claim another architecture: the weights do not fit, one-line error.
    meta = json.loads((tmp_path / "enet.json").read_text())
    meta["model"] = "mobilenetv2_unet"
    (tmp_path / "enet.json").write_text(json.dumps(meta))
    with pytest.raises(MeddistillError, match="do not fit"):
        load_model(tmp_path / "enet")


def test_unreadable_checkpoints(tmp_path):
    with pytest.raises(MeddistillError, match="checkpoint not found"):
        read_meta(tmp_path / "nothing")
    (tmp_path / "bad.safetensors").write_bytes(b"not safetensors")
    (tmp_path / "bad.json").write_text(json.dumps({"format": "meddistill-model/1", "model": "enet", "args": {}}))
    with pytest.raises(MeddistillError, match="cannot read weights"):
        load_model(tmp_path / "bad")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(MeddistillError, match="not valid JSON"):
        read_meta(tmp_path / "bad")


def test_training_state_is_loaded_without_running_code(tmp_path):
    save_training_state(tmp_path / "s.pt", {"epoch": 3, "w": torch.ones(2)})
    assert load_training_state(tmp_path / "s.pt")["epoch"] == 3

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    torch.save({"x": Evil()}, tmp_path / "evil.pt")
    with pytest.raises(MeddistillError, match="cannot resume"):
        load_training_state(tmp_path / "evil.pt")
