"""The model grades itself: per image, how well its pose is determined; per model, a verdict.

A model can come out of the pipeline looking complete and be wrong: cameras placed from too few
or clustered points, points seen over a near-zero baseline (their depth, and the scale of the
cameras around them, undetermined), focal lengths that collapse the projection towards an
orthographic one (the internet collection of issue 18 ended with focals up to 405,078 px on
1,000 px photos). Those leave marks in the model itself, which this module reads.

Per image (`ImageGrade`): its observations with a 3D point, the median triangulation angle of
those points (for each, the largest angle at the point between this camera's ray and the ray of
another camera observing it), the share of a GRID x GRID grid of the image its observations
cover, and whether its pose is determined: enough observations, spread over the image, seen with
enough parallax, through a camera of plausible focal length. An image whose pose is not
determined is reported as such and not counted as registered.

Per model (`ModelVerdict`): "ok", or "suspect" with every reason that applies (see
VerdictRules for the rules and the figures behind them).

Conventions: poses are world-to-camera (pycolmap's cam_from_world), observations in COLMAP
pixel coordinates (the centre of the top-left pixel at (0.5, 0.5), an image covering
[0, W] x [0, H]). Pure: no I/O, the reconstruction is only read.
"""
from dataclasses import dataclass, field

import numpy as np
import pycolmap
import scipy.sparse
import scipy.sparse.csgraph

from sfm_core.focal_range import MAX_FOCAL_FACTOR, MIN_FOCAL_FACTOR
from sfm_core.pair_contradictions import CONTRADICTED_BELOW, PairMatches, consistent_share

GRID = 4  # the image is cut into GRID x GRID cells to measure how its observations spread


@dataclass(frozen=True)
class VerdictRules:
    """Thresholds of the grades. A pose needs min_observations points over min_coverage of the
    image (a resection from a few points, or from points in one corner, lets the camera turn
    and slide along them), seen with min_image_angle_deg of parallax, and it must belong to the
    model's main group of images joined pairwise by min_shared_points shared points (the
    pipeline's min_inliers of a verified pair: a part of the model hanging on fewer points may be
    turned or mirrored, as where two wrong pieces were joined). A model is suspect when
    more than max_undetermined_share of its images are undetermined, when its points' median
    triangulation angle is below min_model_angle_deg (VGGSfM's and COLMAP's 1.5 deg: below it
    depth is barely constrained), when its mean track length is below min_mean_track_length
    (fewer than about one point in five seen by a third photo: a chain of two-view models that no
    third view checks; this pipeline's right models measured 2.36-3.37 on the shared photo
    sets, two-photo models 2.0), when any camera's focal length is
    outside focal_range (as a multiple of its long side; sfm_core.focal_range's 0.3x-25x, the 11-900 mm
    full-frame equivalents of real lenses), or when more than max_left_out_share of the
    collection's usable photos are not determined in it (such a model does not reconstruct the
    collection: scored against a truth of those photos, a model missing 10 % of them loses
    about 19 % of the pairs). It is suspect, too, when the adjustment moved the focal lengths of
    more than max_exif_departed_share of its photos away from the EXIF focal length they started
    from, by more than max_exif_departure (relative): that EXIF was wrong for them, as for photos
    cropped or resized after the shot, whose principal points are also off the centre the model
    assumes. Measured on synthetic collections of 60-150 photos: with true EXIF the adjusted focal
    lengths stay within 0.987-1.014 of it (10th-90th percentile); with cropped photos keeping
    their frame's EXIF (synth --nuisances crops) they end 1.12-1.88 x it, in a model with AUC@5
    0.09. And it is suspect when more than max_contradicted_pair_share of its verified pairs of
    min_pair_inliers or more between determined photos (and at least min_contradicted_pairs)
    have under half their inliers within max_epipolar_error_px of the epipolar geometry of its
    poses (sfm_core.pair_contradictions): on every right model measured (the shared photo sets
    and four synthetic sets, 28-821 such pairs each) no pair fell under 0.57; a symmetric
    building folded onto itself had 21 of 411, cropped photos (AUC@5 0.79) 26 of 844. Right
    crops models (AUC@5 0.90-0.96) had 32-132 contradicted pairs, nearly all with a photo posed
    without points (undetermined): such pairs are not read."""

    min_observations: int = 30
    min_shared_points: int = 15
    min_coverage: float = 0.25
    min_image_angle_deg: float = 1.0
    max_undetermined_share: float = 0.1
    min_model_angle_deg: float = 1.5
    min_mean_track_length: float = 2.2
    focal_range: tuple[float, float] = (MIN_FOCAL_FACTOR, MAX_FOCAL_FACTOR)
    max_left_out_share: float = 0.1
    max_exif_departure: float = 0.1
    max_exif_departed_share: float = 1 / 3
    min_pair_inliers: int = 30
    max_epipolar_error_px: float = 4.0
    max_contradicted_pair_share: float = 0.01
    min_contradicted_pairs: int = 2


@dataclass(frozen=True)
class ImageGrade:
    name: str
    observations: int  # observations with a 3D point
    median_triangulation_angle_deg: float  # 0 when it has no point seen from elsewhere
    coverage: float  # share of the GRID x GRID cells of the image holding an observation
    focal_factor: float  # focal length / long side of its camera
    determined: bool
    why: str | None  # why the pose is not determined; None when it is


@dataclass
class ModelVerdict:
    status: str  # "ok" or "suspect"
    reasons: list[str]
    registered: int  # images with a determined pose
    undetermined: list[str]  # names of images registered with an undetermined pose
    median_triangulation_angle_deg: float
    mean_track_length: float
    images: list[ImageGrade] = field(default_factory=list)


def grade_model(rec: pycolmap.Reconstruction, photos: int | None = None,
                rules: VerdictRules = VerdictRules(), exif_focals: dict[str, float] | None = None,
                pairs: list[PairMatches] | None = None) -> ModelVerdict:
    """Grade the images of `rec` and judge it. `photos`: how many usable photos the collection
    has; None leaves the left-out rule out. `exif_focals`: {image name: the EXIF focal length in
    pixels that its camera started from}, for the EXIF rule. `pairs`: the verified pairs' inlier
    matches, for the rule on contradicted pairs."""
    point_ids, image_ids, xy, spans = _observations(rec)
    per_obs_angle, per_point_angle = _triangulation_angles(rec, point_ids, image_ids)
    detached = _weakly_joined(point_ids, image_ids, rules.min_shared_points)
    images = [_grade_image(rec, image_id, xy[spans[image_id]], per_obs_angle[spans[image_id]],
                           detached.get(image_id), rules)
              for image_id in sorted(rec.reg_image_ids())]
    undetermined = [g for g in images if not g.determined]
    median_angle = float(np.median(per_point_angle)) if per_point_angle.size else 0.0
    mean_track = float(len(point_ids) / rec.num_points3D()) if rec.num_points3D() else 0.0

    reasons = []
    if len(undetermined) > rules.max_undetermined_share * len(images):
        reasons.append(f"{len(undetermined)} of {len(images)} registered images have undetermined poses "
                       f"({_names(undetermined)})")
    if median_angle < rules.min_model_angle_deg:
        reasons.append(f"median triangulation angle {median_angle:.2f} deg < {rules.min_model_angle_deg} deg: "
                       f"near-degenerate baselines")
    if mean_track < rules.min_mean_track_length:
        reasons.append(f"mean track length {mean_track:.2f} < {rules.min_mean_track_length}")
    for camera_id, camera in sorted(rec.cameras.items()):
        factor = _focal_factor(camera)
        if not rules.focal_range[0] <= factor <= rules.focal_range[1]:
            reasons.append(f"camera {camera_id}: focal {camera.mean_focal_length():.0f} px is {factor:.3g}x its "
                           f"long side, outside {rules.focal_range[0]}x-{rules.focal_range[1]:g}x")
    determined = len(images) - len(undetermined)
    if photos and photos - determined > rules.max_left_out_share * photos:
        reasons.append(f"{photos - determined} of {photos} photos left out of the model or undetermined in it")
    if exif_focals:
        reasons += _exif_departures(rec, exif_focals, rules)
    if pairs:
        reasons += _contradicted_pairs(rec, pairs, rules, {g.name for g in undetermined})
    if not images:
        reasons.append("no registered image")
    return ModelVerdict("suspect" if reasons else "ok", reasons, determined, [g.name for g in undetermined],
                        round(median_angle, 3), round(mean_track, 3), images)


def _exif_departures(rec: pycolmap.Reconstruction, exif_focals: dict[str, float], rules: VerdictRules) -> list[str]:
    """The EXIF rule's reason, if it applies (see VerdictRules)."""
    posed = [image for image in rec.images.values() if image.has_pose]
    ratios = np.array([rec.camera(image.camera_id).mean_focal_length() / exif_focals[image.name]
                       for image in posed if image.name in exif_focals])
    departed = np.abs(ratios - 1) > rules.max_exif_departure
    if not len(ratios) or departed.sum() <= rules.max_exif_departed_share * len(posed):
        return []
    return [f"the adjusted focal lengths of {departed.sum()} of {len(ratios)} photos with an EXIF focal length left "
            f"it by more than {rules.max_exif_departure:.0%} (median x{np.median(ratios):.2f}): their EXIF is wrong, "
            f"as for photos cropped or resized after the shot, and their principal points may be off too"]


def _contradicted_pairs(rec: pycolmap.Reconstruction, pairs: list[PairMatches], rules: VerdictRules,
                        undetermined: set[str]) -> list[str]:
    """The rule on verified pairs that the model's poses contradict, if it applies (VerdictRules).
    Pairs with an undetermined photo are not read: its pose is already not claimed, and the
    rule on undetermined photos counts it (a photo posed without points contradicted all its
    pairs, 39 of them, in a right model)."""
    shares = [(consistent_share(rec, pair, rules.max_epipolar_error_px), pair) for pair in pairs
              if len(pair.xy1) >= rules.min_pair_inliers and pair.name1 not in undetermined
              and pair.name2 not in undetermined]
    shares = [(share, pair) for share, pair in shares if share is not None]
    contradicted = sorted((share, pair.name1, pair.name2) for share, pair in shares if share < CONTRADICTED_BELOW)
    if len(contradicted) < rules.min_contradicted_pairs or \
            len(contradicted) <= rules.max_contradicted_pair_share * len(shares):
        return []
    return [f"{len(contradicted)} of {len(shares)} verified pairs of {rules.min_pair_inliers} inliers or more "
            f"contradict its poses (most of their inliers over {rules.max_epipolar_error_px:g} px from the epipolar "
            f"lines the model gives; " + ", ".join(f"{a} - {b}" for _, a, b in contradicted[:3]) + "): parts of "
            f"it may be turned or folded onto each other, as a building whose two sides look alike"]


def _observations(rec: pycolmap.Reconstruction) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[int, slice]]:
    """Every observation of a 3D point by a registered image, image by image: point ids (O,),
    image ids (O,), COLMAP pixel coordinates (O, 2), and each image's span of them."""
    point_ids, image_ids, xy, spans = [], [], [], {}
    for image_id in rec.reg_image_ids():
        start = len(point_ids)
        for p in rec.image(image_id).get_observation_points2D():
            point_ids.append(p.point3D_id)
            image_ids.append(image_id)
            xy.append(p.xy)
        spans[image_id] = slice(start, len(point_ids))
    return (np.array(point_ids, np.int64), np.array(image_ids, np.int64),
            np.array(xy, np.float64).reshape(-1, 2), spans)


def _triangulation_angles(rec: pycolmap.Reconstruction, point_ids: np.ndarray,
                          image_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(per observation: the largest angle at its point between its ray and another observing
    camera's, (O,) degrees; per point: the largest angle between two of its rays, (P,) degrees).
    Points are grouped by track length so that each group is one (n, L, L) array of angles."""
    per_obs = np.zeros(len(point_ids))
    if not len(point_ids):
        return per_obs, np.zeros(0)
    centres = {i: rec.image(i).projection_center() for i in np.unique(image_ids)}
    unique = np.unique(point_ids)
    xyz = np.array([rec.point3D(int(p)).xyz for p in unique]).reshape(-1, 3)
    per_point = np.zeros(len(unique))
    for points, obs in _tracks_by_length(point_ids):
        length = obs.shape[1]
        rays = xyz[points][:, None, :] - np.array([centres[i] for i in image_ids[obs].ravel()]).reshape(-1, length, 3)
        rays /= np.linalg.norm(rays, axis=-1, keepdims=True)
        angles = np.degrees(np.arccos(np.clip(np.einsum("nld,nkd->nlk", rays, rays), -1.0, 1.0)))  # (n, L, L)
        per_obs[obs] = angles.max(axis=2)
        per_point[points] = angles.max(axis=(1, 2))
    return per_obs, per_point


def _tracks_by_length(point_ids: np.ndarray):
    """Yields, for each track length L, (indices of those points into np.unique(point_ids) (n,),
    their observations' indices (n, L))."""
    order = np.argsort(point_ids, kind="stable")
    _, starts, lengths = np.unique(point_ids[order], return_index=True, return_counts=True)
    for length in np.unique(lengths):
        points = np.flatnonzero(lengths == length)
        yield points, order[starts[points][:, None] + np.arange(length)]


def _weakly_joined(point_ids: np.ndarray, image_ids: np.ndarray, min_shared: int) -> dict[int, str]:
    """{image id: why} of the images outside the largest group of images joined by pairs that
    share at least `min_shared` points: their poses hang on the rest of the model by a few
    points, as where two wrong pieces were joined."""
    if not len(point_ids):
        return {}
    ids, index = np.unique(image_ids, return_inverse=True)
    pairs = []
    for _, obs in _tracks_by_length(point_ids):
        first, second = np.triu_indices(obs.shape[1], 1)
        pairs.append(np.stack([index[obs[:, first]].ravel(), index[obs[:, second]].ravel()], axis=1))
    pairs = np.concatenate(pairs)
    pair_codes, shared = np.unique(pairs.min(axis=1) * len(ids) + pairs.max(axis=1), return_counts=True)
    strong = pair_codes[shared >= min_shared]
    graph = scipy.sparse.coo_matrix((np.ones(len(strong)), (strong // len(ids), strong % len(ids))),
                                    shape=(len(ids), len(ids)))
    _, group = scipy.sparse.csgraph.connected_components(graph, directed=False)
    sizes = np.bincount(group)
    main = sizes.argmax()
    return {int(ids[i]): f"in a group of {sizes[group[i]]} image(s) sharing fewer than {min_shared} points "
                         f"with any image of the model's main group of {sizes[main]}"
            for i in np.flatnonzero(group != main)}


def _grade_image(rec: pycolmap.Reconstruction, image_id: int, xy: np.ndarray, angles: np.ndarray,
                 detached: str | None, rules: VerdictRules) -> ImageGrade:
    """The grade of one image from its observations' COLMAP pixel coordinates xy (N, 2),
    triangulation angles (N,) degrees and why it is detached from the model's main group (or
    None)."""
    image = rec.image(image_id)
    camera = image.camera
    n = len(xy)
    angle = float(np.median(angles)) if n else 0.0
    cells = np.floor(xy / [camera.width, camera.height] * GRID).clip(0, GRID - 1).astype(np.int64)
    coverage = len(np.unique(cells[:, 0] * GRID + cells[:, 1])) / GRID**2 if n else 0.0
    factor = _focal_factor(camera)
    problems = []
    if n < rules.min_observations:
        problems.append(f"{n} observations < {rules.min_observations}")
    if coverage < rules.min_coverage:
        problems.append(f"observations cover {coverage:.0%} of the image < {rules.min_coverage:.0%}")
    if angle < rules.min_image_angle_deg:
        problems.append(f"median triangulation angle {angle:.2f} deg < {rules.min_image_angle_deg} deg")
    if not rules.focal_range[0] <= factor <= rules.focal_range[1]:
        problems.append(f"focal {factor:.3g}x the long side")
    if detached:
        problems.append(detached)
    return ImageGrade(image.name, n, round(angle, 3), round(coverage, 3), round(factor, 3), not problems,
                      "; ".join(problems) or None)


def _focal_factor(camera: pycolmap.Camera) -> float:
    return float(camera.mean_focal_length()) / max(camera.width, camera.height)


def _names(grades: list[ImageGrade], at_most: int = 5) -> str:
    names = ", ".join(g.name for g in grades[:at_most])
    return names + (f" and {len(grades) - at_most} more" if len(grades) > at_most else "")
