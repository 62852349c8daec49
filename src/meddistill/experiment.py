"""Cross-domain experiment grids: train on one dataset, test on others, one table.

``meddistill experiment GRID.yaml`` trains (or resumes) the teacher and every student ×
method run of a grid, evaluates each run on the held-out images of its source dataset and
on every target dataset, and writes one table: Se, Acc, AUC, F1 and mIoU per dataset, the
GAP (source − target) per target, the Fréchet Semantic Distance of GKD runs, and parameters,
GFLOPs and CPU latency; as Markdown and CSV, with side-by-side figures.

Every training run is an ordinary CLI call, printed before it starts, so any row can be
reproduced on its own.
"""

from __future__ import annotations

import csv
import hashlib
import json
import shlex
import shutil
import subprocess
import sys
import time
from contextlib import suppress
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from torch import nn

from .builders import build_samples
from .checkpoint import checkpoint_paths, read_meta
from .config import ExperimentConfig, build_dataclass, config_from_dict, config_to_dict, load_config, read_yaml
from .cost import ModelCost, measure_cost
from .data import Preparation, VesselSample, load_dataset, random_subset, training_fov_diameter
from .distill import METHODS, GKDDistiller
from .engine import check_device_name, resolve_device
from .errors import MeddistillError
from .fsd import frechet_semantic_distance, load_gkd_alignment
from .inference import evaluate_samples, predict_probability
from .registry import did_you_mean
from .report import folder_name, overlay, plot_panels, read_metrics_csv
from .run_lock import run_folder_holder
from .zoo import build_network, load_model, resolve_checkpoint

METRICS = {"sensitivity": "Se", "accuracy": "Acc", "auc": "AUC", "f1": "F1", "miou": "mIoU"}


@dataclass
class TargetConfig:
    """An unseen dataset the grid is tested on."""

    dataset: str = "auto"
    root: str = "."
    images: int = 0  # test on this many of its images, drawn at random with seed (0: all of them)
    seed: int = 0


@dataclass
class VariantConfig:
    """One row of the grid: a distillation method and its arguments."""

    method: str = "none"
    args: dict[str, Any] = field(default_factory=dict)
    # The row whose trained student (same replicate) this row starts from. Empty: untrained,
    # or the scratch row "none" for methods that need a trained student (GKD). With method none
    # it makes the control for such rows: the same start, trained as long with the task loss alone.
    start_from: str = ""
    # The row (same student and replicate) whose trained pre-stages, such as GKD's autoencoder
    # and alignment networks, this row copies instead of training its own. Allowed where the
    # two rows differ only in their method's distill-stage arguments (e.g. GKD's loss weights).
    stages_from: str = ""

    def start_row(self) -> str:
        """The label of the row this one starts from, or "" for an untrained student."""
        return self.start_from or ("none" if METHODS.get(self.method).needs_trained_student else "")


@dataclass
class GridConfig:
    """A cross-domain grid: one teacher, students × methods, tested on the source and targets."""

    name: str = "grid"  # run names: <name>-<student>-<row>, the row label made folder-safe
    teacher: str = ""  # experiment config of the teacher (trained with method none)
    teacher_weights: str = ""  # or a trained teacher used as is: shipped name or checkpoint path
    student: str = ""  # experiment config every student run starts from: source data, schedule
    students: list[str] = field(default_factory=lambda: ["mobilenetv2_unet"])
    methods: dict[str, VariantConfig] = field(default_factory=lambda: {"none": VariantConfig()})
    targets: dict[str, TargetConfig] = field(default_factory=dict)
    out: str = "results/grid"
    replicates: int = 1  # runs per student × row; replicate k trains with seed + k on the same split
    jobs: int = 1  # training runs at a time
    threads: int = 1  # CPU threads for the latency column
    device: str = "auto"  # where the runs are evaluated: auto (CUDA if present) | cpu | cuda
    cost_size: int = 512  # square input size for params, GFLOPs and latency


@dataclass
class Run:
    """One training run of the grid."""

    label: str  # row label in the table
    command: list[str]
    config: ExperimentConfig
    variant: VariantConfig
    replicate_of: str = ""  # the label its replicates share (the first replicate's label)
    row: str = ""  # the grid row (a key of the grid's methods) it trains; "" for the teacher
    stages_from: Path | None = None  # the run folder whose pre-stages it copies
    weights: str = ""  # a model trained elsewhere (shipped name or checkpoint) this run stands for

    @property
    def run_dir(self) -> Path:
        return self.config.run_dir

    @property
    def source(self) -> str:
        """Where its results come from: the given weights, or else the run folder."""
        return self.weights or str(self.run_dir)

    @property
    def checkpoint(self) -> str:
        """Its best weights: the given ones, or else ``<run_dir>/best``."""
        return self.weights or str(self.run_dir / "best")

    def state(self) -> str:
        """``done`` for given weights, else :func:`run_state` of its folder."""
        return "done" if self.weights else run_state(self.run_dir, self.config.train.epochs)


def load_grid(path: str | Path) -> GridConfig:
    grid = build_dataclass(GridConfig, read_yaml(path))
    if "none" not in grid.methods or grid.methods["none"].method != "none":
        raise MeddistillError("a grid needs a 'none' row (method: none): the scratch students it compares against")
    for label, variant in grid.methods.items():
        METHODS.get(variant.method)  # an unknown method fails now, naming the nearest one
        chain = [label]
        while start := grid.methods[chain[-1]].start_row():
            if start not in grid.methods:
                raise MeddistillError(
                    f"row '{chain[-1]}' starts from '{start}', which is not a row of the grid"
                    + did_you_mean(start, list(grid.methods))
                )
            if start in chain:
                raise MeddistillError(f"rows start from each other in a loop: {' -> '.join(chain + [start])}")
            chain.append(start)
        if variant.stages_from:
            _check_stage_source(grid, label)
    if bool(grid.teacher) == bool(grid.teacher_weights):
        raise MeddistillError("a grid needs either 'teacher' (a config to train) or 'teacher_weights' (a trained teacher)")
    if grid.teacher_weights:
        resolve_checkpoint(grid.teacher_weights)  # a misspelt name fails now, naming the nearest one
    if not grid.student:
        raise MeddistillError("a grid needs a 'student' experiment config")
    check_device_name(grid.device)
    return grid


def _check_stage_source(grid: GridConfig, label: str) -> None:
    """Row ``label`` may copy the pre-stages of its ``stages_from`` row only if they train the same ones."""
    variant = grid.methods[label]
    source_label = variant.stages_from
    if source_label not in grid.methods:
        raise MeddistillError(
            f"row '{label}' takes its stages from '{source_label}', which is not a row of the grid"
            + did_you_mean(source_label, list(grid.methods))
        )
    source = grid.methods[source_label]
    if source.stages_from:
        raise MeddistillError(f"row '{label}' takes its stages from '{source_label}', which takes its own from another row")
    if source.method != variant.method or source.start_row() != variant.start_row():
        raise MeddistillError(
            f"row '{label}' cannot take its stages from '{source_label}': "
            "both rows need the same method and the same starting student"
        )
    free = METHODS.get(variant.method).distill_stage_args
    differing = sorted(k for k in {**source.args, **variant.args} if k not in free and source.args.get(k) != variant.args.get(k))
    if differing:
        raise MeddistillError(
            f"row '{label}' cannot take its stages from '{source_label}': their '{differing[0]}' differs "
            f"(only {', '.join(free) or 'nothing'} may)"
        )


def assignments(overrides: dict[str, Any]) -> list[str]:
    """``--set`` values: ``key=<value as JSON>``, which the config loader reads back as YAML."""
    return [f"{key}={json.dumps(value)}" for key, value in overrides.items()]


def training_command(verb: str, config: str, overrides: dict[str, Any]) -> list[str]:
    """The ``meddistill VERB CONFIG --set ...`` call that trains one run, in this Python."""
    sets = [item for assignment in assignments(overrides) for item in ("--set", assignment)]
    return [sys.executable, "-m", "meddistill", verb, config, "--no-progress", *sets]


def _student_run(
    grid: GridConfig, base: ExperimentConfig, student: str, row: str, k: int, teacher_net: dict, runtime: dict[str, Any]
) -> Run:
    """Replicate ``k`` of one student × row of the grid (``base``: the grid's student config)."""
    seed = base.seed + k
    suffix = f"-seed{seed}" if k else ""
    variant = grid.methods[row]

    def run_name(grid_row: str) -> str:  # the run of ``grid_row`` for this student and replicate
        return f"{grid.name}-{student}-{folder_name(grid_row)}{suffix}"

    overrides: dict[str, Any] = {
        "name": run_name(row),
        "student.name": student,
        "method.name": variant.method,
        "method.args": variant.args,
        **runtime,
    }
    if k:
        overrides.update({"seed": seed, "data.split_seed": base.seed})
    method = METHODS.get(variant.method)
    if method.needs_teacher:
        overrides.update(teacher_net)
    if start_row := variant.start_row():
        overrides["student.weights"] = str(Path(base.output) / run_name(start_row) / "best")
    config = load_config(grid.student, assignments(overrides))
    command = training_command("distill" if method.needs_teacher else "train", grid.student, overrides)
    label = f"{student} / {row}"
    stages_from = Path(base.output) / run_name(variant.stages_from) if variant.stages_from else None
    return Run(
        label + (f" (seed {seed})" if k else ""), command, config, variant, replicate_of=label, row=row, stages_from=stages_from
    )


def plan_runs(grid: GridConfig, runtime: dict[str, Any] | None = None) -> tuple[Run, list[Run]]:
    """The teacher run and the student runs; each student's block starts with its scratch row.

    Replicate k > 0 of a row is named ``...-seed<seed>``, trains with the student config's seed
    + k and keeps the first replicate's train/val split; a row that starts from another row's
    trained student starts from that row's run of its own replicate. ``runtime``: overrides of
    :data:`RUNTIME_KEYS` for every run trained (see :func:`runtime_overrides`).
    """
    runtime = runtime or {}
    if grid.replicates < 1:
        raise MeddistillError(f"replicates must be at least 1, got {grid.replicates}")
    if grid.teacher_weights:
        meta = read_meta(resolve_checkpoint(grid.teacher_weights))
        if "config" not in meta:
            raise MeddistillError(f"teacher_weights {grid.teacher_weights} records no training config")
        teacher = Run("teacher", [], config_from_dict(meta["config"]), VariantConfig(), weights=grid.teacher_weights)
    else:
        teacher = Run(
            "teacher", training_command("train", grid.teacher, runtime), load_config(grid.teacher, assignments(runtime)), VariantConfig()
        )
    teacher_net = {
        "teacher.name": teacher.config.student.name,
        "teacher.args": teacher.config.student.args,
        "teacher.weights": teacher.checkpoint,
    }
    base = load_config(grid.student)
    rows = ["none"] + [row for row in grid.methods if row != "none"]  # the scratch row leads each block
    students = [
        _student_run(grid, base, student, row, k, teacher_net, runtime)
        for student in grid.students
        for row in rows
        for k in range(grid.replicates)
    ]
    return teacher, students


def _folder_progress(run_dir: Path, epochs: int) -> tuple[str, str]:
    """(:func:`run_state`, how far the run in ``run_dir`` has come in words)."""
    meta = run_dir / "last.json"
    if meta.is_file():
        trained = json.loads(meta.read_text())["epoch"] + 1
        state = "done" if trained >= epochs else "partial"
        return state, f"{state}: {trained} of {epochs} epochs"
    if stages := sorted(p.stem.removeprefix("stage-") for p in run_dir.glob("stage-*.json")):
        return "partial", f"partial: pre-stage {', '.join(stages)} trained"
    return "missing", "missing"


def run_state(run_dir: Path, epochs: int) -> str:
    """``done``, ``partial`` (resumable) or ``missing``."""
    return _folder_progress(run_dir, epochs)[0]


def _differences(saved: Any, planned: Any, where: str = "") -> list[str]:
    if isinstance(saved, dict) and isinstance(planned, dict):
        keys = list(dict.fromkeys([*saved, *planned]))
        return [d for k in keys for d in _differences(saved.get(k), planned.get(k), f"{where}.{k}" if where else k)]
    return [] if saved == planned else [f"{where}: {saved!r} there, {planned!r} here"]


# How a run was executed, not what it learns: these may differ between a grid and its runs, so a
# grid begun on a GPU can be finished on a CPU (or the reverse), each run resuming where it stopped.
RUNTIME_KEYS = ("train.threads", "train.device", "train.deterministic", "train.amp", "data.num_workers")


def runtime_overrides(assignments: list[str]) -> dict[str, Any]:
    """``key=value`` strings for every run of a grid on this machine, e.g. ``train.amp=on``: only
    the keys of how a run executes (:data:`RUNTIME_KEYS`), so a grid's runs stay the same runs."""
    overrides = {}
    for item in assignments:
        key, value = item.split("=", 1) if "=" in item else (item, None)
        key = key.strip()
        if value is None or key not in RUNTIME_KEYS:
            raise MeddistillError(
                f"--set '{item}': a grid takes only how its runs execute, key=value with a key of "
                f"{', '.join(RUNTIME_KEYS)}; what they learn is set in its configs"
            )
        overrides[key] = yaml.safe_load(value)
    return overrides


def _config_differences(saved: dict[str, Any], run: Run) -> list[str]:
    """How a saved run config differs from the one this grid plans, runtime keys aside."""
    return [
        d
        for d in _differences(saved, config_to_dict(run.config))
        if not d.startswith(tuple(f"{key}:" for key in RUNTIME_KEYS))
    ]


def _saved_differences(run: Run) -> list[str]:
    """How the config saved in ``run``'s folder differs from the planned one (none if no folder)."""
    saved = run.run_dir / "config.yaml"
    if run.weights or not saved.is_file():
        return []
    return _config_differences(config_to_dict(load_config(saved)), run)


def check_run_config(run: Run) -> None:
    """A run folder that exists must hold this grid's run, not one trained with other settings."""
    if differences := _saved_differences(run):
        raise MeddistillError(
            f"{run.run_dir} holds a run with other settings ({differences[0]}); "
            "move it away or give the grid another name"
        )


def _time_to_go(run_dir: Path, epochs: int) -> str:
    """``about 2 h 05 min to go at 6.2 min per epoch`` for a run part-way through its epochs,
    from the median of its latest five epochs (the pace of the machine it is on now); "" when
    it has logged no epoch yet."""
    log = run_dir / "metrics.csv"
    columns = read_metrics_csv(log) if log.is_file() else {}
    if not columns.get("epoch"):
        return ""
    pace = float(np.median(columns["seconds"][-5:]))
    hours, minutes = divmod(round(pace * max(epochs - int(columns["epoch"][-1]) - 1, 0) / 60), 60)
    return f"about {f'{hours} h {minutes:02d}' if hours else minutes} min to go at {pace / 60:.1f} min per epoch"


def run_progress(run: Run) -> tuple[str, str]:
    """(state, how far ``run`` has come in words: its given weights, its epochs, or its
    pre-stages). The state is :meth:`Run.state`, or ``other settings`` when its folder holds
    another run."""
    if run.weights:
        return "done", f"done: weights {run.weights}"
    if differences := _saved_differences(run):
        return "other settings", f"other settings in its folder ({differences[0]})"
    state, words = _folder_progress(run.run_dir, run.config.train.epochs)
    holder = run_folder_holder(run.run_dir)
    if not holder:
        return state, words
    pace = _time_to_go(run.run_dir, run.config.train.epochs) if state == "partial" else ""
    return state, f"{words}, training now ({holder})" + (f", {pace}" if pace else "")


def grid_status(path: str | Path, only: list[str] | None = None) -> list[tuple[str, str, str, str]]:
    """(row label, run folder or weights, *:func:`run_progress`) for every run of a grid, in order.

    ``only``: just the runs of these grid rows and the runs they need (as ``run_grid`` trains
    them). A run whose folder is gone but whose results the grid keeps (see
    :func:`evaluate_runs`) is ``reported``.
    """
    grid = load_grid(path)
    teacher, students = plan_runs(grid)
    cache, recorded = _read_records(Path(grid.out), grid.targets)
    names = grid_dataset_names(grid, students[0].config)
    standing = _standing([teacher, *students], cache, recorded, names)
    where = _record_paths(Path(grid.out))[0]
    status = []
    for run in select_runs(teacher, students, only) if only else (teacher, *students):
        state, words = run_progress(run)
        if run.source in standing.kept:
            state, words = "reported", f"missing here; its results are kept in {where}"
        elif run.source in standing.refused:
            words = f"missing here; the results kept in {where} were made from other weights than its teacher's or start's now"
        status.append((run.label, run.source, state, words))
    return status


def copy_pre_stages(source: Path, run_dir: Path) -> None:
    """Copy ``source``'s trained pre-stages into ``run_dir``, unless it has pre-stages of its own.

    The engine then reloads them instead of training them. The run is not bit-identical to
    one that trained its own: its distillation stage starts from another random state.
    """
    if list(run_dir.glob("stage-*.json")):
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(source.glob("stage-*")):
        shutil.copy2(path, run_dir / path.name)
    print(f"{run_dir.name}: pre-stages copied from {source.name}", flush=True)


def _checkpoints_needed(run: Run) -> set[str | None]:
    """The trained checkpoints ``run`` starts from: its student's and, if distilled, its teacher's."""
    needed = {run.config.student.weights}
    if METHODS.get(run.variant.method).needs_teacher:
        needed.add(run.config.teacher.weights)
    return needed


def _waiting_on(run: Run, pending: list[Run]) -> int:
    """How many of ``pending`` wait for ``run``: for its checkpoint or for its pre-stages."""
    return sum(run.checkpoint in _checkpoints_needed(r) or r.stages_from == run.run_dir for r in pending)


def select_runs(teacher: Run, students: list[Run], rows: list[str]) -> list[Run]:
    """The runs of the grid rows ``rows`` (every student and replicate), with every run they
    need first: the run they start from, the teacher they distil from, the run whose
    pre-stages they copy."""
    known = list(dict.fromkeys(r.row for r in students))
    for row in rows:
        if row not in known:
            raise MeddistillError(f"'{row}' is not a row of the grid{did_you_mean(row, known)}")
    chosen = [r for r in students if r.row in rows]
    producers = {r.checkpoint: r for r in [teacher, *students]}
    stage_sources = {r.run_dir: r for r in students}
    needed: set[int] = set()
    while chosen:
        run = chosen.pop()
        if id(run) not in needed:
            needed.add(id(run))
            chosen += [producers[c] for c in _checkpoints_needed(run) if c in producers]
            if run.stages_from in stage_sources:
                chosen.append(stage_sources[run.stages_from])
    return [r for r in [teacher, *students] if id(r) in needed]


def train_runs(runs: list[Run], parallel: int) -> None:
    """Run training commands ``parallel`` at a time, resuming partial runs: of those ready, the
    one most runs wait for first, else the first in order.

    A run that starts from another run's trained student, or is distilled from a teacher run
    of the list, waits until that run is done; one that copies another run's pre-stages waits
    until that run has finished them (its first checkpoint). So the scratch students train
    beside the teacher. Each run's output goes to ``<output>/<name>.log``.
    """
    if parallel < 1:
        raise MeddistillError(f"jobs must be at least 1, got {parallel}")
    for run in runs:
        check_run_config(run)
    pending = [r for r in runs if r.state() != "done"]
    for run in pending:
        if holder := run_folder_holder(run.run_dir):
            raise MeddistillError(f"{run.label} is being trained by {holder}: is this grid running already?")
    running: list[tuple[Run, subprocess.Popen]] = []
    while pending or running:
        while len(running) < parallel:
            unfinished = {r.checkpoint for r in pending + [r for r, _ in running]}
            ready = [
                r
                for r in pending
                if not _checkpoints_needed(r) & unfinished
                and (r.stages_from is None or (r.stages_from / "last.json").is_file())
            ]
            if not ready:
                break
            run = max(ready, key=lambda r: _waiting_on(r, pending))  # the first of the most waited for
            pending.remove(run)
            if run.stages_from is not None:
                copy_pre_stages(run.stages_from, run.run_dir)
            command = run.command + (["--resume"] if run.state() == "partial" else [])
            run.run_dir.parent.mkdir(parents=True, exist_ok=True)
            print("$ meddistill", shlex.join(command[3:]), flush=True)
            with open(run.run_dir.parent / f"{run.config.name}.log", "a") as log:
                running.append((run, subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)))
        time.sleep(1)
        for item in list(running):
            run, process = item
            if process.poll() is not None:
                running.remove(item)
                if process.returncode != 0:
                    raise MeddistillError(
                        f"training {run.config.name} failed (exit {process.returncode}); see {run.run_dir.parent / run.config.name}.log"
                    )
                print(f"finished {run.config.name}", flush=True)


def grid_dataset_names(grid: GridConfig, source: ExperimentConfig) -> list[str]:
    """The table names of the grid's datasets: the source's held-out images, then every target."""
    return [f"{source.data.dataset} (held-out)", *grid.targets]


def load_grid_datasets(grid: GridConfig, source: ExperimentConfig) -> dict[str, list[VesselSample]]:
    """The source's held-out images, then every target dataset, by :func:`grid_dataset_names`."""
    _, held_out = build_samples(source.data, source.seed)
    if not held_out:
        raise MeddistillError("the student config holds out no source images (data.val_fraction is 0)")
    loaded = [held_out]
    for name, target in grid.targets.items():
        try:
            loaded.append(random_subset(load_dataset(target.dataset, target.root), target.images, target.seed))
        except MeddistillError as err:
            raise MeddistillError(f"target '{name}': {err}") from None
    return dict(zip(grid_dataset_names(grid, source), loaded))


def _record_paths(out: Path) -> tuple[Path, Path, Path]:
    """Where a grid keeps its metrics cache, its run records and the definitions of the targets
    they were computed on: ``out/metrics.json``, ``out/runs.json``, ``out/targets.json``."""
    return out / "metrics.json", out / "runs.json", out / "targets.json"


def _read_records(out: Path, targets: dict[str, TargetConfig]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The metrics cache and run records of :func:`_record_paths`, empty if absent, less every
    result on a target the grid now defines otherwise (another folder, layout or subset)."""
    cache_path, recorded_path, targets_path = _record_paths(out)
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    recorded = json.loads(recorded_path.read_text()) if recorded_path.is_file() else {}
    before = json.loads(targets_path.read_text()) if targets_path.is_file() else {}
    # filled in with today's defaults, so a field added since is no change
    changed = [name for name, target in targets.items() if name in before and build_dataclass(TargetConfig, before[name]) != target]
    for name in changed:
        for entry in cache.values():
            entry.pop(name, None)
        for record in recorded.values():
            record.get("fsd", {}).pop(name, None)
    return cache, recorded


def _cached_row(run: Run, cache: dict[str, Any], recorded: dict[str, Any], datasets: list[str]) -> str | None:
    """The cache key of a row evaluated before whose run folder is gone, if it is still this grid's run."""
    keys = [k for k in cache if k.startswith(f"{run.source}@") and all(n in cache[k] for n in datasets)]
    if len(keys) != 1 or keys[0] not in recorded:
        return None
    saved = config_to_dict(config_from_dict(recorded[keys[0]]["config"]))  # defaults added since are filled in
    return None if _config_differences(saved, run) else keys[0]


def _weights_digest(checkpoint: str) -> str:
    """The first 12 hex digits of the SHA-256 of a checkpoint's weights file."""
    return hashlib.sha256(checkpoint_paths(resolve_checkpoint(checkpoint))[0].read_bytes()).hexdigest()[:12]


def _made_from(run: Run, runs: list[Run]) -> list[Run]:
    """The grid's runs whose weights ``run`` was trained from: its teacher, the student it
    starts from and the run whose pre-stages it copies."""
    needed = _checkpoints_needed(run)
    return [r for r in runs if r is not run and (r.checkpoint in needed or r.run_dir == run.stages_from)]


@dataclass
class _Standing:
    """What each run of a grid reports now (see :func:`_standing`)."""

    digests: dict[str, str]  # run source -> digest of the weights it reports
    kept: dict[str, str]  # run source -> cache key of the kept results it is reported from
    refused: set[str]  # run sources whose kept results were made from other weights


def _standing(runs: list[Run], cache: dict[str, Any], recorded: dict[str, Any], datasets: list[str]) -> _Standing:
    """Which results each run reports: a finished run its own weights; a run whose folder is
    gone the results kept for it, as long as the grid plans the same config *and* they were
    made from the weights its teacher and start report now (a teacher trained again makes the
    rows distilled from the old one stale). ``runs`` in grid order: a run's sources first."""
    standing = _Standing({}, {}, set())
    for run in runs:
        state = run.state()
        if state == "done":
            with suppress(MeddistillError):  # no weights file: loading it says so, where it matters
                standing.digests[run.source] = _weights_digest(run.checkpoint)
        elif state == "missing" and (key := _cached_row(run, cache, recorded, datasets)):
            made_from = recorded[key].get("made_from")  # absent in records written before it was kept
            if made_from is None or all(standing.digests.get(source) == digest for source, digest in made_from.items()):
                standing.digests[run.source] = key.rsplit("@", 1)[1]
                standing.kept[run.source] = key
            else:
                standing.refused.add(run.source)
    return standing


def _is_gkd(run: Run) -> bool:
    return METHODS.get(run.variant.method) is GKDDistiller


def evaluate_runs(
    teacher: Run,
    students: list[Run],
    datasets: dict[str, list[VesselSample]],
    out: Path,
    targets: dict[str, TargetConfig],
    device: str = "cpu",
) -> dict[str, dict[str, Any]]:
    """Metrics per dataset (computed on ``device``) and FSD of GKD runs.

    Metrics are cached in ``out/metrics.json``; ``out/runs.json`` records, per evaluated
    checkpoint, the run's config and its FSD; ``out/targets.json`` the ``targets`` they were
    computed on (a target defined otherwise since is evaluated afresh). A run whose folder is
    gone (archived, or trained on another machine) is reported from these records as long as
    the grid still plans the same config and its teacher and start still report the weights it
    was made from (``made_from`` in ``runs.json``), with ``net`` None (the figures then stay as
    they are). Each other result holds its best checkpoint as ``net``.
    """
    cache_path, recorded_path, targets_path = _record_paths(out)
    cache, recorded = _read_records(out, targets)

    def save() -> None:
        out.mkdir(parents=True, exist_ok=True)
        cache_path.write_text(json.dumps(cache, indent=2))
        recorded_path.write_text(json.dumps(recorded, indent=2))
        targets_path.write_text(json.dumps({name: asdict(target) for name, target in targets.items()}, indent=2))

    results: dict[str, dict[str, Any]] = {}
    diameters: dict[str, float] = {}
    where = resolve_device(device)
    runs = [teacher, *students]
    standing = _standing(runs, cache, recorded, list(datasets))
    for run in runs:
        if key := standing.kept.get(run.source):
            print(f"{run.label}: run folder absent, reported from {cache_path}", flush=True)
            results[run.label] = {"run": run, "net": None, "metrics": cache[key]}
            if _is_gkd(run):
                results[run.label]["fsd"] = recorded[key].get("fsd", {})
            continue
        if run.source in standing.refused:
            print(f"{run.label}: not reported: its results in {cache_path} were made from other weights "
                  "than its teacher's or start's now", flush=True)
            continue
        if run.state() != "done":
            print(f"skipping {run.label}: run not finished", flush=True)
            continue
        net, meta, preparation = load_run_model(run, diameters)
        # the weights' digest: a run trained again to the same best epoch is evaluated again
        key = f"{run.source}@{meta['epoch']}@{preparation.fov_diameter_px:.1f}px@{standing.digests[run.source]}"
        for stale in [k for k in cache if k.startswith(f"{run.source}@") and k != key]:
            del cache[stale]
            recorded.pop(stale, None)
        entry = cache.setdefault(key, {})
        record = recorded.setdefault(key, {})
        record["config"] = config_to_dict(run.config)
        # what it was made from, as the grid has it now: the first evaluation of these weights
        record.setdefault("made_from", {r.source: standing.digests.get(r.source) for r in _made_from(run, runs)})
        for name, samples in datasets.items():
            if name not in entry:
                entry[name] = evaluate_samples(net, samples, where, preparation)
                save()
                print(run.label, name, json.dumps(entry[name]), flush=True)
        net.cpu()  # FSD and the figures run on the CPU
        results[run.label] = {"run": run, "net": net, "metrics": entry, "preparation": preparation}
        if _is_gkd(run):
            if any(name not in record.get("fsd", {}) for name in datasets):
                record["fsd"] = _fsd(run, net, datasets, preparation)
            results[run.label]["fsd"] = record["fsd"]
        save()
    return results


def attach_costs(results: dict[str, dict[str, Any]], grid: GridConfig, out: Path, measure: bool) -> None:
    """Give each result its architecture's ``cost``: measured now (``measure``) and kept in
    ``out/cost.json``, or else the measurement kept there by an earlier call, if any."""
    path = out / "cost.json"
    kept = json.loads(path.read_text()) if path.is_file() else {}
    measured: set[str] = set()
    for result in results.values():
        run = result["run"]
        key = json.dumps([run.config.student.name, run.config.student.args, grid.cost_size, grid.threads])
        if measure and key not in measured:
            # latency and FLOPs do not depend on the weights: a folder-less row is timed untrained
            net = result["net"] or build_network(run.config.student.name, run.config.student.args)
            shape = (1, 3, grid.cost_size, grid.cost_size)
            kept[key] = asdict(measure_cost(net, shape, threads=grid.threads, repeats=10))
            measured.add(key)
        if key in kept:
            result["cost"] = ModelCost.from_dict(kept[key])
    if measured:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(kept, indent=2))


def load_run_model(
    run: Run, diameters: dict[str, float] | None = None
) -> tuple[nn.Module, dict[str, Any], Preparation]:
    """A finished run's best checkpoint, its metadata, and the preparation its inputs need.

    ``diameters`` caches the training FOV diameter of checkpoints written before it was recorded.
    """
    check_run_config(run)
    net, meta = load_model(run.checkpoint)
    preparation = Preparation.from_meta(meta)
    if preparation.fov_diameter_px is None:
        diameter = _training_diameter(run.config, {} if diameters is None else diameters)
        preparation = replace(preparation, fov_diameter_px=diameter)
    return net, meta, preparation


def _training_diameter(config: ExperimentConfig, known: dict[str, float]) -> float:
    """The training images' FOV diameter, for checkpoints written before it was recorded in them."""
    key = json.dumps(config_to_dict(config)["data"], sort_keys=True)
    if key not in known:
        known[key] = training_fov_diameter(build_samples(config.data, config.seed)[0])
    return known[key]


def _fsd(
    run: Run, student, datasets: dict[str, list[VesselSample]], preparation: Preparation
) -> dict[str, dict[str, float]]:
    """FSD of the distilled student and of the scratch student it started from, per dataset."""
    gkd, patch = load_gkd_alignment(run.run_dir)

    def score(net: Any, samples: list[VesselSample]) -> float:
        return frechet_semantic_distance(
            net, gkd.student_alignment, gkd.autoencoder, samples, patch, preparation, level=gkd.student_level
        )

    return {name: {"distilled": score(student, s), "start": score(gkd.student, s)} for name, s in datasets.items()}


def add_replicate_means(results: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The results with a ``<row> (mean of N seeds)`` row after each row with N ≥ 2 finished replicates.

    The mean row has no FSD: each replicate's FSD is measured through its own alignment
    networks, so FSDs of different runs do not average into a comparable number.
    """
    groups: dict[str, list[dict[str, Any]]] = {}
    for result in results.values():
        groups.setdefault(result["run"].replicate_of or result["run"].label, []).append(result)
    merged: dict[str, dict[str, Any]] = {}
    for label, result in results.items():
        merged[label] = result
        group = groups[result["run"].replicate_of or label]
        if len(group) < 2 or result is not group[-1]:
            continue
        names = list(group[0]["metrics"])
        mean = {
            "run": group[0]["run"],
            "net": None,
            "summary": True,
            "metrics": {n: {m: float(np.mean([r["metrics"][n][m] for r in group])) for m in METRICS} for n in names},
        }
        if "cost" in group[0]:
            mean["cost"] = group[0]["cost"]
        merged[f"{group[0]['run'].replicate_of} (mean of {len(group)} seeds)"] = mean
    return merged


def _table_rows(results: dict[str, dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the grid table; the first dataset is the source."""
    first = next(iter(results.values()))["metrics"]
    names = list(first)
    source, targets = names[0], names[1:]
    header = ["model / method"]
    for short in METRICS.values():
        header += [f"{short} {n}" for n in names] + [f"{short} GAP {t}" for t in targets]
    # FSD is only comparable through one alignment network: each GKD row gives its distilled
    # student's and, through the same SAN, the scratch student's it started from.
    header += [f"FSD {n}" for n in names] + [f"FSD start {n}" for n in names] + ["params (M)", "GFLOPs", "CPU ms"]
    rows = []
    for label, result in results.items():
        m = result["metrics"]
        row = [label]
        for metric in METRICS:
            row += [f"{m[n][metric]:.4f}" for n in names]
            row += [f"{m[source][metric] - m[t][metric]:.4f}" for t in targets]
        fsd = result.get("fsd", {})
        row += [f"{fsd[n][when]:.2f}" if n in fsd else "" for when in ("distilled", "start") for n in names]
        cost = result.get("cost")
        row += [f"{cost.params / 1e6:.3f}", f"{cost.gflops:.2f}", f"{cost.latency_ms:.0f}"] if cost else ["", "", ""]
        rows.append(row)
    return header, rows


def write_table(results: dict[str, dict[str, Any]], out: Path, grid: GridConfig, unfinished: list[str]) -> str:
    """Write ``results.md`` and ``results.csv``; returns the Markdown, which names the
    ``unfinished`` runs of the grid below the table."""
    header, rows = _table_rows(results)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    lines = [
        f"Grid `{grid.name}`: every model is trained on the source's training split and tested on its held-out "
        "split and on each target dataset, rescaled to the training field-of-view diameter. GAP = source − target "
        f"(lower is better). FSD: Fréchet Semantic Distance through the GKD run's alignment networks (lower is better); "
        "FSD start: the scratch student that run started from, through the same networks. "
        f"Cost at 1×3×{grid.cost_size}×{grid.cost_size}, {grid.threads} CPU thread(s).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    if unfinished:
        lines += ["", f"Not in the table, not finished: {'; '.join(unfinished)}."]
    markdown = "\n".join(lines) + "\n"
    (out / "results.md").write_text(markdown)
    return markdown


def write_figures(results: dict[str, dict[str, Any]], datasets: dict[str, list[VesselSample]], out: Path) -> list[Path]:
    """One figure per dataset: its first image, the truth, and every model's mask side by side."""
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    written = []
    for name, samples in datasets.items():
        sample = samples[0]
        panels = {"image": sample.image, "truth": sample.vessels.astype(np.uint8) * 255}
        for label, result in results.items():
            if result.get("summary"):
                continue
            prob = predict_probability(result["net"], sample.image, sample.fov, preparation=result["preparation"])
            panels[label] = overlay(sample.image, prob >= 0.5, sample.vessels)
        path = figures / f"{''.join(c if c.isalnum() else '_' for c in name)}.jpg"  # photos: JPEG keeps the docs small
        plot_panels(panels, path, columns=min(len(panels), 5))
        written.append(path)
    return written


def run_grid(
    path: str | Path,
    train: bool = True,
    with_cost: bool = True,
    only: list[str] | None = None,
    jobs: int | None = None,
    runtime: dict[str, Any] | None = None,
) -> str:
    """Train (unless ``train`` is False), evaluate and report a grid; returns the Markdown table.

    ``only``: train just these grid rows (keys of the grid's methods) and the runs they need;
    ``jobs``: training runs at a time, instead of the grid's ``jobs``; ``runtime``: how the runs
    trained here execute (:func:`runtime_overrides`). Every finished run is reported.
    """
    grid = load_grid(path)
    teacher, students = plan_runs(grid, runtime)
    if train:
        train_runs(select_runs(teacher, students, only) if only else [teacher, *students], grid.jobs if jobs is None else jobs)
    out = Path(grid.out)
    datasets = load_grid_datasets(grid, students[0].config)
    results = evaluate_runs(teacher, students, datasets, out, grid.targets, grid.device)
    if not results:
        raise MeddistillError("no finished runs to report yet")
    attach_costs(results, grid, out, measure=with_cost)
    unfinished = [run.label for run in [teacher, *students] if run.label not in results]
    results = add_replicate_means(results)
    markdown = write_table(results, out, grid, unfinished)
    absent = [label for label, result in results.items() if result["net"] is None and not result.get("summary")]
    if absent:  # a figure without those rows would replace one that has them
        print(f"figures left as they are: {len(absent)} row(s) have no run folder here", flush=True)
    else:
        write_figures(results, datasets, out)
    return markdown
