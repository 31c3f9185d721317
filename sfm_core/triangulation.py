"""All tracks triangulated at once against the posed cameras (RANSAC multi-view DLT).

Each track's observations go through pycolmap's LO-RANSAC triangulator with VGGSfM's
checks: angular error, triangulation angle, and a minimum number of inlier views.
"""
import math
from dataclasses import dataclass

import numpy as np
import pycolmap


@dataclass
class TriangulationSettings:
    max_angular_error_deg: float = 2.0
    min_triangulation_angle_deg: float = 1.5
    min_inlier_views: int = 2


def triangulate_tracks(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray, track_ids: np.ndarray,
                       settings: TriangulationSettings) -> dict[int, int]:
    """Triangulate the tracks `track_ids` (columns of keypoint_index (F, N)) into rec.

    Only observations in registered images count. Returns {track id: new point3D id}.
    """
    options = pycolmap.EstimateTriangulationOptions()
    options.min_tri_angle = math.radians(settings.min_triangulation_angle_deg)
    options.ransac.max_error = math.radians(settings.max_angular_error_deg)
    options.ransac.random_seed = 0

    registered = np.zeros(keypoint_index.shape[0], bool)
    for image_id in rec.reg_image_ids():
        registered[image_id - 1] = True
    images = {i: rec.image(i) for i in rec.reg_image_ids()}
    poses = {i: image.cam_from_world() for i, image in images.items()}

    created = {}
    for track in track_ids:
        frames = np.nonzero((keypoint_index[:, track] >= 0) & registered)[0]
        if len(frames) < settings.min_inlier_views:
            continue
        ids = [int(f) + 1 for f in frames]
        points = np.array([images[i].points2D[int(keypoint_index[i - 1, track])].xy for i in ids])
        result = pycolmap.estimate_triangulation(points, [poses[i] for i in ids],
                                                 [images[i].camera for i in ids], options)
        if result is None:
            continue
        inliers = np.asarray(result["inliers"], bool)
        if inliers.sum() < settings.min_inlier_views:
            continue
        elements = [pycolmap.TrackElement(i, int(keypoint_index[i - 1, track]))
                    for i, keep in zip(ids, inliers) if keep]
        created[int(track)] = rec.add_point3D(np.asarray(result["xyz"]), pycolmap.Track(elements))
    return created
