import csv

import pytest
import torch
from safetensors.torch import load_file

from conftest import tiny_config_dict
from meddistill.checkpoint import save_model
from meddistill.config import config_from_dict
from meddistill.engine import Trainer, build_schedule, resolve_device, train
from meddistill.errors import MeddistillError
from meddistill.config import ScheduleConfig
from meddistill.distill import build_distiller
from meddistill.tasks import SegmentationTask
from meddistill.zoo import build_network


def _weights(run_dir, stem="last"):
    return load_file(str(run_dir / f"{stem}.safetensors"))


def test_training_writes_checkpoints_logs_and_metrics(tmp_path):
    result = train(config_from_dict(tiny_config_dict(tmp_path)), progress=False)
    run = result.run_dir
    for name in ("config.yaml", "last.safetensors", "last.json", "last.state.pt", "best.safetensors", "best.json", "metrics.csv"):
        assert (run / name).is_file(), name
    assert list((run / "tb").glob("events.*"))
    rows = list(csv.DictReader((run / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert {"train_loss", "train_task", "val_f1", "val_auc", "lr"} <= set(rows[0])
    assert 0.0 <= result.best_metrics["f1"] <= 1.0


def test_same_seed_gives_identical_weights(tmp_path):
    a = train(config_from_dict(tiny_config_dict(tmp_path, "a")), progress=False)
    b = train(config_from_dict(tiny_config_dict(tmp_path, "b")), progress=False)
    wa, wb = _weights(a.run_dir), _weights(b.run_dir)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_resume_continues_a_killed_run_to_the_same_result(tmp_path, ema_decay):
    settings = {"epochs": 3, "batch_size": 2, "ema_decay": ema_decay}
    full = train(config_from_dict(tiny_config_dict(tmp_path, "full", train=settings)), progress=False)
    # A run "killed" after its first epoch: same config but stopped at epoch 1 ...
    values = tiny_config_dict(tmp_path, "killed", train=settings)
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.config.train.epochs = 1
    trainer.fit()
    # ... then resumed with the full schedule.
    resumed = train(config_from_dict(values), resume=True, progress=False)
    rows = list(csv.DictReader((resumed.run_dir / "metrics.csv").open()))
    assert [int(r["epoch"]) for r in rows] == [0, 1, 2]
    wf, wr = _weights(full.run_dir), _weights(resumed.run_dir)
    assert all(torch.allclose(wf[k], wr[k], atol=1e-6) for k in wf)


def test_a_run_begun_without_float16_resumes_where_loss_scaling_is_on(tmp_path):
    """A CPU run's state holds no loss scale; a GPU that trains in float16 starts its scale afresh."""
    values = tiny_config_dict(tmp_path, train={"epochs": 2, "batch_size": 2})
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.config.train.epochs = 1
    trainer.fit()
    assert torch.load(trainer.run_dir / "last.state.pt", weights_only=True)["scaler"] == {}
    resumed = Trainer(config_from_dict(values), progress=False)
    resumed.scaler = torch.amp.GradScaler("cpu", init_scale=8.0)  # as on a GPU without bfloat16
    resumed.resume()
    assert resumed.start_epoch == 1 and resumed.scaler.get_scale() == 8.0


@pytest.mark.parametrize(("amp", "dtype"), [("auto", None), ("off", None), (False, None), ("on", torch.bfloat16), (True, torch.bfloat16)])
def test_amp_on_trains_a_cpu_run_in_bfloat16(tmp_path, amp, dtype):
    """``auto`` is on for CUDA only; YAML reads a bare ``amp: on`` as true, which means on too."""
    values = tiny_config_dict(tmp_path, train={"epochs": 1, "batch_size": 2, "amp": amp})
    trainer = Trainer(config_from_dict(values), progress=False)
    assert trainer.autocast_dtype == dtype and not trainer.scaler.is_enabled()  # bfloat16 needs no loss scaling
    if dtype is not None:
        before = [p.detach().clone() for p in trainer.model.student.parameters()]
        trainer.fit()
        assert all(p.dtype == torch.float32 for p in trainer.model.student.parameters())  # the weights stay float32
        assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.student.parameters()))


def test_an_unknown_amp_setting_is_a_user_error(tmp_path):
    with pytest.raises(MeddistillError, match="train.amp must be auto, on or off, not 'bf16'"):
        Trainer(config_from_dict(tiny_config_dict(tmp_path, train={"amp": "bf16"})), progress=False)


def test_weight_averaging_saves_the_average_and_keeps_the_raw_weights_for_resuming(tmp_path):
    result = train(config_from_dict(tiny_config_dict(tmp_path, train={"epochs": 2, "batch_size": 2, "ema_decay": 0.5})), progress=False)
    state = torch.load(result.run_dir / "last.state.pt", weights_only=True)
    saved = _weights(result.run_dir)
    averaged = {k.removeprefix("module."): v for k, v in state["averaged"].items() if k.startswith("module.")}
    raw = {k.removeprefix("student."): v for k, v in state["distiller"].items() if k.startswith("student.")}
    assert saved.keys() == averaged.keys() == raw.keys()
    assert all(torch.equal(saved[k], averaged[k]) for k in saved)
    assert not all(torch.equal(saved[k], raw[k]) for k in saved)
    assert int(state["averaged"]["n_averaged"]) > 1  # one update a step
    with pytest.raises(MeddistillError, match="train.ema_decay must be at least 0 and below 1"):
        Trainer(config_from_dict(tiny_config_dict(tmp_path, "bad", train={"ema_decay": 1.0})), progress=False)


def test_existing_run_is_never_overwritten(tmp_path):
    values = tiny_config_dict(tmp_path, train={"epochs": 1, "batch_size": 2})
    train(config_from_dict(values), progress=False)
    with pytest.raises(MeddistillError, match="already holds a run"):
        train(config_from_dict(values), progress=False)
    with pytest.raises(MeddistillError, match="nothing to resume"):
        train(config_from_dict(tiny_config_dict(tmp_path, "fresh")), resume=True, progress=False)


def test_nan_guard_stops_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from meddistill.tasks import SegmentationTask

    values = tiny_config_dict(tmp_path, train={"epochs": 2, "batch_size": 2})
    trainer = Trainer(config_from_dict(values), progress=False)
    trainer.config.train.epochs = 1
    trainer.fit()
    good = _weights(trainer.run_dir)
    original = SegmentationTask.losses
    monkeypatch.setattr(
        SegmentationTask, "losses", lambda self, logits, batch: {k: v * float("nan") for k, v in original(self, logits, batch).items()}
    )
    with pytest.raises(MeddistillError, match="training diverged: loss is nan at epoch 1 step 0"):
        train(config_from_dict(values), resume=True, progress=False)
    kept = _weights(trainer.run_dir)
    assert all(torch.equal(good[k], kept[k]) for k in good)


def test_train_step_updates_the_student_unless_the_loss_is_not_finite(tmp_path, monkeypatch):
    from meddistill.tasks import SegmentationTask

    trainer = Trainer(config_from_dict(tiny_config_dict(tmp_path)), progress=False)
    batch = next(iter(trainer.loader))
    before = {k: v.clone() for k, v in trainer.student.state_dict().items()}
    losses = trainer.train_step(batch, trainer.optimizer)
    assert set(losses) == {"task"} and losses["task"].ndim == 0
    assert any(not torch.equal(before[k], v) for k, v in trainer.student.state_dict().items())
    after = {k: v.clone() for k, v in trainer.student.named_parameters()}
    original = SegmentationTask.losses
    monkeypatch.setattr(
        SegmentationTask, "losses", lambda self, logits, batch: {k: v * float("inf") for k, v in original(self, logits, batch).items()}
    )
    with pytest.raises(MeddistillError, match="training diverged: loss is inf at a step"):
        trainer.train_step(batch, trainer.optimizer)
    assert all(torch.equal(after[k], v) for k, v in trainer.student.named_parameters())  # no step taken


def test_invalid_learning_rate_is_a_user_error(tmp_path):
    values = tiny_config_dict(tmp_path, train={"optimizer": {"lr": 0.0}})
    with pytest.raises(MeddistillError, match="lr must be positive"):
        Trainer(config_from_dict(values), progress=False)


@pytest.mark.parametrize("method", ["kd", "at", "fsp", "fitnets"])
def test_each_method_distils_from_a_saved_teacher(tmp_path, method):
    from meddistill.models import MODELS

    teacher = MODELS.build("fanet", base_channels=8)
    save_model(tmp_path / "teacher", teacher, {"model": "fanet", "args": {"base_channels": 8}})
    values = tiny_config_dict(
        tmp_path,
        teacher={"name": "fanet", "args": {"base_channels": 8}, "weights": str(tmp_path / "teacher")},
        method={"name": method},
        train={"epochs": 1, "batch_size": 2},
    )
    result = train(config_from_dict(values), progress=False)
    rows = list(csv.DictReader((result.run_dir / "metrics.csv").open()))
    assert float(rows[0][f"train_{method}"]) > 0
    # the saved student is a plain ENet: adapters and teacher are not part of it
    assert set(_weights(result.run_dir)) == set(MODELS.build("enet").state_dict())


def test_method_without_teacher_and_bad_method_args_are_user_errors(tmp_path):
    with pytest.raises(MeddistillError, match="needs a 'teacher'"):
        Trainer(config_from_dict(tiny_config_dict(tmp_path, method={"name": "kd"})), progress=False)
    with pytest.raises(MeddistillError, match="unknown distillation method 'kdd' \\(did you mean 'kd'\\?\\)"):
        Trainer(config_from_dict(tiny_config_dict(tmp_path, method={"name": "kdd"})), progress=False)
    net = build_network("enet")
    with pytest.raises(MeddistillError, match="method 'kd' has no argument 'temprature' \\(did you mean 'temperature'\\?\\)"):
        build_distiller("kd", net, net, SegmentationTask(), torch.zeros(1, 3, 32, 32), {"temprature": 2})


@pytest.mark.parametrize("name", ["gpu", "cpu:0", "cuda:first", "CUDA"])
def test_a_misspelt_device_is_a_user_error(name):
    with pytest.raises(MeddistillError, match=f"unknown device '{name}': use auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_auto_device_falls_back_to_the_cpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    with pytest.raises(MeddistillError, match="no CUDA device is available"):
        resolve_device("cuda:0")


def test_schedules():
    params = [torch.nn.Parameter(torch.zeros(1))]
    for name, expected_last in [("constant", 1.0), ("poly", (1 - 3 / 4) ** 0.9), ("cosine", 0.5 * (1 + -(2**-0.5)))]:
        optimizer = torch.optim.SGD(params, lr=1.0)
        schedule = build_schedule(optimizer, ScheduleConfig(name=name), epochs=4)
        for _ in range(3):
            optimizer.step()
            schedule.step()
        assert optimizer.param_groups[0]["lr"] == pytest.approx(expected_last)
    with pytest.raises(MeddistillError, match="unknown schedule"):
        build_schedule(torch.optim.SGD(params, lr=1.0), ScheduleConfig(name="linear"), epochs=4)
