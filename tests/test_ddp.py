import subprocess
import sys
from pathlib import Path


def test_training_under_torchrun_keeps_both_ranks_identical(tmp_path):
    worker = Path(__file__).with_name("ddp_worker.py")
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", str(worker), str(tmp_path)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    rank0, rank1 = (tmp_path / "rank0.sha256").read_text(), (tmp_path / "rank1.sha256").read_text()
    assert rank0 == rank1
    # each rank saw half of the data, and only rank 0 wrote the checkpoint
    assert (tmp_path / "rank0.batches").read_text() == (tmp_path / "rank1.batches").read_text()
    assert (tmp_path / "runs" / "ddp" / "best.safetensors").is_file()
    assert len(list((tmp_path / "runs" / "ddp").glob("last.json"))) == 1
