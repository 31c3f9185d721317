"""Joint camera initialisation: all cameras of a group at once, no image is special.

Rotation averaging over the relative rotations of verified pairs, then global positioning
from the tracks (GLOMAP's formulation, solved by pycolmap), as opposed to COLMAP's
incremental registration one image at a time. The positioning starts from random positions:
the best of a few starts is kept (`initialize_poses_best_of`).
"""
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable

import numpy as np
import pycolmap
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from sfm_core.bundle_adjustment import BundleAdjustmentSettings, CeresBundleAdjuster
from sfm_core.model import clear_points
from sfm_core.triangulation import TriangulationSettings, triangulate_tracks
from sfm_core.verification import VerifiedPair

STARTS = 3  # random starts of the global positioning; the best is kept


def pose_graph_components(num_frames: int, pairs: list[VerifiedPair], min_size: int = 2) -> list[list[int]]:
    """Frames connected by pairs with a relative pose, largest group first."""
    posed = [p for p in pairs if p.rotation_xyzw is not None]
    if not posed:
        return []
    rows = [p.index1 for p in posed]
    cols = [p.index2 for p in posed]
    graph = coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(num_frames, num_frames))
    _, labels = connected_components(graph, directed=False)
    linked = set(rows) | set(cols)
    groups: dict[int, list[int]] = {}
    for frame in sorted(linked):
        groups.setdefault(int(labels[frame]), []).append(frame)
    return sorted((g for g in groups.values() if len(g) >= min_size), key=len, reverse=True)


def initialize_poses(rec: pycolmap.Reconstruction, pairs: list[VerifiedPair],
                     keypoint_index: np.ndarray, seed: int = 0) -> bool:
    """Pose every image of `rec` jointly; returns False if the solvers fail.

    rec: images with ids frame + 1 (see sfm_core.model); keypoint_index: tracks (F, N) int32.
    Leaves rec posed (cam_from_world) with the global-positioning points in it.
    """
    image_ids = set(rec.images.keys())
    pose_graph = pycolmap.PoseGraph()
    for pair in pairs:
        id1, id2 = pair.index1 + 1, pair.index2 + 1
        if pair.rotation_xyzw is None or id1 not in image_ids or id2 not in image_ids:
            continue
        edge = pycolmap.PoseGraphEdge(pycolmap.Rigid3d(pycolmap.Rotation3d(pair.rotation_xyzw), pair.translation))
        edge.num_matches = len(pair.inliers)
        pose_graph.add_edge(id1, id2, edge)

    rotation_options = pycolmap.RotationEstimatorOptions()
    rotation_options.random_seed = seed
    # A pair of 200 inliers says more than one of 20: weak pairs of a weakly seen image can
    # outvote its one strong pair under uniform weights (seen on ETH3D pipes).
    rotation_options.reweighting = pycolmap.RotationAveragingReweighting.INLIER_MATCH_COUNT
    if not pycolmap.run_rotation_averaging(rotation_options, pose_graph, rec, []):
        return False

    frames = np.array(sorted(i - 1 for i in image_ids))
    tracks = keypoint_index[frames]
    for column in np.nonzero((tracks >= 0).sum(axis=0) >= 3)[0]:
        seen = np.nonzero(tracks[:, column] >= 0)[0]
        elements = [pycolmap.TrackElement(int(frames[r]) + 1, int(tracks[r, column])) for r in seen]
        rec.add_point3D(np.zeros(3), pycolmap.Track(elements))

    position_options = pycolmap.GlobalPositionerOptions()
    position_options.use_gpu = False
    position_options.random_seed = seed
    return pycolmap.run_global_positioning(position_options, pose_graph, rec)


def initialize_poses_best_of(new_reconstruction: Callable[[], pycolmap.Reconstruction], pairs: list[VerifiedPair],
                             keypoint_index: np.ndarray, starts: int = STARTS) -> pycolmap.Reconstruction | None:
    """initialize_poses from `starts` random starts of the global positioning (seeds 0, 1, ...),
    keeping the one that fits best after a first adjustment; None if every start fails.

    Global positioning starts from random camera positions. Where a few images hang on the
    rest by few tracks (ETH3D pipes: four images joined to the others by 15-36 inliers a
    pair, their initial translation directions 10-25 degrees off), starts can land those
    images in different basins of the bundle adjustment that follows, 3 degrees apart, and
    the adjustment stays in its basin. So each start is triangulated and adjusted once with
    its intrinsics held, as the refinement's first round is, and the start whose adjusted
    model has the lowest mean reprojection error wins (the wrong basin fits worse: 0.655 px
    against 0.615 on pipes). Returned as initialised, without points: the later stages
    triangulate and refine it as they would a single start.

    new_reconstruction: makes the unposed reconstruction (images with ids frame + 1, cameras).
    The starts run in threads (pycolmap's solvers release the GIL; kitchen's three: 4.6 s one
    after the other, 3.3 s on two cores); the choice does not depend on which finishes first.
    """
    with ThreadPoolExecutor(min(starts, os.cpu_count() or 1)) as pool:
        scored = list(pool.map(lambda seed: _scored_start(new_reconstruction, pairs, keypoint_index, seed),
                               range(starts)))
    best, best_error = None, np.inf
    for rec, error in scored:  # in seed order: ties go to the lowest seed
        if error < best_error:
            best, best_error = rec, error
    return best


def _scored_start(new_reconstruction: Callable[[], pycolmap.Reconstruction], pairs: list[VerifiedPair],
                  keypoint_index: np.ndarray, seed: int) -> tuple[pycolmap.Reconstruction | None, float]:
    """One start of the positioning, without points, and its first adjustment's error (inf if it failed)."""
    rec = new_reconstruction()
    if not initialize_poses(rec, pairs, keypoint_index, seed=seed):
        return None, np.inf
    clear_points(rec)
    return rec, _first_adjustment_error(pycolmap.Reconstruction(rec), keypoint_index)


def _first_adjustment_error(rec: pycolmap.Reconstruction, keypoint_index: np.ndarray) -> float:
    """Mean reprojection error (px) of rec, posed and without points, once its tracks are
    triangulated and adjusted with intrinsics held. Ceres whatever the pipeline's solver, and
    to a looser tolerance (1e-5) than the refinement's own first round (1e-6): this only
    ranks the starts, and that is the fast way on the CPU."""
    triangulate_tracks(rec, keypoint_index, np.arange(keypoint_index.shape[1]), TriangulationSettings())
    if rec.num_points3D() == 0:
        return np.inf
    held = BundleAdjustmentSettings(refine_focal_length=False, refine_extra_params=False, function_tolerance=1e-5)
    CeresBundleAdjuster().adjust(rec, held)
    return float(rec.compute_mean_reprojection_error())
