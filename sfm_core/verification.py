"""Geometric verification of putative matches with pycolmap's RANSAC estimators."""
import copy
import math
from dataclasses import dataclass, replace

import numpy as np
import pycolmap

SAMPLE_SIZE = 7  # matches in the largest minimal sample of the estimators (fundamental matrix)
PRECHECK_FRACTION = 0.8  # of min_num_inliers a fundamental matrix alone must explain (could_verify)

# Configurations whose inliers are trusted for tracks; a relative pose comes with most of them.
_USABLE = {
    pycolmap.TwoViewGeometryConfiguration.CALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.UNCALIBRATED,
    pycolmap.TwoViewGeometryConfiguration.PLANAR,
    pycolmap.TwoViewGeometryConfiguration.PANORAMIC,
    pycolmap.TwoViewGeometryConfiguration.PLANAR_OR_PANORAMIC,
}


@dataclass
class VerifiedPair:
    index1: int
    index2: int
    num_matches: int  # putative matches before RANSAC
    inliers: np.ndarray  # (K, 2) uint32 keypoint indices into image1, image2
    configuration: str  # pycolmap TwoViewGeometryConfiguration name
    # cam2_from_cam1 as a quaternion (x, y, z, w) and a unit translation; None when unknown.
    rotation_xyzw: np.ndarray | None
    translation: np.ndarray | None
    # Fundamental matrix (3, 3) mapping image-1 points to epipolar lines in image 2; None for
    # planar or panoramic pairs. View-graph calibration reads focal lengths from it.
    fundamental: np.ndarray | None = None

    def with_relative_pose(self, rotation_xyzw: np.ndarray | None, translation: np.ndarray | None) -> "VerifiedPair":
        return replace(self, rotation_xyzw=rotation_xyzw, translation=translation)


def verification_options(min_inliers: int = 15) -> pycolmap.TwoViewGeometryOptions:
    options = pycolmap.TwoViewGeometryOptions()
    options.min_num_inliers = min_inliers
    options.compute_relative_pose = True
    options.ransac.random_seed = 0  # reproducible runs
    return options


def options_for(num_matches: int, options: pycolmap.TwoViewGeometryOptions) -> pycolmap.TwoViewGeometryOptions:
    """The options with RANSAC's trial budget bounded by what a pair of num_matches can hold.

    A model with fewer than min_num_inliers inliers is rejected anyway. If a pair has that
    many inliers, one draw of the largest minimal sample (7 matches, the fundamental matrix)
    is all inliers with probability C(K, 7) / C(N, 7) (K = min_num_inliers, N = num_matches,
    drawn without replacement), so the trials that find such a sample with RANSAC's
    confidence, times its own safety multiplier, are enough; pairs with more inliers stop
    sooner anyway. The bound matters for pairs of few matches: most of them do not overlap
    and ran every estimator to max_num_trials (kitchen: the 133 of 300 pairs with fewer than
    30 matches took 58 % of the verification time; 2 of them verify).
    """
    ransac = options.ransac
    inliers = options.min_num_inliers
    if inliers < SAMPLE_SIZE or num_matches < inliers:  # no bound to derive
        return options
    all_inliers = math.comb(inliers, SAMPLE_SIZE) / math.comb(num_matches, SAMPLE_SIZE)
    if all_inliers >= 1:
        trials = ransac.min_num_trials
    else:
        trials = ransac.dyn_num_trials_multiplier * math.log(1 - ransac.confidence) / math.log1p(-all_inliers)
    if trials >= ransac.max_num_trials:
        return options
    bounded = copy.deepcopy(options)
    bounded.ransac.max_num_trials = max(int(math.ceil(trials)), ransac.min_num_trials)
    return bounded


def could_verify(points1: np.ndarray, points2: np.ndarray, options: pycolmap.TwoViewGeometryOptions) -> bool:
    """Whether a fundamental matrix alone, fitted with the same RANSAC trials, explains at
    least PRECHECK_FRACTION of min_num_inliers of the matched points (K, 2) each.

    pycolmap's two-view estimate costs 10-15x its fundamental-matrix RANSAC alone (it also fits
    a homography and refines on the Sampson error), and most candidate pairs of a collection do
    not overlap: their matches are chance ones, of which a fundamental matrix explains 8-13
    (kitchen: 185 of 300 pairs, 33 of its 42 core-seconds of verification). Every pair that
    the full estimate verified on the eight shared sets had 14 or more such inliers; the
    margin below min_num_inliers covers the two estimates drawing different samples.
    """
    fit = pycolmap.estimate_fundamental_matrix(points1.astype(np.float64), points2.astype(np.float64),
                                               options.ransac)
    return fit is not None and fit["num_inliers"] >= PRECHECK_FRACTION * options.min_num_inliers


def verify_pair(index1: int, index2: int, keypoints1: np.ndarray, keypoints2: np.ndarray,
                matches: np.ndarray, camera1: pycolmap.Camera, camera2: pycolmap.Camera,
                options: pycolmap.TwoViewGeometryOptions) -> VerifiedPair | None:
    """keypoints: (N, 2) COLMAP pixel coordinates; matches: (K, 2) uint32. None if rejected."""
    if len(matches) < options.min_num_inliers:
        return None
    bounded = options_for(len(matches), options)
    if not could_verify(keypoints1[matches[:, 0]], keypoints2[matches[:, 1]], bounded):
        return None
    geometry = pycolmap.estimate_two_view_geometry(
        camera1, keypoints1.astype(np.float64), camera2, keypoints2.astype(np.float64),
        matches.astype(np.uint32), bounded)
    inliers = np.asarray(geometry.inlier_matches, dtype=np.uint32).reshape(-1, 2)
    configuration = pycolmap.TwoViewGeometryConfiguration(geometry.config)
    if configuration not in _USABLE or len(inliers) < options.min_num_inliers:
        return None
    pose = geometry.cam2_from_cam1
    return VerifiedPair(
        index1, index2, len(matches), inliers, configuration.name,
        None if pose is None else np.asarray(pose.rotation.quat, dtype=np.float64),
        None if pose is None else np.asarray(pose.translation, dtype=np.float64),
        None if geometry.F is None else np.asarray(geometry.F, dtype=np.float64),
    )
