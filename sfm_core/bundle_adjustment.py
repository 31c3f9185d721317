"""Bundle adjustment behind one interface, and VGGSfM's iterative refinement around it.

One reprojection model (the COLMAP camera model of each image, a robust Cauchy loss on the
pixel residual); solvers plug in behind `BundleAdjuster`. Ceres (through pycolmap) is the
fast one.
"""
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pycolmap

from sfm_core.registration import extend_tracks, register_images
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks


@dataclass
class BundleAdjustmentSettings:
    refine_focal_length: bool = True
    refine_extra_params: bool = True  # the radial term of SIMPLE_RADIAL
    robust_loss_scale_px: float = 1.0
    max_iterations: int = 100


class BundleAdjuster(Protocol):
    name: str

    def adjust(self, rec: pycolmap.Reconstruction, settings: BundleAdjustmentSettings) -> float:
        """Refine cameras, intrinsics and points of rec in place; return the final cost."""


class CeresBundleAdjuster:
    name = "ceres"

    def adjust(self, rec: pycolmap.Reconstruction, settings: BundleAdjustmentSettings) -> float:
        options = pycolmap.BundleAdjustmentOptions()
        options.print_summary = False
        options.refine_focal_length = settings.refine_focal_length
        options.refine_extra_params = settings.refine_extra_params
        options.refine_principal_point = False
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.loss_function_scale = settings.robust_loss_scale_px
        options.ceres.solver_options.max_num_iterations = settings.max_iterations
        # Global positioning leaves the scene at an arbitrary, often tiny, scale; at such a
        # scale Ceres's tolerances let a free focal length collapse all points onto the
        # cameras. A normalised scene (extent 10) keeps the problem well conditioned.
        rec.normalize()
        pycolmap.bundle_adjustment(rec, options)
        return float(rec.compute_mean_reprojection_error())


def _theseus_bundle_adjuster() -> BundleAdjuster:
    # Imported on use: theseus is an optional dependency, and it imports this module.
    from sfm_core.theseus_ba import TheseusBundleAdjuster

    return TheseusBundleAdjuster()


BUNDLE_ADJUSTERS = {"ceres": CeresBundleAdjuster, "theseus": _theseus_bundle_adjuster}


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


@dataclass
class RefinementSettings:
    # Reprojection thresholds of the filter after each round, in full-resolution pixels:
    # VGGSfM halves its threshold each round.
    filter_thresholds_px: tuple[float, ...] = (4.0, 2.0, 2.0)
    min_triangulation_angle_deg: float = 1.5
    bundle_adjustment: BundleAdjustmentSettings = field(default_factory=BundleAdjustmentSettings)
    triangulation: TriangulationSettings = field(default_factory=TriangulationSettings)


@dataclass
class RefinementReport:
    rounds: int
    observations_filtered: int
    points_retriangulated: int
    frames_dropped: list[int]
    frames_reposed: list[int]  # posed afresh by PnP: wrong or missing after initialisation


def refine(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray, point_of_track: dict[int, int],
           adjuster: BundleAdjuster, settings: RefinementSettings) -> RefinementReport:
    """Bundle-adjust, filter outliers, re-triangulate lost tracks, repeat; then a last BA.

    keypoint_index: tracks (F, N) int32; point_of_track: {track: point3D id}, updated.
    """
    filtered = retriangulated = 0
    fixed_intrinsics = replace(settings.bundle_adjustment, refine_focal_length=False, refine_extra_params=False)
    dropped: list[int] = []
    reposed: set[int] = set()
    frames = sorted(image_id - 1 for image_id in rec.images)
    for round_index, threshold in enumerate(settings.filter_thresholds_px):
        # Intrinsics stay fixed in the first round: far from the solution, a free focal length
        # and distortion can run away with the outliers before the filter removes them.
        adjuster.adjust(rec, settings.bundle_adjustment if round_index else fixed_intrinsics)
        manager = pycolmap.ObservationManager(rec)
        filtered += manager.filter_all_points3D(threshold, settings.min_triangulation_angle_deg)
        # Cameras with absurd intrinsics or no observations left are taken out, not kept wrong.
        for frame_id in manager.filter_frames(0.1, 10.0, 1.0, 10):
            manager.deregister_frame(frame_id)
            dropped.append(frame_id - 1)
        _forget_deleted_points(rec, point_of_track)
        changed = register_images(rec, keypoint_index, point_of_track, frames, max_error_px=threshold)
        _forget_deleted_points(rec, point_of_track)
        extend_tracks(rec, keypoint_index, point_of_track, changed, max_error_px=threshold)
        reposed.update(changed)
        lost = np.array([t for t in range(keypoint_index.shape[1]) if t not in point_of_track], np.int64)
        created = triangulate_tracks(rec, keypoint_index, lost, settings.triangulation)
        point_of_track.update(created)
        retriangulated += len(created)
    adjuster.adjust(rec, settings.bundle_adjustment)
    manager = pycolmap.ObservationManager(rec)
    filtered += manager.filter_all_points3D(settings.filter_thresholds_px[-1], settings.min_triangulation_angle_deg)
    return RefinementReport(len(settings.filter_thresholds_px), filtered, retriangulated, dropped, sorted(reposed))


def _forget_deleted_points(rec: pycolmap.Reconstruction, point_of_track: dict[int, int]) -> None:
    for track, point_id in list(point_of_track.items()):
        if not rec.exists_point3D(point_id):
            del point_of_track[track]
