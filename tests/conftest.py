import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tests run on 2-core CI machines: one intra-op thread keeps them predictable."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_config_dict(tmp_path, name="run", **overrides):
    """A seconds-long phantom experiment: ENet student, 2 epochs of a few patches."""
    values = {
        "name": name,
        "seed": 0,
        "output": str(tmp_path / "runs"),
        "data": {"dataset": "phantom", "phantom_count": 4, "phantom_size": 64, "patch_size": 32,
                 "patches_per_image": 2, "val_fraction": 0.25},
        "student": {"name": "enet"},
        "train": {"epochs": 2, "batch_size": 2, "optimizer": {"lr": 1e-3}},
    }
    for key, value in overrides.items():
        values[key] = value
    return values
