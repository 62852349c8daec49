"""Can an alignment network reach the label latent from a given encoder level? Trains a fresh
alignment network (Eq. 4: feature reconstruction + λ·L1 to the autoencoder's label latent) on
one encoder level of a GKD run's starting student (or of its teacher, the control), then
reports the cosine of its latents to the label latents on patches of the run's validation photos.

    python scripts/gkd_alignment_probe.py runs/drive-clahe-mobilenetv2_unet-gkd --level -1   # the bottleneck (GKD's default student_level)
    python scripts/gkd_alignment_probe.py runs/drive-clahe-mobilenetv2_unet-gkd --level -2   # one stage earlier
    python scripts/gkd_alignment_probe.py runs/drive-clahe-mobilenetv2_unet-gkd --network teacher   # control
"""

import argparse

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from meddistill.config import load_config
from meddistill.data import PatchDataset
from meddistill.distill.gkd import AlignmentNetwork, alignment_losses, one_hot_labels
from meddistill.fsd import load_gkd_alignment
from meddistill.models.blocks import pad_to_multiple
from meddistill.tasks import build_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--level", type=int, default=-1, help="index into the network's encoder features")
    parser.add_argument("--network", choices=["student", "teacher"], default="student")
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    config = load_config(f"{args.run}/config.yaml")
    task = build_task(config)
    data = task.build_data(config.data, config.seed)
    loader = DataLoader(data.dataset, config.train.batch_size, shuffle=True, generator=torch.Generator().manual_seed(0))
    gkd, _ = load_gkd_alignment(args.run)  # the run's autoencoder; its own alignment networks go unused
    network = gkd.student if args.network == "student" else gkd.teacher

    def features_and_targets(batch):
        padded, _ = pad_to_multiple(batch["image"], gkd.stride)
        labels, _ = pad_to_multiple(one_hot_labels(batch["label"], gkd.num_classes), gkd.stride)
        with torch.no_grad():
            return network.encode(padded)[args.level], gkd.autoencoder.encode(labels)

    feature, _ = features_and_targets(next(iter(loader)))
    header = AlignmentNetwork(feature.shape[1], gkd.autoencoder.encoder.linear.out_features, feature.dim() - 2)
    optimizer = torch.optim.Adam(header.parameters(), lr=config.train.optimizer.lr)
    print(f"{args.network} level {args.level}: feature {tuple(feature.shape[1:])}")
    for epoch in range(args.epochs):
        total = 0.0
        data.dataset.set_epoch(epoch)  # fresh patches every epoch, as in training
        for batch in loader:
            feature, label_latent = features_and_targets(batch)
            reconstruction, regularization = alignment_losses(header, feature, label_latent)
            loss = reconstruction + gkd.regularization_weight * regularization
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += loss.item()
        print(f"epoch {epoch}: loss {total / len(loader):.4f}")

    validation = PatchDataset(data.validation, config.data.patch_size, 16, augment=False, seed=1, clahe=task.clahe)
    cosines = []
    with torch.no_grad():
        for batch in DataLoader(validation, config.train.batch_size):
            feature, label_latent = features_and_targets(batch)
            cosines.append(F.cosine_similarity(header.encode(feature), label_latent, dim=-1))
    print(f"{args.network} level {args.level}: cosine of the alignment latents to label latents on validation patches {torch.cat(cosines).mean():.3f}")


if __name__ == "__main__":
    main()
