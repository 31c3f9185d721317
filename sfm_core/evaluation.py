"""Pose accuracy of a reconstruction against ground truth (VGGSfM / Image Matching Challenge style).

Poses are world-to-camera, x_cam = R @ x_world + t, given as
``dict[image_name, (R (3, 3), t (3,))]``. Images are matched by name.
"""
from itertools import combinations

import numpy as np
import pycolmap

Pose = tuple[np.ndarray, np.ndarray]
AUC_THRESHOLDS = (3, 5, 10, 30)
# Inlier threshold of the robust centre alignment, as a fraction of the scene extent.
ALIGN_MAX_ERROR_REL = 0.05


def _angle_deg(sin: float, cos: float) -> float:
    # atan2 stays accurate near 0 and 180 degrees, where arccos loses precision.
    return float(np.degrees(np.arctan2(sin, cos)))


def rotation_angle_deg(R: np.ndarray) -> float:
    """Rotation angle of a (3, 3) rotation matrix, in degrees."""
    skew = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return _angle_deg(np.linalg.norm(skew) / 2, (np.trace(R) - 1) / 2)


def direction_angle_deg(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> float:
    """Angle between the directions of two (3,) vectors, in degrees (sign-sensitive; callers may fold it).

    A zero-length vector has no direction: two of them agree (0), otherwise the
    error is 90 degrees, as the IMC's eps-normalised dot product gives.
    """
    a_zero, b_zero = np.linalg.norm(a) <= eps, np.linalg.norm(b) <= eps
    if a_zero or b_zero:
        return 0.0 if a_zero and b_zero else 90.0
    return _angle_deg(np.linalg.norm(np.cross(a, b)), float(np.dot(a, b)))


def _relative_pose(pose_i: Pose, pose_j: Pose) -> Pose:
    """cam_j_from_cam_i of two world-to-camera poses."""
    R_i, t_i = pose_i
    R_j, t_j = pose_j
    R = R_j @ R_i.T
    return R, t_j - R @ t_i


def relative_pose_errors(predicted: dict[str, Pose], truth: dict[str, Pose]) -> tuple[np.ndarray, np.ndarray]:
    """Rotation and translation-direction errors (degrees) of every pair of truth images.

    Pairs (i, j), i < j, over the sorted truth names; relative pose = cam_j_from_cam_i.
    A pair with an image missing from `predicted` is a failure: +inf for both errors.
    Returns two arrays of shape (n_pairs,).
    """
    rotation, translation = [], []
    for name_i, name_j in combinations(sorted(truth), 2):
        if name_i not in predicted or name_j not in predicted:
            rotation.append(np.inf)
            translation.append(np.inf)
            continue
        R_pred, t_pred = _relative_pose(predicted[name_i], predicted[name_j])
        R_true, t_true = _relative_pose(truth[name_i], truth[name_j])
        rotation.append(rotation_angle_deg(R_pred.T @ R_true))
        angle = direction_angle_deg(t_pred, t_true)
        # VGGSfM's protocol forgives the sign of the translation direction.
        translation.append(min(angle, 180.0 - angle))
    return np.array(rotation, dtype=float), np.array(translation, dtype=float)


def pose_auc(errors_deg, thresholds=AUC_THRESHOLDS) -> dict[int, float]:
    """VGGSfM's AUC: errors binned per degree, AUC@T = the mean over k = 1..T of the
    fraction of pairs with an error below k degrees.

    `errors_deg` (n,): one error per pair, usually max(rotation, translation); inf (a
    failed pair) never counts. This is the protocol the COLMAP figures of
    ../shared/data/README.md were measured with, so the numbers compare.
    """
    errors = np.asarray(errors_deg, dtype=float)
    if errors.size == 0:
        return {int(T): 0.0 for T in thresholds}
    aucs = {}
    for T in thresholds:
        histogram, _ = np.histogram(errors[np.isfinite(errors)], bins=np.arange(int(T) + 1))
        aucs[int(T)] = float(np.mean(np.cumsum(histogram) / errors.size))
    return aucs


def camera_centers(poses: dict[str, Pose], names) -> np.ndarray:
    """Camera centres C = -R^T t of `names`, shape (len(names), 3)."""
    return np.array([-R.T @ t for R, t in (poses[n] for n in names)]).reshape(-1, 3)


def _off_origin(points: np.ndarray) -> np.ndarray:
    """Translate (n, 3) points so that their best-fit plane misses the origin.

    COLMAP's Sim3 estimator rejects point sets whose raw coordinates have rank < 3,
    i.e. that lie on a plane through the origin, as any 3 cameras do when one sits
    at the origin. Distances, and so centre errors, do not change.
    """
    centred = points - points.mean(axis=0)
    normal = np.linalg.svd(centred)[2][-1]
    return centred + (np.abs(centred).max() or 1.0) * normal


def _align_sim3(src: np.ndarray, tgt: np.ndarray, max_error: float) -> pycolmap.Sim3d | None:
    """tgt_from_src similarity: LO-RANSAC first, plain least squares if that fails."""
    options = pycolmap.RANSACOptions(max_error=max_error, random_seed=0)
    robust = pycolmap.estimate_sim3d_robust(src, tgt, options)
    if robust is not None:
        return robust["tgt_from_src"]
    return pycolmap.estimate_sim3d(src, tgt)


def camera_center_error(predicted: dict[str, Pose], truth: dict[str, Pose]) -> dict:
    """Distances between truth camera centres and similarity-aligned predicted ones.

    Scene extent = diagonal of the bounding box of all truth camera centres; the
    alignment's inlier threshold is ALIGN_MAX_ERROR_REL of it.
    Returns `median_center_error` (truth units), `median_center_error_rel`
    (divided by the extent), `scene_extent` and per-image `errors`; the
    medians are None with fewer than 3 common images or a failed alignment.
    """
    names = sorted(set(predicted) & set(truth))
    result = {"median_center_error": None, "median_center_error_rel": None, "scene_extent": None, "errors": {}}
    if len(names) < 3:
        return result
    all_truth = camera_centers(truth, sorted(truth))
    extent = float(np.linalg.norm(all_truth.max(axis=0) - all_truth.min(axis=0)))
    result["scene_extent"] = extent
    if extent == 0:
        return result
    src, tgt = _off_origin(camera_centers(predicted, names)), _off_origin(camera_centers(truth, names))
    tgt_from_src = _align_sim3(src, tgt, ALIGN_MAX_ERROR_REL * extent)
    if tgt_from_src is None:
        return result
    errors = np.linalg.norm(tgt_from_src * src - tgt, axis=1)
    median = float(np.median(errors))
    result.update(
        median_center_error=median,
        median_center_error_rel=median / extent,
        errors={n: float(e) for n, e in zip(names, errors)},
    )
    return result


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(float(value), digits)


def evaluate_poses(predicted: dict[str, Pose], truth: dict[str, Pose]) -> dict:
    """Registration count, pose AUC@3/5/10/30 and median centre error, JSON-serialisable.

    The absolute centre error is in truth units, so it keeps 4 significant digits
    rather than 4 decimals.
    """
    rotation, translation = relative_pose_errors(predicted, truth)
    auc = pose_auc(np.maximum(rotation, translation))
    centers = camera_center_error(predicted, truth)
    median = centers["median_center_error"]
    return {
        "registered": sum(name in truth for name in predicted),
        "reference_images": len(truth),
        **{f"auc@{T}": _round(auc[T]) for T in AUC_THRESHOLDS},
        "median_center_error": None if median is None else float(f"{median:.4g}"),
        "median_center_error_rel": _round(centers["median_center_error_rel"]),
    }


def track_errors_under_truth(xy: np.ndarray, visibility: np.ndarray, cameras: list[pycolmap.Camera | None],
                             poses: list[Pose | None]) -> np.ndarray:
    """How far track observations lie from a geometry consistent with the true cameras.

    xy (F, N, 2): observations in COLMAP pixel coordinates; visibility (F, N); cameras and
    world-to-camera poses (R (3, 3), t (3,)) of each frame's truth, None where a frame has
    none. Each track seen by 2+ frames with truth is triangulated from those true cameras
    (linear DLT on the undistorted rays) and reprojected; returns the reprojection error in
    pixels of each of its observations (flat, (K,)). Unlike the pipeline's own reprojection
    error, this does not reward tracks that agree with each other on a wrong geometry.
    """
    known = [f for f in range(len(cameras)) if cameras[f] is not None and poses[f] is not None]
    seen = visibility[known]  # (K, N)
    tracks = np.nonzero(seen.sum(axis=0) >= 2)[0]
    if not len(tracks):
        return np.zeros(0)
    rows = np.zeros((len(tracks), 2 * len(known), 4))
    for k, f in enumerate(known):
        visible = seen[k, tracks]
        rays = cameras[f].cam_from_img(xy[f, tracks[visible]].astype(np.float64))  # (M, 2) normalised
        projection = np.concatenate([poses[f][0], poses[f][1][:, None]], axis=1)  # (3, 4)
        rows[visible, 2 * k] = rays[:, :1] * projection[2] - projection[0]
        rows[visible, 2 * k + 1] = rays[:, 1:] * projection[2] - projection[1]
    # The homogeneous point is the right singular vector of the smallest singular value;
    # unseen frames' rows are zero and drop out.
    points = np.linalg.svd(rows)[2][:, -1]  # (T, 4)
    points = points[:, :3] / points[:, 3:]
    errors = []
    for k, f in enumerate(known):
        visible = seen[k, tracks]
        in_camera = points[visible] @ poses[f][0].T + poses[f][1]
        projected = cameras[f].img_from_cam(in_camera)
        errors.append(np.linalg.norm(projected - xy[f, tracks[visible]], axis=1))
    return np.concatenate(errors)
