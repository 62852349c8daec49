import subprocess
import sys
from pathlib import Path

import pytest
import torch

from meddistill.checkpoint import save_model
from meddistill.models import MODELS


@pytest.mark.parametrize("method", ["none", "gkd"])
def test_training_under_torchrun_keeps_both_ranks_identical(tmp_path, method):
    torch.manual_seed(0)
    save_model(tmp_path / "teacher", MODELS.build("fanet", base_channels=8), {"model": "fanet", "args": {"base_channels": 8}})
    save_model(tmp_path / "student", MODELS.build("enet"), {"model": "enet", "args": {}})
    worker = Path(__file__).with_name("ddp_worker.py")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path), method],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (tmp_path / "rank0.sha256").read_text(), (tmp_path / "rank1.sha256").read_text()
    assert rank0 == rank1
    # each rank saw half of the data, and only rank 0 wrote the checkpoint
    assert (tmp_path / "rank0.batches").read_text() == (tmp_path / "rank1.batches").read_text()
    assert (tmp_path / "runs" / "ddp" / "best.safetensors").is_file()
    assert len(list((tmp_path / "runs" / "ddp").glob("last.json"))) == 1
    if method == "gkd":
        assert (tmp_path / "runs" / "ddp" / "stage-alignment.safetensors").is_file()
