"""A fold's sides are joined the right way round through the pairs across its seam, or left apart."""
import itertools

import numpy as np
import pycolmap

from sfm_core.evaluation import evaluate_poses
from sfm_core.fold_join import NamedPair, join_sides
from sfm_core.verdict import grade_model
from storage.colmap_model import poses_by_name
from test_verdict import arc, cube_points, scene_model

HALF_TURN = pycolmap.Rigid3d(pycolmap.Rotation3d(np.diag([-1.0, -1.0, 1.0])), np.zeros(3))  # about the vertical


def _truth_and_fold():
    """24 photos on a ring around a block of points (the truth), and the model that folded it:
    side B's photos (the half of the ring at y < 0) and the points only they see turned half a
    turn about the vertical onto side A, each point seen by both sides split into one of each
    side. Also every pair of photos sharing 30 points or more, with its true matches."""
    truth = scene_model(arc(24, 10.0, 345), cube_points(3000))
    side_b = {image.name for image in truth.images.values() if image.projection_center()[1] < 0}
    folded = pycolmap.Reconstruction()
    folded.add_camera_with_trivial_rig(truth.camera(1))
    for image in truth.images.values():
        keypoints = np.array([p.xy for p in image.points2D], np.float64)
        folded.add_image_with_trivial_frame(
            pycolmap.Image(name=image.name, keypoints=keypoints, camera_id=1, image_id=image.image_id),
            image.cam_from_world() * HALF_TURN.inverse() if image.name in side_b else image.cam_from_world())
    for point in truth.points3D.values():
        for on_b in (False, True):
            elements = [e for e in point.track.elements if (truth.image(e.image_id).name in side_b) == on_b]
            if len(elements) >= 2:
                folded.add_point3D(HALF_TURN * point.xyz if on_b else point.xyz, pycolmap.Track(elements))
    keypoint_of = {}  # (image id, point id) -> keypoint index
    for point_id, point in truth.points3D.items():
        for e in point.track.elements:
            keypoint_of[e.image_id, point_id] = e.point2D_idx
    pairs = []
    for first, second in itertools.combinations(sorted(truth.images), 2):
        shared = [p for p in truth.points3D if (first, p) in keypoint_of and (second, p) in keypoint_of]
        if len(shared) >= 30:
            pairs.append(NamedPair(truth.image(first).name, truth.image(second).name,
                                   np.array([(keypoint_of[first, p], keypoint_of[second, p]) for p in shared])))
    sides = (sorted(image.name for image in truth.images.values() if image.name not in side_b), sorted(side_b))
    return truth, folded, sides, pairs


def test_a_fold_is_joined_the_right_way_round_through_its_seam():
    truth, folded, sides, pairs = _truth_and_fold()
    true_poses = poses_by_name(truth)
    assert evaluate_poses(poses_by_name(folded), true_poses)["auc@5"] < 0.6  # the fold is wrong

    joined = join_sides(folded, sides, pairs)

    assert joined is not None and joined.model.num_reg_images() == 24
    assert evaluate_poses(poses_by_name(joined.model), true_poses)["auc@5"] > 0.99
    # Most pairs across the sides are contradicted by the fold (those of photos it laid close to
    # where the truth has them fit it either way), and each photo is posed across.
    across = sum((p.name1 in sides[0]) != (p.name2 in sides[0]) for p in pairs)
    assert 0.8 * across < joined.seam_pairs < across
    assert len(joined.doppelgangers) == across - joined.seam_pairs
    assert joined.posed_across == 24
    assert joined.rotation_error_deg < 0.01 and joined.center_error_rel < 1e-4
    assert joined.model.num_points3D() > 2000
    # The seam's matches tie the sides' points together: the fold had split each point seen
    # from both sides in two, and the joined model sees it from both again.
    side_of = {name: k for k, side in enumerate(sides) for name in side}
    both = [point for point in joined.model.points3D.values()
            if len({side_of[joined.model.image(e.image_id).name] for e in point.track.elements}) == 2]
    assert len(both) > 300
    grade = grade_model(joined.model)
    assert grade.undetermined == [], grade.images  # each side hangs on the other by shared points


def test_sides_without_pairs_across_them_stay_apart():
    _, folded, sides, pairs = _truth_and_fold()
    within = [p for p in pairs if (p.name1 in sides[0]) == (p.name2 in sides[0])]
    assert join_sides(folded, sides, within) is None


def test_pairs_across_that_the_poses_explain_do_not_join_sides():
    """Pairs across the sides that fit the model's poses (as doppelgangers fit a fold) are no
    seam: given the true model cut in two, none of its pairs across is contradicted."""
    truth, _, sides, pairs = _truth_and_fold()
    assert any((p.name1 in sides[0]) != (p.name2 in sides[0]) for p in pairs)
    assert join_sides(truth, sides, pairs) is None
