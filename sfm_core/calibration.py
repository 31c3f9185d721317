"""Focal lengths from the view graph, before any pose exists, and relative poses with them.

Without EXIF the focal length is a guess (1.2 x the long side) that can be 30 % off, and
relative poses computed with it bend the rotation averaging. pycolmap estimates all focal
lengths jointly from the fundamental matrices of the verified pairs (GLOMAP's view-graph
calibration); each pair's relative pose is then estimated again from its inliers with the
calibrated cameras (essential matrix, LO-RANSAC). pycolmap's calibration takes a COLMAP
database, so one is written to a private temporary folder and thrown away.
"""
import copy as copy_module
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pycolmap

from sfm_core.verification import VerifiedPair


def calibrate_focal_lengths(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                            frames: list[int], constant_ids: tuple[int, ...] = (), seed: int = 0) -> list[pycolmap.Camera]:
    """Copies of `cameras` with focal lengths estimated from the pairs among `frames`.

    Cameras without a prior focal length start from a global search (search_focal_lengths);
    pycolmap then refines all jointly, cross-checking those with a prior (EXIF) rather than
    overwriting them blindly. Cameras of `constant_ids` (known intrinsics) stay as they are.
    Returns the searched cameras if pycolmap cannot calibrate.
    """
    if all(c.camera_id in constant_ids for c in cameras):
        return cameras
    in_group = set(frames)
    group_pairs = [p for p in pairs if p.index1 in in_group and p.index2 in in_group and p.fundamental is not None]
    cameras = search_focal_lengths(cameras, camera_of_frame, group_pairs)
    with tempfile.TemporaryDirectory(prefix="landmark-sfm-calibration-") as folder:
        path = str(Path(folder) / "view_graph.db")
        database = pycolmap.Database.open(path)
        written = set()
        for frame in frames:
            camera = cameras[camera_of_frame[frame]]
            if camera.camera_id not in written:
                database.write_camera(camera, use_camera_id=True)
                written.add(camera.camera_id)
            database.write_image(pycolmap.Image(name=str(frame), camera_id=camera.camera_id, image_id=frame + 1),
                                 use_image_id=True)
        for pair in group_pairs:
            geometry = pycolmap.TwoViewGeometry()
            geometry.config = pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED
            geometry.F = pair.fundamental
            geometry.inlier_matches = pair.inliers
            database.write_two_view_geometry(pair.index1 + 1, pair.index2 + 1, geometry)
        database.close()

        options = pycolmap.ViewGraphCalibrationOptions()
        options.random_seed = seed
        options.reestimate_relative_pose = False  # done below, for every pair alike
        if not pycolmap.calibrate_view_graph(path, options):
            return cameras
        database = pycolmap.Database.open(path)
        calibrated = {c.camera_id: c for c in database.read_all_cameras()}
        database.close()
    return [c if c.camera_id in constant_ids else calibrated.get(c.camera_id, c) for c in cameras]


# Focal lengths searched, as multiples of the image's long side: from fisheye-wide to telephoto.
_FOCAL_RANGE = (0.3, 4.0)
_FOCAL_STEPS = 48
_SEARCH_SWEEPS = 3
_MAX_PAIR_COST = 0.3  # a pair's cost is capped: a wrong fundamental matrix must not pull


def search_focal_lengths(cameras: list[pycolmap.Camera], camera_of_frame: list[int],
                         pairs: list[VerifiedPair]) -> list[pycolmap.Camera]:
    """Copies of `cameras` whose unknown focal lengths (no prior) minimise the view graph's
    self-calibration cost, found by a global search rather than from the 1.2 x guess.

    For a pair with fundamental matrix F (x2^T F x1 = 0) and intrinsics K1, K2, the essential
    matrix K2^T F K1 has two equal singular values when the focal lengths are right; the cost
    is (s1 - s2) / (s1 + s2), capped, weighted by the pair's inliers. Each unknown camera's
    focal length is searched on a log grid with the others held, a few sweeps over them, then
    refined by golden section. pycolmap's own calibration, a local one from the guess, can
    end at a minimum twice the true focal length (seen on ETH3D pipes).
    """
    unknown = [k for k, camera in enumerate(cameras) if not camera.has_prior_focal_length]
    if not unknown or not pairs:
        return cameras
    focal = np.array([c.focal_length for c in cameras], np.float64)
    principal = np.array([[c.principal_point_x, c.principal_point_y] for c in cameras], np.float64)
    first = np.array([camera_of_frame[p.index1] for p in pairs])
    second = np.array([camera_of_frame[p.index2] for p in pairs])
    fundamentals = np.stack([p.fundamental for p in pairs])
    weights = np.array([len(p.inliers) for p in pairs], np.float64)

    def cost(values: np.ndarray, pair_rows: np.ndarray) -> float:
        k1 = _intrinsic_matrices(values[first[pair_rows]], principal[first[pair_rows]])
        k2 = _intrinsic_matrices(values[second[pair_rows]], principal[second[pair_rows]])
        singular = np.linalg.svd(k2.transpose(0, 2, 1) @ fundamentals[pair_rows] @ k1, compute_uv=False)
        gap = (singular[:, 0] - singular[:, 1]) / np.maximum(singular[:, 0] + singular[:, 1], 1e-12)
        return float(np.sum(weights[pair_rows] * np.minimum(gap, _MAX_PAIR_COST)))

    for _ in range(_SEARCH_SWEEPS):
        for k in unknown:
            rows = np.nonzero((first == k) | (second == k))[0]
            if not len(rows):
                continue
            long_side = max(cameras[k].width, cameras[k].height)
            grid = np.geomspace(*_FOCAL_RANGE, _FOCAL_STEPS) * long_side
            costs = [cost(np.where(np.arange(len(focal)) == k, value, focal), rows) for value in grid]
            best = int(np.argmin(costs))
            low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
            focal[k] = _golden_section(lambda value: cost(np.where(np.arange(len(focal)) == k, value, focal), rows),
                                       low, high)
    searched = []
    for k, camera in enumerate(cameras):
        copy = copy_module.copy(camera)
        if k in unknown:
            copy.focal_length = float(focal[k])
        searched.append(copy)
    return searched


def _intrinsic_matrices(focal: np.ndarray, principal: np.ndarray) -> np.ndarray:
    """(P, 3, 3) pinhole matrices of focal lengths (P,) and principal points (P, 2)."""
    k = np.zeros((len(focal), 3, 3))
    k[:, 0, 0] = k[:, 1, 1] = focal
    k[:, :2, 2] = principal
    k[:, 2, 2] = 1
    return k


def _golden_section(fn, low: float, high: float, iterations: int = 30) -> float:
    """The minimiser of a unimodal fn on [low, high], searched in log space."""
    ratio = (np.sqrt(5) - 1) / 2
    a, b = np.log(low), np.log(high)
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = fn(np.exp(c)), fn(np.exp(d))
    for _ in range(iterations):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = fn(np.exp(c))
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = fn(np.exp(d))
    return float(np.exp((a + b) / 2))


def relative_poses(cameras: list[pycolmap.Camera], camera_of_frame: list[int], keypoints: list[np.ndarray],
                   pairs: list[VerifiedPair], max_error_px: float = 2.0, min_inlier_ratio: float = 0.5) -> list[VerifiedPair]:
    """Pairs with cam2_from_cam1 estimated from their inliers with the given cameras.

    keypoints[f]: (K, 2) COLMAP pixel coordinates. A pair whose essential matrix explains
    less than `min_inlier_ratio` of its inliers keeps its matches but loses its pose.
    """
    # pycolmap's floor of 1000 trials costs ~0.1 s a pair, but keep it: with a floor of 50
    # (the adaptive stop), the best of fewer models cost pipes 0.14 of AUC@3, british_museum 0.09.
    options = pycolmap.RANSACOptions(max_error=max_error_px, random_seed=0)

    def with_pose(pair: VerifiedPair) -> VerifiedPair:
        points1 = keypoints[pair.index1][pair.inliers[:, 0]].astype(np.float64)
        points2 = keypoints[pair.index2][pair.inliers[:, 1]].astype(np.float64)
        result = pycolmap.estimate_essential_matrix(points1, points2, cameras[camera_of_frame[pair.index1]],
                                                    cameras[camera_of_frame[pair.index2]], options)
        if result is None or result["num_inliers"] < min_inlier_ratio * len(pair.inliers):
            return pair.with_relative_pose(None, None)
        pose = result["cam2_from_cam1"]
        return pair.with_relative_pose(np.asarray(pose.rotation.quat), np.asarray(pose.translation))

    # A thread per core: pycolmap's RANSAC releases the GIL, and each pair is seeded alike
    # (kitchen's 105 pairs: 3.3 s on one core).
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        return list(pool.map(with_pose, pairs))
