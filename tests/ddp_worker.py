"""Run under torchrun by test_ddp.py: train, then record the checksum of this rank's weights and their average.

Arguments: the output folder, and optionally ``gkd`` to distil with GKD (pre-stages included)
from the teacher and student the test saved there.
"""

import hashlib
import os
import sys

import torch
import torch.distributed as dist

from meddistill.config import config_from_dict
from meddistill.engine import Trainer

sys.path.insert(0, os.path.dirname(__file__))
from conftest import tiny_config_dict  # noqa: E402

if __name__ == "__main__":
    torch.set_num_threads(1)
    out = __import__("pathlib").Path(sys.argv[1])
    values = tiny_config_dict(out, "ddp")
    values["train"]["ema_decay"] = 0.9  # the averaged weights must agree across ranks too
    if sys.argv[2:] == ["gkd"]:
        values.update(
            teacher={"name": "fanet", "args": {"base_channels": 8}, "weights": str(out / "teacher")},
            student={"name": "enet", "weights": str(out / "student")},
            method={"name": "gkd", "args": {"latent_dim": 16, "autoencoder_epochs": 1, "alignment_epochs": 1}},
        )
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.fit()
    digest = hashlib.sha256()
    weights = {**trainer.student.state_dict(), **{f"averaged.{k}": v for k, v in trainer.kept_student.state_dict().items()}}
    for name, tensor in sorted(weights.items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().numpy().tobytes())
    rank = dist.get_rank()
    (out / f"rank{rank}.sha256").write_text(digest.hexdigest())
    (out / f"rank{rank}.batches").write_text(str(len(trainer.loader)))
    dist.destroy_process_group()
