"""Verified pairs that a finished model contradicts.

A model folded onto itself (the two alike halves of a symmetric building reconstructed as one,
half the cameras turned onto the other side) is consistent within each half and fits its
points well; what it cannot fit are the right pairs across the fold: their inliers, true
matches, lie far from the epipolar lines that the model's two poses give. In a right model
nearly every inlier of a strong pair lies on them.

Conventions: poses are world-to-camera (cam_from_world); keypoints in COLMAP pixel coordinates.
Pure: no I/O.
"""
from dataclasses import dataclass

import numpy as np
import pycolmap


# A pair is contradicted by a model when less than this share of its matches fit the model's poses.
CONTRADICTED_BELOW = 0.5


@dataclass(frozen=True)
class PairMatches:
    """The inlier matches of one verified pair, by image name."""
    name1: str
    name2: str
    xy1: np.ndarray  # (K, 2) keypoints in image 1, COLMAP pixel coordinates
    xy2: np.ndarray  # (K, 2) their matches in image 2


def consistent_share(rec: pycolmap.Reconstruction, pair: PairMatches, max_error_px: float) -> float | None:
    """The share of the pair's matches within max_error_px (Sampson distance, in image 1's
    pixels) of the epipolar geometry of the model's two poses; None when either photo is not
    posed in `rec`."""
    first, second = rec.find_image_with_name(pair.name1), rec.find_image_with_name(pair.name2)
    if first is None or second is None or not first.has_pose or not second.has_pose:
        return None
    relative = second.cam_from_world() * first.cam_from_world().inverse()  # cam2_from_cam1
    t = relative.translation
    essential = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]]) @ relative.rotation.matrix()
    camera1, camera2 = rec.camera(first.camera_id), rec.camera(second.camera_id)
    x1 = np.c_[camera1.cam_from_img(pair.xy1.astype(np.float64)), np.ones(len(pair.xy1))]
    x2 = np.c_[camera2.cam_from_img(pair.xy2.astype(np.float64)), np.ones(len(pair.xy2))]
    lines2, lines1 = x1 @ essential.T, x2 @ essential
    squared = np.sum(x2 * lines2, 1) ** 2 / np.maximum(
        lines2[:, 0] ** 2 + lines2[:, 1] ** 2 + lines1[:, 0] ** 2 + lines1[:, 1] ** 2, 1e-18)
    return float(np.mean(np.sqrt(squared) * camera1.mean_focal_length() < max_error_px))
