"""Focal lengths from the view graph, before any pose exists, and relative poses with them.

Without EXIF the focal length is a guess (1.2 x the long side) that can be 30 % off, and
relative poses computed with it bend the rotation averaging. pycolmap estimates all focal
lengths jointly from the fundamental matrices of the verified pairs (GLOMAP's view-graph
calibration); each pair's relative pose is then estimated again from its inliers with the
calibrated cameras (essential matrix, LO-RANSAC). pycolmap's calibration takes a COLMAP
database, so one is written to a private temporary folder and thrown away.
"""
import tempfile
from pathlib import Path

import numpy as np
import pycolmap

from sfm_core.verification import VerifiedPair


def calibrate_focal_lengths(cameras: list[pycolmap.Camera], camera_of_frame: list[int], pairs: list[VerifiedPair],
                            frames: list[int], seed: int = 0) -> list[pycolmap.Camera]:
    """Copies of `cameras` with focal lengths estimated from the pairs among `frames`.

    Cameras with a prior focal length (EXIF) are cross-checked, not overwritten blindly.
    Returns the cameras unchanged if pycolmap cannot calibrate the graph.
    """
    in_group = set(frames)
    group_pairs = [p for p in pairs if p.index1 in in_group and p.index2 in in_group and p.fundamental is not None]
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
    return [calibrated.get(c.camera_id, c) for c in cameras]


def relative_poses(cameras: list[pycolmap.Camera], camera_of_frame: list[int], keypoints: list[np.ndarray],
                   pairs: list[VerifiedPair], max_error_px: float = 2.0, min_inlier_ratio: float = 0.5) -> list[VerifiedPair]:
    """Pairs with cam2_from_cam1 estimated from their inliers with the given cameras.

    keypoints[f]: (K, 2) COLMAP pixel coordinates. A pair whose essential matrix explains
    less than `min_inlier_ratio` of its inliers keeps its matches but loses its pose.
    """
    options = pycolmap.RANSACOptions(max_error=max_error_px, random_seed=0)
    result_pairs = []
    for pair in pairs:
        points1 = keypoints[pair.index1][pair.inliers[:, 0]].astype(np.float64)
        points2 = keypoints[pair.index2][pair.inliers[:, 1]].astype(np.float64)
        result = pycolmap.estimate_essential_matrix(points1, points2, cameras[camera_of_frame[pair.index1]],
                                                    cameras[camera_of_frame[pair.index2]], options)
        if result is None or result["num_inliers"] < min_inlier_ratio * len(pair.inliers):
            result_pairs.append(pair.with_relative_pose(None, None))
            continue
        pose = result["cam2_from_cam1"]
        result_pairs.append(pair.with_relative_pose(np.asarray(pose.rotation.quat), np.asarray(pose.translation)))
    return result_pairs
