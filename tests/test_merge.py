from dataclasses import dataclass, replace

import numpy as np
import pycolmap
import pytest
from scipy.spatial.transform import Rotation

from sfm_core.evaluation import evaluate_poses
from sfm_core.merge import images_in_several, merge_models, shared_images_detected_only
from sfm_core.model import new_reconstruction

WIDTH, HEIGHT = 640, 480


@dataclass
class Scene:
    """Ground truth: cam_from_world poses, world points and each image's keypoints.

    keypoint_of[f]: (P,) index of point p's keypoint in image f, -1 where p is not seen;
    keypoints[f]: (K_f, 2) noisy projections, COLMAP pixel coordinates.
    """

    poses: list[pycolmap.Rigid3d]
    points: np.ndarray
    keypoint_of: np.ndarray
    keypoints: list[np.ndarray]
    cameras: list[pycolmap.Camera]


def make_scene(num_images: int = 30, num_points: int = 600, seed: int = 0) -> Scene:
    """Cameras on a circle of radius 8 looking at points in a 4 m cube; two physical cameras.

    Each point faces one way (a horizontal normal) and is seen from within 70 degrees of it,
    so tracks span about a third of the circle.
    """
    rng = np.random.default_rng(seed)
    points = rng.uniform(-2, 2, (num_points, 3))
    facing = rng.uniform(0, 2 * np.pi, num_points)
    normals = np.stack([np.cos(facing), np.sin(facing), np.zeros(num_points)], axis=1)
    cameras = [pycolmap.Camera(model="PINHOLE", width=WIDTH, height=HEIGHT, params=[500, 500, 320, 240], camera_id=1),
               pycolmap.Camera(model="SIMPLE_RADIAL", width=WIDTH, height=HEIGHT, params=[450, 320, 240, 0.0], camera_id=2)]
    poses, keypoint_of, keypoints = [], np.full((num_images, num_points), -1), []
    for f in range(num_images):
        angle = 2 * np.pi * f / num_images
        center = np.array([8 * np.cos(angle), 8 * np.sin(angle), rng.uniform(-1, 1)])
        forward = -center / np.linalg.norm(center)
        right = np.cross(forward, [0, 0, 1.0])
        right /= np.linalg.norm(right)
        R = np.stack([right, np.cross(forward, right), forward])  # rows: camera x, y, z in world
        pose = pycolmap.Rigid3d(pycolmap.Rotation3d(R), -R @ center)
        projected = cameras[f % 2].img_from_cam((R @ points.T).T + pose.translation)
        towards = (center - points) / np.linalg.norm(center - points, axis=1, keepdims=True)
        inside = np.all((projected > 0) & (projected < [WIDTH, HEIGHT]), axis=1)
        inside &= np.sum(towards * normals, axis=1) > np.cos(np.radians(70))
        # A keypoint order of its own per image: indices differ between images.
        seen = rng.permutation(np.nonzero(inside)[0])
        keypoint_of[f, seen] = np.arange(len(seen))
        keypoints.append(projected[seen] + rng.normal(0, 0.3, (len(seen), 2)))
        poses.append(pose)
    return Scene(poses, points, keypoint_of, keypoints, cameras)


def random_sim3(seed: int) -> pycolmap.Sim3d:
    rng = np.random.default_rng(seed)
    rotation = pycolmap.Rotation3d(Rotation.random(random_state=rng).as_matrix())
    return pycolmap.Sim3d(rng.uniform(0.2, 5.0), rotation, rng.uniform(-10, 10, 3))


def chunk_model(scene: Scene, frames: list[int], seed: int, min_track: int = 2,
                skip_frames: tuple[int, ...] = ()) -> pycolmap.Reconstruction:
    """A chunk's model of `frames` in a random similarity frame of its own, as a chunk reconstruction gives.

    Poses and points are slightly off the truth (a chunk's own estimate): rotations by about
    0.03 degrees, centres and points by millimetres. Points are those seen by at least
    min_track of the frames; skip_frames observe no point of this chunk.
    """
    rng = np.random.default_rng(seed)
    names = [f"{f:03d}.png" for f in range(len(scene.poses))]
    rec = new_reconstruction(names, scene.cameras, [f % 2 for f in range(len(scene.poses))], scene.keypoints, frames)
    chunk_from_world = random_sim3(seed)
    for f in frames:
        turn = pycolmap.Rotation3d(Rotation.from_rotvec(rng.normal(0, 3e-4, 3)).as_matrix())
        pose = pycolmap.Rigid3d(turn * scene.poses[f].rotation, scene.poses[f].translation + rng.normal(0, 0.003, 3))
        rec.frame(f + 1).set_cam_from_world(scene.cameras[f % 2].camera_id, chunk_from_world.transform_camera_world(pose))
        rec.register_frame(f + 1)
    observing = [f for f in frames if f not in skip_frames]
    for p, xyz in enumerate(scene.points):
        seen = [f for f in observing if scene.keypoint_of[f, p] >= 0]
        if len(seen) >= min_track:
            track = pycolmap.Track([pycolmap.TrackElement(f + 1, int(scene.keypoint_of[f, p])) for f in seen])
            rec.add_point3D(chunk_from_world * (xyz + rng.normal(0, 0.002, 3)), track)
    return rec


def poses_by_name(rec: pycolmap.Reconstruction) -> dict:
    return {image.name: (image.cam_from_world().rotation.matrix(), image.cam_from_world().translation)
            for image in (rec.image(i) for i in rec.reg_image_ids())}


def truth_by_name(scene: Scene) -> dict:
    return {f"{f:03d}.png": (pose.rotation.matrix(), pose.translation) for f, pose in enumerate(scene.poses)}


def observations(rec: pycolmap.Reconstruction) -> list[tuple[int, int]]:
    return [(e.image_id, e.point2D_idx) for point in rec.points3D.values() for e in point.track.elements]


@pytest.fixture(scope="module")
def scene() -> Scene:
    return make_scene()


@pytest.fixture(scope="module")
def three_chunks(scene) -> list[pycolmap.Reconstruction]:
    """Frames 0-10, 8-21, 19-29: neighbours share three images."""
    return [chunk_model(scene, list(range(0, 11)), 1), chunk_model(scene, list(range(8, 22)), 2),
            chunk_model(scene, list(range(19, 30)), 3)]


def test_three_overlapping_chunks_merge_into_one_model(scene, three_chunks):
    counts_before = [model.num_points3D() for model in three_chunks]
    [merged] = merge_models(three_chunks)
    rec = merged.reconstruction
    assert sorted(rec.reg_image_ids()) == list(range(1, 31))
    assert [model.num_points3D() for model in three_chunks] == counts_before  # inputs untouched
    # The largest chunk is the seed; the others join it through three shared images each.
    assert merged.seed == 1 and sorted(merged.members) == [0, 1, 2]
    for join in merged.joins:
        assert join.shared_images == 3 and join.alignment == "reprojections"
        assert 0 < join.rotation_error_deg < 0.1 and 0 < join.center_error_rel < 1e-3
        assert join.points_joined > 50
    # Poses agree with the truth up to one similarity.
    accuracy = evaluate_poses(poses_by_name(rec), truth_by_name(scene))
    assert accuracy["registered"] == 30 and accuracy["auc@3"] > 0.95
    assert accuracy["median_center_error_rel"] < 1e-3
    assert rec.compute_mean_reprojection_error() < 1.5


def test_merged_tracks_cross_chunks_and_no_keypoint_is_used_twice(scene, three_chunks):
    rec = merge_models(three_chunks)[0].reconstruction
    seen = observations(rec)
    assert len(seen) == len(set(seen))
    assert max(len(p.track.elements) for p in rec.points3D.values()) > max(
        len(p.track.elements) for model in three_chunks for p in model.points3D.values())
    for point_id, point in rec.points3D.items():
        images = [e.image_id for e in point.track.elements]
        assert len(images) == len(set(images))
        for e in point.track.elements:  # the images point back at the point
            assert rec.image(e.image_id).points2D[e.point2D_idx].point3D_id == point_id
    # A world point seen by a frame of one chunk only and a frame of the next chunk only is
    # one point, joined through the shared frames.
    for frame, other in ((5, 13), (16, 24)):
        both = np.nonzero((scene.keypoint_of[frame] >= 0) & (scene.keypoint_of[other] >= 0))[0]
        assert len(both) > 20
        for p in both:
            first = rec.image(frame + 1).points2D[int(scene.keypoint_of[frame, p])]
            second = rec.image(other + 1).points2D[int(scene.keypoint_of[other, p])]
            assert first.has_point3D() and first.point3D_id == second.point3D_id


def world_points(rec: pycolmap.Reconstruction, scene: Scene) -> list[set[int]]:
    """For each point of rec, the world points its observations are keypoints of."""
    world_of = {(f + 1, int(k)): p for f, p in zip(*np.nonzero(scene.keypoint_of >= 0))
                for k in [scene.keypoint_of[f, p]]}
    return [{world_of[(e.image_id, e.point2D_idx)] for e in point.track.elements} for point in rec.points3D.values()]


def test_a_ring_of_chunks_closes_the_loop(scene):
    """Four chunks around the circle, the last overlapping the first: every world point becomes one point."""
    ring = [list(range(0, 11)), list(range(8, 19)), list(range(16, 27)), [27, 28, 29, 0, 1, 2, 24, 25, 26]]
    [merged] = merge_models([chunk_model(scene, frames, seed) for seed, frames in enumerate(ring)])
    assert merged.reconstruction.num_reg_images() == 30
    sources = world_points(merged.reconstruction, scene)
    assert all(len(source) == 1 for source in sources)  # nothing wrongly joined
    assert len(set.union(*sources)) == len(sources)  # and nothing left twice
    assert len(sources) > 0.9 * len(scene.points)


def test_merged_model_bundle_adjusts_and_round_trips(three_chunks, tmp_path):
    rec = merge_models(three_chunks)[0].reconstruction
    options = pycolmap.BundleAdjustmentOptions()
    options.print_summary = False
    pycolmap.bundle_adjustment(rec, options)
    assert rec.compute_mean_reprojection_error() < 0.5  # keypoint noise 0.3 px
    rec.write_binary(tmp_path)
    back = pycolmap.Reconstruction(tmp_path)
    assert sorted(back.reg_image_ids()) == sorted(rec.reg_image_ids())
    assert back.num_points3D() == rec.num_points3D() and back.num_cameras() == 2
    assert sorted(observations(back)) == sorted(observations(rec))


def test_disjoint_chunks_give_two_models_largest_first(scene):
    models = [chunk_model(scene, list(range(0, 12)), 1), chunk_model(scene, list(range(14, 30)), 2)]
    merged = merge_models(models)
    assert [m.seed for m in merged] == [1, 0] and all(not m.joins for m in merged)
    assert [sorted(m.reconstruction.reg_image_ids()) for m in merged] == [list(range(15, 31)), list(range(1, 13))]


def test_too_few_shared_images_start_a_separate_model(scene):
    models = [chunk_model(scene, list(range(0, 12)), 1), chunk_model(scene, list(range(9, 22)), 2)]
    assert len(merge_models(models, min_shared_images=3)) == 1
    assert len(merge_models(models, min_shared_images=4)) == 2
    with pytest.raises(ValueError):
        merge_models(models, min_shared_images=2)  # a similarity needs three cameras


def test_camera_centres_align_when_no_point_is_common(scene):
    # The second chunk triangulated nothing in the shared frames 9-11.
    models = [chunk_model(scene, list(range(0, 12)), 1),
              chunk_model(scene, list(range(9, 22)), 2, skip_frames=(9, 10, 11))]
    [merged] = merge_models(models)
    assert [join.alignment for join in merged.joins] == ["centers"]
    accuracy = evaluate_poses(poses_by_name(merged.reconstruction), truth_by_name(scene))
    assert accuracy["registered"] == 22 and accuracy["median_center_error_rel"] < 1e-3


def test_chunk_with_wrong_poses_is_not_joined(scene):
    wrong = chunk_model(scene, list(range(9, 22)), 2)
    for image_id in (10, 11, 12):  # the shared frames 9-11 posed as if elsewhere: another chunk's geometry
        pose = wrong.image(image_id).cam_from_world()
        turned = pycolmap.Rigid3d(pycolmap.Rotation3d(Rotation.from_rotvec([0, 0, 2.0 * image_id]).as_matrix())
                                  * pose.rotation, pose.translation * 3)
        wrong.frame(image_id).set_cam_from_world(wrong.image(image_id).camera_id, turned)
    merged = merge_models([chunk_model(scene, list(range(0, 12)), 1), wrong])
    assert len(merged) == 2


def test_models_without_registered_images_are_left_out(scene):
    empty = new_reconstruction(["a.png"], scene.cameras[:1], [0], scene.keypoints[:1], [0])
    assert merge_models([empty]) == []


def turned_about_centres(rec: pycolmap.Reconstruction, image_ids, degrees: float) -> None:
    """Turns the cameras of `image_ids` by `degrees` about their own centres, in place."""
    for image_id in image_ids:
        pose = rec.image(image_id).cam_from_world()
        turn = pycolmap.Rotation3d(Rotation.from_rotvec(np.radians(degrees) * np.array([0.6, 0.8, 0.0])).as_matrix())
        centre = pose.inverse().translation
        rotation = turn * pose.rotation
        rec.frame(image_id).set_cam_from_world(rec.image(image_id).camera_id,
                                               pycolmap.Rigid3d(rotation, -(rotation * centre)))


@pytest.mark.parametrize("degrees, joined", [(0.5, True), (5.0, False)])
def test_chunk_models_that_disagree_after_alignment_stay_separate(scene, degrees, joined):
    # The second chunk's shared frames 9-11 looking 5 degrees off where the first has them (as
    # a chunk model that is wrong there): the centres still align, the rotations do not.
    second = chunk_model(scene, list(range(9, 22)), 2)
    turned_about_centres(second, (10, 11, 12), degrees)
    merged = merge_models([chunk_model(scene, list(range(0, 12)), 1), second])
    if joined:
        [model] = merged
        assert [join.model for join in model.joins] == [0] and model.refusals == []
        return
    assert [m.seed for m in merged] == [1, 0]  # the second (13 images) alone, then the first
    [refusal] = [r for m in merged for r in m.refusals]
    assert refusal.shared_images == 3 and abs(refusal.rotation_error_deg - degrees) < 0.2
    assert all(not m.joins for m in merged)


def with_found_points(scene: Scene, seed: int) -> Scene:
    """The scene as one chunk's query-frame tracks see it: a fifth of each image's observations
    at keypoints found by correlation, appended after the detected ones (each chunk its own)."""
    rng = np.random.default_rng(seed)
    keypoint_of, keypoints = scene.keypoint_of.copy(), []
    for f in range(len(scene.poses)):
        seen = np.nonzero(keypoint_of[f] >= 0)[0]
        moved = rng.choice(seen, len(seen) // 5, replace=False)
        found = scene.keypoints[f][keypoint_of[f, moved]] + rng.normal(0, 0.1, (len(moved), 2))
        keypoint_of[f, moved] = len(scene.keypoints[f]) + np.arange(len(moved))
        keypoints.append(np.concatenate([scene.keypoints[f], found]))
    return replace(scene, keypoint_of=keypoint_of, keypoints=keypoints)


def test_shared_images_keep_only_their_detected_keypoints(scene):
    """Two chunks whose shared images (8-10) carry found points of their own under the same
    indices: the shared images are cut to their detected keypoints before the merge reads
    them by index; the others keep theirs; the two models then merge right."""
    first, second = (chunk_model(with_found_points(scene, seed), frames, seed)
                     for seed, frames in ((1, list(range(0, 11))), (2, list(range(8, 22)))))
    shared = images_in_several([first, second])
    assert shared == {9, 10, 11}
    detected = {image_id: len(scene.keypoints[image_id - 1]) for image_id in shared}
    cut_first, cut_second = shared_images_detected_only([first, second], detected)
    for before, after in ((first, cut_first), (second, cut_second)):
        assert sorted(after.reg_image_ids()) == sorted(before.reg_image_ids())
        for image_id in after.reg_image_ids():
            kept = len(after.image(image_id).points2D)
            assert kept == (detected[image_id] if image_id in shared else len(before.image(image_id).points2D))
            np.testing.assert_allclose(after.image(image_id).cam_from_world().matrix(),
                                       before.image(image_id).cam_from_world().matrix())
        assert all(e.point2D_idx < detected[e.image_id] for e in
                   (e for point in after.points3D.values() for e in point.track.elements) if e.image_id in shared)
        assert all(point.track.length() >= 2 for point in after.points3D.values())
        assert 0.8 * before.num_points3D() < after.num_points3D() <= before.num_points3D()
    [merged] = merge_models([cut_first, cut_second])
    assert merged.reconstruction.num_reg_images() == 22 and merged.joins[0].points_joined > 50
    poses = poses_by_name(merged.reconstruction)
    accuracy = evaluate_poses(poses, {name: pose for name, pose in truth_by_name(scene).items() if name in poses})
    assert accuracy["auc@3"] > 0.95
