import json
from pathlib import Path

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sfm_core.ba_problems import synthetic_reconstruction as ring_reconstruction
from sfm_core.evaluation import (camera_center_error, evaluate_poses, pose_auc, relative_pose_errors,
                                 track_errors_under_truth)
from storage.colmap_model import evaluate_model_dirs, poses_by_name, read_model

KITCHEN = Path(__file__).resolve().parents[2] / "shared" / "data" / "kitchen" / "reference"


def random_poses(n: int, seed: int = 0) -> dict:
    """n world-to-camera poses with centres spread over a few units."""
    rng = np.random.default_rng(seed)
    poses = {}
    for i in range(n):
        R = Rotation.random(random_state=rng).as_matrix()
        center = rng.uniform(-3, 3, size=3)
        poses[f"{i:02d}.png"] = (R, -R @ center)
    return poses


def rotate_camera(pose, degrees: float, axis=(0.0, 0.0, 1.0)):
    """Turn a camera about its own centre: R' = Q R, t' = Q t."""
    Q = Rotation.from_rotvec(np.radians(degrees) * np.asarray(axis)).as_matrix()
    R, t = pose
    return Q @ R, Q @ t


def pose_at(center, R=np.eye(3)):
    return R, -R @ np.asarray(center, dtype=float)


def test_identical_poses_are_perfect():
    truth = random_poses(6)
    result = evaluate_poses(truth, truth)
    assert result["registered"] == result["reference_images"] == 6
    for T in (3, 5, 10, 30):
        assert result[f"auc@{T}"] == 1.0
    assert result["median_center_error"] == pytest.approx(0, abs=1e-9)
    assert result["median_center_error_rel"] == pytest.approx(0, abs=1e-9)


def test_similarity_transform_of_the_world_changes_nothing():
    truth = random_poses(8, seed=1)
    # x_world' = s Q x_world + d  =>  R' = R Q^T, t' = s t - R' d.
    s, Q, d = 2.7, Rotation.random(random_state=5).as_matrix(), np.array([4.0, -1.0, 7.5])
    predicted = {name: (R @ Q.T, s * t - R @ Q.T @ d) for name, (R, t) in truth.items()}
    rotation, translation = relative_pose_errors(predicted, truth)
    assert np.max(rotation) < 1e-6 and np.max(translation) < 1e-6
    result = evaluate_poses(predicted, truth)
    for T in (3, 5, 10, 30):
        assert result[f"auc@{T}"] == 1.0
    assert result["median_center_error_rel"] == pytest.approx(0, abs=1e-6)


def test_one_camera_rotated_by_4_5_degrees():
    truth = {name: pose_at(c) for name, c in zip(["a.png", "b.png", "c.png"], [[0, 0, 0], [1, 0, 0], [0, 1, 0]])}
    predicted = dict(truth, **{"a.png": rotate_camera(truth["a.png"], 4.5)})
    rotation, translation = relative_pose_errors(predicted, truth)
    # Pairs (a,b), (a,c), (b,c); turning camera a (the first of its pairs) leaves
    # the relative translations untouched.
    np.testing.assert_allclose(rotation, [4.5, 4.5, 0], atol=1e-9)
    np.testing.assert_allclose(translation, [0, 0, 0], atol=1e-9)
    # Per-degree bins: errors [4.5, 4.5, 0] are below k degrees for k = 1..4 in 1 of 3
    # pairs and for k >= 5 in all 3; AUC@T is the mean of those fractions over k = 1..T.
    auc = pose_auc(np.maximum(rotation, translation))
    assert auc[3] == pytest.approx(1 / 3)
    assert auc[5] == pytest.approx((4 * (1 / 3) + 1) / 5)
    assert auc[10] == pytest.approx((4 * (1 / 3) + 6) / 10)
    assert auc[30] == pytest.approx((4 * (1 / 3) + 26) / 30)
    # The centres did not move. (Three centres on a plane through the origin:
    # COLMAP's Sim3 estimator alone would refuse them.)
    assert camera_center_error(predicted, truth)["median_center_error"] == pytest.approx(0, abs=1e-9)


def test_translation_direction_ignores_sign_as_vggsfm_and_is_zero_safe():
    truth = {"a.png": pose_at([0, 0, 0]), "b.png": pose_at([1, 0, 0])}
    flipped = {"a.png": pose_at([0, 0, 0]), "b.png": pose_at([-1, 0, 0])}
    collapsed = {"a.png": pose_at([0, 0, 0]), "b.png": pose_at([0, 0, 0])}
    assert relative_pose_errors(flipped, truth)[1] == pytest.approx([0.0])
    tilted = {"a.png": pose_at([0, 0, 0]), "b.png": pose_at([-1, 0.1, 0])}
    assert relative_pose_errors(tilted, truth)[1] == pytest.approx([np.degrees(np.arctan(0.1))])
    assert relative_pose_errors(collapsed, truth)[1] == pytest.approx([90.0])
    assert relative_pose_errors(collapsed, collapsed)[1] == pytest.approx([0.0])


def test_missing_image_makes_its_pairs_failures():
    truth = random_poses(4, seed=2)
    predicted = {name: pose for name, pose in truth.items() if name != "03.png"}
    rotation, translation = relative_pose_errors(predicted, truth)
    assert rotation.shape == translation.shape == (6,)
    # Sorted pairs: (0,1) (0,2) (0,3) (1,2) (1,3) (2,3).
    failed = np.array([False, False, True, False, True, True])
    assert np.all(np.isinf(rotation[failed])) and np.all(np.isinf(translation[failed]))
    assert np.all(np.isfinite(rotation[~failed])) and np.all(np.isfinite(translation[~failed]))
    result = evaluate_poses(predicted, truth)
    assert result["registered"] == 3 and result["reference_images"] == 4
    for T in (3, 5, 10, 30):
        assert result[f"auc@{T}"] == 0.5
    assert result["median_center_error"] == pytest.approx(0, abs=1e-9)


def test_pose_auc_never_counts_failures():
    assert pose_auc([np.inf, np.inf], thresholds=(30,)) == {30: 0.0}
    assert pose_auc([0.0, np.inf, 15.0], thresholds=(30,))[30] == pytest.approx((1 + 0 + 0.5) / 3)


def test_center_error_ignores_a_displaced_camera_and_measures_it():
    truth = random_poses(6, seed=3)
    R, t = truth["02.png"]
    displacement = np.array([1.5, 0.0, 0.0])
    predicted = dict(truth, **{"02.png": pose_at(-R.T @ t + displacement, R)})
    result = camera_center_error(predicted, truth)
    assert result["median_center_error"] == pytest.approx(0, abs=1e-6)
    assert result["errors"]["02.png"] == pytest.approx(1.5, abs=1e-6)
    assert result["errors"]["00.png"] == pytest.approx(0, abs=1e-6)


def test_center_error_needs_three_common_images():
    truth = random_poses(4, seed=4)
    predicted = {name: truth[name] for name in ["00.png", "01.png"]}
    result = evaluate_poses(predicted, truth)
    assert result["median_center_error"] is None and result["median_center_error_rel"] is None


def test_evaluate_poses_keys_and_json():
    truth = random_poses(5, seed=6)
    predicted = dict(truth, **{"00.png": rotate_camera(truth["00.png"], 4.0, axis=(1, 0, 0))})
    result = evaluate_poses(predicted, truth)
    assert set(result) == {
        "registered", "reference_images", "auc@3", "auc@5", "auc@10", "auc@30",
        "median_center_error", "median_center_error_rel",
    }
    assert json.loads(json.dumps(result)) == result
    assert all(type(v) in (int, float) for v in result.values())
    assert result["auc@3"] < result["auc@5"] < result["auc@10"] < result["auc@30"] < 1


@pytest.fixture(scope="module")
def synthetic_reconstruction():
    options = pycolmap.SyntheticDatasetOptions(num_rigs=1, num_frames_per_rig=5, num_points3D=30)
    return pycolmap.synthesize_dataset(options)


def test_read_model_text_and_binary_give_the_same_poses(tmp_path, synthetic_reconstruction):
    (tmp_path / "text").mkdir()
    (tmp_path / "binary").mkdir()
    synthetic_reconstruction.write_text(str(tmp_path / "text"))
    synthetic_reconstruction.write_binary(str(tmp_path / "binary"))
    assert any(p.suffix == ".txt" for p in (tmp_path / "text").iterdir())
    assert any(p.suffix == ".bin" for p in (tmp_path / "binary").iterdir())
    expected = poses_by_name(synthetic_reconstruction)
    assert len(expected) == 5
    for model in ("text", "binary"):
        poses = poses_by_name(read_model(tmp_path / model))
        assert poses.keys() == expected.keys()
        for name, (R, t) in expected.items():
            np.testing.assert_allclose(poses[name][0], R, atol=1e-9)
            np.testing.assert_allclose(poses[name][1], t, atol=1e-9)
    result = evaluate_model_dirs(tmp_path / "text", tmp_path / "binary")
    assert result["registered"] == 5 and result["auc@3"] == 1.0


def test_read_model_without_model_names_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="no COLMAP model") as error:
        read_model(tmp_path)
    assert str(tmp_path) in str(error.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_model(tmp_path / "missing")


@pytest.mark.skipif(not KITCHEN.is_dir(), reason="shared data not available")
def test_kitchen_reference_against_itself():
    result = evaluate_model_dirs(KITCHEN, KITCHEN)
    assert result["registered"] == result["reference_images"] == 25
    assert result["auc@3"] == result["auc@30"] == 1.0


def tracks_of(rec: pycolmap.Reconstruction) -> tuple[np.ndarray, np.ndarray, list, list]:
    """xy (F, N, 2) and visibility (F, N) of rec's points as tracks, with its cameras and poses per frame."""
    image_ids, point_ids = sorted(rec.images), sorted(rec.points3D)
    xy = np.full((len(image_ids), len(point_ids), 2), np.nan)
    for n, point_id in enumerate(point_ids):
        for element in rec.points3D[point_id].track.elements:
            xy[image_ids.index(element.image_id), n] = rec.image(element.image_id).points2D[element.point2D_idx].xy
    cameras = [rec.camera(rec.image(i).camera_id) for i in image_ids]
    poses = [(rec.image(i).cam_from_world().rotation.matrix(), rec.image(i).cam_from_world().translation)
             for i in image_ids]
    return xy, ~np.isnan(xy[..., 0]), cameras, poses


def test_track_errors_under_truth_measure_the_observations_noise():
    # Radial cameras (k 0.01): the rays are undistorted before the triangulation.
    exact = tracks_of(ring_reconstruction(8, 400, pixel_noise=0.0, outlier_fraction=0.0))
    assert np.abs(track_errors_under_truth(*exact)).max() < 1e-6
    xy, visibility, cameras, poses = tracks_of(ring_reconstruction(8, 400, pixel_noise=1.0, outlier_fraction=0.0))
    noisy = track_errors_under_truth(xy, visibility, cameras, poses)
    assert len(noisy) == visibility.sum()
    # 1 px Gaussian noise per axis, partly absorbed by each track's own triangulation.
    assert 0.5 < np.median(noisy) < 1.2
    # Frames without truth are left out; their observations are not counted.
    cameras[0] = None
    assert len(track_errors_under_truth(xy, visibility, cameras, poses)) < visibility.sum()
