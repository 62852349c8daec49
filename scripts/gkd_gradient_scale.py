"""How strongly each GKD term pulls on the student: gradient norms of the task loss and of every
graph term (unweighted) on one training batch of a finished GKD run; and how well each
alignment network maps the feature it reads (the bottleneck, or the student's
``student_level``) onto the autoencoder's label latent.

    python scripts/gkd_gradient_scale.py runs/drive-mobilenetv2_unet-gkd

With grad_clip the total gradient is rescaled to norm 1, so a term whose weighted gradient is
far above the task's leaves the task loss almost no say.
"""

import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn

from meddistill.config import load_config
from meddistill.distill import losses
from meddistill.distill.gkd import one_hot_labels
from meddistill.distill.views import make_views
from meddistill.engine import Trainer
from meddistill.models.blocks import pad_to_multiple


def gradient_norm(loss: torch.Tensor, params: list[torch.Tensor]) -> float:
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return float(torch.sqrt(sum((g**2).sum() for g in grads if g is not None)))


def main(run: str) -> None:
    torch.set_num_threads(1)
    trainer = Trainer(load_config(f"{run}/config.yaml"), progress=False)
    gkd = trainer.distiller
    gkd.autoencoder.load_state_dict(load_file(f"{run}/stage-autoencoder.safetensors"))
    nn.ModuleDict({"teacher": gkd.teacher_alignment, "student": gkd.student_alignment}).load_state_dict(
        load_file(f"{run}/stage-alignment.safetensors"))
    gkd.set_stage("distill")
    batch = next(iter(trainer.loader))
    padded, crop = pad_to_multiple(batch["image"], gkd.stride)
    inputs = make_views(padded, gkd.views, gkd.view_args).flatten(0, 1)
    size = batch["image"].shape[0]
    features = gkd.student.encode(inputs)
    with torch.no_grad():
        teacher = gkd.teacher_alignment.encode(gkd.teacher.encode(inputs)[-1]).unflatten(0, (size, -1))
    student = gkd.student_alignment.encode(features[gkd.student_level]).unflatten(0, (size, -1))
    params = list(gkd.student.parameters())
    logits = gkd.student.decode([f.unflatten(0, (size, -1))[:, 0] for f in features])
    task = gkd.task.loss(logits[(..., *crop)], batch)
    print(f"task loss {task.item():.3g}, gradient norm {gradient_norm(task, params):.3g}")
    cosine = lambda a, b: F.cosine_similarity(a, b, dim=-1).mean().item()  # noqa: E731
    print(f"teacher-student latent cosine (anchor views): {cosine(student[:, 0], teacher[:, 0]):.3f}")
    with torch.no_grad():
        labels, _ = pad_to_multiple(one_hot_labels(batch["label"], gkd.num_classes), gkd.stride)
        label_latent = gkd.autoencoder.encode(labels)
    print(f"cosine to the label latent: teacher {cosine(teacher[:, 0], label_latent):.3f}, "
          f"student {cosine(student[:, 0], label_latent):.3f}; "
          f"between two images' label latents {cosine(label_latent, label_latent.roll(1, 0)):.3f}")
    s_nodes, s_edges = losses.intra_coupling_graph(student)
    t_nodes, t_edges = losses.intra_coupling_graph(teacher)
    si_nodes, si_edges = losses.inter_coupling_graph(student)
    ti_nodes, ti_edges = losses.inter_coupling_graph(teacher)
    log_s, log_t = F.log_softmax(si_nodes, -1), F.log_softmax(ti_nodes, -1)
    terms = {
        "intra nodes (L1)": (t_nodes - s_nodes).abs().mean(),
        "intra edges (L1)": (t_edges - s_edges).abs().mean(),
        "inter nodes (KL)": (log_t.exp() * (log_t - log_s)).sum(-1).mean(),
        "inter edges (L1)": (ti_edges - si_edges).abs().mean(),
    }
    for name, value in terms.items():
        print(f"{name}: value {value.item():.3g}, gradient norm {gradient_norm(value, params):.3g} (unweighted)")


if __name__ == "__main__":
    main(sys.argv[1])
