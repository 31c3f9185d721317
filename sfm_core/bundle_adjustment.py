"""Bundle adjustment behind one interface, and VGGSfM's iterative refinement around it.

One reprojection model (the COLMAP camera model of each image, a robust Cauchy loss on the
pixel residual); solvers plug in behind `BundleAdjuster`. Ceres (through pycolmap) is the
fast one.
"""
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np
import pycolmap

from sfm_core.distortion import drop_unsupported_radial
from sfm_core.registration import extend_tracks, register_images
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks


@dataclass
class BundleAdjustmentSettings:
    refine_focal_length: bool = True
    refine_extra_params: bool = True  # the radial term of SIMPLE_RADIAL
    # Held at the image centre, as COLMAP does, unless photos were cropped after the shot
    # (their EXIF contradicted by the view graph) and their principal points are off centre.
    refine_principal_point: bool = False
    robust_loss_scale_px: float = 1.0
    max_iterations: int = 100
    function_tolerance: float = 1e-6  # stop when an iteration lowers the cost by less, relatively
    constant_cameras: tuple[int, ...] = ()  # camera ids whose intrinsics stay as they are (known)


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
        options.refine_principal_point = settings.refine_principal_point
        options.ceres.loss_function_type = pycolmap.LossFunctionType.CAUCHY
        options.ceres.loss_function_scale = settings.robust_loss_scale_px
        options.ceres.solver_options.max_num_iterations = settings.max_iterations
        # Ceres's own defaults (pycolmap sets 0, which runs every iteration to the cap: 3x the
        # time for the same final cost on an 80-image chunk).
        options.ceres.solver_options.function_tolerance = settings.function_tolerance
        options.ceres.solver_options.parameter_tolerance = 1e-8
        # Global positioning leaves the scene at an arbitrary, often tiny, scale; at such a
        # scale Ceres's tolerances let a free focal length collapse all points onto the
        # cameras. A normalised scene (extent 10) keeps the problem well conditioned.
        rec.normalize()
        # Not pycolmap.bundle_adjustment: it builds a COLMAP OptionManager, which resets glog to
        # print INFO to stderr in the whole process (--verbose is the user's switch for that).
        # Without known cameras this is what it runs (COLMAP's BundleAdjustmentController).
        config = pycolmap.BundleAdjustmentConfig()
        for image_id in rec.reg_image_ids():
            config.add_image(image_id)
        for camera_id in settings.constant_cameras:
            if rec.exists_camera(camera_id):
                config.set_constant_cam_intrinsics(camera_id)
        if settings.constant_cameras:
            config.fix_gauge(pycolmap.BundleAdjustmentGauge.THREE_POINTS)
        else:
            pycolmap.ObservationManager(rec).filter_observations_with_negative_depth()
            config.fix_gauge(pycolmap.BundleAdjustmentGauge.TWO_CAMS_FROM_WORLD)
        pycolmap.create_default_bundle_adjuster(options, config, rec).solve()
        rec.update_point_3d_errors()  # the solver leaves the points' stored errors as they were
        return float(rec.compute_mean_reprojection_error())


def _theseus_bundle_adjuster() -> BundleAdjuster:
    # Imported on use: theseus is an optional dependency, and it imports this module.
    from sfm_core.theseus_ba import TheseusBundleAdjuster

    return TheseusBundleAdjuster()


BUNDLE_ADJUSTERS = {"ceres": CeresBundleAdjuster, "theseus": _theseus_bundle_adjuster}


@dataclass
class RefinementSettings:
    # Reprojection thresholds of the filter after each round, in full-resolution pixels:
    # VGGSfM halves its threshold each round.
    filter_thresholds_px: tuple[float, ...] = (4.0, 2.0, 2.0)
    # The global adjustment of merged chunk models, each converged already: on 1000 photos
    # (2 million observations, 12 s an iteration here) 5 iterations came within 0.2 % of the
    # cost of 15, with the same poses; a fixed count keeps the merge linear in the photos.
    merge_max_iterations: int = 5
    min_triangulation_angle_deg: float = 1.5
    # Rounds between the first and the last start near their optimum and only prepare the
    # next filter: they stop at a looser relative cost decrease (on the 100-photo synthetic
    # collection's chunks: the same AUC and reprojection error, 13-18 % less refinement
    # time). The first and the last rounds converge to the solver's own tolerance.
    intermediate_function_tolerance: float = 1e-5
    bundle_adjustment: BundleAdjustmentSettings = field(default_factory=BundleAdjustmentSettings)
    triangulation: TriangulationSettings = field(default_factory=TriangulationSettings)


@dataclass
class RefinementReport:
    rounds: int
    observations_filtered: int
    points_retriangulated: int
    frames_dropped: list[int]
    frames_reposed: list[int]  # posed afresh by PnP: wrong or missing after initialisation
    cameras_without_distortion: list[int]  # radial term dropped: observations near the centre only


def refine(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray, point_of_track: dict[int, int],
           adjuster: BundleAdjuster, settings: RefinementSettings) -> RefinementReport:
    """Bundle-adjust, filter outliers, re-triangulate lost tracks, repeat; then a last BA.

    Cameras whose observations stay near the image centre first lose their radial term
    (sfm_core.distortion): in place, listed in the report.

    keypoint_index: tracks (F, N) int32; point_of_track: {track: point3D id}, updated.
    """
    filtered = retriangulated = 0
    fixed_intrinsics = replace(settings.bundle_adjustment, refine_focal_length=False, refine_extra_params=False,
                               refine_principal_point=False)
    intermediate = replace(settings.bundle_adjustment, function_tolerance=settings.intermediate_function_tolerance)
    dropped: list[int] = []
    reposed: set[int] = set()
    frames = sorted(image_id - 1 for image_id in rec.images)
    undistorted = (drop_unsupported_radial(rec, keep=settings.bundle_adjustment.constant_cameras)
                   if settings.bundle_adjustment.refine_extra_params else [])
    for round_index, threshold in enumerate(settings.filter_thresholds_px):
        # Intrinsics stay fixed in the first round: far from the solution, a free focal length
        # and distortion can run away with the outliers before the filter removes them.
        adjuster.adjust(rec, intermediate if round_index else fixed_intrinsics)
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
    return RefinementReport(len(settings.filter_thresholds_px), filtered, retriangulated, dropped, sorted(reposed),
                            undistorted)


def _forget_deleted_points(rec: pycolmap.Reconstruction, point_of_track: dict[int, int]) -> None:
    for track, point_id in list(point_of_track.items()):
        if not rec.exists_point3D(point_id):
            del point_of_track[track]
