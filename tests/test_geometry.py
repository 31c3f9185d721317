"""Geometry stages on synthetic data with known truth: triangulation, bundle adjustment,
joint pose initialisation and view-graph calibration."""
from dataclasses import dataclass

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sfm_core.bundle_adjustment import CeresBundleAdjuster, RefinementSettings, refine
from sfm_core.calibration import calibrate_focal_lengths, relative_poses
from sfm_core.cameras import DEFAULT_FOCAL_FACTOR, cameras_for_images, initial_camera
from sfm_core.evaluation import camera_center_error, relative_pose_errors
from sfm_core.features import SiftExtractor
from sfm_core import initialization
from sfm_core.initialization import initialize_poses, initialize_poses_best_of, pose_graph_components
from sfm_core.matching import match_mutual_nearest, normalise_descriptors
from sfm_core.model import new_reconstruction
from sfm_core.registration import extend_tracks, register_images
from sfm_core.synthetic import build_landmark, look_at, render_view
from sfm_core.tracks import build_tracks
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks
from sfm_core.verification import VerifiedPair, verification_options, verify_pair
from storage.colmap_model import poses_by_name
from storage.synthetic_io import load_package_textures

WIDTH, HEIGHT, FOCAL = 640, 480, 600.0


@dataclass
class Problem:
    """Cameras and points with exact projections; keypoints listed in a random order per frame."""

    camera: pycolmap.Camera
    poses: list[tuple[np.ndarray, np.ndarray]]  # cam_from_world (R, t)
    points: np.ndarray  # (N, 3)
    keypoints: list[np.ndarray]  # keypoints[f]: (N, 2), exact projections
    keypoint_index: np.ndarray  # (F, N): keypoint of point n in frame f

    @property
    def names(self) -> list[str]:
        return [f"img_{f:02d}.jpg" for f in range(len(self.poses))]

    def truth(self, frames=None) -> dict:
        frames = range(len(self.poses)) if frames is None else frames
        return {self.names[f]: self.poses[f] for f in frames}


def ring_problem(num_frames: int, num_points: int, seed: int, radius: float = 10.0) -> Problem:
    rng = np.random.default_rng(seed)
    camera = initial_camera(1, WIDTH, HEIGHT, FOCAL)
    points = rng.uniform(-2, 2, (num_points, 3))
    poses, projections = [], []
    for f in range(num_frames):
        while True:  # every point inside every image
            azimuth = 2 * np.pi * f / num_frames + rng.uniform(-0.2, 0.2)
            centre = np.array([radius * np.cos(azimuth), radius * np.sin(azimuth), rng.uniform(-3, 3)])
            R, t = look_at(centre, rng.normal(0, 0.5, 3))
            cam = points @ R.T + t
            xy = np.asarray(camera.img_from_cam(cam))
            if np.all(cam[:, 2] > 0) and np.all((xy > 1) & (xy < [WIDTH - 1, HEIGHT - 1])):
                break
        poses.append((R, t))
        projections.append(xy)
    keypoints, keypoint_index = [], np.zeros((num_frames, num_points), np.int32)
    for f, xy in enumerate(projections):
        order = rng.permutation(num_points)  # keypoint k of frame f is point order[k]
        keypoints.append(xy[order])
        keypoint_index[f, order] = np.arange(num_points)
    return Problem(camera, poses, points, keypoints, keypoint_index)


def set_pose(rec: pycolmap.Reconstruction, frame: int, R: np.ndarray, t: np.ndarray) -> None:
    image = rec.image(frame + 1)
    rec.frame(image.frame_id).set_cam_from_world(image.camera_id, pycolmap.Rigid3d(pycolmap.Rotation3d(R), t))
    if frame + 1 not in rec.reg_image_ids():
        rec.register_frame(image.frame_id)


def posed_reconstruction(problem: Problem, registered, camera=None, keypoints=None, poses=None) -> pycolmap.Reconstruction:
    num_frames = len(problem.poses)
    rec = new_reconstruction(problem.names, [camera or problem.camera], [0] * num_frames,
                             keypoints or problem.keypoints, list(range(num_frames)))
    for f in registered:
        set_pose(rec, f, *(poses or problem.poses)[f])
    return rec


def elements(rec: pycolmap.Reconstruction, point_id: int) -> set[tuple[int, int]]:
    return {(e.image_id, e.point2D_idx) for e in rec.point3D(point_id).track.elements}


def expected_elements(problem: Problem, point: int, frames) -> set[tuple[int, int]]:
    return {(f + 1, int(problem.keypoint_index[f, point])) for f in frames}


def relative_rotation(R1: np.ndarray, R2: np.ndarray) -> np.ndarray:
    return R2 @ R1.T


# ---------------------------------------------------------------- triangulation

def test_triangulation_of_exact_observations():
    problem = ring_problem(6, 60, seed=0)
    rec = posed_reconstruction(problem, range(6))
    assert rec.num_reg_images() == 6
    tracks = np.arange(60)
    created = triangulate_tracks(rec, problem.keypoint_index, tracks, TriangulationSettings())
    assert sorted(created) == list(tracks)
    for track, point_id in created.items():
        xyz = rec.point3D(point_id).xyz
        # Relative to the viewing distance (~10).
        assert np.linalg.norm(xyz - problem.points[track]) < 1e-6 * 10
        assert elements(rec, point_id) == expected_elements(problem, track, range(6))
    assert rec.num_points3D() == 60


def test_triangulation_only_of_requested_tracks():
    problem = ring_problem(4, 20, seed=1)
    rec = posed_reconstruction(problem, range(4))
    created = triangulate_tracks(rec, problem.keypoint_index, np.array([3, 11, 17]), TriangulationSettings())
    assert sorted(created) == [3, 11, 17] and rec.num_points3D() == 3


def test_outlier_observation_is_left_out_of_the_track():
    problem = ring_problem(6, 30, seed=2)
    keypoints = [k.copy() for k in problem.keypoints]
    track, bad_frame = 5, 2
    bad_keypoint = problem.keypoint_index[bad_frame, track]
    # 85 px at f = 600 is ~8 degrees, four times the 2 degree angular threshold. (A point
    # moved by a few per cent of its depth explains an outlier just past the threshold in
    # every view, so the outlier has to be clearly out.)
    keypoints[bad_frame][bad_keypoint] += [60.0, -60.0]
    rec = posed_reconstruction(problem, range(6), keypoints=keypoints)
    created = triangulate_tracks(rec, problem.keypoint_index, np.arange(30), TriangulationSettings())
    assert elements(rec, created[track]) == expected_elements(problem, track, [0, 1, 3, 4, 5])
    assert np.linalg.norm(rec.point3D(created[track]).xyz - problem.points[track]) < 1e-5
    assert not rec.image(bad_frame + 1).points2D[int(bad_keypoint)].has_point3D()
    # The other tracks keep every view.
    for other in (0, 29):
        assert elements(rec, created[other]) == expected_elements(problem, other, range(6))


def test_only_registered_images_count():
    problem = ring_problem(6, 10, seed=3)
    keypoint_index = problem.keypoint_index.copy()
    keypoint_index[:4, 0] = -1  # track 0: only frames 4, 5 (unregistered)
    keypoint_index[1:4, 1] = -1  # track 1: frame 0 and the unregistered 4, 5
    keypoint_index[3, 2] = -1  # track 2: frames 0, 1, 2 registered, 4, 5 not
    rec = posed_reconstruction(problem, range(4))
    assert sorted(rec.reg_image_ids()) == [1, 2, 3, 4]
    created = triangulate_tracks(rec, keypoint_index, np.arange(10), TriangulationSettings())
    assert 0 not in created and 1 not in created
    assert sorted(created) == list(range(2, 10))
    assert elements(rec, created[2]) == expected_elements(problem, 2, [0, 1, 2])
    for track in range(3, 10):
        assert elements(rec, created[track]) == expected_elements(problem, track, [0, 1, 2, 3])


def test_small_triangulation_angle_is_rejected():
    camera = initial_camera(1, WIDTH, HEIGHT, FOCAL)
    points = np.random.default_rng(4).uniform(-1, 1, (3, 3))
    # Frames 0 and 1: 5 cm apart at 10 m, a ~0.3 degree angle; frame 2: 5 m to the side.
    centres = [np.array([0.0, -10.0, 0.0]), np.array([0.05, -10.0, 0.0]), np.array([5.0, -10.0, 0.0])]
    poses = [look_at(c, c + [0.0, 10.0, 0.0]) for c in centres[:2]] + [look_at(centres[2], np.zeros(3))]
    keypoints = [np.asarray(camera.img_from_cam(points @ R.T + t)) for R, t in poses]
    problem = Problem(camera, poses, points, keypoints, np.tile(np.arange(3, dtype=np.int32), (3, 1)))
    keypoint_index = problem.keypoint_index.copy()
    keypoint_index[2, 0] = -1  # track 0: the close pair only
    keypoint_index[1, 1] = -1  # track 1: frames 0 and 2
    # track 2: all three frames

    rec = posed_reconstruction(problem, range(3))
    created = triangulate_tracks(rec, keypoint_index, np.arange(3), TriangulationSettings(min_triangulation_angle_deg=1.5))
    assert sorted(created) == [1, 2]
    for track in (1, 2):
        assert np.linalg.norm(rec.point3D(created[track]).xyz - points[track]) < 1e-5

    # The angle threshold is what rejected track 0.
    rec = posed_reconstruction(problem, range(3))
    created = triangulate_tracks(rec, keypoint_index, np.array([0]), TriangulationSettings(min_triangulation_angle_deg=0.1))
    assert list(created) == [0]


# ---------------------------------------------------------------- bundle adjustment

def perturbed_pose(rng, pose, degrees: float, metres: float):
    R, t = pose
    centre = -R.T @ t + rng.normal(0, metres, 3)
    R = Rotation.from_rotvec(np.radians(degrees) * Rotation.random(random_state=rng).as_rotvec()
                             / np.pi).as_matrix() @ R
    return R, -R @ centre


def test_refine_recovers_perturbed_problem_and_drops_outliers():
    rng = np.random.default_rng(5)
    problem = ring_problem(8, 150, seed=5)
    num_frames, num_points = problem.keypoint_index.shape
    keypoints = [k + rng.normal(0, 0.5, k.shape) for k in problem.keypoints]
    outliers = [(0, 3), (1, 40), (2, 77), (4, 100), (6, 120), (7, 149)]  # (frame, point)
    for f, n in outliers:
        angle = rng.uniform(0, 2 * np.pi)
        keypoints[f][problem.keypoint_index[f, n]] += 30.0 * np.array([np.cos(angle), np.sin(angle)])
    start_focal = 1.05 * FOCAL
    camera = initial_camera(1, WIDTH, HEIGHT, start_focal)
    start_poses = [perturbed_pose(rng, pose, 1.0, 0.2) for pose in problem.poses]
    rec = posed_reconstruction(problem, range(num_frames), camera=camera, keypoints=keypoints, poses=start_poses)
    point_of_track = {}
    for n in range(num_points):
        track = pycolmap.Track([pycolmap.TrackElement(f + 1, int(problem.keypoint_index[f, n])) for f in range(num_frames)])
        point_of_track[n] = rec.add_point3D(problem.points[n] + rng.normal(0, 0.05, 3), track)

    truth = problem.truth()
    rotation_before = relative_pose_errors(poses_by_name(rec), truth)[0]
    centre_before = camera_center_error(poses_by_name(rec), truth)["median_center_error_rel"]

    report = refine(rec, problem.keypoint_index, point_of_track, CeresBundleAdjuster(), RefinementSettings())

    assert report.frames_dropped == []
    # The points project within 0.45 of the half-diagonal: too near the centre to tell a
    # radial term from the focal length, so the camera is adjusted without one.
    assert report.cameras_without_distortion == [1] and rec.cameras[1].model.name == "SIMPLE_PINHOLE"
    assert rec.num_reg_images() == num_frames
    # 0.5 px Gaussian noise: a mean reprojection error of ~0.6 px when the outliers are gone.
    assert rec.compute_mean_reprojection_error() < 1.0
    for f, n in outliers:
        assert not rec.image(f + 1).points2D[int(problem.keypoint_index[f, n])].has_point3D(), (f, n)
    # Nearly all inlier observations stay (a 2 px filter on 0.5 px noise).
    assert rec.compute_num_observations() >= 0.97 * (num_frames * num_points - len(outliers))
    assert all(rec.exists_point3D(point_id) for point_id in point_of_track.values())
    assert len(point_of_track) >= 0.97 * num_points

    rotation_after = relative_pose_errors(poses_by_name(rec), truth)[0]
    centre_after = camera_center_error(poses_by_name(rec), truth)["median_center_error_rel"]
    # 0.5 px noise on 150 points 10 m away bounds the accuracy to about 0.1 degree (exact
    # keypoints give exact poses); the start was off by about a degree per camera.
    assert rotation_after.max() < 0.3 < rotation_before.max()
    assert rotation_after.mean() < rotation_before.mean() / 5
    assert centre_after < centre_before / 10
    focal = rec.cameras[1].focal_length
    assert abs(focal - FOCAL) < 0.01 * FOCAL < abs(start_focal - FOCAL)


def triangulated_without(problem: Problem, frame: int, wrong_pose=None):
    """All frames but `frame` posed exactly and all tracks triangulated; `frame` is left
    unposed, or registered with `wrong_pose`, before triangulation."""
    num_frames = len(problem.poses)
    rec = posed_reconstruction(problem, [f for f in range(num_frames) if f != frame])
    if wrong_pose is not None:
        set_pose(rec, frame, *wrong_pose)
    point_of_track = triangulate_tracks(rec, problem.keypoint_index, np.arange(problem.keypoint_index.shape[1]),
                                        TriangulationSettings())
    return rec, point_of_track


def assert_pose_close(rec, problem: Problem, frame: int, atol: float = 1e-6) -> None:
    R, t = poses_by_name(rec)[problem.names[frame]]
    np.testing.assert_allclose(R, problem.poses[frame][0], atol=atol)
    np.testing.assert_allclose(t, problem.poses[frame][1], atol=atol * 10)


def test_wrongly_posed_image_is_reposed_by_pnp():
    problem = ring_problem(8, 100, seed=9)
    R, t = problem.poses[7]
    turn = Rotation.from_rotvec(np.radians(30.0) * np.array([0.0, 1.0, 0.0])).as_matrix()
    rec, point_of_track = triangulated_without(problem, 7, wrong_pose=(turn @ R, turn @ t))
    # Triangulation's RANSAC leaves the views of the wrong pose out.
    assert rec.image(8).num_points3D == 0 and len(point_of_track) == 100

    changed = register_images(rec, problem.keypoint_index, point_of_track, list(range(8)))

    assert changed == [7]  # the good poses keep their support and stay
    assert 8 in rec.reg_image_ids()
    assert_pose_close(rec, problem, 7)
    assert extend_tracks(rec, problem.keypoint_index, point_of_track, changed) == 100
    assert rec.image(8).num_points3D == 100


def test_unposed_image_is_registered_by_pnp():
    problem = ring_problem(8, 100, seed=10)
    rec, point_of_track = triangulated_without(problem, 7)
    assert 8 not in rec.reg_image_ids() and not rec.image(8).has_pose

    changed = register_images(rec, problem.keypoint_index, point_of_track, [7])

    assert changed == [7]
    assert_pose_close(rec, problem, 7)
    assert 8 in rec.reg_image_ids()
    assert rec.num_reg_images() == 8


# ---------------------------------------------------------------- joint initialisation

def exact_pairs(problem: Problem, frames) -> list[VerifiedPair]:
    pairs = []
    for i in frames:
        for j in frames:
            if i >= j:
                continue
            (R1, t1), (R2, t2) = problem.poses[i], problem.poses[j]
            R = relative_rotation(R1, R2)
            t = t2 - R @ t1
            inliers = np.stack([problem.keypoint_index[i], problem.keypoint_index[j]], axis=1).astype(np.uint32)
            pairs.append(VerifiedPair(i, j, len(inliers), inliers, "CALIBRATED",
                                      np.asarray(pycolmap.Rotation3d(R).quat), t / np.linalg.norm(t)))
    return pairs


def test_initialize_poses_from_exact_relative_poses():
    problem = ring_problem(8, 100, seed=6)
    frames = list(range(8))
    pairs = exact_pairs(problem, frames)
    keypoint_index = build_tracks([len(k) for k in problem.keypoints], pairs)
    # Every point seen in every frame: one full track per point.
    assert keypoint_index.shape == (8, 100) and (keypoint_index >= 0).all()

    rec = new_reconstruction(problem.names, [problem.camera], [0] * 8, problem.keypoints, frames)
    assert initialize_poses(rec, pairs, keypoint_index)
    assert sorted(rec.reg_image_ids()) == [f + 1 for f in frames]

    predicted = poses_by_name(rec)
    rotation, translation = relative_pose_errors(predicted, problem.truth())
    assert rotation.max() < 0.5
    assert translation.max() < 1.0
    assert camera_center_error(predicted, problem.truth())["median_center_error_rel"] < 0.01


def test_initialize_poses_of_a_subset_ignores_other_frames():
    """As the flow does it: a reconstruction of some frames, pairs and tracks of all."""
    problem = ring_problem(8, 100, seed=7)
    pairs = exact_pairs(problem, range(8))
    # A wrong pair touching frame 7, which is not in the model, must not matter.
    pairs[-1] = pairs[-1].with_relative_pose(np.array([0.0, 0.0, 0.7071, 0.7071]), np.array([1.0, 0.0, 0.0]))
    assert pairs[-1].index2 == 7
    frames = [0, 1, 2, 3, 4, 5]
    rec = new_reconstruction(problem.names, [problem.camera], [0] * 8, problem.keypoints, frames)
    assert initialize_poses(rec, pairs, problem.keypoint_index)
    assert sorted(rec.reg_image_ids()) == [f + 1 for f in frames]
    rotation, _ = relative_pose_errors(poses_by_name(rec), problem.truth(frames))
    assert rotation.max() < 0.5


def test_the_best_of_several_starts_is_kept_as_initialised(monkeypatch):
    """Every start is scored by its first adjustment; the best-fitting one comes back posed,
    without points."""
    problem = ring_problem(8, 100, seed=6)
    frames = list(range(8))
    pairs = exact_pairs(problem, frames)

    def unposed():
        return new_reconstruction(problem.names, [problem.camera], [0] * 8, problem.keypoints, frames)

    rec = initialize_poses_best_of(unposed, pairs, problem.keypoint_index)
    assert sorted(rec.reg_image_ids()) == [f + 1 for f in frames] and rec.num_points3D() == 0
    rotation, translation = relative_pose_errors(poses_by_name(rec), problem.truth())
    assert rotation.max() < 0.5 and translation.max() < 1.0

    # Starts run in threads, so the fit is given per seed, not in call order.
    errors, started = {0: 0.9, 1: 0.4, 2: 0.7}, {}

    def scored(new_reconstruction, pairs, keypoint_index, seed):
        started[seed] = new_reconstruction()
        return started[seed], errors[seed]

    monkeypatch.setattr(initialization, "_scored_start", scored)
    assert initialize_poses_best_of(unposed, pairs, problem.keypoint_index, starts=3) is started[1]
    monkeypatch.undo()

    monkeypatch.setattr(initialization, "initialize_poses", lambda *args, **kwargs: False)
    assert initialize_poses_best_of(unposed, pairs, problem.keypoint_index) is None


def test_pose_graph_components():
    problem = ring_problem(10, 20, seed=8)
    pairs = exact_pairs(problem, [0, 1, 2]) + exact_pairs(problem, [3, 4, 5, 6]) + exact_pairs(problem, [8, 9])
    # Matches without a relative pose (a planar pair, say) do not join the groups.
    link = exact_pairs(problem, [2, 3])[0].with_relative_pose(None, None)
    pairs.append(link)
    # Frame 7 has no pair at all.
    assert pose_graph_components(10, pairs, min_size=3) == [[3, 4, 5, 6], [0, 1, 2]]
    assert pose_graph_components(10, pairs) == [[3, 4, 5, 6], [0, 1, 2], [8, 9]]
    assert pose_graph_components(10, [link]) == []
    # With a posed link the two groups become one.
    joined = pairs[:-1] + [exact_pairs(problem, [2, 3])[0]]
    assert pose_graph_components(10, joined, min_size=3) == [[0, 1, 2, 3, 4, 5, 6]]


# ---------------------------------------------------------------- view-graph calibration

CALIBRATION_VIEWS = 12
CALIBRATION_SIZE = (320, 240)
CALIBRATION_HFOV_DEG = 70.0


def oblique_views(seed: int):
    """Views from above, 12-20 m out and 15-30 m up, along a 90 degree arc, each aimed at
    a different point of the landmark and rolled: optical axes that do not meet in one
    point, which focal lengths from fundamental matrices need (ring cameras all aimed at the
    building's centre are close to the degenerate case)."""
    rng = np.random.default_rng(seed)
    width, height = CALIBRATION_SIZE
    focal = width / 2 / np.tan(np.radians(CALIBRATION_HFOV_DEG) / 2)
    start = rng.uniform(0, 2 * np.pi)
    poses = []
    for k in range(CALIBRATION_VIEWS):
        azimuth = start + np.radians(90.0) * k / (CALIBRATION_VIEWS - 1)
        distance, up = rng.uniform(12, 20), rng.uniform(15, 30)
        centre = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), up])
        target = np.array([rng.uniform(-4, 4), rng.uniform(-4, 4), rng.uniform(0, 8)])
        R, t = look_at(centre, target)
        roll = Rotation.from_rotvec([0, 0, np.radians(rng.uniform(-20, 20))]).as_matrix()
        poses.append((roll @ R, roll @ t))
    return (focal, focal, width / 2, height / 2, width, height), poses


@pytest.fixture(scope="module")
def rendered_views():
    landmark = build_landmark(load_package_textures(), seed=0)
    intrinsics, poses = oblique_views(seed=0)
    images = [render_view(landmark, intrinsics, pose, supersample=2) for pose in poses]
    return intrinsics, poses, images


def test_view_graph_calibration_finds_the_focal_length(rendered_views):
    intrinsics, poses, images = rendered_views
    true_focal, _, cx, cy, width, height = intrinsics
    n = len(images)
    extract = SiftExtractor(1024)
    features = [extract(image, (1.0, 1.0)) for image in images]
    cameras, camera_of_frame = cameras_for_images([(width, height)] * n, [(None, None)] * n, [None] * n,
                                                  shared="size")  # the frames of one camera
    assert len(cameras) == 1
    guess = cameras[0].focal_length
    assert guess == DEFAULT_FOCAL_FACTOR * max(width, height)
    assert abs(guess - true_focal) > 0.3 * true_focal  # a poor start

    descriptors = [normalise_descriptors(f.descriptors) for f in features]
    options = verification_options()
    pairs = []
    for i in range(n):
        for j in range(i + 1, n):
            matches = match_mutual_nearest(descriptors[i], descriptors[j])
            pair = verify_pair(i, j, features[i].keypoints, features[j].keypoints, matches,
                               cameras[0], cameras[0], options)
            if pair is not None:
                pairs.append(pair)
    assert sum(p.fundamental is not None for p in pairs) >= 5

    result = calibrate_focal_lengths(cameras, camera_of_frame, pairs, list(range(n)),
                                     own_camera_ids=list(range(2, n + 2)))
    # One camera's photos: the view graph does not split their shared camera.
    assert [test.split for test in result.sharing_tests] == [False]
    calibrated = result.cameras
    assert result.camera_of_frame == camera_of_frame
    assert len(calibrated) == 1 and calibrated[0].camera_id == cameras[0].camera_id
    assert abs(calibrated[0].focal_length - true_focal) < 0.1 * true_focal
    np.testing.assert_allclose(calibrated[0].principal_point_x, cx)
    np.testing.assert_allclose(calibrated[0].principal_point_y, cy)
    assert cameras[0].focal_length == guess  # the input is not modified

    # Relative poses estimated again with the calibrated camera beat those verify_pair
    # derived with the guess.
    keypoints = [f.keypoints for f in features]

    def rotation_errors(posed_pairs):
        errors = []
        for p in posed_pairs:
            if p.rotation_xyzw is None:
                continue
            R = pycolmap.Rotation3d(p.rotation_xyzw).matrix()
            R_true = relative_rotation(poses[p.index1][0], poses[p.index2][0])
            errors.append(np.degrees(Rotation.from_matrix(R.T @ R_true).magnitude()))
        return np.array(errors)

    reposed = relative_poses(calibrated, camera_of_frame, keypoints, pairs)
    assert [(p.index1, p.index2) for p in reposed] == [(p.index1, p.index2) for p in pairs]
    errors_calibrated, errors_guess = rotation_errors(reposed), rotation_errors(pairs)
    assert len(errors_calibrated) >= 0.5 * len(pairs)
    assert np.median(errors_calibrated) < 1.0
    assert np.median(errors_calibrated) < np.median(errors_guess)
