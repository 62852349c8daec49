"""GKD: graph losses against hand-computed values, views, headers, the three-phase run and FSD."""

import csv
import math

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file
from typer.testing import CliRunner

from conftest import tiny_config_dict
from meddistill.builders import phantom_samples
from meddistill.checkpoint import save_model
from meddistill.cli import app
from meddistill.config import config_from_dict
from meddistill.distill import AlignmentNetwork, SemanticAutoencoder, alignment_losses, inter_graph_loss, intra_graph_loss
from meddistill.distill.views import gaussian_blur, gaussian_noise, make_views, random_cutout, sobel_magnitude
from meddistill.engine import Trainer, train
from meddistill.errors import MeddistillError
from meddistill.fsd import frechet_distance, frechet_semantic_distance, load_gkd_alignment
from meddistill.models import MODELS

# One image, three views (anchor + two), latent size 2.
TEACHER = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
STUDENT = torch.tensor([[[1.0, 0.0], [1.0, 0.0], [1.0, 1.0]]])


def test_intra_graph_loss_by_hand():
    # Nodes s0ᵀs_i: teacher [[0,1],[0,0]], [[1,1],[0,0]]; student [[1,0],[0,0]], [[1,1],[0,0]]
    # -> mean |ΔN| = 2 / 8. Edges cos(s0, s_i): teacher 0, 1/√2; student 1, 1/√2 -> mean |ΔE| = 1/2.
    assert intra_graph_loss(STUDENT, TEACHER).item() == pytest.approx(0.25 + 0.5)
    assert intra_graph_loss(TEACHER, TEACHER).item() == pytest.approx(0.0, abs=1e-7)


def test_inter_graph_loss_by_hand():
    # Nodes s_iᵀs_i of the two views: teacher [[0,0],[0,1]], [[1,1],[1,1]]; student
    # [[1,0],[0,0]], [[1,1],[1,1]]. The edge cos(N1, N2) is 1/2 for both, so only the
    # row-softmax KL of the first node's two rows counts, averaged over all 4 rows.
    e = math.e
    a, b = 1 / (1 + e), e / (1 + e)
    kl_row0 = 0.5 * math.log(0.5 / b) + 0.5 * math.log(0.5 / a)  # teacher [.5,.5] vs student [b, a]
    kl_row1 = a * math.log(a / 0.5) + b * math.log(b / 0.5)  # teacher [a, b] vs student [.5, .5]
    assert inter_graph_loss(STUDENT, TEACHER).item() == pytest.approx((kl_row0 + kl_row1) / 4, rel=1e-5)


def test_graph_losses_reject_bad_shapes_and_carry_gradients():
    with pytest.raises(ValueError, match="at least 3 views"):
        inter_graph_loss(STUDENT[:, :2], TEACHER[:, :2])
    with pytest.raises(ValueError, match=r"\(B, V, C\)"):
        intra_graph_loss(STUDENT, TEACHER[:, :, :1])
    student = torch.randn(2, 5, 8, requires_grad=True)
    (intra_graph_loss(student, torch.randn(2, 5, 8)) + inter_graph_loss(student, torch.randn(2, 5, 8))).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0


def test_views():
    torch.manual_seed(0)
    ones = torch.ones(2, 3, 16, 16)
    cut = random_cutout(ones, 0.25)
    assert [(cut[b] == 0).sum().item() for b in range(2)] == [3 * 4 * 4] * 2  # one 4×4 box, every channel
    assert sobel_magnitude(ones).abs().max().item() == pytest.approx(0.0, abs=1e-6)  # a flat image has no edges
    ramp = torch.arange(16.0).view(1, 1, 1, 16).expand(1, 1, 16, 16)
    edges = sobel_magnitude(ramp)[0, 0, 2:-2, 2:-2]
    assert torch.allclose(edges, edges[0, 0].expand_as(edges))  # a linear ramp has a constant gradient
    assert gaussian_blur(ones, 1.0)[..., 6:10, 6:10] == pytest.approx(torch.ones(2, 3, 4, 4), abs=1e-4)  # truncated kernel
    assert (gaussian_noise(torch.zeros(1, 1, 64, 64), 0.2).std().item()) == pytest.approx(0.2, rel=0.1)
    views = make_views(torch.randn(2, 3, 16, 16), ["cutout", "sobel", "noise", "blur"])
    assert views.shape == (2, 5, 3, 16, 16)
    with pytest.raises(MeddistillError, match="unknown view 'rotate'"):
        make_views(ones, ["rotate"])
    assert make_views(torch.zeros(1, 1, 64, 64), ["noise"], {"noise": {"std": 0.5}})[:, 1].std().item() == pytest.approx(0.5, rel=0.1)
    with pytest.raises(MeddistillError, match="view 'noise' has no argument 'sigma'"):
        make_views(ones, ["noise"], {"noise": {"sigma": 1.0}})
    with pytest.raises(MeddistillError, match="the arguments of view 'noise' must map names to values"):
        make_views(ones, ["noise"], {"noise": 0.1})


@pytest.mark.parametrize("spatial_dims, size", [(2, (32, 32)), (3, (16, 16, 16))])
def test_autoencoder_and_alignment_shapes(spatial_dims, size):
    autoencoder = SemanticAutoencoder(num_classes=2, latent_dim=24, spatial_dims=spatial_dims, width=4)
    labels = torch.nn.functional.one_hot(torch.randint(0, 2, (2, *size)), 2).movedim(-1, 1).float()
    latent = autoencoder.encode(labels)
    assert latent.shape == (2, 24) and torch.allclose(latent.pow(2).mean(1), torch.ones(2), atol=1e-4)
    reconstruction = autoencoder(labels)
    assert reconstruction.shape == labels.shape
    assert torch.allclose(reconstruction.sum(1), torch.ones(2, *size))
    header = AlignmentNetwork(feature_channels=7, latent_dim=24, spatial_dims=spatial_dims, hidden=8)
    feature = torch.randn(2, 7, *[s // 4 for s in size], requires_grad=True)
    back = header.decode(header.encode(feature), tuple(feature.shape[2:]))
    assert back.shape == feature.shape
    back.abs().mean().backward()
    assert feature.grad is not None


class _MeanHeader:
    """Encodes a feature map as its per-channel mean; decodes by broadcasting it back."""

    def encode(self, feature):
        return feature.mean(dim=(2, 3))

    def decode(self, latent, size):
        return latent[:, :, None, None].expand(-1, -1, *size)


def test_alignment_losses_by_hand():
    # one image, two channels on a 1 x 2 grid: channel means 2 and 0
    feature = torch.tensor([[[[1.0, 3.0]], [[0.0, 0.0]]]])
    reconstruction, regularization = alignment_losses(_MeanHeader(), feature, torch.tensor([[1.0, 1.0]]))
    assert reconstruction.item() == pytest.approx(0.5)  # |1-2|, |3-2|, 0, 0 → mean 0.5
    assert regularization.item() == pytest.approx(1.0)  # |2-1|, |0-1| → mean 1


def _gkd_values(tmp_path, name="gkd", **args):
    """A GKD run on phantoms: a tiny FANet teacher and an ENet student, both saved as if task-trained."""
    torch.manual_seed(0)  # the same networks on every call
    save_model(tmp_path / "teacher", MODELS.build("fanet", base_channels=8), {"model": "fanet", "args": {"base_channels": 8}})
    save_model(tmp_path / "student", MODELS.build("enet"), {"model": "enet", "args": {}})
    method_args = {"latent_dim": 32, "autoencoder_epochs": 1, "alignment_epochs": 1, **args}
    return tiny_config_dict(
        tmp_path,
        name,
        teacher={"name": "fanet", "args": {"base_channels": 8}, "weights": str(tmp_path / "teacher")},
        student={"name": "enet", "weights": str(tmp_path / "student")},
        method={"name": "gkd", "args": method_args},
        train={"epochs": 2, "batch_size": 2, "loss": "ce"},
    )


def test_gkd_runs_its_three_phases_and_saves_a_plain_student(tmp_path):
    result = train(config_from_dict(_gkd_values(tmp_path)), progress=False)
    run = result.run_dir
    terms = {"autoencoder": {"autoencoder_l1", "autoencoder_dice"},
             "alignment": {f"{r}_{t}" for r in ("teacher", "student") for t in ("reconstruction", "regularization")}}
    for stage, names in terms.items():
        rows = list(csv.DictReader((run / f"stage-{stage}.csv").open()))
        assert len(rows) == 1 and all(float(rows[0][f"train_{n}"]) > 0 for n in names)
        assert (run / f"stage-{stage}.safetensors").is_file()
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert all(float(rows[0][f"train_{term}"]) > 0 for term in ("task", "intra", "inter", "cross"))
    assert set(load_file(str(run / "best.safetensors"))) == set(MODELS.build("enet").state_dict())
    # the frozen alignment networks are exactly the ones the pre-stage saved
    gkd, patch = load_gkd_alignment(run)
    saved = load_file(str(run / "stage-autoencoder.safetensors"))
    assert patch == 32 and all(torch.equal(saved[k], v) for k, v in gkd.autoencoder.state_dict().items())


def test_gkd_aligns_a_chosen_student_level(tmp_path):
    values = _gkd_values(tmp_path, student_level=-3)
    values["train"]["epochs"] = 1
    run = train(config_from_dict(values), progress=False).run_dir
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert all(float(rows[0][f"train_{term}"]) > 0 for term in ("task", "intra", "inter", "cross"))
    gkd, patch = load_gkd_alignment(run)
    level_channels = gkd.student.encode(torch.zeros(1, 3, patch, patch))[-3].shape[1]
    assert gkd.student_level == -3 and gkd.student_alignment.encoder.convs[0].conv.in_channels == level_channels == 64
    samples = phantom_samples(2, 96, seed=5)
    fsd = frechet_semantic_distance(gkd.student, gkd.student_alignment, gkd.autoencoder, samples, patch, level=-3)
    assert np.isfinite(fsd)
    with pytest.raises(MeddistillError, match="student_level -5 is out of range: the student's encoder has 4 levels"):
        Trainer(config_from_dict(_gkd_values(tmp_path, student_level=-5)), progress=False)


def test_gkd_ablation_weights_drop_terms(tmp_path):
    values = _gkd_values(tmp_path, inter_weight=0, cross_weight=0)
    values["train"]["epochs"] = 1
    rows = list(csv.DictReader((train(config_from_dict(values), progress=False).run_dir / "metrics.csv").open()))
    assert "train_intra" in rows[0] and "train_inter" not in rows[0] and "train_cross" not in rows[0]


def test_gkd_resumes_after_a_kill_during_distillation(tmp_path):
    full = train(config_from_dict(_gkd_values(tmp_path, "full")), progress=False)
    values = _gkd_values(tmp_path, "killed")
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.config.train.epochs = 1
    trainer.fit()
    resumed = train(config_from_dict(values), resume=True, progress=False)
    a, b = load_file(str(full.run_dir / "last.safetensors")), load_file(str(resumed.run_dir / "last.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_gkd_restarts_after_a_kill_during_the_pre_stages(tmp_path):
    values = _gkd_values(tmp_path)
    run = train(config_from_dict(values), progress=False).run_dir
    autoencoder = (run / "stage-autoencoder.safetensors").read_bytes()
    for path in list(run.glob("last.*")) + list(run.glob("best.*")) + list(run.glob("stage-alignment.*")):
        path.unlink()
    train(config_from_dict(values), resume=True, progress=False)
    assert (run / "stage-autoencoder.safetensors").read_bytes() == autoencoder  # reloaded, not retrained
    assert (run / "stage-alignment.safetensors").is_file() and (run / "last.json").is_file()


def test_gkd_needs_a_task_trained_student(tmp_path):
    values = _gkd_values(tmp_path)
    del values["student"]["weights"]
    with pytest.raises(MeddistillError, match="starts from a task-trained student"):
        Trainer(config_from_dict(values), progress=False)


def test_frechet_distance_by_hand():
    torch.manual_seed(0)
    x = torch.randn(400, 3)
    assert frechet_distance(x, x) == pytest.approx(0.0, abs=1e-6)
    # same covariance, means 3·(1, 1, 1)/√3 apart: the distance is the squared shift, 3
    shifted = x + torch.tensor([1.0, 1.0, 1.0])
    assert frechet_distance(x, shifted) == pytest.approx(3.0, rel=1e-4)
    with pytest.raises(MeddistillError, match="at least two"):
        frechet_distance(x[:1], x)


def test_fsd_of_a_gkd_run_via_api_and_cli(tmp_path):
    run = train(config_from_dict(_gkd_values(tmp_path)), progress=False).run_dir
    gkd, patch = load_gkd_alignment(run)
    samples = phantom_samples(3, 96, seed=5)
    value = frechet_semantic_distance(gkd.student, gkd.student_alignment, gkd.autoencoder, samples, patch)
    assert np.isfinite(value) and value >= 0
    # The CLI scores teacher, starting student and distilled student on a folder dataset.
    for folder in ("images", "masks"):
        (tmp_path / "data" / folder).mkdir(parents=True)
    for s in samples:
        Image.fromarray(s.image).save(tmp_path / "data" / "images" / f"{s.name}.png")
        Image.fromarray(s.vessels.astype(np.uint8) * 255).save(tmp_path / "data" / "masks" / f"{s.name}.png")
    out = tmp_path / "fsd.json"
    result = CliRunner().invoke(app, ["evaluate", "fsd", str(run), "--dataset", "folder", "--root", str(tmp_path / "data"), "--json", str(out)])
    assert result.exit_code == 0, result.output
    fsd = yaml.safe_load(out.read_text())["fsd"]
    assert set(fsd) == {"teacher", "student (start)", "student (distilled)"}
    kd_run = tmp_path / "runs" / "not-gkd"
    kd_run.mkdir(parents=True)
    (kd_run / "config.yaml").write_text(yaml.safe_dump(tiny_config_dict(tmp_path, "not-gkd")))
    result = CliRunner().invoke(app, ["evaluate", "fsd", str(kd_run), "--dataset", "folder", "--root", str(tmp_path / "data")])
    assert result.exit_code == 2 and "needs the alignment networks of a GKD run" in result.output
