"""Cameras whose observations stay near the image centre lose their radial term."""
import numpy as np
import pycolmap

from sfm_core.distortion import RadialSupport, drop_unsupported_radial, outer_fraction

WIDTH, HEIGHT = 1000, 800


def two_view_reconstruction(keypoints: np.ndarray, model: str = "SIMPLE_RADIAL") -> pycolmap.Reconstruction:
    """One camera, two registered images seeing the same points at `keypoints` (N, 2) COLMAP pixels."""
    rec = pycolmap.Reconstruction()
    camera = pycolmap.Camera.create_from_model_name(1, model, 900.0, WIDTH, HEIGHT)
    camera.params = [0.05 if name.startswith("k") else value
                     for name, value in zip(camera.params_info.split(", "), camera.params)]
    rec.add_camera_with_trivial_rig(camera)
    for image_id in (1, 2):
        rec.add_image_with_trivial_frame(pycolmap.Image(name=f"{image_id}.jpg", keypoints=keypoints, camera_id=1,
                                                        image_id=image_id))
        frame_id = rec.image(image_id).frame_id
        rec.frame(frame_id).set_cam_from_world(1, pycolmap.Rigid3d())
        rec.register_frame(frame_id)
    for k in range(len(keypoints)):
        track = pycolmap.Track([pycolmap.TrackElement(1, k), pycolmap.TrackElement(2, k)])
        rec.add_point3D(np.array([0.0, 0.0, 5.0]), track, np.zeros(3, np.uint8))
    return rec


def spread_keypoints(max_radius: float, count: int = 400, seed: int = 0) -> np.ndarray:
    """Keypoints uniform over the image area within max_radius of the half-diagonal from the centre."""
    rng = np.random.default_rng(seed)
    centre, half_diagonal = np.array([WIDTH, HEIGHT]) / 2, np.hypot(WIDTH, HEIGHT) / 2
    points = rng.uniform([0, 0], [WIDTH, HEIGHT], (20 * count, 2))
    inside = np.linalg.norm(points - centre, axis=1) <= max_radius * half_diagonal
    return points[inside][:count]


def test_outer_fraction_counts_observations_beyond_the_radius():
    keypoints = spread_keypoints(1.0)
    rec = two_view_reconstruction(keypoints)
    half_diagonal = np.hypot(WIDTH, HEIGHT) / 2
    radii = np.linalg.norm(keypoints - np.array([WIDTH, HEIGHT]) / 2, axis=1)
    assert outer_fraction(rec, 1, 0.7) == np.mean(radii > 0.7 * half_diagonal) > 0.2


def test_camera_seeing_only_the_centre_becomes_pinhole_with_the_same_focal_length():
    rec = two_view_reconstruction(spread_keypoints(0.6))
    assert drop_unsupported_radial(rec) == [1]
    camera = rec.camera(1)
    assert camera.model.name == "SIMPLE_PINHOLE"
    assert list(camera.params) == [900.0, WIDTH / 2, HEIGHT / 2]
    # Projection is the pinhole's: the 0.05 radial term set aside.
    assert np.allclose(camera.img_from_cam(np.array([[0.4, 0.3, 1.0]])), [[0.4 * 900 + 500, 0.3 * 900 + 400]])


def test_camera_seeing_the_outer_image_keeps_its_radial_terms():
    for model in ("SIMPLE_RADIAL", "RADIAL"):
        rec = two_view_reconstruction(spread_keypoints(1.0), model)
        before = list(rec.camera(1).params)
        assert drop_unsupported_radial(rec) == []
        assert rec.camera(1).model.name == model and list(rec.camera(1).params) == before


def test_known_and_distortion_free_cameras_are_left_alone():
    centre_only = spread_keypoints(0.5)
    assert drop_unsupported_radial(two_view_reconstruction(centre_only), keep=(1,)) == []
    assert drop_unsupported_radial(two_view_reconstruction(centre_only, "PINHOLE")) == []
    # RADIAL goes the same way as SIMPLE_RADIAL.
    rec = two_view_reconstruction(centre_only, "RADIAL")
    assert drop_unsupported_radial(rec) == [1] and rec.camera(1).model.name == "SIMPLE_PINHOLE"


def test_the_threshold_is_a_fraction_of_observations():
    keypoints = np.concatenate([spread_keypoints(0.5, 380), spread_keypoints(1.0, 4000, seed=1)])
    half_diagonal = np.hypot(WIDTH, HEIGHT) / 2
    outer = keypoints[np.linalg.norm(keypoints - np.array([WIDTH, HEIGHT]) / 2, axis=1) > 0.7 * half_diagonal]
    inner = keypoints[np.linalg.norm(keypoints - np.array([WIDTH, HEIGHT]) / 2, axis=1) <= 0.5 * half_diagonal]
    few = two_view_reconstruction(np.concatenate([inner[:380], outer[:10]]))  # 2.6 % outside
    enough = two_view_reconstruction(np.concatenate([inner[:380], outer[:30]]))  # 7.3 % outside
    assert drop_unsupported_radial(few, support=RadialSupport(0.7, 0.05)) == [1]
    assert drop_unsupported_radial(enough, support=RadialSupport(0.7, 0.05)) == []

