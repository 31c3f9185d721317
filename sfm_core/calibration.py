"""Focal lengths from the view graph, before any pose exists, and relative poses with them.

Without EXIF the focal length is a guess (1.2 x the long side) that can be 30 % off, and
relative poses computed with it bend the rotation averaging. pycolmap estimates all focal
lengths jointly from the fundamental matrices of the verified pairs (GLOMAP's view-graph
calibration); each pair's relative pose is then estimated again from its inliers with the
calibrated cameras (essential matrix, LO-RANSAC). pycolmap's calibration takes a COLMAP
database, so one is written to a private temporary folder and thrown away.
"""
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycolmap

from sfm_core.camera_sharing import SharingTest, split_unshared_cameras
from sfm_core.exif_contradiction import ExifTest, reject_contradicted_exif
from sfm_core.focal_search import FOCAL_RANGE, search_focal_lengths
from sfm_core.verification import VerifiedPair


@dataclass
class CalibratedCameras:
    cameras: list[pycolmap.Camera]  # the distinct cameras
    camera_of_frame: list[int]  # index into cameras, per frame
    sharing_tests: list[SharingTest]  # one per shared camera tested (split_unshared_cameras)
    exif_test: ExifTest | None  # the EXIF focal lengths against the pairs (reject_contradicted_exif)


def calibrate_focal_lengths(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                            frames: list[int], constant_ids: tuple[int, ...] = (), seed: int = 0,
                            own_camera_ids: list[int] | None = None) -> CalibratedCameras:
    """Copies of `cameras` with focal lengths estimated from the pairs among `frames`.

    Cameras without a prior focal length start from a global search (search_focal_lengths).
    Those with an EXIF focal length that the pairs contradict start from the view graph's
    instead, as cameras without one (exif_contradiction.reject_contradicted_exif).
    With `own_camera_ids` (per frame, the id of a camera of its own), each such camera shared
    by several photos is tested and split into a camera per photo where the pairs say they
    are not one camera (camera_sharing.split_unshared_cameras); without, the grouping stays.
    pycolmap then refines all jointly, cross-checking those with a prior (EXIF) rather than
    overwriting them blindly. Cameras of `constant_ids` (known intrinsics) stay as they are.
    Keeps the searched focal lengths if pycolmap cannot calibrate.
    """
    if all(c.camera_id in constant_ids for c in cameras):
        return CalibratedCameras(cameras, list(camera_of_frame), [], None)
    in_group = set(frames)
    group_pairs = [p for p in pairs if p.index1 in in_group and p.index2 in in_group and p.fundamental is not None]
    cameras = search_focal_lengths(cameras, camera_of_frame, group_pairs)
    cameras, exif_test = reject_contradicted_exif(cameras, camera_of_frame, group_pairs, constant_ids)
    tests = []
    if own_camera_ids is not None:
        cameras, camera_of_frame, tests = split_unshared_cameras(cameras, camera_of_frame, group_pairs, frames,
                                                                 own_camera_ids, constant_ids)
    calibrated = _calibrate_view_graph(cameras, camera_of_frame, group_pairs, frames, seed)
    return CalibratedCameras([_trusted(c, calibrated.get(c.camera_id), constant_ids) for c in cameras],
                             list(camera_of_frame), tests, exif_test)


def _trusted(searched: pycolmap.Camera, calibrated: pycolmap.Camera | None,
             constant_ids: tuple[int, ...]) -> pycolmap.Camera:
    """pycolmap's calibration of a camera, unless its focal length is known, or was unknown
    and left the searched range: a photo that its pairs barely constrain can run away there
    (7,837 px for a 640 px photo whose search gave 650; the adjustment then flipped it to -440)."""
    if calibrated is None or searched.camera_id in constant_ids:
        return searched
    factor = calibrated.focal_length / max(searched.width, searched.height)
    if not searched.has_prior_focal_length and not FOCAL_RANGE[0] <= factor <= FOCAL_RANGE[1]:
        return searched
    return calibrated


def _calibrate_view_graph(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                          frames: list[int], seed: int) -> dict[int, pycolmap.Camera]:
    """{camera id: camera} as pycolmap's view-graph calibration refines them; {} if it cannot."""
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
        for pair in pairs:
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
            return {}
        database = pycolmap.Database.open(path)
        calibrated = {c.camera_id: c for c in database.read_all_cameras()}
        database.close()
    return calibrated


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
