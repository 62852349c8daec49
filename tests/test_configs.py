"""Every experiment config shipped in configs/ loads and names things that exist."""

from pathlib import Path

import pytest

from meddistill.config import load_config, read_yaml
from meddistill.distill import METHODS
from meddistill.experiment import load_grid
from meddistill.models import MODELS
from meddistill.tasks import TASKS

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_is_valid(path):
    if "students" in read_yaml(path):  # a cross-domain grid
        load_grid(path)
        return
    import meddistill.registration  # noqa: F401  (registers the keypoint tasks)

    config = load_config(path)
    assert config.student.name in MODELS
    assert config.method.name in METHODS
    assert config.task.name in TASKS
    if config.teacher is not None:
        assert config.teacher.name in MODELS
