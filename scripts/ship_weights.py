"""Copy a trained run's best checkpoint into the package as a named, shipped model.

    python scripts/ship_weights.py runs/drive-teacher drive-teacher \
        --command "meddistill train configs/drive_teacher.yaml"

Writes src/meddistill/weights/<name>.safetensors, <name>.json (metadata with the
training command added) and <name>.yaml (the run's config). ``--half`` stores floating
tensors as float16 (half the size; loading casts them back to the model's float32).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from safetensors.torch import load_file, save_file

from meddistill.builders import build_samples
from meddistill.config import config_from_dict
from meddistill.data import training_fov_diameter

WEIGHTS = Path(__file__).resolve().parents[1] / "src" / "meddistill" / "weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("name")
    parser.add_argument("--command", required=True, help="the command that trained this run")
    parser.add_argument("--stem", default="best", help="which checkpoint of the run (best or last)")
    parser.add_argument("--half", action="store_true", help="store floating tensors as float16")
    args = parser.parse_args()

    WEIGHTS.mkdir(parents=True, exist_ok=True)
    meta = json.loads((args.run_dir / f"{args.stem}.json").read_text())
    segmenter = meta.get("task", "vessel-segmentation") == "vessel-segmentation"
    if segmenter and "fov_diameter_px" not in meta:  # runs started before the engine recorded it
        config = config_from_dict(meta["config"])
        train_samples, _ = build_samples(config.data, config.seed)
        meta["fov_diameter_px"] = training_fov_diameter(train_samples)
    meta["name"] = args.name
    meta["trained_with"] = args.command
    state = load_file(str(args.run_dir / f"{args.stem}.safetensors"))
    if args.half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        meta["stored_dtype"] = "float16"
    save_file(state, str(WEIGHTS / f"{args.name}.safetensors"))
    (WEIGHTS / f"{args.name}.json").write_text(json.dumps(meta, indent=2))
    shutil.copyfile(args.run_dir / "config.yaml", WEIGHTS / f"{args.name}.yaml")
    size = (WEIGHTS / f"{args.name}.safetensors").stat().st_size / 2**20
    print(f"shipped {args.name}: {meta['model']} epoch {meta['epoch']}, {size:.1f} MiB")


if __name__ == "__main__":
    main()
