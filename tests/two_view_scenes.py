"""Verified pairs of photos of a synthetic scene, as the view-graph calibration reads them."""
import flows  # noqa: F401  (torch before pycolmap)
import numpy as np
import pycolmap
from scipy.spatial.transform import Rotation

from sfm_core.synthetic import look_at
from sfm_core.verification import VerifiedPair

SIZE = (800, 600)


def scene_pairs(focals: list[float], seed: int = 0, noise_px: float = 0.5) -> list[VerifiedPair]:
    """Verified pairs (fundamental matrices by pycolmap's RANSAC) of photos of SIZE taken with
    `focals` from oblique viewpoints around a cloud of points; every pair whose photos see 60
    points in common."""
    rng = np.random.default_rng(seed)
    points = rng.uniform([-6, -6, 0], [6, 6, 10], (1500, 3))
    width, height = SIZE
    observed = []
    for k, focal in enumerate(focals):
        azimuth = np.radians(110.0) * k / len(focals) + rng.uniform(-0.1, 0.1)
        distance, up = rng.uniform(14, 22), rng.uniform(4, 20)
        centre = np.array([distance * np.cos(azimuth), distance * np.sin(azimuth), up])
        R, t = look_at(centre, rng.uniform([-3, -3, 2], [3, 3, 8]))
        roll = Rotation.from_rotvec([0, 0, np.radians(rng.uniform(-15, 15))]).as_matrix()
        in_camera = points @ (roll @ R).T + roll @ t
        xy = focal * in_camera[:, :2] / in_camera[:, 2:] + np.array([width / 2, height / 2])
        xy += rng.normal(0, noise_px, xy.shape)
        inside = (in_camera[:, 2] > 0) & (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        observed.append((xy, inside))
    pairs = []
    options = pycolmap.RANSACOptions(max_error=1.5, random_seed=0)
    for i in range(len(focals)):
        for j in range(i + 1, len(focals)):
            common = np.nonzero(observed[i][1] & observed[j][1])[0]
            if len(common) < 60:
                continue
            result = pycolmap.estimate_fundamental_matrix(observed[i][0][common], observed[j][0][common], options)
            inliers = np.stack([common, common], axis=1)[np.asarray(result["inlier_mask"], bool)].astype(np.uint32)
            pairs.append(VerifiedPair(i, j, len(common), inliers, "UNCALIBRATED", None, None, np.asarray(result["F"])))
    return pairs
