"""Registration: FIRE protocol by hand, robust estimation, SIFT pipeline, synthetic benchmark, CLI."""

import json

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from typer.testing import CliRunner

from meddistill.cli import app
from meddistill.data import compute_fov, make_fundus_phantom
from meddistill.errors import MeddistillError
from meddistill.registration import (
    Features,
    FirePair,
    build_matcher,
    category_auc,
    estimate_transform,
    fit_quadratic,
    fov_interior,
    load_fire,
    map_points,
    match_guided,
    match_mutual_nearest,
    plausible,
    register_images,
    quadratic_terms,
    score_pair,
    summarize,
    unmap_points,
    warp_to_fixed,
)
from meddistill.registration.synthetic import fire_frame, synthetic_pair, write_fire_benchmark

runner = CliRunner()


@pytest.fixture(scope="module")
def photo():
    return make_fundus_phantom(384, seed=11).image


def _pair(offset):
    points = np.array([[10.0, 10.0], [100.0, 50.0], [40.0, 80.0]])
    return FirePair("S01", None, None, points + offset, points)


def test_category_auc_by_hand():
    # fraction below t: 1/3 for t = 1..3, 2/3 for t = 4..25
    assert category_auc([0.5, 3.0, 30.0]) == pytest.approx((3 * (1 / 3) + 22 * (2 / 3)) / 25)
    assert category_auc([]) != category_auc([])  # nan: no pairs of that category


def test_score_pair_verdicts_and_summary():
    shifted = score_pair(_pair(np.array([3.0, 4.0])), np.eye(3))
    assert shifted.status == "acceptable" and shifted.mean_error == pytest.approx(5.0)
    far = score_pair(_pair(np.array([0.0, 60.0])), np.eye(3))
    assert far.status == "inaccurate"  # max distance > 50 px
    failed = score_pair(_pair(0.0), None)
    assert failed.status == "failed" and failed.mean_error == np.inf
    summary = summarize([shifted, far, failed])
    assert summary["failed"] == pytest.approx(1 / 3) and summary["acceptable"] == pytest.approx(1 / 3)
    assert summary["auc_S"] == pytest.approx(category_auc([5.0, 60.0, np.inf]))
    assert summary["mauc"] == pytest.approx(summary["auc_S"])  # only S pairs present


def test_load_fire_layout_excludes_p37(tmp_path):
    (tmp_path / "Images").mkdir()
    (tmp_path / "Ground Truth").mkdir()
    for name in ("S01", "P37"):
        for k in (1, 2):
            Image.new("RGB", (8, 8)).save(tmp_path / "Images" / f"{name}_{k}.jpg")
        (tmp_path / "Ground Truth" / f"control_points_{name}_1_2.txt").write_text("1 2 3 4\n5 6 7 8\n")
    (pair,) = load_fire(tmp_path)
    assert pair.name == "S01" and pair.category == "S"
    assert pair.fixed_points.tolist() == [[1, 2], [5, 6]] and pair.moving_points.tolist() == [[3, 4], [7, 8]]
    (tmp_path / "Images" / "S01_2.jpg").unlink()
    with pytest.raises(MeddistillError, match="missing Images/S01_1"):
        load_fire(tmp_path)
    with pytest.raises(MeddistillError, match="not a FIRE folder"):
        load_fire(tmp_path / "Images")


def test_estimate_transform_rejects_outliers():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 500, (40, 2))
    truth = np.array([[0.98, -0.17, 12.0], [0.17, 0.98, -7.0], [0, 0, 1]])
    target = source @ truth[:2, :2].T + truth[:2, 2]
    target[:8] += rng.uniform(40, 80, (8, 2))  # a fifth are false matches
    for model in ("affine", "homography"):
        estimate = estimate_transform(source, target, model)
        assert np.allclose(estimate.matrix, truth, atol=1e-3)
        assert not estimate.inliers[:8].any() and estimate.inliers[8:].all()
    assert estimate_transform(source[:2], target[:2]).matrix is None
    with pytest.raises(MeddistillError, match="unknown transform model"):
        estimate_transform(source, target, "rigid")


# x' = 5 + x + 0.001 x², y' = -3 + y + 0.002 xy: a shift with a mild bend, in pixels
BENT = np.array([[5.0, 1.0, 0.0, 0.001, 0.0, 0.0], [-3.0, 0.0, 1.0, 0.0, 0.002, 0.0]])


def test_quadratic_terms_and_mapping_by_hand():
    assert quadratic_terms(np.array([[2.0, 3.0]])).tolist() == [[1, 2, 3, 4, 6, 9]]
    assert map_points(BENT, np.array([[10.0, 20.0]]))[0].tolist() == pytest.approx([15.1, 17.4])
    assert map_points(np.diag([2.0, 2.0, 1.0]), np.array([[10.0, 20.0]])).tolist() == [[20.0, 40.0]]
    points = np.array([[10.0, 20.0], [300.0, 50.0], [0.0, 0.0]])
    assert np.allclose(unmap_points(BENT, map_points(BENT, points)), points, atol=1e-9)


def test_fit_quadratic_recovers_a_bend_and_drops_outliers():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 500, (60, 2))
    target = map_points(BENT, source)
    target[:6] += 6.0  # a tenth are off by more than the threshold, as a robust first fit leaves them
    coefficients, kept = fit_quadratic(source, target, threshold_px=3.0)
    assert np.allclose(coefficients, BENT, atol=1e-6)
    assert not kept[:6].any() and kept[6:].all()
    coefficients, _ = fit_quadratic(source[:19], target[:19], threshold_px=3.0)
    assert coefficients is None  # 20 points at least pin the twelve parameters


def test_warp_by_a_quadratic_lands_where_it_maps():
    moving = np.zeros((200, 240, 3), np.uint8)
    moving[100:104, 60:64] = 255  # a bright square at (61.5, 101.5)
    warped = warp_to_fixed(moving, BENT, (210, 260))
    rows, columns = np.nonzero(warped[..., 0] > 127)
    expected = map_points(BENT, np.array([[61.5, 101.5]]))[0]
    assert np.hypot(columns.mean() - expected[0], rows.mean() - expected[1]) < 0.5


def test_plausibility():
    assert plausible(np.eye(3))
    assert not plausible(np.diag([-1.0, 1.0, 1.0]))  # a reflection
    assert not plausible(np.diag([10.0, 10.0, 1.0]))  # ten times larger


def test_mutual_nearest_matching_by_hand():
    a = np.array([[0.0, 0.0], [10.0, 0.0], [50.0, 50.0]])
    b = np.array([[10.0, 1.0], [0.0, 1.0]])
    assert match_mutual_nearest(a, b, ratio=1.0).tolist() == [[0, 1], [1, 0]]
    assert match_mutual_nearest(a, b[:0]).shape == (0, 2)


def test_guided_matching_by_hand():
    # Three keypoints a side, 10 px apart; the moving ones are the fixed ones shifted by (+30, 0).
    fixed = Features(np.array([[0.0, 0.0], [10.0, 0.0], [20.0, 0.0]], np.float32),
                     np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.1]], np.float32))
    moving = Features(fixed.keypoints + np.float32([30, 0]), np.array([[1.0, 0.1], [0.0, 1.0], [1.0, 0.0]], np.float32))
    shift_back = np.array([[1.0, 0, -30], [0, 1, 0], [0, 0, 1]])
    # Ungated, descriptors pair 0 with 2 and 2 with 0; within 4 px of the transform only the
    # true partners are candidates, and each keeps its nearest descriptor.
    assert match_mutual_nearest(fixed.descriptors, moving.descriptors, ratio=1.0).tolist() == [[0, 2], [1, 1], [2, 0]]
    assert match_guided(fixed, moving, shift_back, radius=4).tolist() == [[0, 0], [1, 1], [2, 2]]
    assert match_guided(fixed, moving, np.eye(3), radius=4).shape == (0, 2)  # nothing within reach
    assert match_guided(fixed, Features(moving.keypoints[:0], moving.descriptors[:0]), shift_back).shape == (0, 2)


def test_features_inside_a_mask_by_hand():
    features = Features(np.array([[0.4, 0.0], [2.6, 1.2], [9.0, 9.0]], np.float32), np.eye(3, dtype=np.float32),
                        scores=np.array([0.1, 0.2, 0.3], np.float32), size=(4, 4))
    mask = np.zeros((4, 4), bool)
    mask[1, 3] = True  # (x 2.6, y 1.2) rounds to column 3, row 1; (9, 9) is clipped to the corner
    mask[3, 3] = True
    kept = features.inside(mask)
    assert kept.keypoints.tolist() == features.keypoints[1:].tolist()
    assert kept.descriptors.tolist() == np.eye(3)[1:].tolist() and kept.scores.tolist() == pytest.approx([0.2, 0.3])
    assert kept.size == (4, 4) and len(features.inside(np.zeros((4, 4), bool))) == 0


def test_fov_interior_is_the_disc_less_its_rim():
    photo = np.zeros((200, 200, 3), np.uint8)
    cv2.circle(photo, (100, 100), 80, (180, 90, 40), -1)
    inner = fov_interior(photo, size=100, margin=5)  # the disc is 40 px in radius at 100²
    assert inner.shape == (100, 100) and inner.dtype == bool
    assert inner[50, 50] and inner[50, 50 + 33] and not inner[50, 50 + 37] and not inner[0, 0]
    assert fov_interior(photo, size=100, margin=0).sum() > inner.sum()


def test_keypoints_on_the_aperture_edge_are_dropped(photo):
    # Between visits the eye moves and the camera's aperture stays put: the moving photo is
    # the shifted retina seen through the fixed photo's field of view. Keypoints on the
    # aperture's edge would match at the same pixel in both and vote for the identity.
    aperture = photo.max(axis=2) > 0
    moving = np.roll(photo, (0, 40), axis=(0, 1)) * aperture[..., None]
    depth = ndimage.distance_transform_edt(aperture)  # px from the aperture's edge

    def matched_depths(result):
        points = np.rint(np.vstack([result.fixed_points, result.moving_points])).astype(int).clip(0, 383)
        return depth[points[:, 1], points[:, 0]]

    result = register_images(photo, moving, "sift", size=384)
    assert result.status == "ok", result.reason
    assert np.allclose(result.transform[:2, 2], (-40, 0), atol=1.5)
    assert matched_depths(result).min() > 8  # the default margin, px at size 384 = the photo's
    assert matched_depths(register_images(photo, moving, "sift", size=384, fov_margin=None)).min() < 1


def test_guided_refinement_adds_inliers_and_can_be_skipped(photo):
    truth = np.vstack([cv2.getRotationMatrix2D((192, 192), 6, 1.04), [0, 0, 1]])
    moving = cv2.warpAffine(photo, truth[:2], (384, 384))
    plain = register_images(photo, moving, "sift", size=384, guided_radius=0)
    guided = register_images(photo, moving, "sift", size=384)
    assert plain.status == guided.status == "ok"
    assert guided.inliers > plain.inliers
    assert len(guided.fixed_points) == guided.matches == len(guided.inlier_mask)


def test_quadratic_model_follows_a_bent_retina(photo, monkeypatch):
    # moving pixel m shows fixed pixel bent(m): a bend no homography has (x' grows with y², y' with x²)
    bent = np.array([[4.0, 1.0, 0.0, 0.0, 0.0, 4e-5], [-2.0, 0.0, 1.0, 4e-5, 0.0, 0.0]])
    grid = np.stack(np.meshgrid(np.arange(384.0), np.arange(384.0)), -1).reshape(-1, 2)
    source = map_points(bent, grid).reshape(384, 384, 2).astype(np.float32)
    moving = cv2.remap(photo, source[..., 0], source[..., 1], cv2.INTER_LINEAR)
    points = np.array([[70.0, 192.0], [314.0, 192.0], [192.0, 70.0], [192.0, 314.0], [110.0, 110.0], [274.0, 274.0]])
    error = lambda result: np.abs(map_points(result.mapping, points) - map_points(bent, points)).max()  # noqa: E731
    flat = register_images(photo, moving, "sift", model="homography", size=384)
    curved = register_images(photo, moving, "sift", model="quadratic", size=384)
    assert flat.quadratic is None and curved.quadratic.shape == (2, 6)
    assert error(curved) < 0.5 < error(flat)
    assert np.array(curved.to_json()["quadratic"]).shape == (2, 6)
    assert np.allclose(curved.transform, flat.transform)  # the homography it starts from is reported too
    monkeypatch.setattr("meddistill.registration.pipeline.MAX_BEND", 1e-4)  # any bend is too much
    guarded = register_images(photo, moving, "sift", model="quadratic", size=384)
    assert guarded.status == "ok" and guarded.quadratic is None and np.array_equal(guarded.mapping, guarded.transform)


def _registration_error(photo, method, size, matcher=None):
    """Largest error (px) of ``method`` on ``photo`` and a rotated, scaled and shifted copy."""
    truth = np.vstack([cv2.getRotationMatrix2D((192, 192), 6, 1.04), [0, 0, 1]])
    truth[:2, 2] += (9, -6)
    moving = cv2.warpAffine(photo, truth[:2], (384, 384))
    result = register_images(photo, moving, method, matcher, size=size)
    assert result.status == "ok", result.reason
    points = np.array([[150.0, 150.0], [250.0, 200.0], [180.0, 260.0]])
    moved = points @ truth[:2, :2].T + truth[:2, 2]
    mapped = np.c_[moved, np.ones(3)] @ result.transform.T
    return np.abs(mapped[:, :2] / mapped[:, 2:] - points).max()


def test_sift_recovers_a_known_affine_and_refuses_a_blank(photo):
    assert _registration_error(photo, "sift", 384) < 1.5
    failed = register_images(photo, np.zeros_like(photo), "sift", size=384)
    assert failed.status == "failed" and failed.transform is None and failed.reason
    with pytest.raises(MeddistillError, match="must be 8-bit RGB"):
        register_images(photo, photo[..., 0])


@pytest.mark.parametrize("method", ["retina-student", "superpoint", "superretina", "superretina-lk", "superretina-swin"])
def test_shipped_keypoint_networks_recover_a_known_affine(photo, method):
    assert _registration_error(photo, method, 768) < 2.0  # px at 384², from keypoints found at 768²


def test_shipped_glue_matcher_recovers_a_known_affine(photo):
    glue = build_matcher("glue", "retina-student")  # the shipped glue-retina-student
    assert next(glue.network.parameters()).dtype == torch.float32  # stored as float16
    assert _registration_error(photo, "retina-student", 768, glue) < 2.0
    assert _registration_error(photo, "retina-student", 768, "glue") < 2.0  # by name, for the named method
    with pytest.raises(MeddistillError, match="no shipped glue matcher fits method 'superpoint'"):
        register_images(photo, photo, "superpoint", "glue")
    with pytest.raises(MeddistillError, match="is for the glue matcher"):
        build_matcher("mnn", weights="glue-retina-student")


def test_synthetic_fire_benchmark_scores_sift(photo, tmp_path):
    names = write_fire_benchmark({"eye": photo}, tmp_path, seed=1)
    assert names == ["S01", "P01", "A01"]
    pairs = load_fire(tmp_path)
    assert all(p.fixed_points.shape == (10, 2) for p in pairs)
    result = runner.invoke(app, ["evaluate", "fire", str(tmp_path), "--json", str(tmp_path / "fire.json")])
    assert result.exit_code == 0, result.output
    summary = json.loads((tmp_path / "fire.json").read_text())["summary"]
    assert summary["pairs"] == 3 and 0 <= summary["mauc"] <= 1


def test_synthetic_fire_benchmark_repeats_number_on(photo, tmp_path):
    once = write_fire_benchmark({"a": photo, "b": photo[:, ::-1].copy()}, tmp_path / "once", seed=3)
    twice = write_fire_benchmark({"a": photo, "b": photo[:, ::-1].copy()}, tmp_path / "twice", seed=3, repeats=2)
    assert twice == once + ["S03", "P03", "A03", "S04", "P04", "A04"]
    first = (tmp_path / "once" / "Ground Truth" / "control_points_P02_1_2.txt").read_text()
    assert (tmp_path / "twice" / "Ground Truth" / "control_points_P02_1_2.txt").read_text() == first
    assert (tmp_path / "twice" / "Ground Truth" / "control_points_P04_1_2.txt").read_text() != first
    with pytest.raises(MeddistillError, match="repeats"):
        write_fire_benchmark({"a": photo}, tmp_path, repeats=0)


def test_synthetic_pair_through_a_fixed_aperture():
    photo = make_fundus_phantom(192, seed=4).image
    aperture = compute_fov(photo)
    for fixed_aperture in (False, True):
        query, points = synthetic_pair(photo, "P", np.random.default_rng(0), fixed_aperture=fixed_aperture)
        outside = query.max(axis=2)[~aperture]
        assert (outside.max() == 0) == fixed_aperture  # P pairs shift the retina out of the aperture
        assert points.shape == (10, 4)


def test_fire_frame_pads_to_a_centred_square():
    photo = np.full((60, 100, 3), 200, np.uint8)
    framed = fire_frame(photo, 50)
    assert framed.shape == (50, 50, 3)
    assert framed[0, 25].max() == 0 and framed[25, 25].min() == 200  # black bands above and below
    assert np.array_equal(fire_frame(photo[:50, :50], 50), photo[:50, :50])


def test_register_cli_single_batch_and_failure(photo, tmp_path):
    fixed, moving = tmp_path / "fixed.png", tmp_path / "moving.png"
    Image.fromarray(photo).save(fixed)
    Image.fromarray(cv2.warpAffine(photo, cv2.getRotationMatrix2D((192, 192), 5, 1.0), (384, 384))).save(moving)
    result = runner.invoke(app, ["register", str(fixed), str(moving), "--out", str(tmp_path / "warped.png"),
                                 "--json", str(tmp_path / "r.json"), "--figures", str(tmp_path / "fig")])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["status"] == "ok" and np.array(report["transform"]).shape == (3, 3)
    assert {"matches", "inliers", "seconds"} <= set(report) and report["inliers"] >= 10
    assert sorted(p.name for p in (tmp_path / "fig").iterdir()) == [
        "moving_checkerboard.png", "moving_matches.png", "moving_overlay.png"]
    result = runner.invoke(app, ["register", str(fixed), str(moving), "--model", "quadratic", "--out", str(tmp_path / "bent.png"),
                                 "--json", str(tmp_path / "q.json")])
    assert result.exit_code == 0, result.output
    assert np.array(json.loads((tmp_path / "q.json").read_text())["quadratic"]).shape == (2, 6)
    assert np.abs(np.asarray(Image.open(tmp_path / "bent.png"), float) - np.asarray(Image.open(tmp_path / "warped.png"), float)).mean() < 2
    result = runner.invoke(app, ["register", str(fixed), str(moving), "--fov-margin", "-1", "--json", str(tmp_path / "k.json")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "k.json").read_text())["matches"] > report["matches"]  # the rim's keypoints kept
    blank = tmp_path / "blank.png"
    Image.fromarray(np.zeros_like(photo)).save(blank)
    result = runner.invoke(app, ["register", str(fixed), str(blank), "--json", str(tmp_path / "f.json")])
    assert result.exit_code == 1 and "failed:" in result.output
    assert json.loads((tmp_path / "f.json").read_text())["status"] == "failed"
    (tmp_path / "pairs.csv").write_text(f"fixed,moving,name\n{fixed},{moving},good\n{fixed},{blank},bad\n")
    result = runner.invoke(app, ["register", "--pairs", str(tmp_path / "pairs.csv"), "--out-dir", str(tmp_path / "batch")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "batch" / "bad.json").read_text())["status"] == "failed"
    assert (tmp_path / "batch" / "good_warped.png").is_file() and not (tmp_path / "batch" / "bad_warped.png").exists()
    result = runner.invoke(app, ["register", str(fixed)])
    assert result.exit_code == 2 and "give two images" in result.output
