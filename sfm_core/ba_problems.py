"""Synthetic bundle adjustment problems with a known answer, for the solvers' tests and benchmarks."""
import numpy as np
import pycolmap


def synthetic_reconstruction(num_images: int, num_points: int, model: str = "SIMPLE_RADIAL",
                             pixel_noise: float = 0.5, outlier_fraction: float = 0.01,
                             seed: int = 0) -> pycolmap.Reconstruction:
    """Cameras on a ring looking at points in a cube: a bundle adjustment test problem.

    Ring radius 10, points uniform in [-2, 2]^3, images 1600 x 1200 px, one camera per image
    (focal 1000 px, principal point at the image centre, radial terms 0.01). Each point faces
    a random direction and is seen by the cameras within 60 degrees of it (~1/3 of the ring);
    its observations carry Gaussian pixel noise, a fraction of them are moved 5-50 px
    (outliers). Poses and points are exact: perturb them to make a problem.
    """
    rng = np.random.default_rng(seed)
    azimuths = 2 * np.pi * np.arange(num_images) / num_images
    points = rng.uniform(-2, 2, (num_points, 3))
    facing = rng.uniform(0, 2 * np.pi, num_points)
    rec = pycolmap.Reconstruction()
    tracks = [[] for _ in range(num_points)]
    for image_index, azimuth in enumerate(azimuths):
        camera = pycolmap.Camera.create_from_model_name(image_index + 1, model, 1000.0, 1600, 1200)
        camera.params = [0.01 if i in _radial_indices(model) else v for i, v in enumerate(camera.params)]
        pose = _look_at(10 * np.array([np.cos(azimuth), np.sin(azimuth), 0.3]))
        seen = np.nonzero(np.cos(facing - azimuth) > np.cos(np.radians(60)))[0]
        xy = camera.img_from_cam(pose * points[seen])
        xy += rng.normal(0, pixel_noise, xy.shape)
        outliers = rng.random(len(seen)) < outlier_fraction
        xy[outliers] += rng.uniform(5, 50, (outliers.sum(), 2)) * rng.choice([-1, 1], (outliers.sum(), 2))
        rec.add_camera_with_trivial_rig(camera)
        image = pycolmap.Image(name=f"{image_index}.jpg", keypoints=xy, camera_id=camera.camera_id,
                               image_id=image_index + 1)
        rec.add_image_with_trivial_frame(image)
        frame_id = rec.image(image_index + 1).frame_id
        rec.frame(frame_id).set_cam_from_world(camera.camera_id, pose)
        rec.register_frame(frame_id)
        for keypoint, point in enumerate(seen):
            tracks[point].append(pycolmap.TrackElement(image_index + 1, keypoint))
    for point, elements in zip(points, tracks):
        if len(elements) >= 2:
            rec.add_point3D(point, pycolmap.Track(elements), np.zeros(3, np.uint8))
    return rec


def _radial_indices(model: str) -> list[int]:
    return {"SIMPLE_RADIAL": [3], "RADIAL": [3, 4]}.get(model, [])


def _look_at(centre: np.ndarray) -> pycolmap.Rigid3d:
    """cam_from_world of a camera at centre looking at the origin, y down, world z up."""
    forward = -centre / np.linalg.norm(centre)
    right = np.cross(forward, [0.0, 0.0, 1.0])
    right /= np.linalg.norm(right)
    rotation = np.stack([right, np.cross(forward, right), forward])  # rows: camera axes in world
    return pycolmap.Rigid3d(pycolmap.Rotation3d(rotation), -rotation @ centre)


def perturbed_reconstruction(num_images: int, num_points: int, seed: int = 1, **kwargs) -> pycolmap.Reconstruction:
    """synthetic_reconstruction(**kwargs) made into a problem: points and camera centres moved
    by ~2 cm (N(0, 2 cm) per axis), focal lengths 2 % too long."""
    rec = synthetic_reconstruction(num_images, num_points, **kwargs)
    rng = np.random.default_rng(seed)
    for point in rec.points3D.values():
        point.xyz = point.xyz + rng.normal(0, 0.02, 3)
    for image in rec.images.values():
        pose = image.cam_from_world()
        rec.frame(image.frame_id).set_cam_from_world(
            image.camera_id, pycolmap.Rigid3d(pose.rotation, pose.translation + rng.normal(0, 0.02, 3)))
    for camera in rec.cameras.values():
        focal = np.zeros(len(camera.params), bool)
        focal[list(camera.focal_length_idxs())] = True
        camera.params = np.where(focal, camera.params * 1.02, camera.params)
    return rec
