"""A fold's two sides joined into one model through the pairs that cross its seam.

A fold (sfm_core.superimposition) poses the far side of a symmetric building on the near side,
because pairs of photos that see alike walls (doppelgangers) agree with that. Split along its
sides, each side's model is right. Where the sides meet, neighbouring photos of the two sides
see the same ground from a few degrees apart: their pairs are true matches, and the fold
contradicts them (most of their inliers lie off the epipolar lines the folded poses give),
while a doppelganger pair fits it. Those contradicted pairs across the sides, the seam, tie the
two side models together the right way round:

1. Each side's photo with seam pairs is posed by PnP in the other side's model, from its seam
   matches to that side's points (LO-RANSAC: a photo whose seam matches are mostly wrong gets a
   pose its inliers do not carry, or none).
2. The two side models, each with the other side's photos so posed, then share those photos,
   and are aligned by Sim(3) as chunk models are (sfm_core.merge, with its bound on how far the
   shared photos may disagree: an alignment that would force them is refused).
3. The two side models as they were (each photo with its own side's pose: a photo whose seam
   matches posed it wrong across is not kept so) are joined under that alignment, and the result
   is taken only where it is not folded itself.
4. The seam's inlier matches that fit the joined poses then tie the sides' points together
   (one point seen from both sides), so that the model is one piece for what reads it after:
   the verdict finds how well each photo hangs on the rest by the points they share.

Measured (docs/benchmarks.md): four folded models of 80-150 photos joined into one model each,
AUC@5 0.87-0.997 over their photos; one whose chunk held no seam pair stayed split.

Conventions: poses are world-to-camera (cam_from_world); a pair's inliers index the two photos'
keypoints, which are the points2D of the model's images. Pure: the models are only read.
"""
from dataclasses import dataclass

import numpy as np
import pycolmap

from sfm_core.merge import (MAX_REPROJECTION_ERROR_PX, MIN_SHARED_IMAGES, align_model, disagree_too_much, join_into,
                            one_observation_per_image, pose_disagreement)
from sfm_core.pair_contradictions import CONTRADICTED_BELOW, PairMatches, consistent_share
from sfm_core.superimposition import split_model, superimposition

MAX_EPIPOLAR_ERROR_PX = 4.0  # an inlier fits the folded poses within this Sampson distance
MIN_PNP_INLIERS = 30  # a photo posed across the seam needs this many inliers (as re-posing in registration does)


@dataclass(frozen=True)
class NamedPair:
    """A verified pair's inlier matches: (K, 2) keypoint indices into the photos `name1`, `name2`."""
    name1: str
    name2: str
    inliers: np.ndarray


@dataclass(frozen=True)
class JoinedSides:
    model: pycolmap.Reconstruction  # both sides' photos in one frame, points of both
    seam_pairs: int  # pairs across the sides that the fold contradicts
    posed_across: int  # photos posed by PnP in the other side's model
    rotation_error_deg: float  # median over those photos: their two poses after the alignment
    center_error_rel: float  # the same for their centres, relative to the extent of the camera centres
    doppelgangers: frozenset[frozenset[str]]  # pairs across the sides that fit the fold (by names): what folded it


def join_sides(folded: pycolmap.Reconstruction, sides: tuple[list[str], list[str]],
               pairs: list[NamedPair]) -> JoinedSides | None:
    """The fold's sides (photo names, as superimposition found them) joined into one model
    through its seam (see the module); None when the seam does not join them."""
    side_of = {name: 0 for name in sides[0]} | {name: 1 for name in sides[1]}
    across = [pair for pair in pairs if pair.name1 in side_of and pair.name2 in side_of
              and side_of[pair.name1] != side_of[pair.name2]]
    seam = [pair for pair in across if _contradicted(folded, pair)]
    if not seam:
        return None
    pieces = split_model(folded, sides)
    extended = [_with_photos_across(pieces[own], pieces[1 - own], seam, side_of, own) for own in (0, 1)]
    posed_across = sum(model.num_reg_images() - piece.num_reg_images() for model, piece in zip(extended, pieces))
    if len(extended[0].find_common_reg_image_ids(extended[1])) < MIN_SHARED_IMAGES:
        return None
    target = 0 if pieces[0].num_reg_images() >= pieces[1].num_reg_images() else 1
    alignment = align_model(extended[1 - target], extended[target], MAX_REPROJECTION_ERROR_PX)
    if alignment is None:
        return None
    rotation_deg, center_rel = pose_disagreement(extended[1 - target], extended[target], alignment.tgt_from_src)
    if disagree_too_much(rotation_deg, center_rel):
        return None
    joined = pycolmap.Reconstruction()
    join_into(joined, pieces[target], pycolmap.Sim3d(), MAX_REPROJECTION_ERROR_PX)
    join_into(joined, pieces[1 - target], alignment.tgt_from_src, MAX_REPROJECTION_ERROR_PX)
    if superimposition(joined).folded:
        return None
    _tie_seam(joined, seam, MAX_REPROJECTION_ERROR_PX)
    in_seam = {id(pair) for pair in seam}
    doppelgangers = frozenset(frozenset((pair.name1, pair.name2)) for pair in across if id(pair) not in in_seam)
    return JoinedSides(joined, len(seam), posed_across, rotation_deg, center_rel, doppelgangers)


def _tie_seam(joined: pycolmap.Reconstruction, seam: list[NamedPair], max_error_px: float) -> None:
    """Each seam inlier match whose keypoints' points (one or both) reproject within max_error_px
    onto the other keypoint becomes one point: the other keypoint joins that point's track, or
    the two points are merged. A track never sees a photo twice."""
    for pair in seam:
        first, second = joined.find_image_with_name(pair.name1), joined.find_image_with_name(pair.name2)
        if first is None or second is None:
            continue
        ids = (first.image_id, second.image_id)
        for match in pair.inliers:
            keys = (int(match[0]), int(match[1]))
            points = [_point_of(joined, image_id, key) for image_id, key in zip(ids, keys)]
            fits = [point is not None and _reprojects(joined, point, ids[1 - k], keys[1 - k], max_error_px)
                    for k, point in enumerate(points)]
            if points[0] is not None and points[1] is not None:
                if points[0] != points[1] and all(fits) and one_observation_per_image(joined, points, []):
                    joined.merge_points3D(*points)
            else:
                k = 0 if points[0] is not None else 1
                element = pycolmap.TrackElement(ids[1 - k], keys[1 - k])
                if points[k] is not None and fits[k] and one_observation_per_image(joined, [points[k]], [element]):
                    joined.add_observation(points[k], element)


def _point_of(rec: pycolmap.Reconstruction, image_id: int, keypoint: int) -> int | None:
    point2D = rec.image(image_id).points2D[keypoint]
    return point2D.point3D_id if point2D.has_point3D() else None


def _reprojects(rec: pycolmap.Reconstruction, point_id: int, image_id: int, keypoint: int, max_error_px: float) -> bool:
    image = rec.image(image_id)
    projected = image.project_point(rec.point3D(point_id).xyz)
    return projected is not None and np.linalg.norm(projected - image.points2D[keypoint].xy) <= max_error_px


def _contradicted(rec: pycolmap.Reconstruction, pair: NamedPair) -> bool:
    """Whether most of the pair's inliers lie off the epipolar lines of the model's two poses."""
    first, second = rec.find_image_with_name(pair.name1), rec.find_image_with_name(pair.name2)
    matches = PairMatches(pair.name1, pair.name2, _keypoints(first, pair.inliers[:, 0]),
                          _keypoints(second, pair.inliers[:, 1]))
    share = consistent_share(rec, matches, MAX_EPIPOLAR_ERROR_PX)
    return share is not None and share < CONTRADICTED_BELOW


def _with_photos_across(own: pycolmap.Reconstruction, other: pycolmap.Reconstruction, seam: list[NamedPair],
                        side_of: dict[str, int], own_side: int) -> pycolmap.Reconstruction:
    """`own` with the other side's photos that its seam matches pose by PnP against its points
    (their camera as in `other`); each keeps its inlier matches as observations of those points."""
    to_points: dict[str, dict[int, int]] = {}  # other side's photo -> {its keypoint: own point3D id}
    for pair in seam:
        for mine, theirs, columns in ((pair.name1, pair.name2, (0, 1)), (pair.name2, pair.name1, (1, 0))):
            if side_of[mine] != own_side:
                continue
            image = own.find_image_with_name(mine)
            for match in pair.inliers:
                point2D = image.points2D[int(match[columns[0]])]
                if point2D.has_point3D():
                    to_points.setdefault(theirs, {})[int(match[columns[1]])] = point2D.point3D_id
    extended = pycolmap.Reconstruction(own)
    options = pycolmap.AbsolutePoseEstimationOptions()
    options.ransac.max_error = MAX_EPIPOLAR_ERROR_PX
    options.ransac.random_seed = 0
    for name, matches in sorted(to_points.items()):
        if len(matches) < MIN_PNP_INLIERS:
            continue
        image = other.find_image_with_name(name)
        camera = other.camera(image.camera_id)
        keypoint_ids, point_ids = np.array(list(matches)), np.array(list(matches.values()))
        result = pycolmap.estimate_and_refine_absolute_pose(
            _keypoints(image, keypoint_ids), np.array([own.point3D(int(i)).xyz for i in point_ids]), camera, options)
        if result is None or result["num_inliers"] < MIN_PNP_INLIERS:
            continue
        if not extended.exists_camera(camera.camera_id):
            extended.add_camera_with_trivial_rig(camera)
        keypoints = np.array([p.xy for p in image.points2D], np.float64).reshape(-1, 2)
        extended.add_image_with_trivial_frame(pycolmap.Image(name=name, camera_id=image.camera_id,
                                                             image_id=image.image_id, keypoints=keypoints),
                                              result["cam_from_world"])
        for keypoint_id, point_id, inlier in zip(keypoint_ids, point_ids, result["inlier_mask"]):
            element = pycolmap.TrackElement(image.image_id, int(keypoint_id))
            if inlier and one_observation_per_image(extended, [int(point_id)], [element]):
                extended.add_observation(int(point_id), element)
    return extended


def _keypoints(image: pycolmap.Image, indices: np.ndarray) -> np.ndarray:
    """(K, 2) COLMAP pixel coordinates of the image's keypoints `indices`."""
    return np.array([image.points2D[int(k)].xy for k in indices], np.float64).reshape(-1, 2)
