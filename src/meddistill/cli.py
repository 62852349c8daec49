"""Command-line interface: ``meddistill --help``."""

from __future__ import annotations

import csv
import functools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import MeddistillError

if TYPE_CHECKING:
    import numpy as np

    from .data import Preparation

app = typer.Typer(
    help="Distil heavy medical-imaging networks into light students that run fast on a CPU.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
evaluate_app = typer.Typer(help="Evaluate models with a benchmark protocol.", no_args_is_help=True)
app.add_typer(evaluate_app, name="evaluate")
console = Console()
err_console = Console(stderr=True)


def user_errors(command):
    """Report :class:`MeddistillError` or an :class:`OSError` (a file that cannot be read or written)
    as one line and exit with status 2."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except MeddistillError as err:
            err_console.print(f"[bold red]error:[/] {err}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except OSError as err:  # an output path that is a folder, a full disk, no permission
            where = f": {err.filename}" if err.filename else ""
            err_console.print(f"[bold red]error:[/] {err.strerror or err}{where}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            err_console.print("interrupted")
            raise typer.Exit(130) from None

    return wrapper


ConfigArg = Annotated[Path, typer.Argument(help="Experiment YAML config.")]
SetOpt = Annotated[
    Optional[list[str]], typer.Option("--set", help="Override a config value: --set train.epochs=5 (repeatable).")
]
ResumeOpt = Annotated[bool, typer.Option("--resume", help="Continue the run in the config's run folder.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
NativeScaleOpt = Annotated[
    bool,
    typer.Option(
        "--native-scale",
        help="Segment at the image's own resolution instead of rescaling its field of view to the "
        "diameter the model was trained at.",
    ),
]


ThresholdOpt = Annotated[float, typer.Option(min=0.0, max=1.0, help="Probability threshold for the mask.")]


def _input_preparation(meta: dict, native_scale: bool) -> Preparation:
    """How a segmenter's checkpoint wants photos prepared (a :class:`~meddistill.data.Preparation`)."""
    from .data import Preparation

    preparation = Preparation.from_meta(meta)
    return preparation.at_native_scale() if native_scale else preparation


def _run_training(config_path: Path, overrides: list[str] | None, resume: bool, progress: bool, distill: bool) -> None:
    from .config import load_config
    from .engine import train

    config = load_config(config_path, overrides)
    if distill and (config.teacher is None or config.method.name == "none"):
        raise MeddistillError("`distill` needs a 'teacher' section and a method other than 'none'; use `train`")
    if not distill and config.method.name != "none":
        raise MeddistillError(f"the config uses method '{config.method.name}': run it with `meddistill distill`")
    result = train(config, resume=resume, progress=progress)
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in result.best_metrics.items())
    console.print(f"best epoch {result.best_epoch}: {metrics or 'no validation set'}")
    console.print(f"checkpoint: {result.run_dir / 'best.safetensors'}")


@app.command()
@user_errors
def train(config: ConfigArg, set_: SetOpt = None, resume: ResumeOpt = False, progress: ProgressOpt = True) -> None:
    """Train a network on its own (teachers, scratch students). Runs under torchrun too."""
    _run_training(config, set_, resume, progress, distill=False)


@app.command()
@user_errors
def distill(config: ConfigArg, set_: SetOpt = None, resume: ResumeOpt = False, progress: ProgressOpt = True) -> None:
    """Distil a student from a trained teacher with the config's method."""
    _run_training(config, set_, resume, progress, distill=True)


@evaluate_app.command("segmentation")
@user_errors
def evaluate_segmentation(
    model: Annotated[list[str], typer.Option("--model", help="Shipped model name or checkpoint path (repeatable).")],
    dataset: Annotated[str, typer.Option(help="Layout: drive, chase, stare, hrf, chaos, lits, folder or auto.")] = "auto",
    root: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("."),
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics as JSON.")] = None,
    per_image: Annotated[Optional[Path], typer.Option(
        "--per-image", help="Write every image's own metrics as CSV, a row per model and image.")] = None,
    error_maps: Annotated[Optional[Path], typer.Option(
        "--error-maps", help="Write DIR/<model>/<image>_errors.png: found vessel green, false vessel red, "
        "missed vessel blue, on the photo.")] = None,
    threshold: ThresholdOpt = 0.5,
    native_scale: NativeScaleOpt = False,
    ensemble: Annotated[bool, typer.Option(
        "--ensemble", help="Also score the mean of the models' probability maps, as a row 'ensemble of N'.")] = False,
    images: Annotated[int, typer.Option(min=0, help="Score this many of the dataset's images, drawn at random with --seed (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Seed of the --images draw.")] = 0,
) -> None:
    """Vessel-segmentation metrics inside the field of view, pooled over all images."""
    from .data import VesselSample, load_dataset, random_subset, write_png
    from .inference import evaluate_samples
    from .metrics import segmentation_metrics
    from .models import ProbabilityEnsemble
    from .report import folder_name, overlay
    from .zoo import load_model

    if error_maps and len({folder_name(name) for name in model}) < len(model):
        raise MeddistillError("two --model values would share one error-map folder; give each model once, under a distinct name")
    samples = random_subset(load_dataset(dataset, root), images, seed)
    models = {}
    for name in model:
        net, meta = load_model(name, task="vessel-segmentation")
        models[name] = net, _input_preparation(meta, native_scale)
    if ensemble:
        preparations = {preparation for _, preparation in models.values()}
        if len(preparations) > 1:
            raise MeddistillError(f"--ensemble needs models that prepare photos alike; these differ: {sorted(map(str, preparations))}")
        models[f"ensemble of {len(models)}"] = ProbabilityEnsemble([net for net, _ in models.values()]), preparations.pop()
    results, rows = {}, []
    for name, (net, preparation) in models.items():

        def each_image(sample: VesselSample, prob: np.ndarray) -> None:
            if per_image:
                rows.append({"model": name, "image": sample.name, **segmentation_metrics(prob, sample.vessels, sample.fov, threshold)})
            if error_maps:
                truth = sample.vessels & sample.fov
                write_png(error_maps / folder_name(name) / f"{sample.name}_errors.png", overlay(sample.image, prob >= threshold, truth))

        results[name] = evaluate_samples(net, samples, "cpu", preparation, each_image, threshold=threshold)
    table = Table(title=f"{dataset} at {root} ({len(samples)} images)")
    table.add_column("model", overflow="fold")  # a cut checkpoint path is no use
    columns = list(next(iter(results.values())))
    for column in columns:
        table.add_column(column, justify="right")
    for name, metrics in results.items():
        table.add_row(name, *(f"{metrics[c]:.4f}" for c in columns))
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(
            {"dataset": dataset, "root": str(root), "images": len(samples), "threshold": threshold, "results": results}, indent=2))
    if per_image:
        per_image.parent.mkdir(parents=True, exist_ok=True)
        with per_image.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


@app.command()
@user_errors
def experiment(
    grid: Annotated[Path, typer.Argument(help="Grid YAML: teacher and student configs, students, methods, targets.")],
    train: Annotated[bool, typer.Option("--train/--no-train", help="Train missing runs first (partial ones resume).")] = True,
    cost: Annotated[bool, typer.Option("--cost/--no-cost", help="Measure params, GFLOPs and CPU latency (needs a quiet machine); --no-cost reports the last measurement kept beside the table.")] = True,
    status: Annotated[bool, typer.Option("--status", help="Only list each run and how far it has trained; train and evaluate nothing.")] = False,
    only: Annotated[Optional[list[str]], typer.Option(help="Train only this row of the grid (a key of its methods; repeatable) and the runs it needs first; every finished run is still reported. With --status: list only those runs.")] = None,
    jobs: Annotated[Optional[int], typer.Option(help="Training runs at a time (default: the grid's jobs).")] = None,
    set_: Annotated[Optional[list[str]], typer.Option("--set", help="How the runs trained here execute, KEY=VALUE (repeatable): train.threads, train.device, train.deterministic, train.amp or data.num_workers; e.g. train.amp=on for bfloat16 on a CPU with AMX.")] = None,
) -> None:
    """Cross-domain grid: train on a source dataset, test on targets, write the table and figures."""
    from .experiment import grid_status, run_grid, runtime_overrides

    runtime = runtime_overrides(set_ or [])
    if not status:
        console.print(run_grid(grid, train=train, with_cost=cost, only=only, jobs=jobs, runtime=runtime))
        return
    runs = grid_status(grid, only)
    reported = sum(state == "reported" for _, _, state, _ in runs)
    title = f"{grid}: {sum(state == 'done' for _, _, state, _ in runs)} of {len(runs)} runs done"
    table = Table(title=title + (f", {reported} more reported from earlier results" if reported else ""))
    for column in ("row", "run", "progress"):
        table.add_column(column, overflow="fold")  # a cut path is no use
    for label, source, _, progress in runs:
        table.add_row(label, source, progress)
    console.print(table)


@app.command()
@user_errors
def crossval(
    config: ConfigArg,
    set_: SetOpt = None,
    jobs: Annotated[int, typer.Option(min=1, help="Folds trained at a time.")] = 1,
    train: Annotated[bool, typer.Option("--train/--no-train", help="Train missing folds first (partial ones resume); --no-train scores the finished ones.")] = True,
    status: Annotated[bool, typer.Option("--status", help="Only list each fold and how far it has trained.")] = False,
    checkpoint: Annotated[str, typer.Option(help="Which checkpoint of each fold is scored: last (the fixed schedule's end) or best (picked on the very images it is scored on, so flattered).")] = "last",
    threshold: ThresholdOpt = 0.5,
    out: Annotated[Optional[Path], typer.Option(help="Report folder (default: <output>/<name>-crossval).")] = None,
) -> None:
    """k-fold cross-validation (data.folds): train the config once per fold, score each on the images it held out, pool them."""
    from .crossval import fold_status, plan_folds, run_crossval

    if not status:
        console.print(run_crossval(config, set_, train=train, jobs=jobs, checkpoint=checkpoint, threshold=threshold, out=out), soft_wrap=True)
        return
    _, runs = plan_folds(config, set_)
    table = Table(title=f"{config}: {len(runs)} folds")
    for column in ("fold", "run", "progress"):
        table.add_column(column, overflow="fold")
    for row in fold_status(runs):
        table.add_row(*row)
    console.print(table)


RegistrationMethodOpt = Annotated[str, typer.Option(
    help="Keypoint method: sift, superpoint, superretina, superretina-lk, superretina-swin or retina-student.")]
WeightsOpt = Annotated[Optional[str], typer.Option(help="Checkpoint for a learned method (default: its shipped weights).")]
MatcherOpt = Annotated[Optional[str], typer.Option(help="Matcher: mnn or glue (default: the method's best).")]
MatcherWeightsOpt = Annotated[Optional[str], typer.Option(
    help="Checkpoint of the glue matcher (default: the shipped glue-METHOD, trained on that method's keypoints).")]
TransformOpt = Annotated[str, typer.Option(
    "--model", help="Transform: affine (3-point RANSAC + refit), homography (MAGSAC++) or quadratic (the homography "
    "bent to the curved retina on its inliers).")]


def _keypoint_method(method: str, weights: str | None, matcher: str | None, matcher_weights: str | None):
    """The keypoint method and matcher a user named, built once (weights for learned ones only)."""
    from .registration import KEYPOINT_METHODS, build_matcher

    if weights is not None and method == "sift":
        raise MeddistillError("--weights is for learned methods; sift has none")
    detector = KEYPOINT_METHODS.get(method)(**({"weights": weights} if weights else {}))
    # with --weights the detector is the user's own, and no shipped matcher learnt its features
    return detector, build_matcher(matcher or detector.default_matcher, None if weights else method, matcher_weights)


@evaluate_app.command("fire")
@user_errors
def evaluate_fire(
    root: Annotated[Path, typer.Argument(help="FIRE-layout folder: Images/, Ground Truth/.")],
    method: RegistrationMethodOpt = "sift",
    matcher: MatcherOpt = None,
    model: TransformOpt = "affine",
    weights: WeightsOpt = None,
    matcher_weights: MatcherWeightsOpt = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write per-pair results and the summary as JSON.")] = None,
) -> None:
    """The FIRE protocol: failed / inaccurate / acceptable, AUC per category (S, P, A) and mAUC."""
    from rich.progress import track

    from .data import read_rgb
    from .registration import load_fire, register_images, score_pair, summarize

    pairs = load_fire(root)
    detector, pair_matcher = _keypoint_method(method, weights, matcher, matcher_weights)
    outcomes, seconds = [], []
    for pair in track(pairs, description=f"{method} on {len(pairs)} pairs", console=console):
        result = register_images(read_rgb(pair.fixed), read_rgb(pair.moving), detector, pair_matcher, model)
        outcomes.append(score_pair(pair, result.mapping))
        seconds.append(result.seconds)
    summary = summarize(outcomes) | {"seconds_per_pair": float(sum(seconds) / len(seconds))}
    table = Table(title=f"FIRE protocol: {method} ({model}) on {root}")
    columns = ("failed", "inaccurate", "acceptable", "auc_S", "auc_P", "auc_A", "mauc", "seconds_per_pair")
    for column in columns:
        table.add_column(column, justify="right")
    table.add_row(*(f"{summary[c]:.3f}" for c in columns))
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"method": method, "model": model, "summary": summary,
                                        "pairs": [vars(o) for o in outcomes]}, indent=2, default=float))


@app.command()
@user_errors
def register(
    images: Annotated[Optional[list[Path]], typer.Argument(help="FIXED MOVING: two photos of one eye.")] = None,
    method: RegistrationMethodOpt = "sift",
    matcher: MatcherOpt = None,
    model: TransformOpt = "affine",
    weights: WeightsOpt = None,
    matcher_weights: MatcherWeightsOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Warped moving image (PNG), on the fixed image's grid.")] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Result JSON: status, transform, matches, inliers, seconds.")] = None,
    figures: Annotated[Optional[Path], typer.Option(help="Folder for match-line, checkerboard and overlay figures.")] = None,
    pairs: Annotated[Optional[Path], typer.Option(help="Batch mode: CSV with columns fixed,moving[,name].")] = None,
    out_dir: Annotated[Path, typer.Option(help="Batch mode: folder for one JSON (and warped image) per pair.")] = Path("registrations"),
    fov_margin: Annotated[float, typer.Option(
        help="Keypoints nearer than this to the field of view's edge are dropped, px at 768²; negative keeps them.")] = 8.0,
) -> None:
    """Register MOVING onto FIXED; the transform maps moving pixels to fixed pixels (original sizes).

    With --model quadratic the JSON adds `quadratic`: x_fixed, y_fixed = its two rows times
    (1, x, y, x², xy, y²) of the moving pixel (null where the inliers do not support a bend).

    Exit status 1 when a single registration fails (its JSON says why)."""
    from .data import read_rgb, write_png
    from .registration import register_images, warp_to_fixed
    from .registration.figures import registration_figures

    detector, pair_matcher = _keypoint_method(method, weights, matcher, matcher_weights)

    def run_one(fixed_path: Path, moving_path: Path, warped_path: Path | None, json_path: Path | None, figure_dir: Path | None, stem: str):
        fixed, moving = read_rgb(fixed_path), read_rgb(moving_path)
        result = register_images(fixed, moving, detector, pair_matcher, model, fov_margin=None if fov_margin < 0 else fov_margin)
        if warped_path is not None and result.mapping is not None:
            write_png(warped_path, warp_to_fixed(moving, result.mapping, fixed.shape))
        if json_path is not None:
            json_path.parent.mkdir(parents=True, exist_ok=True)
            json_path.write_text(json.dumps({"fixed": str(fixed_path), "moving": str(moving_path), "method": method,
                                             "model": model, **result.to_json()}, indent=2))
        if figure_dir is not None:
            for name, figure in registration_figures(fixed, moving, result).items():
                write_png(figure_dir / f"{stem}_{name}.png", figure)
        return result

    if pairs is not None:
        import csv

        from rich.progress import track

        if images:
            raise MeddistillError("give either FIXED MOVING or --pairs, not both")
        try:
            rows = list(csv.DictReader(pairs.open()))
        except OSError as err:
            raise MeddistillError(f"cannot read {pairs}: {err.strerror}") from None
        if not rows or not {"fixed", "moving"} <= set(rows[0]):
            raise MeddistillError(f"{pairs} needs a header with columns fixed,moving (and optionally name)")
        table = Table(title=f"{method} ({model}) on {len(rows)} pairs")
        for column in ("pair", "status", "matches", "inliers", "seconds"):
            table.add_column(column)
        for k, row in enumerate(track(rows, description="registering", console=console)):
            name = row.get("name") or f"pair{k:03d}"
            result = run_one(Path(row["fixed"]), Path(row["moving"]), out_dir / f"{name}_warped.png",
                             out_dir / f"{name}.json", figures, name)
            table.add_row(name, result.status, str(result.matches), str(result.inliers), f"{result.seconds:.2f}")
        console.print(table)
        return
    if not images or len(images) != 2:
        raise MeddistillError("give two images, FIXED MOVING (or --pairs CSV for batch mode)")
    result = run_one(images[0], images[1], out, json_out, figures, images[1].stem)
    verdict = "ok" if result.status == "ok" else f"failed: {result.reason}"
    console.print(f"{verdict}: {result.inliers} of {result.matches} matches agree, {result.seconds:.2f} s")
    if result.status != "ok":
        raise typer.Exit(1)


@app.command("fire-benchmark")
@user_errors
def fire_benchmark(
    images: Annotated[list[Path], typer.Argument(help="Fundus photos (or folders of them) to build pairs from.")],
    out: Annotated[Path, typer.Option(help="Output folder in the FIRE layout.")] = Path("fire_synthetic"),
    seed: Annotated[int, typer.Option(help="Seed of the synthetic transforms.")] = 0,
    size: Annotated[
        int, typer.Option(help="Side of the square frame each photo is put in, in px: FIRE's 2912 makes errors "
                          "as strict as FIRE's; 0 keeps each photo's own size.")
    ] = 2912,
    repeats: Annotated[int, typer.Option(help="Pairs per photo and category, each with its own transforms.")] = 1,
    fixed_aperture: Annotated[
        bool, typer.Option(help="Show each query through the photo's own field of view, as a camera whose "
                           "aperture stays put between visits does (as in FIRE).")
    ] = False,
) -> None:
    """Write a FIRE-layout benchmark (S, P and A pairs per photo, known transforms) for `evaluate fire`."""
    from .data import read_rgb
    from .registration.synthetic import write_fire_benchmark

    photos = {path.stem: read_rgb(path) for path in _expand_image_paths(images)}
    names = write_fire_benchmark(photos, out, seed, size=size or None, repeats=repeats, fixed_aperture=fixed_aperture)
    console.print(f"{len(names)} pairs written to {out}")


@evaluate_app.command("fsd")
@user_errors
def evaluate_fsd(
    run: Annotated[Path, typer.Argument(help="Folder of a finished GKD run (holds its alignment networks).")],
    dataset: Annotated[str, typer.Option(help="Layout: drive, chase, stare, hrf, chaos, lits, folder or auto.")] = "auto",
    root: Annotated[Path, typer.Option(help="Dataset folder.")] = Path("."),
    model: Annotated[
        Optional[list[str]], typer.Option("--model", help="Another student checkpoint to score with the run's SAN (repeatable).")
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write distances as JSON.")] = None,
    native_scale: NativeScaleOpt = False,
) -> None:
    """Fréchet Semantic Distance of the teacher, the starting student and the distilled student."""
    from .data import load_dataset
    from .fsd import frechet_semantic_distance, load_gkd_alignment
    from .zoo import load_model

    gkd, patch_size = load_gkd_alignment(run)
    samples = load_dataset(dataset, root)
    distilled, meta = load_model(run / "best")
    preparation = _input_preparation(meta, native_scale)
    students = {"student (start)": gkd.student, "student (distilled)": distilled}
    students.update({name: load_model(name, expect=meta["model"])[0] for name in model or []})
    scored = {"teacher": (gkd.teacher, gkd.teacher_alignment, -1)}
    scored.update({name: (net, gkd.student_alignment, gkd.student_level) for name, net in students.items()})
    results = {
        name: frechet_semantic_distance(net, header, gkd.autoencoder, samples, patch_size, preparation, level=level)
        for name, (net, header, level) in scored.items()
    }
    table = Table(title=f"FSD on {dataset} at {root} ({len(samples)} images), lower is better")
    table.add_column("network")
    table.add_column("FSD", justify="right")
    for name, value in results.items():
        table.add_row(name, f"{value:.2f}")
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps({"run": str(run), "dataset": dataset, "root": str(root), "fsd": results}, indent=2))


@app.command()
@user_errors
def models() -> None:
    """List the weights shipped with the package."""
    from .zoo import shipped_models

    shipped = shipped_models()
    table = Table(title="shipped models (use with --model NAME)")
    # The name is what users copy: never truncate or wrap it.
    table.add_column("name", no_wrap=True, min_width=max((len(n) for n in shipped), default=4))
    for column in ("architecture", "method", "trained on", "validation"):
        table.add_column(column)
    for name, meta in shipped.items():
        data = meta.get("config", {}).get("data", {})
        metrics = meta.get("metrics", {})
        # a keypoint network's validation at the detection threshold it ships with, not training's
        threshold = meta.get("detection_threshold")
        metrics = meta.get("detection_threshold_validation", {}).get(str(threshold), metrics)
        summary = ", ".join(f"{k} {metrics[k]:.3f}" for k in ("f1", "sensitivity", "auc", "mauc") if k in metrics)
        summary += f" (threshold {threshold})" if threshold is not None else ""
        table.add_row(name, meta["model"], meta.get("method", "?"), data.get("dataset", "?"), summary)
    console.print(table if shipped else "no shipped models")


@app.command()
@user_errors
def segment(
    images: Annotated[list[Path], typer.Argument(help="RGB fundus photos (PNG, JPG, TIFF, GIF, PPM) or folders of them.")],
    model: Annotated[str, typer.Option(help="Shipped model name or checkpoint path.")] = "drive-student",
    out: Annotated[Path, typer.Option(help="Output folder.")] = Path("segmentations"),
    threshold: ThresholdOpt = 0.5,
    native_scale: NativeScaleOpt = False,
) -> None:
    """Segment vessels: writes <stem>_mask.png, <stem>_prob.png and <stem>_overlay.png per image."""
    from .data import read_rgb
    from .inference import segment_to_files
    from .zoo import load_model

    paths = _expand_image_paths(images)
    stems = [path.stem for path in paths]
    if len(set(stems)) != len(stems):
        raise MeddistillError("two input images share a file name stem; their outputs would overwrite each other")
    # Every image is read once up front, so a bad file fails before any work is done, and
    # again when its turn comes: one image in memory at a time, however many are given.
    for path in paths:
        read_rgb(path)
    net, meta = load_model(model, task="vessel-segmentation")
    preparation = _input_preparation(meta, native_scale)
    for path in paths:
        written = segment_to_files(net, read_rgb(path), path.stem, out, threshold=threshold, preparation=preparation)
        console.print(f"{path} → {written['mask']}")


def _expand_image_paths(paths: list[Path]) -> list[Path]:
    """Files as given; a folder stands for the images directly inside it."""
    from .data import IMAGE_SUFFIXES

    expanded = []
    for path in paths:
        if path.is_dir():
            suffixes = IMAGE_SUFFIXES + tuple(f"{s}.gz" for s in IMAGE_SUFFIXES)
            found = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
            if not found:
                raise MeddistillError(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES[:6])}, ...)")
            expanded.extend(found)
        else:
            expanded.append(path)
    return expanded


@app.command()
@user_errors
def bench(
    model: Annotated[list[str], typer.Option("--model", help="Shipped model name or checkpoint path (repeatable).")],
    size: Annotated[int, typer.Option(min=16, help="Square input size in pixels.")] = 512,
    threads: Annotated[int, typer.Option(min=1, help="CPU threads (fixed for the measurement).")] = 1,
    repeats: Annotated[int, typer.Option(min=1, help="Timed forward passes (median reported).")] = 20,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write results as JSON.")] = None,
) -> None:
    """Parameters, GFLOPs, median CPU latency and peak memory for one RGB image."""
    from dataclasses import asdict

    from .cost import measure_cost
    from .zoo import load_model

    nets = {name: load_model(name, task="vessel-segmentation")[0] for name in model}
    table = Table(title=f"CPU cost, 1×3×{size}×{size}, {threads} thread(s)")
    for column in ("model", "params (M)", "GFLOPs", "median ms", "IQR ms", "peak MiB"):
        table.add_column(column, justify="right")
    results = {}
    for name, net in nets.items():
        cost = measure_cost(net, (1, 3, size, size), threads=threads, repeats=repeats)
        results[name] = asdict(cost)
        q25, q75 = cost.latency_ms_iqr
        table.add_row(
            name, f"{cost.params / 1e6:.3f}", f"{cost.gflops:.2f}", f"{cost.latency_ms:.1f}",
            f"{q25:.1f}–{q75:.1f}", f"{cost.peak_memory_mb:.0f}",
        )
    console.print(table)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(results, indent=2))


@app.command()
@user_errors
def demo(
    out: Annotated[Path, typer.Option(help="Report folder.")] = Path("demo_report"),
    quick: Annotated[bool, typer.Option(help="Tiny run for smoke tests (seconds, not minutes).")] = False,
) -> None:
    """Phantom demo: teacher, scratch student and distilled student, one table and a report."""
    from .demo import run_demo

    run_demo(out, quick=quick, console=console)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
