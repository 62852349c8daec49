"""One training process per run folder (`meddistill.run_lock`)."""

import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill import run_lock
from meddistill.cli import app
from meddistill.errors import MeddistillError
from meddistill.run_lock import hold_run_folder, run_folder_holder

pytestmark = pytest.mark.skipif(run_lock.fcntl is None, reason="folders are not locked without fcntl")


def test_a_held_folder_is_refused_until_it_is_released(tmp_path):
    assert run_folder_holder(tmp_path / "run") is None
    with hold_run_folder(tmp_path / "run"):
        assert run_folder_holder(tmp_path / "run").startswith("process ")
        with pytest.raises(MeddistillError, match=r"run is being trained by process \d+ on .+; wait for it"):
            with hold_run_folder(tmp_path / "run"):
                pass
    assert run_folder_holder(tmp_path / "run") is None
    with hold_run_folder(tmp_path / "run"):  # released with the block
        pass


def test_a_lock_left_by_a_process_that_died_is_free(tmp_path):
    # the holder exits inside its block, as a crashed or killed training does
    code = ("import os, sys; from meddistill.run_lock import hold_run_folder; "
            "held = hold_run_folder(sys.argv[1]); held.__enter__(); os._exit(1)")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "run")], check=False)
    assert (tmp_path / "run" / "run.lock").read_text().startswith("process ")
    assert run_folder_holder(tmp_path / "run") is None
    with hold_run_folder(tmp_path / "run"):
        pass


def test_training_a_folder_another_training_holds_is_a_user_error(tmp_path):
    config = tmp_path / "busy.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(tmp_path, "busy", train={"epochs": 1, "batch_size": 2})))
    with hold_run_folder(tmp_path / "runs" / "busy"):
        result = CliRunner().invoke(app, ["train", str(config), "--no-progress"])
    assert result.exit_code == 2 and "is being trained by process" in result.output, result.output
    assert not (tmp_path / "runs" / "busy" / "config.yaml").exists()  # the holder's folder untouched
    assert CliRunner().invoke(app, ["train", str(config), "--no-progress"]).exit_code == 0
