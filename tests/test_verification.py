"""Geometric verification: the RANSAC budget bounded by the minimum number of inliers, and the
cheap fundamental-matrix pre-check that turns chance matches away before the full estimate."""
import numpy as np
import pycolmap

from sfm_core.verification import could_verify, options_for, verification_options, verify_pair

WIDTH, HEIGHT, FOCAL = 1024, 768, 900.0


def _camera() -> pycolmap.Camera:
    return pycolmap.Camera(model="SIMPLE_RADIAL", width=WIDTH, height=HEIGHT,
                           params=[FOCAL, WIDTH / 2, HEIGHT / 2, 0.0], camera_id=1)


def _project(points: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """points (N, 3) world -> (N, 2) COLMAP pixels of a camera with cam_from_world (R, t)."""
    cam = points @ R.T + t
    return FOCAL * cam[:, :2] / cam[:, 2:] + np.array([WIDTH / 2, HEIGHT / 2])


def _pair(num_true: int, num_random: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Keypoints of two views 10 degrees apart and matches: num_true correct (0.5 px noise)
    and num_random wrong ones, shuffled."""
    rng = np.random.default_rng(seed)
    points = rng.uniform([-2, -1.5, 4], [2, 1.5, 8], (num_true, 3))
    angle = np.radians(10)
    R = np.array([[np.cos(angle), 0, -np.sin(angle)], [0, 1, 0], [np.sin(angle), 0, np.cos(angle)]])
    xy1 = _project(points, np.eye(3), np.zeros(3))
    xy2 = _project(points, R, np.array([1.0, 0.0, 0.2])) + rng.normal(0, 0.5, (num_true, 2))
    size = np.array([WIDTH, HEIGHT])
    keypoints1 = np.concatenate([xy1, rng.uniform(0, 1, (num_random, 2)) * size]).astype(np.float32)
    keypoints2 = np.concatenate([xy2, rng.uniform(0, 1, (num_random, 2)) * size]).astype(np.float32)
    matches = np.stack([np.arange(len(keypoints1)), rng.permutation(len(keypoints2))], axis=1)
    matches[:num_true, 1] = np.arange(num_true)  # the true ones match themselves
    return keypoints1, keypoints2, matches.astype(np.uint32)


def test_budget_is_bounded_only_for_pairs_with_few_matches():
    options = verification_options(min_inliers=15)
    assert options_for(1000, options) is options
    assert options_for(35, options) is options  # 15 inliers of 35 need more than the cap
    assert options_for(30, options).ransac.max_num_trials == 6546  # 3 x log(0.001) / log(1 - C(15,7)/C(30,7))
    assert options_for(15, options).ransac.max_num_trials == options.ransac.min_num_trials
    assert options.ransac.max_num_trials == 10000  # the shared options are not modified
    few = verification_options(min_inliers=5)  # fewer than a minimal sample: nothing to derive
    assert options_for(20, few) is few


def test_pair_with_just_enough_true_matches_still_verifies_and_random_matches_do_not():
    options = verification_options(min_inliers=15)
    camera = _camera()
    for seed in range(10):
        # 15 true matches among 30: just what a pair needs; the budget is bounded to 6546 trials.
        keypoints1, keypoints2, matches = _pair(15, 15, seed)
        assert options_for(len(matches), options).ransac.max_num_trials < options.ransac.max_num_trials
        pair = verify_pair(0, 1, keypoints1, keypoints2, matches, camera, camera, options)
        assert pair is not None, f"seed {seed}: a pair with 15 true matches of 30 was rejected"
        true_found = np.isin(pair.inliers[:, 0], np.arange(15)).sum()
        assert true_found == 15 and len(pair.inliers) - true_found <= 2
        keypoints1, keypoints2, matches = _pair(0, 30, seed)
        assert verify_pair(0, 1, keypoints1, keypoints2, matches, camera, camera, options) is None


def test_chance_matches_stop_at_the_fundamental_matrix_precheck(monkeypatch):
    # The full two-view estimate is the costly part: pairs of chance matches must not reach it,
    # pairs with enough true matches must, and verify as before.
    options = verification_options(min_inliers=15)
    camera = _camera()
    full_estimates = []
    estimate = pycolmap.estimate_two_view_geometry

    def counted(*args):
        full_estimates.append(args)
        return estimate(*args)

    monkeypatch.setattr(pycolmap, "estimate_two_view_geometry", counted)
    for seed in range(5):
        # A fundamental matrix explains 10-11 of 25 chance matches (11-13 of 40, which go on).
        keypoints1, keypoints2, matches = _pair(0, 25, seed)
        assert not could_verify(keypoints1[matches[:, 0]], keypoints2[matches[:, 1]], options_for(25, options))
        assert verify_pair(0, 1, keypoints1, keypoints2, matches, camera, camera, options) is None
    assert full_estimates == []
    keypoints1, keypoints2, matches = _pair(15, 15, 0)
    assert verify_pair(0, 1, keypoints1, keypoints2, matches, camera, camera, options) is not None
    assert len(full_estimates) == 1
